"""Routing, states, signals and priority: pure functions on hand-made boxes."""

import numpy as np
import pytest

from bootstrap.config import ScoreModel, TriageConfig
from bootstrap.schema import ImageState, Route
from bootstrap.triage import box_scores, route_boxes, thresholds, triage_image

CONFIG = TriageConfig(accept=0.7, reject=0.3, per_class={"person": {"accept": 0.9}, "cat": {"reject": 0.1}})


@pytest.mark.parametrize(
    ("label", "confidence", "route"),
    [
        ("car", 0.75, Route.ACCEPT),
        ("person", 0.75, Route.REVIEW),  # per-class accept 0.9
        ("person", 0.95, Route.ACCEPT),
        ("car", 0.2, Route.REJECT),
        ("cat", 0.2, Route.REVIEW),  # per-class reject 0.1
        ("cat", 0.05, Route.REJECT),
        ("car", 0.3, Route.REVIEW),  # the reject threshold itself is kept
        ("car", 0.7, Route.ACCEPT),  # the accept threshold itself is accepted
    ],
)
def test_per_class_routing(label, confidence, route):
    assert route_boxes([label], np.array([confidence]), CONFIG) == [route]


def test_thresholds_fall_back_to_defaults():
    assert thresholds(CONFIG, "person") == (0.9, 0.3)
    assert thresholds(CONFIG, "truck") == (0.7, 0.3)


def _boxes(*xywh):
    return np.array(xywh, dtype=np.float64).reshape(-1, 4)


@pytest.mark.parametrize(
    ("labels", "confidences", "boxes", "state"),
    [
        ([], [], _boxes(), ImageState.EMPTY),
        (["car"], [0.1], _boxes([0, 0, 0.1, 0.1]), ImageState.EMPTY),
        (["car", "dog"], [0.9, 0.8], _boxes([0, 0, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1]), ImageState.AUTO_ACCEPTED),
        (["car", "dog"], [0.9, 0.5], _boxes([0, 0, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1]), ImageState.NEEDS_REVIEW),
    ],
    ids=["nothing", "only-rejected", "all-accepted", "one-uncertain"],
)
def test_image_state(labels, confidences, boxes, state):
    assert triage_image(labels, np.array(confidences), boxes, CONFIG).state == state


def test_class_confusion_fires_on_overlapping_boxes_of_different_classes():
    same_place = _boxes([0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.3, 0.3])
    confused = triage_image(["dog", "cat"], np.array([0.9, 0.85]), same_place, CONFIG)
    assert confused.signals["class_confusion"] == 1
    assert confused.state == ImageState.NEEDS_REVIEW  # though both boxes are accepted
    agreed = triage_image(["dog", "dog"], np.array([0.9, 0.85]), same_place, CONFIG)
    assert agreed.signals["class_confusion"] == 0 and agreed.state == ImageState.AUTO_ACCEPTED


def test_likely_misses_fires_on_low_score_mass():
    # One confident box plus many half-seen objects below the reject threshold.
    boxes = _boxes(*[[0.1 * i, 0, 0.05, 0.05] for i in range(6)])
    outcome = triage_image(["car"] * 6, np.array([0.9, 0.25, 0.25, 0.25, 0.2, 0.2]), boxes, CONFIG)
    assert outcome.signals["likely_misses"] == pytest.approx(1.15)
    assert outcome.state == ImageState.NEEDS_REVIEW
    calm = triage_image(["car"] * 2, np.array([0.9, 0.1]), boxes[:2], CONFIG)
    assert calm.state == ImageState.AUTO_ACCEPTED


@pytest.mark.parametrize(("signal", "support_key"), [("tta_disagreement", "tta_support"), ("model_disagreement", "model_support")])
def test_view_disagreement_makes_an_image_need_review_and_raises_priority(signal, support_key):
    # Two accepted boxes; the other views found the first, not the second.
    boxes = _boxes([0, 0, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1])
    scores = np.array([0.9, 0.8])
    agreed = triage_image(["car", "car"], scores, boxes, CONFIG, {support_key: np.array([1.0, 1.0])})
    doubted = triage_image(["car", "car"], scores, boxes, CONFIG, {support_key: np.array([1.0, 0.0])})
    assert agreed.state == ImageState.AUTO_ACCEPTED and agreed.signals[signal] == 0
    assert doubted.signals[signal] == pytest.approx(1.0)
    assert doubted.state == ImageState.NEEDS_REVIEW and doubted.priority > agreed.priority
    # Half a box of disagreement stays under the default threshold (1.0); rejected boxes never count.
    half = triage_image(["car", "car"], np.array([0.9, 0.1]), boxes, CONFIG, {support_key: np.array([0.5, 0.0])})
    assert half.signals[signal] == pytest.approx(0.5) and half.state == ImageState.AUTO_ACCEPTED


def test_coin_flip_boxes_outrank_near_certain_ones():
    boxes = _boxes([0, 0, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1])
    unsure = triage_image(["car", "car"], np.array([0.5, 0.52]), boxes, CONFIG)
    fairly_sure = triage_image(["car", "car"], np.array([0.68, 0.69]), boxes, CONFIG)
    assert unsure.priority > fairly_sure.priority > 0


def test_signals_can_be_switched_off():
    same_place = _boxes([0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.3, 0.3])
    quiet = TriageConfig(class_confusion_iou=None, likely_misses_at=None, disagreement_at=None)
    outcome = triage_image(
        ["dog", "cat"], np.array([0.9, 0.85]), same_place, quiet, {"tta_support": np.array([0.0, 0.0])}
    )
    assert set(outcome.signals.values()) == {0.0}
    assert outcome.state == ImageState.AUTO_ACCEPTED


def test_review_at_exports_images_with_few_expected_corrections_unreviewed():
    boxes = np.array([[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]])
    config = TriageConfig(accept=0.7, reject=0.25, class_confusion_iou=None, likely_misses_at=None)
    sure_and_one_doubt = (["car", "car"], np.array([0.9, 0.95]))
    doubt = triage_image(*sure_and_one_doubt[:1], np.array([0.9, 0.3]), boxes, config)
    assert doubt.state == ImageState.NEEDS_REVIEW and doubt.priority == pytest.approx(0.6)
    lenient = config.model_copy(update={"review_at": 1.0})
    assert triage_image(["car", "car"], np.array([0.9, 0.3]), boxes, lenient).state == ImageState.AUTO_ACCEPTED
    assert triage_image(["car", "car"], np.array([0.3, 0.3]), boxes, lenient).state == ImageState.NEEDS_REVIEW
    assert triage_image(["car"], np.array([0.4]), boxes[:1], lenient).state == ImageState.EMPTY


def test_score_model_routes_on_probability_and_identity_weights_change_nothing():
    confidences = np.array([0.2, 0.5, 0.8])
    xywh = np.array([[0, 0, 0.1, 0.1]] * 3)
    identity = TriageConfig(score_model=ScoreModel())
    assert box_scores(identity, confidences, xywh) == pytest.approx(confidences, abs=1e-9)
    agreed = TriageConfig(score_model=ScoreModel(model_support=2.0, bias=-2.0))
    support = {"model_support": np.array([1.0, 0.5, 0.0])}
    scores = box_scores(agreed, np.array([0.5, 0.5, 0.5]), xywh, support)
    assert scores[0] == pytest.approx(0.5) and scores[0] > scores[1] > scores[2]
    outcome = triage_image(["car"] * 3, np.array([0.5, 0.5, 0.5]), xywh,
                           agreed.model_copy(update={"accept": 0.45, "reject": 0.2}), support)
    assert outcome.routes == (Route.ACCEPT, Route.REVIEW, Route.REJECT)


def test_score_features_measure_overlap_with_higher_scored_boxes_and_fall_back_for_missing_views():
    from bootstrap.triage import SCORE_FEATURES, score_features

    xywh = np.array([[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2], [0.6, 0.6, 0.1, 0.1]])
    confidences = np.array([0.9, 0.5, 0.3])
    features = score_features(confidences, xywh, {"score_base": np.array([0.9, 0.0, 0.3])},
                              ["car", "truck", "car"], ("score_base", "score_second"))
    column = {name: i for i, name in enumerate(SCORE_FEATURES + ("score_base", "score_second"))}
    # The truck box lies on the surer car box: overlap 1 with any class, 0 with its own.
    assert features[:, column["overlap"]] == pytest.approx([0.0, 1.0, 0.0])
    assert features[:, column["overlap_same"]] == pytest.approx([0.0, 0.0, 0.0])
    # A view that did not find a box gives the floor's logit; a view with no scores stored
    # counts as agreeing with the fused confidence.
    assert features[1, column["score_base"]] == pytest.approx(np.log(1e-3 / (1 - 1e-3)))
    assert features[:, column["score_second"]] == pytest.approx(features[:, column["logit"]])


def test_a_fitted_score_model_learns_that_duplicates_are_wrong():
    from bootstrap.learning import fit_score_model

    rng = np.random.default_rng(0)
    images = []
    for _ in range(60):
        # One right box and a lower-scored duplicate of it (wrong), plus a right box elsewhere.
        xywh = np.array([[0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.3, 0.3], [0.6, 0.6, 0.2, 0.2]])
        confidences = np.array([0.8, 0.6, 0.4]) + rng.uniform(-0.05, 0.05, 3)
        images.append((["car"] * 3, confidences, xywh, {}, np.array([True, False, True])))
    model = fit_score_model(images)
    assert model.overlap_same + model.overlap < -1.0
    scored = box_scores(TriageConfig(score_model=model), images[0][1], images[0][2], None, ["car"] * 3)
    assert scored[1] < 0.5 < scored[2]
