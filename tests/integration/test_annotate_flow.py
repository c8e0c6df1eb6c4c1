"""Real Prefect flow runs of `annotate`: real yolov8n, real FiftyOne, real COCO photos."""

import shutil

import pytest

from bootstrap.store import ImageStore
from tests.helpers import PLAIN_CONFIG, latest_artifacts, needs_model

pytestmark = [needs_model, pytest.mark.usefixtures("prefect_api")]


def _run(folder, dataset, **kwargs):
    from flows.annotate import annotate

    return annotate(sources=[str(folder)], dataset=dataset, detector={"batch_size": 2},
                    **{"config_path": PLAIN_CONFIG} | kwargs)


def test_flow_annotates_records_failures_and_rerun_adds_nothing(image_folder, dataset_name):
    (image_folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (image_folder / "empty.png").write_bytes(b"")
    first = _run(image_folder, dataset_name)
    assert first["found"] == 8 and first["new"] == 8 and first["annotated"] == 8
    failed = dict(first["failed"])
    assert set(failed) == {str(image_folder / "corrupt.jpg"), str(image_folder / "empty.png")}
    assert "empty file" in failed[str(image_folder / "empty.png")]
    assert first["boxes"] > 10

    store = ImageStore(dataset_name)
    status = store.status()
    assert status["samples"] == 8 and status["failed"] == 2
    assert status["predictions"] == first["boxes"]
    # Annotate ends with triage: every decoded image has a triage state.
    triaged = ("auto_accepted", "needs_review", "empty")
    assert sum(status["states"][s] for s in triaged) == 6 and status["states"]["predicted"] == 0
    assert sum(first["routed"].values()) == 6

    second = _run(image_folder, dataset_name)
    assert second["new"] == 0 and second["known"] == 8 and second["annotated"] == 0
    assert ImageStore(dataset_name).status()["predictions"] == first["boxes"]


def test_interrupted_run_is_completed_by_the_next_without_duplicates(image_folder, dataset_name):
    partial = _run(image_folder, dataset_name, chunk_size=2, max_chunks=1)
    assert partial["annotated"] == 2
    store = ImageStore(dataset_name)
    assert store.count_pending() == 4  # registered, not yet detected

    resumed = _run(image_folder, dataset_name, chunk_size=2)
    assert resumed["new"] == 0 and resumed["annotated"] == 4
    status = ImageStore(dataset_name).status()
    assert status["samples"] == 6 and status["pending"] == 0
    assert len(set(store.dataset.values("content_hash"))) == 6
    # Predictions come from one run each, never appended twice.
    assert status["predictions"] == sum(
        len(s.predictions.detections) for s in store.dataset.select_fields("predictions")
    )


def test_renamed_and_copied_images_are_not_annotated_twice(image_folder, dataset_name):
    _run(image_folder, dataset_name)
    first = sorted(image_folder.glob("*.jpg"))[0]
    shutil.copy(first, image_folder / "copy-of-first.jpg")
    (image_folder / "sub").mkdir()
    first.rename(image_folder / "sub" / "renamed.jpg")
    again = _run(image_folder, dataset_name)
    assert again["found"] == 7 and again["new"] == 0 and again["annotated"] == 0
    assert len(ImageStore(dataset_name).dataset) == 6


def test_flow_publishes_summary_and_progress_artifacts(image_folder, dataset_name):
    _run(image_folder, dataset_name, max_chunks=1)
    summary_key, progress_key = (f"annotate-{k}-{dataset_name}" for k in ("summary", "progress"))
    found = latest_artifacts(summary_key, progress_key)
    assert set(found) == {summary_key, progress_key}
    summary, progress = found[summary_key], found[progress_key]
    assert summary.type == "markdown" and "images found | 6" in summary.data
    assert progress.type == "progress" and float(progress.data) == 100.0
