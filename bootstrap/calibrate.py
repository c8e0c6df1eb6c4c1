"""Calibration: per-class accept and reject thresholds from evaluated boxes.

Pure functions over ``BoxOutcome``s (``bootstrap.evaluate``): for each class, the accept
threshold is the lowest confidence at which the boxes at or above it reach the target
precision (the lowest such threshold accepts the most true boxes, i.e. the most recall). The
reject threshold is chosen for human time by default (``cost``): where showing one more box
stops paying, i.e. the threshold that minimises ``verify × boxes shown for review + draw × true
boxes hidden below it`` on the evidence (with 2 s / 7 s, a box is worth showing while about 2 in 7
boxes at its score are real). Alternatively (``max_lost_recall``) it is the highest confidence
below which at most that share of the class's true boxes lie. Evidence comes from ground truth, or from reviewed images (the model's
raw predictions matched against the labels people confirmed).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from bootstrap.atomic_write import write_text_atomic
from bootstrap.config import PipelineConfig, TriageConfig, validate_config
from bootstrap.evaluation.costs import CostModel
from bootstrap.evaluation.metrics import BoxOutcome, Evaluation, precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassCalibration:
    label: str
    boxes: int  # evaluated boxes of the class
    true_boxes: int  # of them, matched to ground truth
    accept: float
    reject: float
    calibrated: bool  # False: too few boxes, or the target is out of reach -> defaults/1.0
    precision: float | None  # of the boxes at or above ``accept``
    accepted_recall: float | None  # share of the class's true boxes that are auto-accepted
    review_boxes: int  # boxes in [reject, accept)
    note: str = ""


@dataclass(frozen=True)
class Calibration:
    target_precision: float
    source: str
    classes: list[ClassCalibration]
    precision: float | None  # of all boxes the thresholds accept
    accepted_boxes: int
    review_boxes: int
    review_images: int  # images with at least one box to review (before doubt signals)
    images: int

    @property
    def reached(self) -> bool:
        return self.precision is None or self.precision >= self.target_precision

    @property
    def warnings(self) -> list[str]:
        return [f"{c.label}: {c.note}" for c in self.classes if c.note]

    def to_dict(self) -> dict:
        return asdict(self) | {"reached": self.reached, "warnings": self.warnings}


def calibrate_class(
    label: str,
    confidences: np.ndarray,
    true_positive: np.ndarray,
    target_precision: float,
    default_accept: float,
    default_reject: float,
    min_boxes: int = 20,
    max_lost_recall: float | None = None,
    cost: CostModel = CostModel(),
) -> ClassCalibration:
    """Thresholds for one class (see the module docstring); defaults with a note when the class
    has fewer than ``min_boxes`` boxes, accept 1.0 (review everything) when no threshold reaches
    the target."""
    order = np.argsort(-confidences, kind="stable")
    scores, hits = confidences[order], true_positive[order].astype(bool)
    n, true_total = len(scores), int(hits.sum())
    if n < min_boxes:
        return _summarise(
            label, scores, hits, default_accept, default_reject, False,
            f"only {n} evaluated boxes (< {min_boxes}): kept the default thresholds",
        )
    # Precision of "accept everything >= scores[i]": ties share a threshold, so only the last
    # index of each run of equal scores is a real candidate.
    precision_at = np.cumsum(hits) / np.arange(1, n + 1)
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    ok = np.flatnonzero(last_of_tie & (precision_at >= target_precision))
    if len(ok) == 0:
        return _summarise(
            label, scores, hits, 1.0, min(default_reject, 1.0), False,
            f"target precision {target_precision} not reachable (best {precision_at.max():.3f} at the "
            "top score): every box of this class goes to review",
        )
    accept = float(scores[ok[-1]])
    if max_lost_recall is None:
        reject = _cheapest_reject(scores, hits, accept, cost)
    else:
        # Reject: the highest score such that the true boxes strictly below it are few enough.
        allowed_lost = int(np.floor(max_lost_recall * true_total))
        lost_below = true_total - np.cumsum(hits)  # true boxes below index i (exclusive of i)
        candidates = np.flatnonzero(lost_below <= allowed_lost)
        reject = float(scores[candidates[0]]) if len(candidates) else 0.0
    return _summarise(label, scores, hits, accept, min(reject, accept), True, "")


def _cheapest_reject(scores: np.ndarray, hits: np.ndarray, accept: float, cost: CostModel) -> float:
    """The reject threshold that minimises the review time of the boxes below ``accept``:
    ``verify`` per box shown (score >= reject) plus ``draw`` per true box hidden below it.
    ``scores`` are sorted descending; showing nothing (reject = accept) is a candidate too."""
    below = scores < accept
    shown_scores, shown_hits = scores[below], hits[below]
    if not len(shown_scores):
        return accept
    shown = np.arange(1, len(shown_scores) + 1)  # reject at shown_scores[i] shows 0..i
    hidden_true = shown_hits.sum() - np.cumsum(shown_hits)
    seconds = cost.verify_box * shown + cost.draw_box * hidden_true
    # Ties share a threshold: only the last box of a run of equal scores is a real candidate.
    last_of_tie = np.r_[shown_scores[1:] != shown_scores[:-1], True]
    seconds = np.where(last_of_tie, seconds, np.inf)
    best = int(np.argmin(seconds))
    if seconds[best] >= cost.draw_box * shown_hits.sum():
        return accept
    return float(shown_scores[best])


def _summarise(label, scores, hits, accept, reject, calibrated, note) -> ClassCalibration:
    accepted = scores >= accept
    true_total = int(hits.sum())
    return ClassCalibration(
        label=label,
        boxes=len(scores),
        true_boxes=true_total,
        accept=round(accept, 6),
        reject=round(reject, 6),
        calibrated=calibrated,
        precision=precision(int(hits[accepted].sum()), int((~hits[accepted]).sum())),
        accepted_recall=float(hits[accepted].sum() / true_total) if true_total else None,
        review_boxes=int(((scores >= reject) & ~accepted).sum()),
        note=note,
    )


def calibrate(
    outcomes: list[BoxOutcome],
    target_precision: float,
    triage: TriageConfig = TriageConfig(),
    min_boxes: int = 20,
    max_lost_recall: float | None = None,
    source: str = "ground_truth",
    images: int | None = None,
    cost: CostModel = CostModel(),
) -> Calibration:
    """Per-class thresholds for every class with evaluated boxes, and the expected review load.

    Raises:
        ValueError: target precision outside (0, 1].
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    labels = sorted({o.label for o in outcomes})
    results = []
    for label in labels:
        mine = [o for o in outcomes if o.label == label]
        results.append(calibrate_class(
            label,
            np.array([o.confidence for o in mine], dtype=np.float64),
            np.array([o.true_positive for o in mine], dtype=bool),
            target_precision, triage.accept, triage.reject, min_boxes, max_lost_recall,
            cost,
        ))
        if results[-1].note:
            log.warning("calibration: %s: %s", label, results[-1].note)
    thresholds = {c.label: c for c in results}
    accepted = [o for o in outcomes if o.confidence >= thresholds[o.label].accept]
    review = [
        o for o in outcomes
        if thresholds[o.label].reject <= o.confidence < thresholds[o.label].accept
    ]
    return Calibration(
        target_precision=target_precision,
        source=source,
        classes=results,
        precision=precision(
            sum(o.true_positive for o in accepted), sum(not o.true_positive for o in accepted)
        ),
        accepted_boxes=len(accepted),
        review_boxes=len(review),
        review_images=len({o.sample_id for o in review}),
        images=images if images is not None else len({o.sample_id for o in outcomes}),
    )


def calibrate_from_evaluation(evaluation: Evaluation, target_precision: float, **kwargs) -> Calibration:
    return calibrate(
        evaluation.outcomes, target_precision, images=evaluation.images,
        source=evaluation.gt_field, **kwargs,
    )


def calibrated_triage(triage: TriageConfig, calibration: Calibration) -> TriageConfig:
    """``triage`` with ``per_class`` thresholds for every calibrated class (others unchanged)."""
    per_class = {name: t.model_dump() for name, t in triage.per_class.items()}
    for c in calibration.classes:
        if c.calibrated or c.accept == 1.0:
            per_class[c.label] = {"accept": c.accept, "reject": c.reject}
    raw = triage.model_dump() | {"per_class": per_class}
    return validate_config({"dataset": "calibration", "triage": raw}).triage


def write_calibrated_config(
    config: PipelineConfig, calibration: Calibration, dest: str | Path, source: str | Path | None = None
) -> Path:
    """Write ``config`` with calibrated per-class thresholds to ``dest`` (YAML) and return it.

    The file is rewritten from the validated config (comments of the source are not kept); the
    header names the source and the calibration.
    """
    updated = config.model_copy(update={"triage": calibrated_triage(config.triage, calibration)})
    dest = Path(dest)
    header = (
        f"# Calibrated from {source or 'the default config'}: per-class thresholds for target "
        f"precision {calibration.target_precision} ({calibration.source}, {calibration.images} images).\n"
    )
    # Atomic: an interrupted run leaves the previous config, never half of a new one.
    return write_text_atomic(
        dest, header + yaml.safe_dump(updated.model_dump(mode="json"), sort_keys=False)
    )


def calibration_evidence(store, source: str = "auto", iou: float = 0.5) -> Evaluation:
    """The model's raw ``predictions`` matched against ``ground_truth`` (``source`` "ground_truth",
    or "auto" when the field exists) or against the labels people confirmed on reviewed images
    ("reviewed").

    Raises:
        GroundTruthError: the chosen source has no images.
    """
    from fiftyone import ViewField as F

    from bootstrap.evaluation.ground_truth import GroundTruthError
    from bootstrap.evaluation.metrics import evaluate_field
    from bootstrap.schema import GROUND_TRUTH, LABELS, PREDICTIONS, STATE, ImageState

    has_truth = GROUND_TRUTH in store.dataset.get_field_schema() and bool(
        store.dataset.exists(GROUND_TRUTH)
    )
    if source == "ground_truth" or (source == "auto" and has_truth):
        return evaluate_field(store, PREDICTIONS, GROUND_TRUTH, iou=iou, compute_map=False)
    if source not in ("auto", "reviewed"):
        raise ValueError(f"source must be auto, ground_truth or reviewed, got {source!r}")
    reviewed = store.dataset.match(F(STATE) == ImageState.REVIEWED.value)
    if not len(reviewed):
        raise GroundTruthError(
            f"dataset '{store.name}' has no ground truth and no reviewed images to calibrate from"
        )
    return evaluate_field(store, PREDICTIONS, LABELS, view=reviewed, iou=iou, compute_map=False)
