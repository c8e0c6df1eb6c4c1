"""Thresholds that learn from people: recalibrate triage after each applied review batch.

Every reviewed image is evidence: its raw proposals, matched against the labels a person
confirmed, say how often a box of a class at a given score is right. After each batch, per class,
``bootstrap.calibrate.calibrate_class`` turns that evidence into accept/reject thresholds, and the
result is shrunk towards the prior (the config's thresholds, e.g. the defaults or a calibration
file) by how much evidence the class has: with ``n`` evidence boxes and a prior worth
``prior_boxes`` boxes, ``threshold = (n * evidence + prior_boxes * prior) / (n + prior_boxes)``.
A class with a handful of reviewed boxes barely moves; a class people reviewed hundreds of boxes
of follows their evidence. Pure functions; the store side is ``bootstrap.review_learning``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from bootstrap.calibrate import calibrate_class
from bootstrap.config import ScoreModel, TriageConfig, validate_config
from bootstrap.evaluation.costs import CostModel
from bootstrap.schema import VIEW_SCORE_KEYS
from bootstrap.triage import SCORE_FEATURES, box_scores, score_features, thresholds

#: Evidence boxes the prior thresholds are worth.
PRIOR_BOXES = 150.0
#: Target precision of the boxes a learned accept threshold lets through unreviewed.
TARGET_PRECISION = 0.95


@dataclass(frozen=True)
class ThresholdChange:
    """One class's thresholds before and after learning, and the evidence behind it."""

    label: str
    evidence_boxes: int
    true_boxes: int
    accept: tuple[float, float]  # before, after
    reject: tuple[float, float]

    def to_dict(self) -> dict:
        return asdict(self)


def learn_thresholds(
    prior: TriageConfig,
    evidence: Iterable[tuple[str, float, bool]],
    prior_boxes: float = PRIOR_BOXES,
    target_precision: float = TARGET_PRECISION,
    cost: CostModel = CostModel(),
) -> tuple[TriageConfig, list[ThresholdChange]]:
    """``prior`` with per-class thresholds learned from ``evidence`` (label, score, whether the
    box was confirmed), shrunk towards the prior's thresholds of each class.

    Returns the new triage config and the change per class with evidence.
    """
    by_class: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for label, score, confirmed in evidence:
        by_class[label].append((float(score), bool(confirmed)))
    per_class = {name: t.model_dump() for name, t in prior.per_class.items()}
    changes = []
    for label in sorted(by_class):
        scores = np.array([s for s, _ in by_class[label]], dtype=np.float64)
        hits = np.array([h for _, h in by_class[label]], dtype=bool)
        prior_accept, prior_reject = thresholds(prior, label)
        own = calibrate_class(
            label, scores, hits, target_precision, prior_accept, prior_reject, min_boxes=1,
            cost=cost,
        )
        weight = len(scores) / (len(scores) + prior_boxes)
        accept = round(weight * own.accept + (1 - weight) * prior_accept, 4)
        reject = round(min(weight * own.reject + (1 - weight) * prior_reject, accept), 4)
        per_class[label] = {"accept": accept, "reject": reject}
        changes.append(ThresholdChange(
            label, len(scores), int(hits.sum()), (prior_accept, accept), (prior_reject, reject),
        ))
    raw = prior.model_dump() | {"per_class": per_class}
    return validate_config({"dataset": "learned", "triage": raw}).triage, changes


def evidence_of(items: Sequence, config: TriageConfig) -> list[tuple[str, float, bool]]:
    """Evidence from ``bootstrap.evaluation.holdout.Proposed`` items: every proposal, scored as triage
    scores it (``box_scores``), with its match."""
    evidence = []
    for item in items:
        boxes = item.proposals
        scores = box_scores(config, boxes.confidence, relative_xywh(boxes), boxes.extras, list(boxes.label))
        evidence += [(str(label), float(score), bool(hit))
                     for label, score, hit in zip(boxes.label, scores, item.true_positive, strict=True)]
    return evidence


def relative_xywh(boxes) -> np.ndarray:
    width, height = boxes.image_wh
    xyxy = np.asarray(boxes.xyxy, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1) / np.array([width, height] * 2)


def recalibrate(prior: TriageConfig, reviewed_items: Sequence, **kwargs) -> TriageConfig:
    """The holdout simulation's step: thresholds learned from the reviewed items."""
    return learn_thresholds(prior, evidence_of(reviewed_items, prior), **kwargs)[0]


def fit_score_model(images: Iterable, l2: float = 1.0) -> ScoreModel:
    """Logistic regression (Newton's method, L2 ``l2``) of whether each box was right on the
    features of ``bootstrap.triage.score_features``.

    Args:
        images: per image ``(labels, confidences, relative xywh boxes, support, hits)``, support
            being the per-box extras stored with fused proposals (``schema.BOX_EXTRAS``). A view
            score enters the model when every image with boxes has it.

    A few dozen lines of numpy rather than scikit-learn: a dozen weights, and no new dependency
    for the library.
    """
    images = [image for image in images if len(image[1])]
    view_keys = tuple(
        key for key in VIEW_SCORE_KEYS
        if images and all((support or {}).get(key) is not None for _, _, _, support, _ in images)
    )
    features = np.concatenate([
        score_features(confidences, xywh, support, list(labels), view_keys)
        for labels, confidences, xywh, support, _ in images
    ]) if images else np.zeros((0, len(SCORE_FEATURES)))
    y = np.concatenate([np.asarray(hits, dtype=np.float64) for *_, hits in images]) if images else np.zeros(0)
    weights = np.zeros(features.shape[1])
    penalty = l2 * np.eye(len(weights))
    penalty[0, 0] = 0.0  # the bias is not shrunk
    for _ in range(25):
        p = 1.0 / (1.0 + np.exp(-np.clip(features @ weights, -30, 30)))
        gradient = features.T @ (p - y) + penalty @ weights
        hessian = (features * (p * (1 - p))[:, None]).T @ features + penalty + 1e-9 * np.eye(len(weights))
        weights -= np.linalg.solve(hessian, gradient)
    fitted = {name: round(float(w), 4) for name, w in zip(SCORE_FEATURES, weights, strict=False)}
    views = {key: round(float(w), 4) for key, w in zip(view_keys, weights[len(SCORE_FEATURES):], strict=True)}
    return ScoreModel(**fitted, views=views)
