"""The real YOLO model on real COCO photos."""

import numpy as np
import pytest

from bootstrap.config import DetectorConfig
from bootstrap.decode import decode_image
from bootstrap.detect import MODELS_ENV, DetectorError, load_detector, resolve_weights
from tests.conftest import needs_model


def test_weights_found_in_models_folder(tmp_path, monkeypatch):
    (tmp_path / "mine.pt").write_bytes(b"x")
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    assert resolve_weights("mine.pt") == str(tmp_path / "mine.pt")
    # A name not in the folder is left to ultralytics (download), a missing path is an error.
    assert resolve_weights("yolo11n.pt") == "yolo11n.pt"
    with pytest.raises(DetectorError, match="no file 'models/nope.pt'"):
        resolve_weights("models/nope.pt")


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


class _FakeDetector:
    """Two classes, no boxes: enough to see which backend was loaded."""

    class_names = ("a", "b")

    def __init__(self, config: DetectorConfig):
        self.name = config.model

    def predict(self, images):
        from bootstrap.detections import Detections

        return [Detections.empty((im.shape[1], im.shape[0])) for im in images]


def test_registered_scheme_loads_its_backend(monkeypatch):
    from bootstrap import detect

    monkeypatch.setattr(detect, "_BACKENDS", {})
    detect.register_detector("fake:", _FakeDetector)
    detect.register_detector("fake:", _FakeDetector)  # the same factory again: a no-op
    detector = load_detector(DetectorConfig(model="fake:registry-test"))
    assert isinstance(detector, _FakeDetector) and detector.name == "fake:registry-test"
    assert isinstance(detector, detect.Detector)
    assert len(detector.predict([np.zeros((4, 6, 3), np.uint8)])) == 1
    # Names outside the scheme still go to Ultralytics (and its clear error for a missing file).
    with pytest.raises(DetectorError, match="no file 'models/other.pt'"):
        load_detector(DetectorConfig(model="models/other.pt"))


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("fake", "must be a lowercase scheme like 'standin:'"),
        ("Fake:", "must be a lowercase scheme"),
        ("", "must be a lowercase scheme"),
        ("taken:", "registered to another factory already"),
    ],
)
def test_bad_detector_registrations_are_refused(monkeypatch, prefix, message):
    from bootstrap import detect

    monkeypatch.setattr(detect, "_BACKENDS", {"taken:": lambda config: None})
    with pytest.raises(ValueError, match=message):
        detect.register_detector(prefix, _FakeDetector)
