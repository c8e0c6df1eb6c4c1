"""Held-out policy measurement, tiles, learned thresholds and the stopping rule (pure parts)."""

import numpy as np
import pytest

from bootstrap.config import TriageConfig
from bootstrap.detections import Detections
from bootstrap.evaluation.holdout import (
    ImageCase,
    Policy,
    assign_folds,
    cross_validate,
    match_boxes,
    propose,
    simulate_loop,
)
from bootstrap.learning import learn_thresholds
from bootstrap.proposals import BASE_FAMILY, View, fuse_views
from bootstrap.stopping import ImageRecord, audit_sample, estimate_quality
from bootstrap.tiles import TiledDetector, merge_windows, tile_windows


def _dets(boxes, wh=(200, 100)):
    """Boxes as (label, score, x1, y1, x2, y2)."""
    labels = np.array([b[0] for b in boxes], dtype=object)
    return Detections(
        np.array([b[2:] for b in boxes], dtype=np.float32).reshape(-1, 4),
        np.array([b[1] for b in boxes], dtype=np.float32),
        np.zeros(len(boxes), dtype=np.int64), labels, labels.copy(), wh,
    )


@pytest.mark.parametrize(("grid", "overlap"), [(1, 0.0), (2, 0.25), (3, 0.2)])
def test_tile_windows_cover_the_image_with_the_asked_overlap(grid, overlap):
    windows = tile_windows(640, 480, grid, overlap)
    assert len(windows) == grid * grid
    covered = np.zeros((480, 640), dtype=bool)
    for x1, y1, x2, y2 in windows:
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    if grid > 1:
        (ax1, _, ax2, _), (bx1, _, _, _) = windows[0], windows[1]
        assert (ax2 - bx1) / (ax2 - ax1) == pytest.approx(overlap, abs=0.02)


def test_tile_windows_refuse_a_bad_grid():
    with pytest.raises(ValueError, match="grid >= 1"):
        tile_windows(640, 480, 0)


def test_merged_windows_shift_back_drop_cut_boxes_and_duplicates():
    windows = [(0, 0, 120, 100), (80, 0, 200, 100)]
    left = _dets([("car", 0.9, 85, 10, 105, 30), ("bus", 0.8, 60, 10, 119, 60)], (120, 100))
    right = _dets([("car", 0.7, 5, 10, 25, 30)], (120, 100))  # the same car, seen from the right
    merged = merge_windows([left, right], windows, (200, 100))
    assert list(merged.label) == ["car"]  # the bus touches the left window's inner edge: cut
    assert merged.confidence[0] == pytest.approx(0.9)
    np.testing.assert_allclose(merged.xyxy[0], [85, 10, 105, 30])


class _Echo:
    """A detector that finds one 'dot' box in the middle of every image it is given."""

    name, class_names = "echo", ("dot",)

    def __init__(self):
        self.sizes = []

    def predict(self, images):
        self.sizes += [image.shape[:2] for image in images]
        return [_dets([("dot", 0.5, image.shape[1] / 2 - 2, image.shape[0] / 2 - 2,
                        image.shape[1] / 2 + 2, image.shape[0] / 2 + 2)], (image.shape[1], image.shape[0]))
                for image in images]


def test_tiled_detector_runs_the_base_on_every_window_in_one_call():
    base = _Echo()
    found = TiledDetector(base, grid=2).predict([np.zeros((100, 200, 3), np.uint8)])
    assert len(base.sizes) == 1 + 4 - 1 or len(base.sizes) == 4
    assert len(found[0]) == 4 and all(h < 100 and w < 200 for h, w in base.sizes)


def test_a_view_of_part_of_the_image_is_not_held_against_large_boxes():
    big = ("car", 0.8, 0, 0, 180, 90)
    fused = fuse_views(
        [View(BASE_FAMILY, _dets([big])), View(BASE_FAMILY, _dets([]), window=(0.5, 0.5))], ["car"],
    )
    assert fused.confidence[0] == pytest.approx(0.8)  # the tiles could not have seen it
    small = fuse_views(
        [View(BASE_FAMILY, _dets([("car", 0.8, 0, 0, 20, 20)])), View(BASE_FAMILY, _dets([]), window=(0.5, 0.5))],
        ["car"],
    )
    assert small.confidence[0] == pytest.approx(0.4)


def test_matching_is_class_aware_greedy_and_one_to_one():
    hit, taken = match_boxes(
        np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]), ["a", "a", "b"], np.array([0.9, 0.8, 0.7]),
        np.array([[0, 0, 10, 11]]), ["a"],
    )
    assert hit.tolist() == [True, False, False] and taken.tolist() == [True]


def test_folds_are_balanced_and_fixed():
    keys = [f"{i:064x}" for i in range(10)]
    folds = assign_folds(keys, 4)
    assert sorted(np.bincount(list(folds.values()))) == [2, 2, 3, 3]
    assert assign_folds(list(reversed(keys)), 4) == folds


def _case(key, truth, found):
    return ImageCase(key, key, (200, 100), np.array([t[0] for t in truth], dtype=object),
                     np.array([t[1:] for t in truth], dtype=np.float64).reshape(-1, 4), {"v": _dets(found)})


def test_the_loop_costs_what_a_reviewer_does_and_scores_the_export():
    sure = _case("a", [("car", 10, 10, 50, 50)], [("car", 0.95, 10, 10, 50, 50)])
    doubt = _case("b", [("car", 10, 10, 50, 50), ("dog", 100, 10, 150, 60)],
                  [("car", 0.5, 10, 10, 50, 50), ("car", 0.4, 120, 60, 180, 90)])
    policy = Policy("p", ("v",), triage=TriageConfig(class_confusion_iou=None, likely_misses_at=None))
    items = [propose(c, policy) for c in (sure, doubt)]
    result = simulate_loop(items, policy, policy.triage)
    # b is opened: 2 boxes shown (one wrong), the dog drawn; a is exported as it is.
    assert (result.opened, result.shown, result.rejected, result.drawn) == (1, 2, 1, 1)
    assert result.review_seconds == 1 + 2 * 2 + 7
    assert (result.tp, result.fp, result.fn) == (3, 0, 0)
    folds = cross_validate([sure, doubt], policy, k=2)
    assert folds.pooled.review_seconds == result.review_seconds


def test_accepted_boxes_left_unchecked_cost_nothing_and_ship_as_they_are():
    # Opened for its dog (0.5); the two cars are accepted (0.9), one of them wrong.
    case = _case("c", [("car", 10, 10, 50, 50), ("dog", 100, 10, 150, 60)],
                 [("car", 0.9, 10, 10, 50, 50), ("car", 0.9, 120, 60, 180, 90), ("dog", 0.5, 100, 10, 150, 60)])
    triage = TriageConfig(class_confusion_iou=None, likely_misses_at=None)
    found = {}
    for check in (True, False):
        policy = Policy("p", ("v",), triage=triage, check_accepted=check)
        result = simulate_loop([propose(case, policy)], policy, triage)
        found[check] = (result.opened, result.shown, result.rejected, result.drawn, result.tp, result.fp)
    assert found[True] == (1, 3, 1, 0, 2, 0)
    assert found[False] == (1, 1, 0, 0, 2, 1)


def test_learned_thresholds_move_with_evidence_and_shrink_to_the_prior():
    prior = TriageConfig(accept=0.7, reject=0.25)
    evidence = [("car", s, True) for s in np.linspace(0.4, 0.99, 60)]
    learned, changes = learn_thresholds(prior, evidence, prior_boxes=40)
    accept = learned.per_class["car"].accept
    assert 0.4 < accept < 0.7  # every car above 0.4 was right: accept moves down, not all the way
    assert changes[0].evidence_boxes == 60
    few, _ = learn_thresholds(prior, evidence[:3], prior_boxes=40)
    assert abs(few.per_class["car"].accept - 0.7) < abs(accept - 0.7)


def test_audit_sample_is_fixed_and_at_least_the_minimum():
    keys = [f"{i:064x}" for i in range(50)]
    assert audit_sample(keys, 0.1) == audit_sample(list(reversed(keys)), 0.1)
    assert len(audit_sample(keys, 0.1)) == 5 and len(audit_sample(keys[:5], 0.1)) == 2
    assert audit_sample(keys, 0.0) == []


def test_stopping_rule_needs_an_audit_and_meets_targets_on_clean_evidence():
    unaudited = [ImageRecord("reviewed", truth=3), ImageRecord("auto_accepted", accepted=2)]
    assert estimate_quality(unaudited).precision is None
    few = [ImageRecord("reviewed", accepted=2, truth=2, accepted_kept=2, audited=True) for _ in range(4)] + [
        ImageRecord("auto_accepted", accepted=2) for _ in range(20)]
    assert estimate_quality(few).precision == 1.0 and not estimate_quality(few).met()  # too few audits
    clean = [ImageRecord("reviewed", accepted=2, truth=2, accepted_kept=2, audited=True) for _ in range(10)] + [
        ImageRecord("auto_accepted", accepted=2) for _ in range(20)]
    estimate = estimate_quality(clean)
    assert estimate.precision == 1.0 and estimate.recall == 1.0 and estimate.met()
    lossy = [ImageRecord("reviewed", accepted=2, truth=4, accepted_kept=1, audited=True) for _ in range(10)] + [
        ImageRecord("auto_accepted", accepted=2) for _ in range(20)]
    worse = estimate_quality(lossy)
    assert worse.recall < 0.95 and not worse.met()


def test_unchecked_boxes_are_no_evidence_and_the_stopping_rule_estimates_them(monkeypatch):
    import bootstrap.learning

    # Opened for its dog; its car (accepted) ships unchecked.
    case = _case("c", [("car", 10, 10, 50, 50), ("dog", 100, 10, 150, 60)],
                 [("car", 0.9, 10, 10, 50, 50), ("dog", 0.5, 100, 10, 150, 60)])
    triage = TriageConfig(class_confusion_iou=None, likely_misses_at=None)
    seen = []

    def recalibrate(prior, items, **kwargs):
        seen.extend(str(label) for item in items for label in item.proposals.label)
        return prior

    monkeypatch.setattr(bootstrap.learning, "recalibrate", recalibrate)
    for check, evidence in ((True, ["car", "dog"]), (False, ["dog"])):
        seen.clear()
        policy = Policy("p", ("v",), triage=triage, check_accepted=check, learn=True)
        result = simulate_loop([propose(case, policy)], policy, triage)
        assert (result.shown, result.tp, result.fp) == (2 if check else 1, 2, 0)
        assert seen == evidence

    record = ImageRecord("reviewed", accepted=0, truth=1, accepted_kept=0, unchecked=1)
    assert estimate_quality([record]).precision is None  # unchecked boxes need an audit
    audit = ImageRecord("reviewed", accepted=4, truth=4, accepted_kept=3, audited=True)
    estimate = estimate_quality([record, audit])
    # The unchecked box is right 3 times in 4, by the audit.
    assert estimate.precision == pytest.approx((1 + 4 + 0.75) / (1 + 4 + 1))
