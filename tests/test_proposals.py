"""Fused proposals: weighted boxes fusion of test-time views and a second model."""

import numpy as np
import pytest

from bootstrap.config import DetectorConfig
from bootstrap.decode import decode_image
from bootstrap.detect import load_detector
from bootstrap.detections import Detections
from bootstrap.proposals import (
    BASE_FAMILY,
    MODEL_SUPPORT,
    SECOND_FAMILY,
    TTA_SUPPORT,
    View,
    fuse_views,
    mirror,
)
from tests.conftest import PLAIN_CONFIG, needs_model

NAMES = ("person", "car", "dog", "cat")


def _dets(*boxes):
    """Boxes as (label, score, x1, y1, x2, y2) on a 200x100 image."""
    labels = np.array([b[0] for b in boxes], dtype=object)
    return Detections(
        xyxy=np.array([b[2:] for b in boxes], dtype=np.float32).reshape(-1, 4),
        confidence=np.array([b[1] for b in boxes], dtype=np.float32),
        class_id=np.array([NAMES.index(b[0]) for b in boxes], dtype=np.int64),
        model_label=labels,
        label=labels.copy(),
        image_wh=(200, 100),
    )


def test_a_box_every_view_finds_keeps_its_score_and_gets_the_weighted_corners():
    fused = fuse_views(
        [View(BASE_FAMILY, _dets(("car", 0.9, 10, 10, 50, 50))),
         View(BASE_FAMILY, _dets(("car", 0.3, 14, 10, 54, 50)))],
        NAMES,
    )
    assert len(fused) == 1
    assert fused.confidence[0] == pytest.approx(0.6)  # (0.9 + 0.3) / 2 views
    assert fused.xyxy[0, 0] == pytest.approx((0.9 * 10 + 0.3 * 14) / 1.2)
    assert fused.extras[TTA_SUPPORT][0] == 1.0 and MODEL_SUPPORT not in fused.extras
    assert fused.class_id[0] == NAMES.index("car")


def test_a_box_one_view_misses_loses_half_its_score_and_its_support():
    fused = fuse_views(
        [View(BASE_FAMILY, _dets(("car", 0.9, 10, 10, 50, 50), ("dog", 0.8, 100, 10, 150, 90))),
         View(BASE_FAMILY, _dets(("car", 0.9, 10, 10, 50, 50)))],
        NAMES,
    )
    dog = list(fused.label).index("dog")
    assert fused.confidence[dog] == pytest.approx(0.4)
    assert fused.extras[TTA_SUPPORT][dog] == 0.5


def test_a_class_change_between_views_gives_two_half_supported_boxes():
    fused = fuse_views(
        [View(BASE_FAMILY, _dets(("dog", 0.6, 10, 10, 50, 50))),
         View(SECOND_FAMILY, _dets(("cat", 0.7, 10, 10, 50, 50)))],
        NAMES,
    )
    assert sorted(fused.label) == ["cat", "dog"]
    assert list(fused.extras[MODEL_SUPPORT]) == [0.5, 0.5]
    assert list(fused.label) == ["cat", "dog"]  # best first


def test_a_second_model_adds_the_object_the_first_missed():
    fused = fuse_views(
        [View(BASE_FAMILY, _dets(("car", 0.9, 10, 10, 50, 50))),
         View(BASE_FAMILY, _dets(("car", 0.8, 10, 10, 50, 50))),
         View(SECOND_FAMILY, _dets(("car", 0.9, 10, 10, 50, 50), ("person", 0.9, 120, 5, 160, 95)))],
        NAMES,
    )
    person = list(fused.label).index("person")
    assert fused.confidence[person] == pytest.approx(0.3)
    assert fused.extras[MODEL_SUPPORT][person] == 0.5 and fused.extras[TTA_SUPPORT][person] == 0.0
    assert fused.extras[MODEL_SUPPORT][1 - person] == 1.0 and fused.extras[TTA_SUPPORT][1 - person] == 1.0


def test_two_boxes_of_one_view_never_merge():
    fused = fuse_views([View(BASE_FAMILY, _dets(("car", 0.9, 10, 10, 50, 50), ("car", 0.5, 12, 10, 52, 50)))], NAMES)
    assert len(fused) == 2


def test_mirror_maps_boxes_back():
    flipped = mirror(_dets(("car", 0.9, 10, 20, 50, 60)))
    assert flipped.xyxy[0].tolist() == [150, 20, 190, 60]


@needs_model
def test_hflip_and_second_model_on_real_photos(coco_images):
    images = [decode_image(p).pixels for p in coco_images[:4]]
    plain = load_detector(DetectorConfig(min_confidence=0.05)).predict(images)
    fused_detector = load_detector(DetectorConfig(min_confidence=0.05, tta=("hflip",), second_model="yolo26n.pt"))
    assert fused_detector.name == "yolov8n.pt+hflip+yolo26n.pt"
    fused = fused_detector.predict(images)
    for one, many in zip(plain, fused, strict=True):
        assert set(many.extras) == {TTA_SUPPORT, MODEL_SUPPORT}
        confident = many.confidence >= 0.7
        # What all three views agree on is found with full support; the best plain boxes survive.
        assert (many.extras[TTA_SUPPORT][confident] == 1.0).all()
        assert (many.extras[MODEL_SUPPORT][confident] == 1.0).all()
        assert len(many) >= (one.confidence >= 0.5).sum()
        assert (many.xyxy[:, 2] <= many.image_wh[0] + 1).all() and (many.xyxy[:, 0] >= -1).all()


@needs_model
def test_fused_proposals_are_stored_and_triaged_with_their_support(image_folder, dataset_name):
    import fiftyone as fo

    from bootstrap.annotate import run_annotation
    from bootstrap.config import config_from_flags

    config = config_from_flags(PLAIN_CONFIG, dataset=dataset_name, sources=[str(image_folder)], tta=["hflip"])
    summary = run_annotation(config)
    assert summary.boxes > 0
    dataset = fo.load_dataset(dataset_name)
    assert set(dataset.distinct("prediction_model")) == {"yolov8n.pt+hflip"}
    shares = dataset.values("predictions.detections.tta_support", unwind=True)
    assert len(shares) == summary.boxes and set(shares) <= {0.5, 1.0}
    assert 0.5 in shares and 1.0 in shares  # some boxes only one view found, most both
    # Triage copied the support onto the working boxes and summed the disagreement per image.
    for sample in dataset.select_fields(["labels", "tta_disagreement", "state"]):
        kept = sample.labels.detections if sample.labels else []
        assert sample.tta_disagreement == pytest.approx(sum(1 - box.tta_support for box in kept), abs=1e-5)
        if sample.tta_disagreement >= config.triage.disagreement_at:
            assert sample.state == "needs_review"


@needs_model
def test_a_missing_second_model_is_left_out_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="bootstrap.proposals"):
        detector = load_detector(DetectorConfig(min_confidence=0.05, second_model="/nowhere/yolo99x.pt"))
    assert detector.name == "yolov8n.pt"  # the first model alone, no fusion
    assert "second model left out" in caplog.text and "yolo99x.pt" in caplog.text


@needs_model
def test_the_large_view_runs_for_each_model(coco_images):
    detector = load_detector(DetectorConfig(min_confidence=0.05, tta=("large",), second_model="yolo26n.pt",
                                            image_size=320))
    assert detector.name == "yolov8n.pt+large+yolo26n.pt"
    found = detector.predict([decode_image(coco_images[0]).pixels])[0]
    assert set(found.extras) == {TTA_SUPPORT, MODEL_SUPPORT}
    # the share of the first model's two views (0: only the second model found it)
    assert set(np.unique(found.extras[TTA_SUPPORT])) <= {0.0, 0.5, 1.0}
