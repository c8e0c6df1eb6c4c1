"""Ground truth, quality and the review simulation.

``parse_yolo_labels`` is pure (lines in, boxes out); ``import_ground_truth`` does the IO and
writes the ``ground_truth`` field. Quality is measured with FiftyOne's ``evaluate_detections``
(IoU 0.5, class-aware).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from bootstrap.ontology import Ontology
from bootstrap.review import CostModel, SimulationReport, build_review_queue, simulate_reviewer
from bootstrap.store import GROUND_TRUTH, LABELS, ImageStore, Provenance

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


def import_ground_truth(store: ImageStore, root: Path, ontology: Ontology) -> int:
    """Write ground truth (mapped through the ontology) into the ``ground_truth`` field.

    Returns the number of boxes imported.
    """
    import fiftyone as fo

    truth = load_yolo_ground_truth(root)
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


def final_quality(store: ImageStore, iou: float = 0.5) -> tuple[float, float]:
    """Precision and recall of the labels a dataset would ship now: every human-decided box,
    and automatic boxes only where triage accepted them (unreviewed ``review`` boxes are not
    final)."""
    from fiftyone import ViewField as F

    final = (F("provenance") == Provenance.HUMAN.value) | (F("route") == "accept")
    view = store.dataset.filter_labels(LABELS, final, only_matches=False)
    results = view.evaluate_detections(
        LABELS, gt_field=GROUND_TRUTH, eval_key="final", iou=iou, classwise=True
    )
    tp, fp, fn = (sum(view.values(f"final_{k}")) for k in ("tp", "fp", "fn"))
    store.dataset.delete_evaluation("final")
    del results
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
