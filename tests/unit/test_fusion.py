"""Weighted boxes fusion of test-time views and a second model, on hand-made boxes."""

import numpy as np
import pytest

from bootstrap.detections import Detections
from bootstrap.proposals import BASE_FAMILY, SECOND_FAMILY, View, fuse_views, mirror
from bootstrap.schema import MODEL_SUPPORT, TTA_SUPPORT

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


def test_each_view_records_the_score_it_gave_a_fused_box_and_zero_where_it_missed():
    fused = fuse_views(
        [View(BASE_FAMILY, _dets(("car", 0.9, 10, 10, 50, 50), ("dog", 0.4, 100, 10, 150, 60))),
         View(BASE_FAMILY, _dets(("car", 0.7, 12, 10, 52, 50)), kind="large"),
         View(SECOND_FAMILY, _dets(("dog", 0.8, 101, 11, 150, 60)))],
        NAMES,
    )
    car, dog = (list(fused.label).index(name) for name in ("car", "dog"))
    assert fused.extras["score_base"][[car, dog]] == pytest.approx([0.9, 0.4])
    assert fused.extras["score_base_large"][[car, dog]] == pytest.approx([0.7, 0.0])
    assert fused.extras["score_second"][[car, dog]] == pytest.approx([0.0, 0.8])


def test_a_single_view_records_no_view_scores():
    fused = fuse_views([View(BASE_FAMILY, _dets(("car", 0.9, 10, 10, 50, 50)))], NAMES)
    assert not any(key.startswith("score_") for key in fused.extras)
