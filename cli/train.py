"""``bootstrap train | models | reannotate | improve``: the bootstrap loop on the command line.

``train`` and ``improve`` run their Prefect flows (as ``annotate`` does); ``models`` reads the
registry folder only; ``reannotate`` calls the library while holding the dataset's lease.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bootstrap import progress
from bootstrap.config import TrainOptions
from bootstrap.lease import DEFAULT_WAIT_SECONDS, LeaseBusy
from cli.common import (
    ConfigOpt,
    DatasetArg,
    JsonOpt,
    column_table,
    database_or_exit,
    err,
    fail,
    out,
    pipeline_config,
)
from cli.options import model_flags

ModelsDirOpt = Annotated[
    str | None, typer.Option(help="Folder of the model versions (default: the config's train.models_dir).")
]
BaseOpt = Annotated[
    str | None, typer.Option(help="Weights to fine-tune from (v2, a model name, a path); default: the current detector.")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's and Ultralytics' logs.")]


class _LogLines(logging.Handler):
    """Prints the library's per-epoch and decision lines above the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(record.getMessage(), soft_wrap=True, highlight=False)


class _Bars:
    def __init__(self, bars: Progress):
        self._bars, self._ids = bars, {}

    def start(self, name, total):
        self._ids.setdefault(name, self._bars.add_task(name, total=total))
        self._bars.update(self._ids[name], total=total, completed=0)

    def advance(self, name, amount):
        if name not in self._ids:
            self.start(name, None)
        self._bars.advance(self._ids[name], amount)

    def finish(self, name):
        pass


def _quiet(verbose: bool) -> None:
    """Before Prefect and Ultralytics are imported: their console output only with --verbose
    (Prefect's run logs still reach its API)."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
        os.environ.setdefault("YOLO_VERBOSE", "false")  # Ultralytics' logger and bars


def _run_quietly(verbose: bool, as_json: bool, run):
    """Run ``run()`` with a progress bar per stage and one line per epoch on stderr."""
    lines = _LogLines(level=logging.INFO)
    loggers = [logging.getLogger(n) for n in ("bootstrap.training", "bootstrap.reannotate")]
    bars = Progress(TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, disable=as_json)
    for logger in loggers:
        logger.addHandler(lines)
        logger.setLevel(logging.INFO)
    progress.set_listener(_Bars(bars))
    try:
        with bars:
            return run()
    finally:
        progress.set_listener(None)
        for logger in loggers:
            logger.removeHandler(lines)


@model_flags(TrainOptions, into="training", aliases={"image_size": ("--imgsz",), "time_budget_minutes": ("--time-budget",)})
def train(
    dataset: DatasetArg,
    config: ConfigOpt = None,
    training: TrainOptions | None = None,  # type: ignore[valid-type]  (flags: model_flags)
    base: BaseOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Fine-tune the detector on the dataset's final labels and register the version (runs the
    Prefect flow `train`); it replaces the current detector only when it scores better."""
    from bootstrap.training import TrainingError

    pipeline_config(config, dataset, train=training)
    database_or_exit()
    _quiet(verbose)
    from flows.train import train as train_flow  # Prefect is heavy: load on use

    try:
        result = _run_quietly(verbose, as_json, lambda: train_flow(
            dataset=dataset, config_path=str(config) if config else None, training=training, base=base))
    except TrainingError as error:
        fail(str(error), code=2)
    if as_json:
        print(json.dumps(result))
        return
    version = result["version"]
    out.print(f"[bold]{version['version']}[/] registered: {version['weights']}", soft_wrap=True)
    out.print(result["decision"], soft_wrap=True)


def models(
    dataset: DatasetArg,
    config: ConfigOpt = None,
    models_dir: ModelsDirOpt = None,
    use: Annotated[str | None, typer.Option(help="Make this version (v2) the current detector; `none`: back to the config's model.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the dataset's model versions: what each was trained on and how it scored."""
    from bootstrap.model_registry import RegistryError
    from bootstrap.training import registry_for

    registry = registry_for(pipeline_config(config, dataset, train={"models_dir": models_dir}))
    if use is not None:
        try:
            target = None if use == "none" else registry.get(use).version
        except RegistryError as error:
            fail(str(error), code=2)
        registry.set_current(target, f"set by hand (bootstrap models --use {use})")
    current = registry.current_id()
    versions = [v.to_dict() | {"current": v.version == current, "model_name": v.model_name}
                for v in registry.versions()]
    if as_json:
        print(json.dumps(versions))
        return
    table = column_table(
        f"model versions of {dataset} ({registry.root})",
        ("version", "current", "created", "base", "train/val images", "mAP50-95", "current then", "promoted"),
    )
    for v in versions:
        base = (v["base_metrics"] or {}).get("map50_95")
        table.add_row(
            v["version"], "*" if v["current"] else "", v["created_at"], v["base_version"] or os.path.basename(v["base_weights"]),
            f"{v['images'].get('train', 0)}/{v['images'].get('val', 0)}", f"{v['metrics'].get('map50_95', 0):.4f}",
            "-" if base is None else f"{base:.4f}", "yes" if v["promoted"] else "no",
        )
    out.print(table)
    out.print(f"current detector: {current or 'the config’s detector.model'}")


def reannotate(
    dataset: DatasetArg,
    model: Annotated[str, typer.Option(help="A version (v2, current) or weights, in place of detector.model.")] = "current",
    config: ConfigOpt = None,
    models_dir: ModelsDirOpt = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait while another live run annotates the dataset.")] = DEFAULT_WAIT_SECONDS,
    force: Annotated[bool, typer.Option(help="Take the dataset's lease from the run holding it.")] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Re-predict the images no person has decided with a model version, re-triage them; human
    boxes and reviewed images are never changed."""
    from bootstrap.detections import DetectorError
    from bootstrap.lease import hold_lease
    from bootstrap.reannotate import ReannotationError
    from bootstrap.reannotate import reannotate as run_reannotation
    from bootstrap.store import StoreError

    checked = pipeline_config(config, dataset, train={"models_dir": models_dir})
    database_or_exit()
    _quiet(verbose)
    run_id = f"reannotate-{uuid.uuid4().hex[:12]}"

    def run():
        with hold_lease(f"annotate:{dataset}", run_id, wait_seconds=wait, force=force):
            return run_reannotation(checked, model, run_id)

    try:
        report = _run_quietly(verbose, as_json, run)
    except (ReannotationError, DetectorError, StoreError, LeaseBusy) as error:
        fail(str(error), code=2)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    out.print(report.to_markdown().replace("`", ""))


@model_flags(TrainOptions, into="training", aliases={"image_size": ("--imgsz",), "time_budget_minutes": ("--time-budget",)})
def improve(
    dataset: DatasetArg,
    config: ConfigOpt = None,
    training: TrainOptions | None = None,  # type: ignore[valid-type]
    base: BaseOpt = None,
    budget: Annotated[int | None, typer.Option(help="At most this many images in the next review batch.")] = 50,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """The bootstrap loop (runs the Prefect flow `improve`): train, and when the new version is
    better, re-annotate what no person decided, re-triage, queue the next batch."""
    from bootstrap.training import TrainingError

    pipeline_config(config, dataset, train=training)
    database_or_exit()
    _quiet(verbose)
    from flows.improve import improve as improve_flow

    try:
        result = _run_quietly(verbose, as_json, lambda: improve_flow(
            dataset=dataset, config_path=str(config) if config else None, training=training,
            base=base, review_budget=budget))
    except (TrainingError, LeaseBusy) as error:
        fail(str(error), code=2)
    if as_json:
        print(json.dumps(result))
        return
    out.print(result["training"]["decision"], soft_wrap=True)
    if result["stopped_early"]:
        out.print("stopped early: nothing re-annotated, the current detector stays", soft_wrap=True)
    else:
        done = result["reannotated"]
        out.print(f"re-annotated {done['images']} images with {done['model']}; {result['queued']} queued for review",
                  soft_wrap=True)
