"""What several tests use: where the real images and weights are, skips when they are missing,
small datasets built by hand, and the reviewer's part on a paused flow run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bootstrap.detections import Detections
from bootstrap.sources import content_hash
from bootstrap.store import NewImage

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout; BOOTSTRAP_SHARED for a checkout elsewhere (a git worktree).
SHARED = Path(os.environ.get("BOOTSTRAP_SHARED") or ROOT.parent / "shared")
COCO = SHARED / "data" / "coco128-train"
MODELS = SHARED / "models"
#: One model, one pass (configs/single-model.yaml): tests of mechanics use it so that they do not
#: depend on, or pay for, the default policy's four inference passes.
PLAIN_CONFIG = str(ROOT / "configs" / "single-model.yaml")


def _weights_available() -> bool:
    # conftest.py sets BOOTSTRAP_MODELS to MODELS when unset, possibly after this module loads.
    folder = os.environ.get("BOOTSTRAP_MODELS", str(MODELS))
    return (Path(folder) / "yolov8n.pt").is_file()


needs_coco = pytest.mark.skipif(
    not (COCO / "images").is_dir(), reason=f"real test images not found at {COCO}"
)
needs_model = pytest.mark.skipif(
    not _weights_available(),
    reason="yolov8n.pt not found: set BOOTSTRAP_MODELS to a folder holding it (../shared/models)",
)


def new_image(i: int, digest: str | None = None) -> NewImage:
    """A made-up discovered file number ``i`` (no bytes on disk), for store tests."""
    return NewImage(f"/data/img{i}.jpg", digest or f"{i:064x}", 100 + i, 1_000 + i)


def car_detections(n: int, image_wh: tuple[int, int] = (100, 200)) -> Detections:
    """``n`` hand-made ``car`` boxes with scores spread from 0.1 to 0.95."""
    scores = np.linspace(0.1, 0.95, n).astype(np.float32)
    return Detections(
        xyxy=np.tile(np.array([[10, 20, 60, 70]], np.float32), (n, 1)) + np.arange(n)[:, None],
        confidence=scores, class_id=np.zeros(n, np.int64),
        model_label=np.array(["car"] * n, object), label=np.array(["car"] * n, object),
        image_wh=image_wh,
    )


# -- small datasets built by hand (no model): real photos, chosen states and boxes ------------


def add_images(store, paths: list[Path]) -> None:
    """Register ``paths`` with their content hashes and upright sizes."""
    import fiftyone as fo

    store.add_pending(
        NewImage(str(p), content_hash(str(p)), p.stat().st_size, p.stat().st_mtime_ns) for p in paths
    )
    sizes = {}
    for p in paths:
        with Image.open(p) as image:
            sizes[str(p)] = fo.ImageMetadata(width=image.width, height=image.height)
    store.dataset.set_values("metadata", sizes, key_field="filepath")


def set_image(store, path: Path, state: str, boxes: list[dict], field: str = "labels", **fields) -> None:
    """Give one image a state and boxes (dicts of Detection attributes)."""
    import fiftyone as fo

    sample = store.dataset.one(fo.ViewField("filepath") == str(path))
    sample["state"] = state
    sample[field] = fo.Detections(detections=[fo.Detection(**box) for box in boxes])
    for key, value in fields.items():
        sample[key] = value
    sample.save()


# -- Prefect --------------------------------------------------------------------------------


def paused_flow_runs() -> list:
    """The flow runs paused (waiting for a person) on the current Prefect API."""
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
        return client.read_flow_runs(flow_run_filter=paused)


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


def wait_for_paused_run(dataset: str, timeout: float = 300.0, failed=lambda: False) -> str:
    """The id of the paused flow run whose ``dataset`` parameter is ``dataset`` (each test has
    a dataset of its own, so this is that test's run, never another's). Polls until it pauses,
    ``timeout`` passes or ``failed()`` says the run died."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not failed():
        mine = [str(run.id) for run in paused_flow_runs() if run.parameters.get("dataset") == dataset]
        if mine:
            return mine[0]
        time.sleep(1)
    raise AssertionError(f"no flow run on dataset '{dataset}' paused within {timeout:.0f} s")


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
