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
    plain = YOLO(resolve_weights("yolov8n.pt")).predict(paths, conf=0.1, imgsz=640, verbose=False)
    assert sum(len(d) for d in ours) > 20
    for mine, theirs in zip(ours, plain, strict=True):
        assert len(mine) == len(theirs.boxes)
        order_a = np.lexsort(mine.xyxy.T)
        order_b = np.lexsort(theirs.boxes.xyxy.numpy().T)
        assert np.allclose(mine.xyxy[order_a], theirs.boxes.xyxy.numpy()[order_b], atol=1.0)
        assert np.allclose(mine.confidence[order_a], theirs.boxes.conf.numpy()[order_b], atol=0.01)
        assert mine.image_wh == (theirs.orig_shape[1], theirs.orig_shape[0])
