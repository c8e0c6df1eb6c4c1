"""The ``bootstrap`` command: the Typer app and its pipeline commands.

Sub-apps and command groups live beside it: ``cli.review`` (``bootstrap review queue|apply|
push|pull``) and ``cli.evaluate`` (``simulate-review``, ``evaluate``, ``calibrate``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bootstrap import progress
from bootstrap.config import DetectorOptions
from bootstrap.environment import apply_defaults
from bootstrap.lease import DEFAULT_WAIT_SECONDS, LeaseBusy
from cli import evaluate as evaluate_commands
from cli import review as review_commands
from cli import train as train_commands
from cli.common import (
    ConfigOpt,
    DatasetArg,
    JsonOpt,
    column_table,
    database_or_exit,
    err,
    fail,
    launch_app,
    open_existing,
    out,
    pipeline_config,
    triage_config,
)
from cli.doctor import doctor
from cli.options import model_flags

app = typer.Typer(
    help="Turn raw image folders into labelled object-detection datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(review_commands.app, name="review")
app.command("simulate-review")(evaluate_commands.simulate_review)
app.command("evaluate")(evaluate_commands.evaluate)
app.command("calibrate")(evaluate_commands.calibrate)
app.command("doctor")(doctor)
app.command("train")(train_commands.train)
app.command("models")(train_commands.models)
app.command("reannotate")(train_commands.reannotate)
app.command("improve")(train_commands.improve)


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
@model_flags(DetectorOptions, into="detector", aliases={"image_size": ("--imgsz",)})
def annotate(
    sources: Annotated[list[str] | None, typer.Argument(help="Folders, files or globs.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset name.")] = None,
    config: ConfigOpt = None,
    detector: DetectorOptions | None = None,  # type: ignore[valid-type]  (flags: model_flags)
    max_chunks: Annotated[
        int | None, typer.Option(help="Stop after N chunks; the rest stays pending.")
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait while another live run annotates the dataset.")
    ] = DEFAULT_WAIT_SECONDS,
    force: Annotated[
        bool, typer.Option(help="Take the dataset's lease from the run holding it, even a live one.")
    ] = False,
    as_json: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """Pre-annotate new images with the detector (runs the Prefect flow `annotate`)."""
    checked = pipeline_config(config, dataset, sources=sources, detector=detector)
    if not checked.sources:
        fail("no sources: give folders, files or globs, or set `sources` in the config", code=2)
    database_or_exit()
    if not verbose:
        # Prefect's run logs still reach the API (and the UI); only the console is quieted.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
    from bootstrap.reannotate import ReannotationError
    from flows.annotate import annotate as annotate_flow  # Prefect is heavy: load on use

    bars = Progress(
        TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, disable=as_json,
    )
    progress.set_listener(_RichBars(bars))
    try:
        with bars:
            summary = annotate_flow(
                sources=sources, dataset=dataset, config_path=str(config) if config else None,
                detector=detector, max_chunks=max_chunks, wait_seconds=wait, force=force,
            )
    except LeaseBusy as error:
        fail(str(error))
    except ReannotationError as error:  # --model names a version that cannot run here
        fail(str(error), code=2)
    finally:
        progress.set_listener(None)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    _print_summary(summary)


@app.command()
def status(dataset: DatasetArg, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Counts for a dataset: samples, failures, stored boxes, images per state, and the
    stopping rule (estimated precision/recall of the export now)."""
    from bootstrap.review_learning import quality_estimate

    store = open_existing(dataset)
    report = store.status()
    pipeline = pipeline_config(config, dataset)
    targets = (pipeline.review.target_precision, pipeline.review.target_recall)
    estimate = quality_estimate(store, pipeline.triage)
    report["quality_estimate"] = estimate.to_dict(targets)
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
    out.print(estimate.markdown(targets).replace("**", ""), soft_wrap=True)


@app.command("app")
def open_app(
    dataset: DatasetArg,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5151,
) -> None:
    """Open the FiftyOne App on the dataset (loopback only); Ctrl+C to stop."""
    launch_app(open_existing(dataset).dataset, port)


@app.command()
def datasets() -> None:
    """List the datasets in the FiftyOne database."""
    database_or_exit()
    import fiftyone as fo

    for name in fo.list_datasets():
        out.print(name)


@app.command()
def triage(
    dataset: DatasetArg,
    config: ConfigOpt = None,
    accept: Annotated[float | None, typer.Option(help="Default accept threshold.")] = None,
    reject: Annotated[float | None, typer.Option(help="Default reject threshold.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-route stored predictions with (new) thresholds: no inference, human boxes kept."""
    from bootstrap.review_learning import effective_triage
    from bootstrap.triage import apply_triage

    thresholds = triage_config(config, dataset, accept, reject)
    store = open_existing(dataset)
    # What the dataset learned from its reviews stays on top of the given thresholds.
    counts = apply_triage(store, effective_triage(store, thresholds))
    if as_json:
        print(json.dumps(counts))
        return
    for state, count in sorted(counts.items()):
        out.print(f"{state:>14}: {count}")


@app.command()
def export(
    dataset: DatasetArg,
    out_dir: Annotated[Path, typer.Option("--out", help="Target folder (replaced as a whole).")],
    format: Annotated[str, typer.Option("--format", help="yolo or coco.")] = "yolo",
    include: Annotated[
        str, typer.Option(help="States to export: accepted,reviewed[,needs_review,empty].")
    ] = "accepted,reviewed",
    split: Annotated[str, typer.Option(help="Split fractions by content hash.")] = "train=0.8,val=0.2",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export the final labels as a YOLO or COCO dataset (FiftyOne exporters) with a manifest."""
    from bootstrap.export import ExportError, ExportWriteError, export_dataset

    pipeline = pipeline_config(config, dataset)
    store = open_existing(dataset)
    try:
        manifest = export_dataset(store, out_dir, format, include, split, config=pipeline)
    except ExportError as error:
        fail(str(error), code=1 if isinstance(error, ExportWriteError) else 2)
    if as_json:
        print(json.dumps(manifest))
        return
    table = column_table(
        f"export of {dataset} ({format}) -> {out_dir}",
        ("split", "images", "background", "boxes", "auto", "human"),
    )
    for name, c in [*manifest["splits"].items(), ("all", manifest["counts"])]:
        table.add_row(name, *(str(c.get(k, 0)) for k in (
            "images", "background_images", "boxes", "boxes_auto", "boxes_human")))
    out.print(table)
    if manifest["estimated_auto_precision"]:
        out.print(f"estimated precision of the automatic boxes: {manifest['estimated_auto_precision']}")


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


class Interrupted(BaseException):
    """Ctrl+C or SIGTERM. Not a KeyboardInterrupt: Click would swallow that into "Aborted!"."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []


def _interrupt(signum, frame) -> None:
    if _received:  # a second Ctrl+C or SIGTERM: the clean-up is taking too long, stop now
        os._exit(128 + signum)
    _received.append(signum)
    raise Interrupted(signum)


def _library_errors() -> tuple[type[Exception], ...]:
    """The library's named errors: their message says what is wrong and what to do, so the
    command prints it instead of a traceback."""
    from bootstrap.config import ConfigError
    from bootstrap.detections import DetectorError
    from bootstrap.export import ExportError
    from bootstrap.labelstudio import LabelStudioError
    from bootstrap.lease import LeaseBusy
    from bootstrap.sources import SourceError
    from bootstrap.store import StoreError

    return (ConfigError, DetectorError, ExportError, LabelStudioError, LeaseBusy, SourceError,
            StoreError)


def main() -> None:
    """The console script: environment defaults, then the app. Ctrl+C and SIGTERM raise an
    exception (SIGTERM would otherwise end the process on the spot), so every ``finally`` and
    clean-up runs: no partial export folder, no half-written file."""
    from bootstrap.store import database_errors

    apply_defaults()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        with database_errors():
            app()
    except BaseException as error:  # noqa: BLE001 - sorted below, the rest re-raised
        # Inside a flow run Prefect turns SIGTERM into its own TerminationSignal.
        signum = getattr(error, "signum", getattr(error, "signal", None))
        failed = not isinstance(error, SystemExit) or error.code not in (0, None)
        if _received and failed and not isinstance(error, Interrupted):
            # The signal's exception was swallowed by a broad `except` (an import in progress:
            # seen as a half-imported mongoengine) and surfaced as another error, or as a
            # command's own exit 1 after it: it is still the interruption.
            signum = _received[0]
        if signum or isinstance(error, Interrupted) or type(error).__name__ == "TerminationSignal":
            name = signal.Signals(signum).name if signum else "a signal"
            err.print(f"interrupted ({name}): what was stored is kept and nothing half-written "
                      "is left; run the same command again to finish")
            sys.exit(128 + (signum or 2))
        if isinstance(error, Exception) and isinstance(error, _library_errors()):
            err.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True, highlight=False)
            sys.exit(1)
        raise
