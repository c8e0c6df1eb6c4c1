"""The real YOLO model on real COCO photos."""

import numpy as np
import pytest

from bootstrap.config import DetectorConfig
from bootstrap.decode import decode_image
from bootstrap.detections import DetectorError
from bootstrap.detectors import load_detector
from bootstrap.yolo import MODELS_ENV, resolve_weights
from tests.helpers import needs_model


def test_offline_missing_weights_error_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    with pytest.raises(DetectorError, match=f"set {MODELS_ENV} to a folder holding 'yolov9t.pt'"):
        load_detector(DetectorConfig(model="yolov9t.pt"))


@needs_model
def test_boxes_equal_plain_ultralytics(coco_images):
    from ultralytics import YOLO

    paths = [str(p) for p in coco_images[:8]]
    config = DetectorConfig(model="yolov8n.pt", min_confidence=0.1, batch_size=4)
    ours = load_detector(config).predict([decode_image(p).pixels for p in paths])
    # One image per call: each in its own smallest rectangle, as bootstrap runs a CPU (a list
    # of mixed shapes is padded to the square by Ultralytics, and its boxes differ slightly).
    model = YOLO(resolve_weights("yolov8n.pt"))
    plain = [model.predict(p, conf=0.1, imgsz=640, verbose=False)[0] for p in paths]
    assert sum(len(d) for d in ours) > 20
    for mine, theirs in zip(ours, plain, strict=True):
        assert len(mine) == len(theirs.boxes)
        order_a = np.lexsort(mine.xyxy.T)
        order_b = np.lexsort(theirs.boxes.xyxy.numpy().T)
        assert np.allclose(mine.xyxy[order_a], theirs.boxes.xyxy.numpy()[order_b], atol=1.0)
        assert np.allclose(mine.confidence[order_a], theirs.boxes.conf.numpy()[order_b], atol=0.01)
        assert mine.image_wh == (theirs.orig_shape[1], theirs.orig_shape[0])


def _matched(reference, other, min_confidence=0.25, min_iou=0.9):
    """(boxes of ``reference`` at ``min_confidence`` or more, those ``other`` has too: same
    class, IoU >= ``min_iou``, and the confidence differences of those)."""
    from bootstrap.boxes import pairwise_iou, xyxy_to_xywh

    total, matched, differences = 0, 0, []
    for a, b in zip(reference, other, strict=True):
        sure = a[a.confidence >= min_confidence]
        total += len(sure)
        if not len(sure) or not len(b):
            continue
        iou = pairwise_iou(xyxy_to_xywh(sure.xyxy), xyxy_to_xywh(b.xyxy))
        iou = np.where(sure.label[:, None] == b.label[None, :], iou, 0.0)
        found = iou.max(axis=1) >= min_iou
        matched += int(found.sum())
        differences += list(np.abs(sure.confidence - b.confidence[iou.argmax(axis=1)])[found])
    return total, matched, np.array(differences)


@needs_model
def test_large_jpegs_decoded_reduced_give_the_boxes_of_a_full_decode(tmp_path, coco_images):
    """Draft mode (``decode_image(..., max_side)``) against a full decode, real YOLO: photos
    enlarged to a 4000-pixel side, decoded at 1/4 (1000 pixels, still above 640)."""
    from PIL import Image

    from bootstrap.proposals import input_side

    paths = []
    for i, source in enumerate(coco_images[:12]):
        with Image.open(source) as image:
            factor = 4000 / max(image.size)
            large = image.convert("RGB").resize(
                (round(image.width * factor), round(image.height * factor)), Image.LANCZOS)
        paths.append(tmp_path / f"large-{i}.jpg")
        large.save(paths[-1], quality=92)
    config = DetectorConfig(model="yolov8n.pt", batch_size=4)
    detector = load_detector(config)
    full = [decode_image(str(p)) for p in paths]
    reduced = [decode_image(str(p), input_side(config)) for p in paths]
    assert {d.scale for d in reduced} == {4} and all(d.scale == 1 for d in full)
    assert [d.image_wh for d in reduced] == [d.image_wh for d in full]
    boxes_full = detector.predict([d.pixels for d in full])
    boxes_reduced = [found.on_image(d.scale, d.image_wh)
                     for found, d in zip(detector.predict([d.pixels for d in reduced]), reduced, strict=True)]
    assert [b.image_wh for b in boxes_reduced] == [d.image_wh for d in full]
    counts = (sum(map(len, boxes_full)), sum(map(len, boxes_reduced)))
    total, matched, differences = _matched(boxes_full, boxes_reduced)
    back_total, back_matched, _ = _matched(boxes_reduced, boxes_full)
    print(f"boxes {counts}; sure boxes matched {matched}/{total}, back {back_matched}/{back_total}; "
          f"confidence difference mean {differences.mean():.3f} max {differences.max():.3f}")
    assert total > 20
    assert abs(counts[0] - counts[1]) <= 0.1 * counts[0]
    # Not equal: libjpeg's DCT scaling averages 4x4 pixels, Ultralytics' bilinear resize of the
    # full image by 6x skips most of them; the same objects are found at the same places.
    assert matched >= 0.9 * total and back_matched >= 0.9 * back_total
    assert differences.mean() < 0.05


@needs_model
def test_photos_no_larger_than_the_model_are_decoded_in_full(coco_images):
    for path in coco_images[:8]:
        assert decode_image(str(path), 640).scale == 1
        assert np.array_equal(decode_image(str(path), 640).pixels, decode_image(str(path)).pixels)


@needs_model
def test_a_gpu_batch_that_runs_out_of_memory_is_halved_until_it_fits(monkeypatch, caplog):
    """No GPU here: the real detector with a stand-in for its GPU call that runs out of memory
    above 4 images (the real call is tested on the CPU above)."""
    import torch

    from bootstrap.detections import Detections
    from bootstrap.yolo import UltralyticsDetector

    detector = UltralyticsDetector(DetectorConfig(runtime="torch", device="cpu", batch_size=16))
    detector._device = "cuda:0"
    calls: list[int] = []

    def on_a_small_gpu(model, images):
        calls.append(len(images))
        if len(images) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [Detections.empty((image.shape[1], image.shape[0])) for image in images]

    monkeypatch.setattr(detector, "_predict", on_a_small_gpu)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    images = [np.zeros((8, 8 + i, 3), np.uint8) for i in range(16)]  # widths tell them apart
    found = detector.predict(images)
    assert [d.image_wh[0] for d in found] == [8 + i for i in range(16)]  # all, in order
    assert calls == [16, 8, 4, 4, 4, 4]
    assert "16 images per call ran out of GPU memory" in caplog.text
    calls.clear()
    assert len(detector.predict(images[:10])) == 10
    assert calls == [4, 4, 2]  # the size that fitted is kept
    monkeypatch.setattr(detector, "_predict", lambda model, images: (_ for _ in ()).throw(
        torch.cuda.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(DetectorError, match="does not fit in the memory of cuda:0"):
        detector.predict(images[:1])
