"""Ground truth, quality and the review simulation.

``parse_yolo_labels`` is pure (lines in, boxes out); ``import_ground_truth`` does the IO and
writes the ``ground_truth`` field (from a YOLO folder or a COCO detection json). Quality is
measured with FiftyOne's ``evaluate_detections`` (IoU 0.5, class-aware): ``evaluate_field``
matches once and keeps one ``BoxOutcome`` per predicted box; precision and recall at any
confidence threshold, per class and per confidence band, are then pure counts over those
outcomes (FiftyOne matches boxes greedily in descending confidence, so a box's match does not
depend on the boxes below it, and one matching serves every threshold).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bootstrap.ontology import Ontology
from bootstrap.review import CostModel, SimulationReport, build_review_queue, simulate_reviewer
from bootstrap.store import GROUND_TRUTH, LABELS, ImageStore, final_box_filter

log = logging.getLogger(__name__)


class GroundTruthError(ValueError):
    """Ground truth that cannot be read or matched to the dataset."""


@dataclass(frozen=True)
class TruthBox:
    label: str
    xywh: tuple[float, float, float, float]  # relative, top-left corner


def parse_yolo_labels(lines: list[str], class_names: list[str], source: str = "") -> list[TruthBox]:
    """YOLO txt lines (``class cx cy w h``, relative) to boxes with top-left corners.

    Raises:
        GroundTruthError: a malformed line or an unknown class index (file and line named).
    """
    boxes = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            index, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
        except (ValueError, TypeError):
            raise GroundTruthError(f"{source}:{number}: expected 'class cx cy w h', got {line!r}") from None
        if not 0 <= index < len(class_names):
            raise GroundTruthError(f"{source}:{number}: class {index} is not in the {len(class_names)} names")
        boxes.append(TruthBox(class_names[index], (cx - w / 2, cy - h / 2, w, h)))
    return boxes


def load_yolo_ground_truth(root: Path) -> dict[str, list[TruthBox]]:
    """Read ``root/labels/*.txt`` with class names from ``root/data.yaml``; keyed by file stem.

    An image with no label file is background (no boxes): callers treat missing stems so.
    """
    root = Path(root)
    data_yaml = root / "data.yaml"
    labels_dir = root / "labels" if (root / "labels").is_dir() else root
    if not data_yaml.is_file():
        raise GroundTruthError(f"{root}: no data.yaml with the class names")
    names = yaml.safe_load(data_yaml.read_text()).get("names")
    class_names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    return {
        path.stem: parse_yolo_labels(path.read_text().splitlines(), class_names, str(path))
        for path in sorted(labels_dir.glob("*.txt"))
    }


def load_coco_ground_truth(json_path: Path) -> dict[str, list[TruthBox]]:
    """Read a COCO detection json (FiftyOne's COCO loader); keyed by image file stem.

    Images listed without annotations are background (no boxes).
    """
    from fiftyone.utils.coco import load_coco_detection_annotations

    json_path = Path(json_path)
    try:
        _, classes_map, _, images, annotations = load_coco_detection_annotations(
            str(json_path), extra_attrs=False
        )
    except (ValueError, KeyError, TypeError) as err:
        raise GroundTruthError(f"{json_path}: not a COCO detection json ({err})") from None
    if not classes_map:
        raise GroundTruthError(f"{json_path}: no 'categories' with the class names")
    truth: dict[str, list[TruthBox]] = {}
    for image_id, image in images.items():
        width, height = image.get("width"), image.get("height")
        objects = (annotations or {}).get(image_id, [])
        if objects and not (width and height):
            raise GroundTruthError(f"{json_path}: image {image_id} has boxes but no width/height")
        boxes = []
        for obj in objects:
            if obj.category_id not in classes_map:
                raise GroundTruthError(
                    f"{json_path}: annotation {obj.id} has category {obj.category_id}, "
                    f"which 'categories' does not list"
                )
            x, y, w, h = obj.bbox
            boxes.append(TruthBox(classes_map[obj.category_id], (x / width, y / height, w / width, h / height)))
        truth[Path(image["file_name"]).stem] = boxes
    return truth


def load_ground_truth(path: Path) -> dict[str, list[TruthBox]]:
    """YOLO ground truth (a folder with ``data.yaml``) or COCO (a ``.json`` file, or a folder
    holding exactly one); keyed by image file stem.

    Raises:
        GroundTruthError: neither layout, or the files cannot be read.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return load_coco_ground_truth(path)
    if path.is_dir() and (path / "data.yaml").is_file():
        return load_yolo_ground_truth(path)
    jsons = sorted(path.glob("*.json")) if path.is_dir() else []
    if len(jsons) == 1:
        return load_coco_ground_truth(jsons[0])
    raise GroundTruthError(
        f"{path}: expected a YOLO folder (data.yaml + labels/) or a COCO detection json"
    )


def import_ground_truth(store: ImageStore, root: Path, ontology: Ontology) -> int:
    """Write ground truth (YOLO or COCO, see ``load_ground_truth``; classes mapped through the
    ontology) into the ``ground_truth`` field.

    Returns the number of boxes imported.
    """
    import fiftyone as fo

    truth = load_ground_truth(root)
    ids, paths = store.dataset.values(["id", "filepath"])
    matched = sum(Path(p).stem in truth for p in paths)
    if truth and not matched:
        raise GroundTruthError(f"{root}: no label file matches any image of '{store.name}' by name")
    values, total = {}, 0
    for sid, path in zip(ids, paths, strict=True):
        boxes = [
            fo.Detection(label=label, bounding_box=list(box.xywh))
            for box in truth.get(Path(path).stem, [])
            if (label := ontology.dataset_class(box.label)) is not None
        ]
        total += len(boxes)
        values[sid] = fo.Detections(detections=boxes)
    store.dataset.set_values(GROUND_TRUTH, values, key_field="id")
    return total


def match_counts(view, field: str = LABELS, iou: float = 0.5) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` of ``field`` against ``ground_truth`` on ``view`` (FiftyOne's
    ``evaluate_detections``, class-aware); the evaluation run is deleted afterwards."""
    key = f"match_{uuid.uuid4().hex[:6]}"
    view.evaluate_detections(field, gt_field=GROUND_TRUTH, eval_key=key, iou=iou, classwise=True)
    try:
        return tuple(sum(view.values(f"{key}_{k}")) for k in ("tp", "fp", "fn"))
    finally:
        view._dataset.delete_evaluation(key)


def final_quality(store: ImageStore, iou: float = 0.5) -> tuple[float, float]:
    """Precision and recall of the labels a dataset would ship now (``final_box_filter``)."""
    view = store.dataset.filter_labels(LABELS, final_box_filter(), only_matches=False)
    tp, fp, fn = match_counts(view, LABELS, iou)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall


def simulate_review(
    store: ImageStore, budget: int | None = None, cost: CostModel = CostModel()
) -> SimulationReport:
    """Queue up to ``budget`` images, play the reviewer on them from ``ground_truth``, apply the
    reviews, and report human seconds and the resulting precision/recall.

    The dataset must already be triaged and hold ``ground_truth``; it is changed (use a clone).
    """
    queue = build_review_queue(store, budget)
    counts = simulate_reviewer(store, queue.sample_ids)
    store.apply_reviews(reviewer="simulation")
    precision, recall = final_quality(store)
    images = len(store.dataset)
    gt_boxes = store.dataset.count(f"{GROUND_TRUTH}.detections")
    return SimulationReport(
        images=images,
        ground_truth_boxes=gt_boxes,
        queued=len(queue.sample_ids),
        verified=counts["verified"],
        rejected=counts["rejected"],
        drawn=counts["drawn"],
        review_seconds=cost.review_seconds(len(queue.sample_ids), counts["verified"], counts["drawn"]),
        scratch_seconds=cost.scratch_seconds(images, gt_boxes),
        precision=precision,
        recall=recall,
    )


# -- evaluation: one matching, then pure counts -------------------------------------------------

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
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


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
                "precision": tp / len(inside) if inside else None,
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
