"""Prefect flows: thin sequences of library calls (see ``bootstrap``)."""

import re


def artifact_key(prefix: str, dataset: str) -> str:
    """A Prefect artifact key for ``dataset``: keys allow only lowercase letters, digits, dashes."""
    return f"{prefix}-{re.sub(r'[^a-z0-9-]+', '-', dataset.lower())}".strip("-")
