"""A reviewer played from ground truth, to measure what a review policy costs and yields.

The simulated reviewer follows the same contract as a person in the FiftyOne App (README,
"Reviewing"): on each image of the queue it tags wrong boxes of ``labels`` ``reject``, draws
the missed ones with ``provenance="human"`` and tags the image ``reviewed``; ``review apply``
then makes it final, and the quality of what would ship is measured against ground truth.
Simulations run on throw-away clones, so the real dataset is never touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bootstrap.config import OntologyConfig, TriageConfig
from bootstrap.evaluation.costs import CostModel
from bootstrap.evaluation.ground_truth import import_ground_truth
from bootstrap.evaluation.metrics import final_quality
from bootstrap.ontology import Ontology
from bootstrap.review import apply_reviews, build_review_queue
from bootstrap.schema import (
    AUDIT,
    GROUND_TRUTH,
    LABELS,
    REJECT_TAG,
    REVIEWED_TAG,
    Provenance,
    Route,
)
from bootstrap.store import ImageStore
from bootstrap.triage import apply_triage


@dataclass
class SimulationReport:
    images: int
    ground_truth_boxes: int
    queued: int
    verified: int
    rejected: int
    drawn: int
    review_seconds: float
    scratch_seconds: float
    precision: float | None  # of the labels that would ship; None when there are none
    recall: float | None

    @property
    def cost_fraction(self) -> float:
        return self.review_seconds / self.scratch_seconds if self.scratch_seconds else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"cost_fraction": round(self.cost_fraction, 4)}


def simulate_reviewer(
    store: ImageStore, sample_ids: tuple[str, ...], iou: float = 0.5, check_accepted: bool = True
) -> dict:
    """Play the reviewer on ``sample_ids`` from the ``ground_truth`` field, through the same
    contract a person follows: tag wrong boxes ``reject``, draw missed ones, tag ``reviewed``.
    Without ``check_accepted`` (``review.check_accepted``) the boxes triage accepted are left
    as they are, right or wrong, except on audited images.

    Returns counts: verified (boxes looked at), rejected, drawn.
    """
    import fiftyone as fo

    view = store.dataset.select(list(sample_ids))
    view.evaluate_detections(
        LABELS, gt_field=GROUND_TRUTH, eval_key="simreview", iou=iou, classwise=True
    )
    counts = {"verified": 0, "rejected": 0, "drawn": 0}
    audits = AUDIT in store.dataset.get_field_schema()
    for sample in view.iter_samples(autosave=True, batch_size=200):
        working = sample[LABELS] or fo.Detections()
        checks_accepted = check_accepted or (audits and bool(sample[AUDIT]))
        for box in working.detections:
            automatic = getattr(box, "provenance", None) == Provenance.AUTO.value
            if not checks_accepted and automatic and getattr(box, "route", None) == Route.ACCEPT.value:
                continue  # shown as context, no decision asked
            counts["verified"] += 1
            if box["simreview"] == "fp" and REJECT_TAG not in box.tags:
                box.tags.append(REJECT_TAG)
                counts["rejected"] += 1
        truth = sample[GROUND_TRUTH]
        for gt in truth.detections if truth is not None else []:
            if gt["simreview"] == "fn":
                working.detections.append(
                    fo.Detection(
                        label=gt.label,
                        bounding_box=list(gt.bounding_box),
                        provenance=Provenance.HUMAN.value,
                    )
                )
                counts["drawn"] += 1
        sample[LABELS] = working
        sample.tags.append(REVIEWED_TAG)
    store.dataset.delete_evaluation("simreview")
    return counts


def simulate_review(
    store: ImageStore, budget: int | None = None, cost: CostModel = CostModel(), check_accepted: bool = True,
) -> SimulationReport:
    """Queue up to ``budget`` images, play the reviewer on them from ``ground_truth``, apply the
    reviews, and report human seconds and the resulting precision/recall.

    The dataset must already be triaged and hold ``ground_truth``; it is changed (use a clone).
    """
    queue = build_review_queue(store, budget)
    counts = simulate_reviewer(store, queue.sample_ids, check_accepted=check_accepted)
    apply_reviews(store, reviewer="simulation", check_accepted=check_accepted)
    quality = final_quality(store)
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
        precision=quality.precision,
        recall=quality.recall,
    )


def run_simulation(
    store: ImageStore,
    ground_truth: Path,
    triage: TriageConfig,
    budget: int | None = None,
    cost: CostModel = CostModel(),
    ontology_config: OntologyConfig | None = None,
    check_accepted: bool = True,
) -> SimulationReport:
    """Clone ``store``'s dataset, import ground truth, (re)triage with ``triage``, play the
    reviewer on up to ``budget`` images and report cost and quality. The clone is deleted."""
    with _prepared_clone(store, ground_truth, triage, ontology_config) as prepared:
        return simulate_review(prepared, budget, cost, check_accepted)


def cost_quality_curve(
    store: ImageStore,
    ground_truth: Path,
    triage: TriageConfig,
    budget_fractions: tuple[float | None, ...] = (0.0, 0.125, 0.25, 0.5, None),
    cost: CostModel = CostModel(),
    ontology_config: OntologyConfig | None = None,
    check_accepted: bool = True,
) -> list[tuple[str, SimulationReport]]:
    """One review simulation per budget (a fraction of the dataset's images; None: every image
    that needs review), for the cost-vs-quality curve. Ground truth is imported and triage run
    once; each budget then plays the reviewer on its own copy of that."""
    images = len(store.dataset)
    points = []
    with _prepared_clone(store, ground_truth, triage, ontology_config) as prepared:
        for fraction in budget_fractions:
            budget = None if fraction is None else int(round(fraction * images))
            with _throwaway_clone(prepared, "budget") as scratch:
                report = simulate_review(scratch, budget, cost, check_accepted)
            points.append(("all" if budget is None else str(budget), report))
    return points


@contextmanager
def _prepared_clone(
    store: ImageStore,
    ground_truth: Path,
    triage: TriageConfig,
    ontology_config: OntologyConfig | None,
) -> Iterator[ImageStore]:
    """A clone of ``store`` with ground truth imported and triaged with ``triage``."""
    with _throwaway_clone(store, "simulation") as clone:
        import_ground_truth(clone, ground_truth, Ontology(ontology_config))
        apply_triage(clone, triage)
        yield clone


@contextmanager
def _throwaway_clone(store: ImageStore, label: str) -> Iterator[ImageStore]:
    import fiftyone as fo

    name = f"{store.name}-{label}-{uuid.uuid4().hex[:6]}"
    store.dataset.clone(name)
    try:
        yield ImageStore(name)
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
