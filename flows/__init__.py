"""Prefect flows: thin sequences of library calls (see ``bootstrap``).

Importing the package applies the applications' environment defaults before Prefect and
FiftyOne are imported (``bootstrap.environment``).
"""

import re

from bootstrap.environment import apply_defaults

apply_defaults()


def artifact_key(prefix: str, dataset: str) -> str:
    """A Prefect artifact key for ``dataset``: keys allow only lowercase letters, digits, dashes."""
    return f"{prefix}-{re.sub(r'[^a-z0-9-]+', '-', dataset.lower())}".strip("-")
