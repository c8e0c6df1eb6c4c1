"""Shared fixtures: real images from ../shared, a real FiftyOne database of the tests' own, and
a real (temporary) Prefect API. Helpers that tests import are in ``tests/helpers.py``.

Layers: ``tests/unit`` imports neither FiftyOne nor Prefect (``make test-fast``, seconds);
``tests/integration`` uses the real model, database, flows and servers.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from bootstrap.environment import apply_defaults
from tests.helpers import COCO, MODELS

if MODELS.is_dir():
    os.environ.setdefault("BOOTSTRAP_MODELS", str(MODELS))
# Tests get a database of their own so they never touch a user's datasets. A real external
# MongoDB (FIFTYONE_DATABASE_URI) is used as it is.
if "FIFTYONE_DATABASE_URI" not in os.environ:
    os.environ.setdefault(
        "FIFTYONE_DATABASE_DIR", str(Path(tempfile.gettempdir()) / "bootstrap-tests-fiftyone")
    )
apply_defaults()


@pytest.fixture(scope="session")
def coco_images() -> list[Path]:
    if not (COCO / "images").is_dir():
        pytest.skip(f"real test images not found at {COCO}")
    return sorted((COCO / "images").glob("*.jpg"))


@pytest.fixture
def image_folder(tmp_path: Path, coco_images: list[Path]) -> Path:
    """A folder with six real COCO photos (symlinked copies would share content: copy)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for path in coco_images[:6]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.fixture
def dataset_name():
    """A unique dataset name, deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)


@pytest.fixture(scope="session")
def prefect_api():
    """A real, temporary Prefect API for flow runs (one per test session)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real ``prefect server start`` on a free loopback port (as ``make server``), for tests
    that need one outside this process: Prefect's CLI, served deployments, the UI."""
    from tests.prefect_server import start

    try:
        server = start(tmp_path_factory.mktemp("prefect-home"))
    except RuntimeError as error:
        pytest.fail(str(error))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prefect_homes(tmp_path_factory):
    """Prefect homes reused by a module's commands (one command at a time each): the ephemeral
    API's database is migrated once per home, not once per command."""
    return tmp_path_factory.mktemp("prefect-homes")


@pytest.fixture
def commands():
    """Commands (``tests.integration.processes.Command``) a test starts; whatever is left of
    them is killed after it."""
    started: list = []
    yield started
    for command in started:
        command.kill_group()
