"""Quality of boxes against ground truth: one matching, then pure counts.

Matching is FiftyOne's ``evaluate_detections`` (IoU 0.5, class-aware). ``evaluate_field``
matches once and keeps one ``BoxOutcome`` per box; precision and recall at any confidence
threshold, per class and per confidence band, are then pure counts over those outcomes
(FiftyOne matches boxes greedily in descending confidence, so a box's match does not depend on
the boxes below it, and one matching serves every threshold).

Precision and recall are computed in one place (``precision``, ``recall``): ``None`` when
there is nothing to measure (no boxes, or no true boxes).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from bootstrap.evaluation.ground_truth import GroundTruthError
from bootstrap.schema import GROUND_TRUTH, LABELS
from bootstrap.store import ImageStore, final_box_filter


def precision(tp: int, fp: int) -> float | None:
    """TP / (TP + FP); ``None`` when there are no boxes."""
    return tp / (tp + fp) if tp + fp else None


def recall(tp: int, fn: int) -> float | None:
    """TP / (TP + FN); ``None`` when there are no true boxes."""
    return tp / (tp + fn) if tp + fn else None


#: Confidence bands of the report: [edge_i, edge_i+1); the last band includes 1.0.
DEFAULT_BANDS = (0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
EVALUATION_FIELDS = ("predictions", "labels")


@dataclass(frozen=True)
class BoxOutcome:
    """One evaluated box: its class, score (1.0 for a human box without one) and whether it
    matched a ground-truth box of its class at the IoU."""

    sample_id: str
    label: str
    confidence: float
    true_positive: bool


@dataclass(frozen=True)
class Rates:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float | None:
        return precision(self.tp, self.fp)

    @property
    def recall(self) -> float | None:
        return recall(self.tp, self.fn)


@dataclass
class Evaluation:
    """Matched boxes of ``field`` against ``gt_field`` on ``images`` images."""

    field: str
    gt_field: str
    iou: float
    images: int
    outcomes: list[BoxOutcome]
    truth_counts: dict[str, int]  # ground-truth boxes per class
    mean_ap: float | None = None
    class_ap: dict[str, float] = field(default_factory=dict)

    def rates(self, threshold: float = 0.0, label: str | None = None) -> Rates:
        """TP/FP/FN when only boxes with confidence >= ``threshold`` are kept (of ``label``)."""
        kept = [
            o for o in self.outcomes
            if o.confidence >= threshold and (label is None or o.label == label)
        ]
        tp = sum(o.true_positive for o in kept)
        truth = self.truth_counts.get(label, 0) if label is not None else sum(self.truth_counts.values())
        return Rates(tp, len(kept) - tp, truth - tp)

    @property
    def classes(self) -> list[str]:
        """Classes with a predicted or a ground-truth box, most ground truth first."""
        counts = Counter(self.truth_counts) + Counter(o.label for o in self.outcomes)
        return sorted(counts, key=lambda c: (-self.truth_counts.get(c, 0), -counts[c], c))

    def per_class(self) -> list[dict]:
        rows = []
        for label in self.classes:
            r = self.rates(label=label)
            rows.append({
                "class": label, "truth": self.truth_counts.get(label, 0),
                "boxes": r.tp + r.fp, "tp": r.tp, "fp": r.fp, "fn": r.fn,
                "precision": r.precision, "recall": r.recall, "ap": self.class_ap.get(label),
            })
        return rows

    def by_band(self, edges: tuple[float, ...] = DEFAULT_BANDS) -> list[dict]:
        """Boxes, TP, FP and precision per confidence band (the share of ground truth each band
        recovers is its ``recall_share``)."""
        truth = sum(self.truth_counts.values())
        rows = []
        for low, high in zip(edges, edges[1:], strict=False):
            last = high == edges[-1]
            inside = [o for o in self.outcomes if low <= o.confidence < high or (last and o.confidence == high)]
            tp = sum(o.true_positive for o in inside)
            rows.append({
                "band": f"[{low:.2f}, {high:.2f}{']' if last else ')'}",
                "low": low, "high": high, "boxes": len(inside), "tp": tp, "fp": len(inside) - tp,
                "precision": precision(tp, len(inside) - tp),
                "recall_share": tp / truth if truth else None,
            })
        return rows

    def summary(self) -> dict:
        r = self.rates()
        return {
            "field": self.field, "gt_field": self.gt_field, "iou": self.iou, "images": self.images,
            "boxes": r.tp + r.fp, "truth_boxes": sum(self.truth_counts.values()),
            "tp": r.tp, "fp": r.fp, "fn": r.fn,
            "precision": r.precision, "recall": r.recall, "mAP": self.mean_ap,
        }

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "per_class": self.per_class(), "bands": self.by_band()}


def evaluate_field(
    store: ImageStore,
    field: str = "predictions",
    gt_field: str = GROUND_TRUTH,
    view=None,
    iou: float = 0.5,
    compute_map: bool = True,
) -> Evaluation:
    """Match ``field`` against ``gt_field`` with FiftyOne's ``evaluate_detections`` (COCO-style,
    class-aware) on ``view`` (default: every image with ``gt_field``) and keep the outcome of
    every box. mAP (an IoU sweep: slow on thousands of boxes) is computed when
    ``compute_map`` and every box has a confidence.

    Raises:
        GroundTruthError: no image has ``gt_field``.
    """
    from fiftyone import ViewField as F

    base = view if view is not None else store.dataset
    if gt_field not in store.dataset.get_field_schema():
        raise GroundTruthError(f"dataset '{store.name}' has no '{gt_field}' field; import ground truth first")
    scope = base.exists(gt_field)
    if not len(scope):
        raise GroundTruthError(f"no image of '{store.name}' has '{gt_field}'")
    confidences = scope.values(f"{field}.detections.confidence", unwind=True)
    with_scores = compute_map and bool(confidences) and all(c is not None for c in confidences)
    key = f"eval_{field}_{uuid.uuid4().hex[:6]}"
    results = scope.evaluate_detections(
        field, gt_field=gt_field, eval_key=key, iou=iou, classwise=True, compute_mAP=with_scores
    )
    try:
        ids, labels, scores, matches = scope.values(
            ["id", f"{field}.detections.label", f"{field}.detections.confidence",
             f"{field}.detections.{key}"]
        )
        outcomes = [
            BoxOutcome(sid, label, 1.0 if score is None else float(score), match == "tp")
            for sid, box_labels, box_scores, box_matches in zip(ids, labels, scores, matches, strict=True)
            for label, score, match in zip(box_labels or [], box_scores or [], box_matches or [], strict=True)
        ]
        truth = Counter(scope.values(F(f"{gt_field}.detections.label"), unwind=True))
        mean_ap = float(results.mAP()) if with_scores else None
        class_ap = {}
        if with_scores:
            for label in truth:
                ap = results.mAP(classes=[label])
                if ap is not None and ap >= 0:
                    class_ap[label] = float(ap)
    finally:
        store.dataset.delete_evaluation(key)
    return Evaluation(field, gt_field, iou, len(scope), outcomes, dict(truth), mean_ap, class_ap)


def match_counts(view, field: str = LABELS, iou: float = 0.5) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` of ``field`` against ``ground_truth`` on ``view`` (FiftyOne's
    ``evaluate_detections``, class-aware); the evaluation run is deleted afterwards."""
    key = f"match_{uuid.uuid4().hex[:6]}"
    view.evaluate_detections(field, gt_field=GROUND_TRUTH, eval_key=key, iou=iou, classwise=True)
    try:
        return tuple(sum(view.values(f"{key}_{k}")) for k in ("tp", "fp", "fn"))
    finally:
        view.delete_evaluation(key)


def final_quality(store: ImageStore, iou: float = 0.5) -> Rates:
    """TP/FP/FN of the labels a dataset would ship now (``final_box_filter``) against
    ``ground_truth``, over every image."""
    view = store.dataset.filter_labels(LABELS, final_box_filter(), only_matches=False)
    return Rates(*match_counts(view, LABELS, iou))
