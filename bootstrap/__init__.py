"""bootstrap: turn raw image folders into labelled object-detection datasets."""

import os

# Ultralytics pip-installs missing optional packages at run time by default; a pipeline must
# not change its own environment mid-run (and offline that hangs). Users can still opt in.
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

__version__ = "0.1.0"
