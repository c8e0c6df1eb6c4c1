"""``bootstrap review queue|apply|push|pull DATASET``: the review loop from the command line."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cli.common import (
    ConfigOpt,
    DatasetArg,
    err,
    fail,
    launch_app,
    open_existing,
    out,
    pipeline_config,
)

app = typer.Typer(
    help="Queue images for people, apply what they decided, or review in Label Studio.",
    no_args_is_help=True,
)

BudgetOpt = Annotated[int | None, typer.Option(min=1, help="At most N images in the batch.")]


@app.command()
def queue(
    dataset: DatasetArg,
    budget: BudgetOpt = None,
    open_app: Annotated[bool, typer.Option("--open", help="Open the App on the queue.")] = False,
    port: Annotated[int, typer.Option(help="App port on 127.0.0.1.")] = 5151,
    config: ConfigOpt = None,
) -> None:
    """Save the highest-priority images waiting for review as the saved view `review-queue`
    (the random audit's images first: `review.audit`)."""
    from bootstrap.review_learning import queue_batch

    store = open_existing(dataset)
    batch = queue_batch(store, pipeline_config(config, dataset), budget)
    out.print(
        f"{len(batch.sample_ids)} of {batch.waiting} images waiting for review are queued in "
        f"the saved view '{batch.view_name}', highest priority first.",
        soft_wrap=True,
    )
    if open_app:
        launch_app(store.dataset.load_saved_view(batch.view_name), port)


@app.command()
def apply(
    dataset: DatasetArg,
    reviewer: Annotated[str | None, typer.Option(help="Who reviewed (default: $USER).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Make reviewers' decisions final: drop `reject`-tagged boxes, confirm the rest; then learn
    thresholds from the reviews (`review.learn`) and say whether the targets are met."""
    from bootstrap.review import apply_reviews
    from bootstrap.review_learning import after_apply

    store = open_existing(dataset)
    pipeline = pipeline_config(config, dataset)
    report = apply_reviews(store, reviewer or os.environ.get("USER"), pipeline.review.check_accepted)
    unchecked = f", {report['unchecked']} accepted boxes shipped unchecked" if report["unchecked"] else ""
    out.print(
        f"applied {report['images']} reviewed images: {report['confirmed']} boxes confirmed, "
        f"{report['rejected']} rejected, {report['drawn']} drawn by hand{unchecked}",
        soft_wrap=True,
    )
    followed = after_apply(store, pipeline, report, batch="cli")
    if followed["learning"]:
        entry = followed["learning"]
        out.print(
            f"thresholds learned from {entry['evidence_boxes']} reviewed boxes: "
            f"{entry['classes_changed']} classes moved; re-triaged: {entry['routed']}",
            soft_wrap=True,
        )
    out.print(followed["estimate_markdown"].replace("**", ""), soft_wrap=True)


@app.command()
def push(dataset: DatasetArg, budget: BudgetOpt = None) -> None:
    """Queue the batch and upload it to Label Studio with our boxes as scored predictions
    (env LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)."""
    from bootstrap.labelstudio import LabelStudioError, push_review_queue
    from bootstrap.review import build_review_queue

    store = open_existing(dataset)
    try:
        with _label_studio() as client:
            batch = build_review_queue(store, budget)
            report = push_review_queue(store, client, batch.sample_ids)
    except LabelStudioError as error:
        fail(str(error))
    out.print(
        f"{report.queued} of {batch.waiting} images waiting are queued; "
        f"{report.created} new tasks ({report.boxes} boxes) in Label Studio, "
        f"{report.already_there} were there already: {report.project_url}",
        soft_wrap=True,
    )


@app.command()
def pull(dataset: DatasetArg) -> None:
    """Bring finished Label Studio annotations back (then `bootstrap review apply`)."""
    from bootstrap.labelstudio import LabelStudioError, pull_annotations

    store = open_existing(dataset)
    try:
        with _label_studio() as client:
            report = pull_annotations(store, client)
    except LabelStudioError as error:
        fail(str(error))
    out.print(
        f"{report.annotated} of {report.tasks} tasks annotated; {report.pulled} images pulled "
        f"({report.kept} boxes kept, {report.rejected} rejected, {report.drawn} drawn by hand), "
        f"{report.unchanged} unchanged since the last pull. Next: bootstrap review apply {dataset}",
        soft_wrap=True,
    )
    for conflict in report.conflicts:
        err.print(f"[yellow]not pulled[/] {conflict}", soft_wrap=True)


def _label_studio():
    from bootstrap.labelstudio import LabelStudioClient, LabelStudioSettings

    return LabelStudioClient(LabelStudioSettings.from_env())
