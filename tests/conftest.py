"""Shared fixtures: real images from ../shared, the real model, a real FiftyOne database, and a
real (temporary) Prefect API."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
COCO = SHARED / "data" / "coco128-train"
MODELS = SHARED / "models"

if MODELS.is_dir():
    os.environ.setdefault("BOOTSTRAP_MODELS", str(MODELS))
# Tests get a database of their own so they never touch a user's datasets. A real external
# MongoDB (FIFTYONE_DATABASE_URI) is used as it is.
if "FIFTYONE_DATABASE_URI" not in os.environ:
    os.environ.setdefault(
        "FIFTYONE_DATABASE_DIR", str(Path(tempfile.gettempdir()) / "bootstrap-tests-fiftyone")
    )

import bootstrap  # noqa: E402,F401  (sets the offline-friendly environment defaults)


def _weights_available() -> bool:
    folder = os.environ.get("BOOTSTRAP_MODELS")
    return bool(folder) and (Path(folder) / "yolov8n.pt").is_file()


needs_coco = pytest.mark.skipif(
    not (COCO / "images").is_dir(), reason=f"real test images not found at {COCO}"
)
needs_model = pytest.mark.skipif(
    not _weights_available(),
    reason="yolov8n.pt not found: set BOOTSTRAP_MODELS to a folder holding it (../shared/models)",
)


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


def paused_flow_run_ids() -> list[str]:
    """Ids of the flow runs paused (waiting for a person) on the current Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    with get_client(sync_client=True) as client:
        return [str(run.id) for run in client.read_flow_runs(flow_run_filter=paused)]


def latest_artifacts(*keys: str) -> dict:
    """``{key: the newest artifact with that key}`` on the current Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys))),
            sort=ArtifactSort.CREATED_DESC,
        )
    latest: dict = {}
    for artifact in found:
        latest.setdefault(artifact.key, artifact)
    return latest


def confirm_queue_and_resume(store, flow_run_id, reviewer: str = "ana") -> int:
    """Play the reviewer in the App on a paused run: confirm every queued image as it is
    (sample tag ``reviewed``), then resume the run with the form's input. Returns how many
    images were queued."""
    from prefect.flow_runs import resume_flow_run

    queued = store.dataset.load_saved_view("review-queue")
    for sample in queued:
        sample.tags.append("reviewed")
        sample.save()
    resume_flow_run(flow_run_id, run_input={"done": True, "reviewer": reviewer})
    return len(queued)
