"""Calibration: per-class thresholds from evaluated boxes (pure, hand-made evidence)."""

import numpy as np
import pytest

from bootstrap.calibrate import calibrate, calibrate_class
from bootstrap.evaluation.costs import CostModel
from bootstrap.evaluation.metrics import BoxOutcome


@pytest.mark.parametrize(
    ("scores", "hits", "target", "accept", "calibrated"),
    [
        ([0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 1, 0, 1], 0.8, 0.5, True),  # 4/5 = 0.8 at 0.5
        ([0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 1, 0, 1], 0.9, 0.7, True),
        ([0.9, 0.8, 0.7, 0.6, 0.5], [0, 1, 1, 1, 1], 0.95, 1.0, False),  # top box wrong: unreachable
        ([0.9, 0.9, 0.7], [1, 0, 1], 0.9, 1.0, False),  # ties share a threshold: 1/2 at 0.9
    ],
)
def test_calibrate_class(scores, hits, target, accept, calibrated):
    result = calibrate_class("c", np.array(scores), np.array(hits, bool), target, 0.7, 0.25, min_boxes=3)
    assert (result.accept, result.calibrated) == (accept, calibrated)
    assert (result.note != "") == (not calibrated)


def test_cost_rule_rejects_where_showing_a_box_stops_saving_time():
    # Accepted: 0.95 (target 0.9). Below it: real objects at 0.5 and 0.2 among false boxes.
    scores = np.array([0.95, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    hits = np.array([1, 0, 1, 0, 0, 1, 0], bool)
    # verify 2 s, draw 7 s: showing down to 0.2 costs 5 x 2 = 10 s and hides nothing; stopping at
    # 0.5 costs 2 x 2 + 7 = 11 s; showing 0.1 as well 12 s; showing nothing 14 s.
    result = calibrate_class("c", scores, hits, 0.9, 0.7, 0.25, min_boxes=3)
    assert (result.accept, result.reject) == (0.95, 0.2)
    # When drawing costs little more than verifying, showing doubtful boxes does not pay.
    cheap = calibrate_class("c", scores, hits, 0.9, 0.7, 0.25, min_boxes=3, cost=CostModel(draw_box=2.5))
    assert cheap.reject == 0.95 and cheap.review_boxes == 0
    # The recall rule instead keeps all but max_lost_recall of the true boxes.
    by_recall = calibrate_class("c", scores, hits, 0.9, 0.7, 0.25, min_boxes=3, max_lost_recall=0.0)
    assert by_recall.reject == 0.2


def test_few_boxes_keep_the_defaults_with_a_warning(caplog):
    outcomes = [BoxOutcome("s", "rare", 0.9, True), BoxOutcome("s", "rare", 0.8, False)]
    result = calibrate(outcomes, 0.9, min_boxes=20)
    (rare,) = result.classes
    assert (rare.accept, rare.reject, rare.calibrated) == (0.7, 0.25, False)
    assert "only 2 evaluated boxes" in result.warnings[0] and "only 2 evaluated boxes" in caplog.text
