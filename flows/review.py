"""The ``review`` flow: triage, queue the next batch, wait for the reviewer in the Prefect UI,
then apply what they did.

The pause shows a form in the Prefect UI ("Resume" on the flow run): it says how many images
wait and asks the reviewer to confirm the batch is done. On resume the flow runs
``review apply``. Reviewing itself happens in the FiftyOne App (``bootstrap app DATASET``, the
saved view ``review-queue``).
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, runtime, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from bootstrap.config import load_pipeline_config
from bootstrap.review import ReviewQueue, apply_reviews, queue_markdown, reviewer_instructions
from bootstrap.review_learning import (
    after_apply,
    effective_triage,
    learning_markdown,
    quality_estimate,
    queue_batch,
)
from bootstrap.store import ImageStore
from bootstrap.triage import apply_triage
from flows import artifact_key


class ReviewDone(RunInput):
    """What the reviewer answers when resuming the flow run."""

    done: bool = True
    reviewer: str | None = None


@task(cache_policy=NONE)
def triage_dataset(dataset: str, config_path: str | None) -> dict[str, int]:
    config = load_pipeline_config(config_path, dataset=dataset)
    store = ImageStore.open_existing(dataset)
    config.triage.check_classes(store.dataset.default_classes)  # a misspelt class: before work
    return apply_triage(store, effective_triage(store, config.triage))


@task(cache_policy=NONE)
def queue_review_batch(dataset: str, budget: int | None, config_path: str | None) -> ReviewQueue:
    config = load_pipeline_config(config_path, dataset=dataset)
    return queue_batch(ImageStore.open_existing(dataset), config, budget)


@task(cache_policy=NONE)
def instructions(dataset: str, config_path: str | None) -> str:
    return reviewer_instructions(load_pipeline_config(config_path, dataset=dataset).review.check_accepted)


@task(cache_policy=NONE)
def export_quality(dataset: str, config_path: str | None) -> str:
    config = load_pipeline_config(config_path, dataset=dataset)
    targets = (config.review.target_precision, config.review.target_recall)
    return quality_estimate(ImageStore.open_existing(dataset), config.triage).markdown(targets)


@task(cache_policy=NONE)
def learn_and_estimate(dataset: str, config_path: str | None, applied: dict, batch: str) -> dict:
    config = load_pipeline_config(config_path, dataset=dataset)
    return after_apply(ImageStore.open_existing(dataset), config, applied, batch)


@task(cache_policy=NONE)
def count_states(dataset: str) -> dict[str, int]:
    return ImageStore.open_existing(dataset).state_counts()


@task(cache_policy=NONE)
def apply_review_decisions(dataset: str, config_path: str | None, reviewer: str | None) -> dict[str, int]:
    config = load_pipeline_config(config_path, dataset=dataset)
    return apply_reviews(ImageStore.open_existing(dataset), reviewer, config.review.check_accepted)


@flow(name="review", log_prints=True)
def review(
    dataset: str,
    budget: Annotated[int, Field(ge=1)] | None = 50,
    config_path: str | None = None,
    retriage: bool = True,
    timeout_hours: Annotated[float, Field(gt=0)] = 24.0,
) -> dict:
    """Queue the next review batch, wait for the reviewer, apply their decisions, learn
    thresholds from them and publish the stopping rule (artifact ``review-result-<dataset>``).

    Args:
        dataset: FiftyOne dataset name.
        budget: at most this many images in the batch (highest priority first).
        config_path: pipeline config whose triage thresholds are used.
        retriage: re-route stored predictions with the config's thresholds first.
        timeout_hours: how long to wait for the reviewer before the run fails.
    """
    routed = triage_dataset(dataset, config_path) if retriage else {}
    queue = queue_review_batch(dataset, budget, config_path)
    create_markdown_artifact(
        markdown=queue_markdown(dataset, queue, count_states(dataset))
        + "\n\n" + export_quality(dataset, config_path),
        key=artifact_key("review-queue", dataset),
        description="Review batch",
    )
    if not queue.sample_ids:
        return {"routed": routed, "queued": 0, "applied": {}}
    answer = pause_flow_run(
        wait_for_input=ReviewDone.with_initial_data(
            description=(
                f"**{len(queue.sample_ids)} images** wait in the saved view `{queue.view_name}` of "
                f"dataset `{dataset}` (open it with `bootstrap app {dataset}`). "
                + instructions(dataset, config_path)
            ),
            done=True,
        ),
        timeout=int(timeout_hours * 3600),
        poll_interval=2,
    )
    applied = apply_review_decisions(dataset, config_path, answer.reviewer) if answer.done else {}
    followed = learn_and_estimate(dataset, config_path, applied, batch=str(runtime.flow_run.id))
    create_markdown_artifact(
        markdown=f"# After the review of `{dataset}`\n\n{learning_markdown(followed['learning'])}\n\n"
        + followed["estimate_markdown"],
        key=artifact_key("review-result", dataset),
        description="Thresholds learned from the batch, and the stopping rule",
    )
    return {"routed": routed, "queued": len(queue.sample_ids), "applied": applied,
            "learning": followed["learning"], "estimate": followed["estimate"]}
