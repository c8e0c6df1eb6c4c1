"""Exported runtimes (bootstrap.exported) against PyTorch on real photos, and their cache.

Exports go to a folder of this module's own (``BOOTSTRAP_EXPORTS``), made fresh once per session.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bootstrap.boxes import pairwise_iou, xyxy_to_xywh
from bootstrap.config import DetectorConfig
from bootstrap.decode import decode_image
from bootstrap.detections import Detections
from bootstrap.detectors import load_detector
from bootstrap.exported import EXPORTS_ENV, exported_model
from bootstrap.yolo import UltralyticsDetector, resolve_weights
from tests.helpers import needs_model

pytestmark = needs_model

# The tolerances of issue 13: what "the same boxes" means between runtimes.
COUNT_TOLERANCE = 0.01
MATCH_IOU = 0.9
MATCHED_AT_LEAST = 0.98
SCORED_ABOVE = 0.25
CONFIDENCE_TOLERANCE = 0.02


@pytest.fixture(scope="module", autouse=True)
def exports_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    previous = os.environ.get(EXPORTS_ENV)
    os.environ[EXPORTS_ENV] = str(folder)
    load_detector.cache_clear()
    yield folder
    load_detector.cache_clear()
    if previous is None:
        os.environ.pop(EXPORTS_ENV)
    else:
        os.environ[EXPORTS_ENV] = previous


@pytest.fixture(scope="module")
def photos(coco_images) -> list[np.ndarray]:
    return [decode_image(p).pixels for p in coco_images[:16]]


@pytest.fixture(scope="module")
def same_shaped(coco_images) -> list[np.ndarray]:
    """16 photos of one shape (640x480, as from one camera): PyTorch letterboxes such a batch
    into a rectangle, not the square, and the exports must do the same."""
    shaped = [image for image in (decode_image(p).pixels for p in coco_images)
              if image.shape[:2] == (480, 640)][:16]
    assert len(shaped) == 16
    return shaped


def _torch(images) -> list[Detections]:
    # batch 6: the last of three batches is short (4 images), on every runtime
    return UltralyticsDetector(DetectorConfig(runtime="torch", batch_size=6)).predict(images)


@pytest.fixture(scope="module")
def torch_boxes(photos) -> list[Detections]:
    return _torch(photos)


def agreement(reference: list[Detections], other: list[Detections]) -> dict[str, float]:
    """How far ``other`` gives ``reference``'s boxes: total counts, the share of reference boxes
    scored above SCORED_ABOVE that have a same-class box at IoU >= MATCH_IOU, and the largest
    confidence difference of those matches."""
    matched = considered = 0
    worst = 0.0
    for ref, oth in zip(reference, other, strict=True):
        keep = ref.confidence > SCORED_ABOVE
        if not keep.any():
            continue
        iou = (pairwise_iou(xyxy_to_xywh(ref.xyxy[keep]), xyxy_to_xywh(oth.xyxy))
               if len(oth) else np.zeros((keep.sum(), 0)))
        same = ref.class_id[keep][:, None] == oth.class_id[None, :]
        iou = np.where(same, iou, 0.0)
        taken: set[int] = set()
        for row in np.argsort(-ref.confidence[keep]):  # surest first, each box matched once
            candidates = [j for j in np.argsort(-iou[row]) if j not in taken and iou[row, j] >= MATCH_IOU]
            considered += 1
            if candidates:
                taken.add(candidates[0])
                matched += 1
                worst = max(worst, abs(float(ref.confidence[keep][row] - oth.confidence[candidates[0]])))
    total_ref, total_oth = sum(map(len, reference)), sum(map(len, other))
    return {
        "count_difference": abs(total_oth - total_ref) / total_ref,
        "matched": matched / considered,
        "max_confidence_difference": worst,
        "boxes": total_ref,
        "considered": considered,
    }


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_exported_runtime_gives_the_same_boxes(runtime, photos, torch_boxes, exports_dir):
    detector = UltralyticsDetector(DetectorConfig(runtime=runtime, batch_size=6))
    assert detector.runtime == runtime
    boxes = detector.predict(photos)
    figures = agreement(torch_boxes, boxes)
    print(runtime, figures)
    assert figures["boxes"] > 100 and figures["considered"] > 40  # enough to mean something
    assert figures["count_difference"] <= COUNT_TOLERANCE
    assert figures["matched"] >= MATCHED_AT_LEAST
    assert figures["max_confidence_difference"] <= CONFIDENCE_TOLERANCE
    assert [d.image_wh for d in boxes] == [d.image_wh for d in torch_boxes]
    if runtime == "openvino":  # float32 also on CPUs where OpenVINO would pick bfloat16
        import openvino

        compiled = detector._model.predictor.model.backend.ov_compiled_model
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    assert detector.class_names == UltralyticsDetector(DetectorConfig(runtime="torch")).class_names


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_exported_runtime_gives_the_same_boxes_on_same_shaped_photos(runtime, same_shaped):
    boxes = UltralyticsDetector(DetectorConfig(runtime=runtime, batch_size=6)).predict(same_shaped)
    figures = agreement(_torch(same_shaped), boxes)
    print(runtime, "same-shaped", figures)
    assert figures["considered"] > 40
    assert figures["count_difference"] <= COUNT_TOLERANCE
    assert figures["matched"] >= MATCHED_AT_LEAST
    assert figures["max_confidence_difference"] <= CONFIDENCE_TOLERANCE


def _threads_of(model, runtime: str) -> int:
    backend = model.predictor.model.backend
    if runtime == "onnx":
        return backend.session.get_session_options().intra_op_num_threads
    return backend.ov_compiled_model.get_property("INFERENCE_NUM_THREADS")


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_images_side_by_side_give_the_boxes_of_one_at_a_time(runtime, photos):
    one = UltralyticsDetector(DetectorConfig(runtime=runtime, batch_size=6, cpu_streams=1))
    three = UltralyticsDetector(DetectorConfig(runtime=runtime, batch_size=6, cpu_streams=3))
    assert one._streams == [] and len(three._streams) == 2
    # Side by side, each model's runtime computes on one thread; alone, on all of them.
    assert {_threads_of(m, runtime) for m in (three._model, *three._streams)} == {1}
    assert _threads_of(one._model, runtime) != 1
    expected, found = one.predict(photos), three.predict(photos)
    assert sum(map(len, expected)) > 100
    for a, b in zip(expected, found, strict=True):  # the same network on the same input
        assert a.image_wh == b.image_wh and list(a.class_id) == list(b.class_id)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.01)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    if runtime == "openvino":
        import openvino

        compiled = three._streams[0].predictor.model.backend.ov_compiled_model
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32


def test_pytorch_runs_no_streams():
    assert UltralyticsDetector(DetectorConfig(runtime="torch", cpu_streams=4))._streams == []


def test_auto_is_onnx_runtime_on_the_cpu():
    assert UltralyticsDetector(DetectorConfig(device="cpu")).runtime == "onnx"


def test_an_export_is_made_once_and_a_changed_weights_file_is_exported_again(tmp_path, photos):
    weights = tmp_path / "mine.pt"
    shutil.copyfile(resolve_weights("yolov8n.pt"), weights)
    first = exported_model(weights, "onnx", 320, 1)
    made = first.stat().st_mtime_ns
    assert exported_model(weights, "onnx", 320, 1) == first and first.stat().st_mtime_ns == made
    # Another size is another export (the `large` view has its own).
    assert exported_model(weights, "onnx", 384, 1) != first
    # Same path, other bytes (another model): never served from the stale export.
    shutil.copyfile(resolve_weights("yolo26n.pt"), weights)
    second = exported_model(weights, "onnx", 320, 1)
    assert second != first and first.exists()
    config = DetectorConfig(model=str(weights), runtime="onnx", image_size=320)
    direct = UltralyticsDetector(config.model_copy(update={"runtime": "torch"})).predict(photos[:4])
    exported = UltralyticsDetector(config).predict(photos[:4])
    assert agreement(direct, exported)["matched"] >= MATCHED_AT_LEAST
    assert not list(Path(os.environ[EXPORTS_ENV]).glob(".tmp-*"))  # nothing half-written left


def test_a_failed_export_falls_back_to_torch_with_a_warning(tmp_path, monkeypatch, caplog, photos,
                                                            torch_boxes):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the exports folder should be")
    monkeypatch.setenv(EXPORTS_ENV, str(blocker))
    with caplog.at_level(logging.WARNING, logger="bootstrap.yolo"):
        detector = UltralyticsDetector(DetectorConfig(runtime="openvino", batch_size=6))
    assert detector.runtime == "torch"
    assert "detector.runtime openvino: cannot write exports to" in caplog.text
    assert "running yolov8n.pt with PyTorch instead" in caplog.text
    boxes = detector.predict(photos)
    assert [len(d) for d in boxes] == [len(d) for d in torch_boxes]


def _export_in_a_process(weights: str, folder: str, queue) -> None:
    os.environ[EXPORTS_ENV] = folder
    queue.put(str(exported_model(weights, "onnx", 256, 1)))


def test_two_processes_exporting_at_once_share_one_whole_export(tmp_path):
    weights = tmp_path / "shared.pt"
    shutil.copyfile(resolve_weights("yolov8n.pt"), weights)
    folder = tmp_path / "exports"
    context = multiprocessing.get_context("spawn")  # as Dask's worker processes start
    queue = context.Queue()
    workers = [context.Process(target=_export_in_a_process, args=(str(weights), str(folder), queue))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    paths = {queue.get(timeout=300) for _ in workers}
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(paths) == 1 and Path(paths.pop()).is_file()
    entries = list(folder.iterdir())  # one key folder, no temporary one left
    assert len(entries) == 1 and entries[0].name.startswith("shared-")
    assert "-onnx-256px-b1-" in entries[0].name


def test_every_view_of_the_fused_detector_runs_exported(photos, exports_dir):
    from bootstrap.proposals import FusedDetector

    config = DetectorConfig(runtime="openvino", tta=("large", "tiles", "hflip"),
                            second_model="yolo26n.pt", image_size=320, batch_size=4)
    fused = load_detector(config)
    assert isinstance(fused, FusedDetector)
    runs = {run.name: run.detector for run in fused._runs}
    plain = [d for name, d in runs.items() if ":" not in name]
    assert {d.runtime for d in plain} == {"openvino"}
    assert {runs["yolov8n.pt:large"].runtime, runs["yolo26n.pt:large"].runtime} == {"openvino"}
    assert runs["yolov8n.pt:tiles"]._base is runs["yolov8n.pt"]
    # The large view has an export of its own, at its own size; so has the second model.
    names = sorted({p.name.split("-")[0] + "@" + p.name.split("-")[3] for p in exports_dir.iterdir()
                   if "openvino-320px" in p.name or "openvino-640px" in p.name})
    assert names == ["yolo26n@320px", "yolo26n@640px", "yolov8n@320px", "yolov8n@640px"]
    boxes = fused.predict(photos[:5])  # 5 images, batch 4: a short last batch in every view
    torch = load_detector(config.model_copy(update={"runtime": "torch"})).predict(photos[:5])
    assert agreement(torch, boxes)["matched"] >= 0.95
