"""``bootstrap doctor``: print what ``bootstrap.doctor`` finds (and fixes, with ``--fix``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import ConfigOpt, JsonOpt, out

_COLOUR = {"ok": "green", "warn": "yellow", "fail": "red"}


def doctor(
    fix: Annotated[
        bool, typer.Option(help="Stop a leftover mongod of ours, clear stale leases.")
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the database, leftover mongod processes, dataset leases, Prefect and weights."""
    from bootstrap.doctor import run_checks

    findings = run_checks(fix=fix, config_path=str(config) if config else None)
    if as_json:
        print(json.dumps([f.to_dict() for f in findings]))
    else:
        for f in findings:
            out.print(f"[{_COLOUR[f.status]}]{f.status:>4}[/] {f.check}: {f.message}", soft_wrap=True)
            if f.fix:
                out.print(f"     {'fixed' if f.fixed else 'fix'}: {f.fix}", soft_wrap=True)
    if any(f.status == "fail" for f in findings):
        raise typer.Exit(1)
