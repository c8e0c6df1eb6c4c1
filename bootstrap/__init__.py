"""bootstrap: turn raw image folders into labelled object-detection datasets."""

import os

# Ultralytics pip-installs missing optional packages at run time by default; a pipeline must
# not change its own environment mid-run (and offline that hangs). Users can still opt in.
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
# The bundled mongod (6.0) is the oldest major FiftyOne supports, and FiftyOne warns about it on
# every start; keep its version check for a user's own database (FIFTYONE_DATABASE_URI).
if "FIFTYONE_DATABASE_URI" not in os.environ:
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
# Private by default (each overridable by setting the variable): an offline pipeline has nowhere
# to send usage analytics. Prefect's server telemetry (the ephemeral API of the CLI and flows;
# `make server` sets the same) also races its SQLite database at start-up ("database is
# locked"). FiftyOne's App would ask for analytics cookies on first visit and report to Google
# Analytics; with do-not-track it does neither.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
# FiftyOne draws a progress bar for every bulk call; ours are per stage (see bootstrap.progress).
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Without a server, Prefect starts an ephemeral one per command: migrations plus importing
# installed collections (prefect-dask pulls in distributed, ~4 s) take ~20 s on 2 busy cores,
# Prefect's default limit. Waiting longer beats failing the command.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

__version__ = "0.1.0"
