"""Serve the deployments declared in ``prefect.yaml`` from this one process (``make serve``).

``prefect.serve`` needs no work pool or worker and works offline against ``make server``;
each flow run still executes in its own subprocess. The names, parameters and schedules come
from ``prefect.yaml``, so the file stays the one place where deployments are declared.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_deployments(path: Path = ROOT / "prefect.yaml") -> list:
    """``RunnerDeployment`` objects for every deployment in ``path``."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

    declared = yaml.safe_load(path.read_text())["deployments"]
    deployments = []
    for spec in declared:
        # Entrypoints are relative to the repository root, wherever serve was started from.
        flow = load_flow_from_entrypoint(str(ROOT / spec["entrypoint"]))
        schedules = [
            Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True))
            for s in spec.get("schedules") or []
        ]
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters") or {},
                schedules=schedules or None,
            )
        )
    return deployments


def main() -> None:
    from prefect import serve

    logging.basicConfig(level=logging.INFO)
    # Flow runs start in this process's working directory: relative sources in prefect.yaml
    # are then relative to the repository root.
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    serve(*load_deployments())


if __name__ == "__main__":
    main()
