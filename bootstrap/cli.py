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
    max_chunks: Annotated[
        int | None, typer.Option(help="Stop after N chunks; the rest stays pending.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """Pre-annotate new images with the detector (runs the Prefect flow `annotate`)."""
    flags = dict(
        dataset=dataset, sources=sources, model=model, device=device,
        batch_size=batch_size, image_size=image_size, min_confidence=min_confidence,
    )
    config_path = str(config) if config else None
    _validate_or_exit(config_path, flags)
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
            summary = annotate_flow(config_path=config_path, max_chunks=max_chunks, **flags)
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
    import fiftyone as fo

    for name in fo.list_datasets():
        out.print(name)


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


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: what was stored is kept; run the same command again to resume")
        sys.exit(130)
