"""Fixtures of the fault-injection suite (tests/faults): real photos in a folder, commands that
are cleaned up, and the record of what each case showed the user (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from tests.helpers import COCO


@pytest.fixture
def photo_folder(tmp_path, coco_images):
    """``photo_folder(n)``: a folder of ``n`` real COCO photos (copies: each its own bytes)."""

    def make(n: int, name: str = "photos") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for path in coco_images[:n]:
            (folder / path.name).write_bytes(path.read_bytes())
        return folder

    return make


def last_line(text: str) -> str:
    """The last non-empty line of a command's output: what the user reads."""
    return next((line for line in reversed(text.splitlines()) if line.strip()), "")


@pytest.fixture(scope="session")
def _case_records():
    records: dict[str, dict] = {}
    yield records
    target = os.environ.get("BOOTSTRAP_FAULTS_REPORT")
    if target and records:
        path = Path(target)
        known = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps(known | records, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def report_case(_case_records):
    """``report_case(case, seen=..., lost=..., **facts)``: what a case showed the user and what
    was lost, as measured; written to ``$BOOTSTRAP_FAULTS_REPORT`` (JSON) when it is set, the
    source of the table in docs/reliability.md."""

    def record(case: str, seen: str, lost: str, **facts) -> None:
        _case_records[case] = {"seen": seen, "lost": lost, **facts}

    return record


@pytest.fixture(scope="session")
def labelled():
    """All 128 coco128 photos, triaged from ground-truth-derived predictions (no model):
    ``tests/faults/datasets.py``. Shared: tests that change it use a clone."""
    import fiftyone as fo

    from tests.faults.datasets import labelled_dataset

    if not (COCO / "images").is_dir():
        pytest.skip(f"real test images not found at {COCO}")
    name = f"test-faults-{uuid.uuid4().hex[:8]}"
    store = labelled_dataset(name, sorted((COCO / "images").glob("*.jpg")))
    yield store
    fo.delete_dataset(name)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes: compared before and after a fault."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
