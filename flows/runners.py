"""Where the detection tasks of a flow run: in this process, or on a Dask cluster.

``task_runner`` is a flow parameter (a plain string, so the Prefect UI shows a text field):

* ``local``: one chunk after another in the flow's own process (the default);
* ``dask`` or ``dask:N``: a Dask ``LocalCluster`` of N worker processes (default 2) on this
  machine, started for the run and stopped after it;
* ``tcp://host:8786`` (or ``tls://``): an existing Dask scheduler, for several machines.
"""

from __future__ import annotations

import re

DEFAULT_DASK_WORKERS = 2
_DASK_LOCAL = re.compile(r"^dask(?::(\d+))?$")
_SCHEDULER_ADDRESS = re.compile(r"^(tcp|tls)://[^\s/:]+:\d+$")


class TaskRunnerError(ValueError):
    """A ``task_runner`` value that names no runner."""


def check_task_runner(spec: str) -> str:
    """Return ``spec`` if it names a runner; raise ``TaskRunnerError`` saying what is valid."""
    if spec == "local" or _DASK_LOCAL.fullmatch(spec) or _SCHEDULER_ADDRESS.fullmatch(spec):
        if (match := _DASK_LOCAL.fullmatch(spec)) and match.group(1) and int(match.group(1)) < 1:
            raise TaskRunnerError(f"task_runner: '{spec}' asks for no workers; use dask:1 or more")
        return spec
    raise TaskRunnerError(
        f"task_runner: '{spec}' is not a runner; use 'local', 'dask', 'dask:N' (N local worker "
        "processes) or a Dask scheduler address like 'tcp://host:8786'"
    )


def dask_task_runner(spec: str):
    """The ``DaskTaskRunner`` for a ``dask``, ``dask:N`` or scheduler-address ``spec``.

    One thread per worker: each worker process holds one model (``load_detector`` caches it
    per process) and runs one chunk at a time, so N workers mean N models in parallel.
    """
    from prefect_dask import DaskTaskRunner  # heavy (distributed): load on use

    check_task_runner(spec)
    if match := _DASK_LOCAL.fullmatch(spec):
        workers = int(match.group(1) or DEFAULT_DASK_WORKERS)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            # Workers are processes (the GIL and torch's state are per process); they inherit
            # this process's environment, so they reach the same FiftyOne database and Prefect API.
            cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                            "dashboard_address": None},
        )
    if spec == "local":
        raise TaskRunnerError("task_runner: 'local' runs in the flow's process, not on Dask")
    return DaskTaskRunner(address=spec)
