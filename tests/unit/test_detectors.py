"""Where weights come from, and the detector registry (no model is loaded)."""

import numpy as np
import pytest

from bootstrap import detectors
from bootstrap.config import DetectorConfig
from bootstrap.detections import Detections, Detector, DetectorError
from bootstrap.detectors import load_detector
from bootstrap.yolo import MODELS_ENV, resolve_weights


def test_weights_found_in_models_folder(tmp_path, monkeypatch):
    (tmp_path / "mine.pt").write_bytes(b"x")
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    assert resolve_weights("mine.pt") == str(tmp_path / "mine.pt")
    # A name not in the folder is left to ultralytics (download), a missing path is an error.
    assert resolve_weights("yolo11n.pt") == "yolo11n.pt"
    with pytest.raises(DetectorError, match="no file 'models/nope.pt'"):
        resolve_weights("models/nope.pt")


class _FakeDetector:
    """Two classes, no boxes: enough to see which backend was loaded."""

    class_names = ("a", "b")

    def __init__(self, config: DetectorConfig):
        self.name = config.model

    def predict(self, images):
        return [Detections.empty((im.shape[1], im.shape[0])) for im in images]


def test_registered_scheme_loads_its_backend(monkeypatch):
    monkeypatch.setattr(detectors, "_BACKENDS", {})
    detectors.register_detector("fake:", _FakeDetector)
    detectors.register_detector("fake:", _FakeDetector)  # the same factory again: a no-op
    detector = load_detector(DetectorConfig(model="fake:registry-test"))
    assert isinstance(detector, _FakeDetector) and detector.name == "fake:registry-test"
    assert isinstance(detector, Detector)
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
    monkeypatch.setattr(detectors, "_BACKENDS", {"taken:": lambda config: None})
    with pytest.raises(ValueError, match=message):
        detectors.register_detector(prefix, _FakeDetector)


def test_a_cpu_batch_is_split_by_image_shape_in_order_and_size():
    from bootstrap.yolo import batches_by_shape

    shapes = [(480, 640, 3), (640, 480, 3), (480, 640, 3), (427, 640, 3), (480, 640, 3),
              (640, 480, 3)]
    assert batches_by_shape(shapes, 16) == [[0, 2, 4], [1, 5], [3]]
    assert batches_by_shape(shapes, 2) == [[0, 2], [4], [1, 5], [3]]
    assert batches_by_shape([], 16) == []
