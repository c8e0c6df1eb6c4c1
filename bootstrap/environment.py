"""Environment defaults for the applications built on the library: the CLI, the Prefect flows,
the tests and the benchmarks call ``apply_defaults()`` before FiftyOne or Prefect is imported.

The library itself changes nothing on import; a notebook that wants the same behaviour calls
``apply_defaults()`` first. Every default is ``setdefault``: a value the user set wins.
"""

from __future__ import annotations

import os

DEFAULTS = {
    # Private by default (a user's own setting wins): an offline pipeline has nowhere to send
    # usage analytics. Prefect's server telemetry (the ephemeral API of the CLI and flows; `make
    # server` sets the same) also races its SQLite database at start-up ("database is locked").
    # FiftyOne's App would ask for analytics cookies on first visit and report usage; with
    # do-not-track it does neither.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "FIFTYONE_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "1",
    # FiftyOne draws a progress bar for every bulk call; ours are per stage (bootstrap.progress).
    "FIFTYONE_SHOW_PROGRESS_BARS": "false",
    # Without a server, Prefect starts an ephemeral one per command: migrations plus importing
    # installed collections take longer than Prefect's 20 s default on 2 busy cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    # Ultralytics pip-installs missing optional packages at run time unless told not to.
    "YOLO_AUTOINSTALL": "false",
    # Ultralytics sends usage events of predict/train/val runs when it finds the internet
    # (settings `sync`); offline mode turns them off (weights downloads still work).
    "YOLO_OFFLINE": "true",
}


def apply_defaults() -> None:
    """Set the defaults above where the environment does not set them already."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    # The bundled mongod (6.0) is the oldest major FiftyOne supports, and FiftyOne warns about
    # it on every start (on stdout); keep its version check for a user's own database.
    if "FIFTYONE_DATABASE_URI" not in os.environ:
        os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
