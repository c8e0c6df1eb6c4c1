"""The ``bootstrap`` command: parse, call the library or run a flow, print."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bootstrap import progress
from bootstrap.config import ConfigError, config_from_flags
from bootstrap.lease import DEFAULT_WAIT_SECONDS, LeaseBusy

app = typer.Typer(
    help="Turn raw image folders into labelled object-detection datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Pipeline YAML (default: configs/default.yaml).")
]


class _RichBars:
    """Draws the library's progress events as rich progress bars."""

    def __init__(self, bars: Progress):
        self._bars = bars
        self._ids: dict[str, int] = {}

    def start(self, name: str, total: int | None) -> None:
        if name in self._ids:
            self._bars.update(self._ids[name], total=total, completed=0)
        else:
            self._ids[name] = self._bars.add_task(name, total=total)

    def advance(self, name: str, amount: int) -> None:
        if name not in self._ids:
            self.start(name, None)
        self._bars.advance(self._ids[name], amount)

    def finish(self, name: str) -> None:
        if name in self._ids:
            task = self._bars.tasks[self._ids[name]]
            self._bars.update(self._ids[name], total=task.completed)


@app.command()
def annotate(
    sources: Annotated[list[str] | None, typer.Argument(help="Folders, files or globs.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset name.")] = None,
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option(help="Weights path or name, e.g. yolov8n.pt.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per model call.")] = None,
    image_size: Annotated[int | None, typer.Option("--imgsz", help="Inference size.")] = None,
    min_confidence: Annotated[
        float | None, typer.Option(help="Lowest score stored (<= 0.1).")
    ] = None,
    tta: Annotated[
        list[str] | None,
        typer.Option(help="Test-time view fused with the model's boxes: hflip, upscale (repeatable)."),
    ] = None,
    second_model: Annotated[
        str | None, typer.Option(help="A second detector whose boxes are fused in, e.g. yolo26n.pt.")
    ] = None,
    max_chunks: Annotated[
        int | None, typer.Option(help="Stop after N chunks; the rest stays pending.")
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait while another live run annotates the dataset.")
    ] = DEFAULT_WAIT_SECONDS,
    force: Annotated[
        bool, typer.Option(help="Take the dataset's lease from the run holding it, even a live one.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """Pre-annotate new images with the detector (runs the Prefect flow `annotate`)."""
    flags = dict(
        dataset=dataset, sources=sources, model=model, device=device,
        batch_size=batch_size, image_size=image_size, min_confidence=min_confidence,
        tta=tta, second_model=second_model,
    )
    config_path = str(config) if config else None
    _validate_or_exit(config_path, flags)
    _database_or_exit()
    if not verbose:
        # Prefect's run logs still reach the API (and the UI); only the console is quieted.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
    from flows.annotate import annotate as annotate_flow  # Prefect is heavy: load on use

    bars = Progress(
        TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, disable=as_json,
    )
    progress.set_listener(_RichBars(bars))
    try:
        with bars:
            summary = annotate_flow(
                config_path=config_path, max_chunks=max_chunks, wait_seconds=wait, force=force,
                **flags,
            )
    except LeaseBusy as error:
        _fail(str(error))
    finally:
        progress.set_listener(None)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    _print_summary(summary)


@app.command()
def status(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Counts for a dataset: samples, failures, stored boxes, images per state."""
    from bootstrap.store import ImageStore, StoreError

    try:
        report = ImageStore.open_existing(dataset).status()
    except StoreError as error:
        _fail(str(error))
    if as_json:
        print(json.dumps(report))
        return
    table = Table(title=f"dataset {dataset}", show_header=False)
    for key in ("samples", "failed", "pending", "predictions", "labels"):
        table.add_row(key, str(report[key]))
    table.add_row("models", ", ".join(report["models"]) or "-")
    for state, count in report["states"].items():
        table.add_row(f"state: {state}", str(count))
    out.print(table)


@app.command("app")
def open_app(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5151,
) -> None:
    """Open the FiftyOne App on the dataset (loopback only); Ctrl+C to stop."""
    from bootstrap.store import ImageStore, StoreError

    try:
        store = ImageStore.open_existing(dataset)
    except StoreError as error:
        _fail(str(error))
    import fiftyone as fo

    session = fo.launch_app(store.dataset, address="127.0.0.1", port=port, auto=False)
    out.print(f"FiftyOne App on [bold]http://127.0.0.1:{port}[/] (Ctrl+C to stop)")
    session.wait(-1)


@app.command()
def datasets() -> None:
    """List the datasets in the FiftyOne database."""
    _database_or_exit()
    import fiftyone as fo

    for name in fo.list_datasets():
        out.print(name)


@app.command()
def triage(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    config: ConfigOpt = None,
    accept: Annotated[float | None, typer.Option(help="Default accept threshold.")] = None,
    reject: Annotated[float | None, typer.Option(help="Default reject threshold.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-route stored predictions with (new) thresholds: no inference, human boxes kept."""
    triage_config = _triage_config(config, dataset, accept, reject)
    store = _open_existing(dataset)
    counts = store.apply_triage(triage_config)
    if as_json:
        print(json.dumps(counts))
        return
    for state, count in sorted(counts.items()):
        out.print(f"{state:>14}: {count}")


@app.command()
def review(
    args: Annotated[
        list[str],
        typer.Argument(help="DATASET, or: apply|push|pull DATASET", metavar="[apply|push|pull] DATASET"),
    ],
    budget: Annotated[int | None, typer.Option(help="At most N images in the batch.")] = None,
    open_app: Annotated[bool, typer.Option("--open", help="Open the App on the queue.")] = False,
    reviewer: Annotated[str | None, typer.Option(help="Who reviewed (apply).")] = None,
    port: Annotated[int, typer.Option(help="App port on 127.0.0.1.")] = 5151,
) -> None:
    """Build the ranked review queue (saved view `review-queue`), or apply what reviewers did.

    `push`/`pull` review in Label Studio (see `make labelstudio`): push queues the batch and
    uploads it with our boxes as scored predictions; pull brings finished annotations back
    (then `review apply`).
    """
    from bootstrap.review import build_review_queue

    if len(args) == 2 and args[0] in ("push", "pull"):
        _label_studio(args[0], args[1], budget)
        return
    if len(args) == 2 and args[0] == "apply":
        report = _open_existing(args[1]).apply_reviews(reviewer or os.environ.get("USER"))
        out.print(
            f"applied {report['images']} reviewed images: {report['confirmed']} boxes confirmed, "
            f"{report['rejected']} rejected, {report['drawn']} drawn by hand",
            soft_wrap=True,
        )
        return
    if len(args) != 1:
        _fail(
            "usage: bootstrap review DATASET [--budget N] [--open] | bootstrap review apply DATASET"
            " | bootstrap review push DATASET [--budget N] | bootstrap review pull DATASET",
            2,
        )
    store = _open_existing(args[0])
    queue = build_review_queue(store, budget)
    out.print(
        f"{len(queue.sample_ids)} of {queue.waiting} images waiting for review are queued in "
        f"the saved view '{queue.view_name}', highest priority first.",
        soft_wrap=True,
    )
    if open_app:
        import fiftyone as fo

        session = fo.launch_app(
            store.dataset.load_saved_view(queue.view_name), address="127.0.0.1", port=port, auto=False
        )
        out.print(f"FiftyOne App on http://127.0.0.1:{port} (Ctrl+C to stop)")
        session.wait(-1)


@app.command("simulate-review")
def simulate_review(
    dataset: Annotated[str, typer.Argument(help="Dataset name (left unchanged: a clone is used).")],
    ground_truth: Annotated[Path, typer.Option(help="YOLO dataset folder: data.yaml + labels/.")],
    budget: Annotated[int | None, typer.Option(help="Images reviewed at most.")] = None,
    config: ConfigOpt = None,
    accept: Annotated[float | None, typer.Option(help="Default accept threshold.")] = None,
    reject: Annotated[float | None, typer.Option(help="Default reject threshold.")] = None,
    cost_image: Annotated[float, typer.Option(help="Seconds per opened image.")] = 1.0,
    cost_verify: Annotated[float, typer.Option(help="Seconds per verified box.")] = 2.0,
    cost_draw: Annotated[float, typer.Option(help="Seconds per drawn box.")] = 7.0,
    signals: Annotated[
        bool, typer.Option("--signals/--no-signals", help="Doubt signals on (config) or off.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Play the reviewer from ground truth; report human time and the resulting quality."""
    from bootstrap.simulation import run_simulation

    triage_config = _triage_config(config, dataset, accept, reject)
    if not signals:
        triage_config = triage_config.model_copy(
            update={"class_confusion_iou": None, "likely_misses_at": None}
        )
    from bootstrap.review import CostModel

    store = _open_existing(dataset)
    report = run_simulation(
        store, ground_truth, triage_config, budget,
        CostModel(open_image=cost_image, verify_box=cost_verify, draw_box=cost_draw),
        ontology_config=_config_or_exit(config, dataset).ontology,
    )
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    table = Table(title=f"simulated review of {dataset}", show_header=False)
    for key, value in report.to_dict().items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    out.print(table)
    out.print(
        f"Human time: {report.review_seconds / 3600:.2f} h, "
        f"{100 * report.cost_fraction:.1f}% of labelling from scratch "
        f"({report.scratch_seconds / 3600:.2f} h); precision {report.precision:.3f}, "
        f"recall {report.recall:.3f}.",
        soft_wrap=True,
    )


def _label_studio(action: str, dataset: str, budget: int | None) -> None:
    """`review push|pull DATASET`: the Label Studio round trip (env LABEL_STUDIO_URL,
    LABEL_STUDIO_API_KEY, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)."""
    from bootstrap.labelstudio import (
        LabelStudioClient,
        LabelStudioError,
        LabelStudioSettings,
        pull_annotations,
        push_review_queue,
    )
    from bootstrap.review import build_review_queue

    store = _open_existing(dataset)
    try:
        with LabelStudioClient(LabelStudioSettings.from_env()) as client:
            if action == "push":
                queue = build_review_queue(store, budget)
                report = push_review_queue(store, client, queue.sample_ids)
                out.print(
                    f"{report.queued} of {queue.waiting} images waiting are queued; "
                    f"{report.created} new tasks ({report.boxes} boxes) in Label Studio, "
                    f"{report.already_there} were there already: {report.project_url}",
                    soft_wrap=True,
                )
                return
            report = pull_annotations(store, client)
    except LabelStudioError as error:
        _fail(str(error))
    out.print(
        f"{report.annotated} of {report.tasks} tasks annotated; {report.pulled} images pulled "
        f"({report.kept} boxes kept, {report.rejected} rejected, {report.drawn} drawn by hand), "
        f"{report.unchanged} unchanged since the last pull. Next: bootstrap review apply {dataset}",
        soft_wrap=True,
    )
    for conflict in report.conflicts:
        err.print(f"[yellow]not pulled[/] {conflict}", soft_wrap=True)


def _config_or_exit(config: Path | None, dataset: str):
    try:
        return config_from_flags(str(config) if config else None, dataset=dataset)
    except ConfigError as error:
        _fail(f"invalid configuration:\n{error}", code=2)


def _triage_config(config: Path | None, dataset: str, accept: float | None, reject: float | None):
    from bootstrap.config import validate_config

    base = _config_or_exit(config, dataset)
    raw = base.triage.model_dump() | {k: v for k, v in (("accept", accept), ("reject", reject)) if v is not None}
    try:
        return validate_config({"dataset": dataset, "triage": raw}).triage
    except ConfigError as error:
        _fail(f"invalid thresholds:\n{error}", code=2)


def _open_existing(dataset: str):
    from bootstrap.store import ImageStore, StoreError

    try:
        return ImageStore.open_existing(dataset)
    except StoreError as error:
        _fail(str(error))


def _validate_or_exit(config_path: str | None, flags: dict) -> None:
    try:
        config = config_from_flags(config_path, **flags)
    except ConfigError as error:
        _fail(f"invalid configuration:\n{error}", code=2)
    if not config.sources:
        _fail("no sources: give folders, files or globs, or set `sources` in the config", code=2)


def _print_summary(summary: dict) -> None:
    table = Table(title=f"annotate {summary['dataset']}", show_header=False)
    rows = [
        ("images found", summary["found"]),
        ("new", summary["new"]),
        ("skipped (already known)", summary["known"]),
        ("annotated this run", summary["annotated"]),
        ("failed", len(summary["failed"])),
        ("boxes stored", summary["boxes"]),
        *((f"routed: {state}", n) for state, n in sorted(summary["routed"].items())),
        ("wall time", f"{summary['wall_seconds']:.1f} s"),
        ("throughput", f"{summary['images_per_second']:.2f} images/s"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    out.print(table)
    for uri, reason in summary["failed"]:
        out.print(f"[red]failed[/] {uri}: {reason}", soft_wrap=True)
    out.print(
        f"Next: [bold]bootstrap app {summary['dataset']}[/] to look at the boxes, "
        f"[bold]bootstrap status {summary['dataset']}[/] for counts.",
        soft_wrap=True,
    )


def _database_or_exit() -> None:
    from bootstrap.doctor import DatabaseWedged, check_database_not_wedged

    try:
        check_database_not_wedged()
    except DatabaseWedged as error:
        _fail(str(error))


@app.command()
def doctor(
    fix: Annotated[
        bool, typer.Option(help="Stop a leftover mongod of ours, clear stale leases.")
    ] = False,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="The findings as a JSON list.")] = False,
) -> None:
    """Check the database, leftover mongod processes, dataset leases, Prefect and weights."""
    from bootstrap.doctor import run_checks

    findings = run_checks(fix=fix, config_path=str(config) if config else None)
    if as_json:
        print(json.dumps([f.to_dict() for f in findings]))
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for f in findings:
            out.print(f"[{colour[f.status]}]{f.status:>4}[/] {f.check}: {f.message}", soft_wrap=True)
            if f.fix:
                out.print(f"     {'fixed' if f.fixed else 'fix'}: {f.fix}", soft_wrap=True)
    if any(f.status == "fail" for f in findings):
        raise typer.Exit(1)


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: what was stored is kept; run the same command again to resume")
        sys.exit(130)


# -- export, evaluate, calibrate ------------------------------------------------------------------


@app.command()
def export(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Target folder (replaced as a whole).")],
    format: Annotated[str, typer.Option("--format", help="yolo or coco.")] = "yolo",
    include: Annotated[
        str, typer.Option(help="States to export: accepted,reviewed[,needs_review,empty].")
    ] = "accepted,reviewed",
    split: Annotated[str, typer.Option(help="Split fractions by content hash.")] = "train=0.8,val=0.2",
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Export the final labels as a YOLO or COCO dataset (FiftyOne exporters) with a manifest."""
    from bootstrap.export import ExportError, export_dataset

    pipeline = _config_or_exit(config, dataset)
    store = _open_existing(dataset)
    try:
        manifest = export_dataset(store, out_dir, format, include, split, config=pipeline)
    except ExportError as error:
        _fail(str(error), code=2)
    if as_json:
        print(json.dumps(manifest))
        return
    table = Table(title=f"export of {dataset} ({format}) -> {out_dir}", show_header=True)
    for column in ("split", "images", "background", "boxes", "auto", "human"):
        table.add_column(column)
    for name, c in [*manifest["splits"].items(), ("all", manifest["counts"])]:
        table.add_row(name, *(str(c.get(k, 0)) for k in (
            "images", "background_images", "boxes", "boxes_auto", "boxes_human")))
    out.print(table)
    if manifest["estimated_auto_precision"]:
        out.print(f"estimated precision of the automatic boxes: {manifest['estimated_auto_precision']}")


@app.command()
def evaluate(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    ground_truth: Annotated[
        Path, typer.Option(help="YOLO folder (data.yaml + labels/) or COCO detection json.")
    ],
    field: Annotated[str, typer.Option(help="predictions (raw model) or labels (working labels).")] = "predictions",
    report: Annotated[Path | None, typer.Option(help="Write report.md + PNG plots here.")] = None,
    simulate: Annotated[
        bool, typer.Option("--simulate/--no-simulate", help="Add the review cost-vs-quality curve.")
    ] = True,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Import ground truth and measure precision, recall and mAP per class and confidence band."""
    from bootstrap.evaluate import (
        EVALUATION_FIELDS,
        GroundTruthError,
        evaluate_field,
        import_ground_truth,
    )
    from bootstrap.ontology import Ontology

    if field not in EVALUATION_FIELDS:
        _fail(f"--field: '{field}' is not one of {', '.join(EVALUATION_FIELDS)}", code=2)
    pipeline = _config_or_exit(config, dataset)
    store = _open_existing(dataset)
    try:
        import_ground_truth(store, ground_truth, Ontology(pipeline.ontology))
        evaluation = evaluate_field(store, field)
    except GroundTruthError as error:
        _fail(str(error), code=2)
    result = evaluation.to_dict()
    if report is not None:
        from bootstrap.report import write_report
        from bootstrap.simulation import cost_quality_curve

        curve = cost_quality_curve(
            store, ground_truth, pipeline.triage, ontology_config=pipeline.ontology
        ) if simulate else None
        paths = write_report(dataset, evaluation, report, curve)
        result["report"] = {k: str(v) for k, v in paths.items()}
    if as_json:
        print(json.dumps(result))
        return
    s = result["summary"]
    out.print(
        f"{s['field']} vs ground truth on {s['images']} images: precision {s['precision'] or 0:.3f}, "
        f"recall {s['recall'] or 0:.3f}, mAP {s['mAP'] if s['mAP'] is not None else '-'} "
        f"(TP {s['tp']}, FP {s['fp']}, FN {s['fn']})",
        soft_wrap=True,
    )
    table = Table(title="by confidence band")
    for column in ("band", "boxes", "TP", "FP", "precision"):
        table.add_column(column)
    for b in result["bands"]:
        table.add_row(b["band"], str(b["boxes"]), str(b["tp"]), str(b["fp"]),
                      "-" if b["precision"] is None else f"{b['precision']:.3f}")
    out.print(table)
    if report is not None:
        out.print(f"report: {result['report']['markdown']}")


@app.command()
def calibrate(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    target_precision: Annotated[float, typer.Option(help="Precision auto-accepted boxes must reach.")] = 0.95,
    source: Annotated[str, typer.Option(help="auto, ground_truth or reviewed.")] = "auto",
    min_boxes: Annotated[int, typer.Option(help="Fewer evaluated boxes: keep the defaults.")] = 20,
    max_lost_recall: Annotated[
        float | None,
        typer.Option(
            help="Reject by recall instead: the share of a class's true boxes it may drop. "
            "Default: reject where showing a box stops saving time (--cost-verify / --cost-draw)."
        ),
    ] = None,
    cost_verify: Annotated[float, typer.Option(help="Seconds per verified box.")] = 2.0,
    cost_draw: Annotated[float, typer.Option(help="Seconds per drawn box.")] = 7.0,
    write_config: Annotated[Path | None, typer.Option(help="Write the config with the thresholds here.")] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Choose per-class accept/reject thresholds that reach a target precision with the most recall."""
    from bootstrap.calibrate import (
        calibrate_from_evaluation,
        calibration_evidence,
        write_calibrated_config,
    )
    from bootstrap.evaluate import GroundTruthError
    from bootstrap.review import CostModel

    pipeline = _config_or_exit(config, dataset)
    store = _open_existing(dataset)
    try:
        evidence = calibration_evidence(store, source)
        result = calibrate_from_evaluation(
            evidence, target_precision, triage=pipeline.triage,
            min_boxes=min_boxes, max_lost_recall=max_lost_recall,
            cost=CostModel(verify_box=cost_verify, draw_box=cost_draw),
        )
    except (GroundTruthError, ValueError) as error:
        _fail(str(error), code=2)
    if write_config is not None:
        write_calibrated_config(pipeline, result, write_config, config)
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    table = Table(title=f"calibration of {dataset} for precision {target_precision} ({result.source})")
    for column in ("class", "boxes", "true", "accept", "reject", "precision", "auto recall", "review", "note"):
        table.add_column(column)
    for c in result.classes:
        table.add_row(
            c.label, str(c.boxes), str(c.true_boxes), f"{c.accept:.3f}", f"{c.reject:.3f}",
            "-" if c.precision is None else f"{c.precision:.3f}",
            "-" if c.accepted_recall is None else f"{c.accepted_recall:.3f}",
            str(c.review_boxes), c.note,
        )
    out.print(table)
    verdict = "reached" if result.reached else "NOT reached"
    out.print(
        f"Target {verdict}: auto-accepted precision {result.precision or 0:.3f} on "
        f"{result.accepted_boxes} boxes; expected review load {result.review_boxes} boxes on "
        f"{result.review_images} of {result.images} images (before doubt signals).",
        soft_wrap=True,
    )
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    if write_config is not None:
        out.print(f"config with these thresholds: {write_config}")
