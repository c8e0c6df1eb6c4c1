"""What every command shares: the consoles, failing with a message, opening a dataset, and
reading the config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from bootstrap.config import ConfigError, PipelineConfig, TriageConfig, load_pipeline_config

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Pipeline YAML (default: configs/default.yaml).")
]
DatasetArg = Annotated[str, typer.Argument(help="Dataset name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def column_table(title: str, columns: tuple[str, ...]):
    """A rich table titled ``title`` with these column headers (rows added by the caller)."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    return table


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (2: bad usage or input)."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def database_or_exit() -> None:
    """Exit at once, saying why and how to recover, when the bundled database cannot start."""
    from bootstrap.doctor import DatabaseWedged, check_database_not_wedged

    try:
        check_database_not_wedged()
    except DatabaseWedged as error:
        fail(str(error))


def open_existing(dataset: str):
    """The dataset's ``ImageStore``, or exit naming the datasets there are."""
    from bootstrap.store import ImageStore, StoreError

    try:
        return ImageStore.open_existing(dataset)
    except StoreError as error:
        fail(str(error))


def pipeline_config(config: Path | None, dataset: str, **overrides) -> PipelineConfig:
    """The validated pipeline config for ``dataset``, or exit with what is wrong."""
    try:
        return load_pipeline_config(str(config) if config else None, dataset=dataset, **overrides)
    except ConfigError as error:
        fail(f"invalid configuration:\n{error}", code=2)


def triage_config(
    config: Path | None, dataset: str, accept: float | None, reject: float | None
) -> TriageConfig:
    """The config's triage thresholds with ``--accept``/``--reject`` over them, validated."""
    from bootstrap.config import validate_config

    base = pipeline_config(config, dataset)
    given = {k: v for k, v in (("accept", accept), ("reject", reject)) if v is not None}
    try:
        return validate_config({"dataset": dataset, "triage": base.triage.model_dump() | given}).triage
    except ConfigError as error:
        fail(f"invalid thresholds:\n{error}", code=2)


def launch_app(view, port: int) -> None:
    """Serve the FiftyOne App on ``view`` (a dataset or view) at 127.0.0.1:``port`` until Ctrl+C."""
    import fiftyone as fo

    session = fo.launch_app(view, address="127.0.0.1", port=port, auto=False)
    out.print(f"FiftyOne App on [bold]http://127.0.0.1:{port}[/] (Ctrl+C to stop)")
    session.wait(-1)
