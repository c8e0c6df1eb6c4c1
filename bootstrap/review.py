"""Human review: the ranked review queue, and a simulated reviewer that follows the same
contract as a person in the FiftyOne App.

The reviewer's contract (README, "Reviewing"): on an image of the queue, tag a wrong box of
``labels`` with the label tag ``reject``; add a missing box to ``labels`` with
``provenance="human"``; when done, add the sample tag ``reviewed``. ``bootstrap review apply``
(``ImageStore.apply_reviews``) then makes those decisions final.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from bootstrap.store import (
    GROUND_TRUTH,
    LABELS,
    PREDICTIONS,
    PRIORITY,
    REJECT_TAG,
    REVIEWED_TAG,
    STATE,
    ImageState,
    ImageStore,
    Provenance,
)

log = logging.getLogger(__name__)

QUEUE_VIEW = "review-queue"


@dataclass(frozen=True)
class ReviewQueue:
    """The next batch of images for people, highest priority first."""

    view_name: str
    sample_ids: tuple[str, ...]
    waiting: int  # needs_review images in all, queued or not


def build_review_queue(
    store: ImageStore, budget: int | None = None, audit_ids: tuple[str, ...] = ()
) -> ReviewQueue:
    """Save the ``budget`` highest-priority ``needs_review`` images as the saved view
    ``review-queue`` (a fixed list of samples, in priority order) and return it. ``audit_ids``
    (the random audit, ``bootstrap.review_learning.mark_audit``) come first, within the budget."""
    from fiftyone import ViewField as F

    waiting = store.dataset.match(F(STATE) == ImageState.NEEDS_REVIEW.value)
    ranked = waiting.match_tags(REVIEWED_TAG, bool=False).sort_by(PRIORITY, reverse=True)
    audit_ids = tuple(audit_ids)[:budget] if budget is not None else tuple(audit_ids)
    if budget is not None:
        ranked = ranked.limit(budget - len(audit_ids))
    ids = audit_ids + tuple(i for i in ranked.values("id") if i not in audit_ids)
    # A fixed selection, not the dynamic match: the batch must not change under a reviewer as
    # states change. Raw `predictions` (every box above the floor) are left out of the view: the
    # reviewer works on `labels`, and two overlaid box sets hide the image.
    queue = store.dataset.select(ids, ordered=True).exclude_fields(PREDICTIONS)
    store.dataset.save_view(QUEUE_VIEW, queue, overwrite=True)
    return ReviewQueue(QUEUE_VIEW, ids, len(waiting))


def queue_markdown(dataset: str, queue: ReviewQueue, states: dict[str, int]) -> str:
    """The review batch as markdown: images per state, then the queued sample ids in order."""
    lines = [f"# Review queue of `{dataset}`", "", "| state | images |", "|---|---|"]
    lines += [f"| {state} | {count} |" for state, count in states.items()]
    lines += [
        "",
        f"**{len(queue.sample_ids)}** of {queue.waiting} images waiting are queued in the saved "
        f"view `{queue.view_name}` (FiftyOne App: `bootstrap app {dataset}`, then pick the view).",
        "",
    ]
    lines += [f"{rank}. `{sid}`" for rank, sid in enumerate(queue.sample_ids, start=1)]
    return "\n".join(lines)


@dataclass(frozen=True)
class CostModel:
    """Seconds of human time per action (defaults from labelling-tool timing studies we use)."""

    open_image: float = 1.0
    verify_box: float = 2.0
    draw_box: float = 7.0

    def review_seconds(self, opened: int, verified: int, drawn: int) -> float:
        return opened * self.open_image + verified * self.verify_box + drawn * self.draw_box

    def scratch_seconds(self, images: int, boxes: int) -> float:
        """Labelling everything by hand: open each image, draw each box."""
        return images * self.open_image + boxes * self.draw_box


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
    precision: float
    recall: float

    @property
    def cost_fraction(self) -> float:
        return self.review_seconds / self.scratch_seconds if self.scratch_seconds else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"cost_fraction": round(self.cost_fraction, 4)}


def simulate_reviewer(store: ImageStore, sample_ids: tuple[str, ...], iou: float = 0.5) -> dict:
    """Play the reviewer on ``sample_ids`` from the ``ground_truth`` field, through the same
    contract a person follows: tag wrong boxes ``reject``, draw missed ones, tag ``reviewed``.

    Returns counts: verified (boxes looked at), rejected, drawn.
    """
    import fiftyone as fo

    view = store.dataset.select(list(sample_ids))
    view.evaluate_detections(
        LABELS, gt_field=GROUND_TRUTH, eval_key="simreview", iou=iou, classwise=True
    )
    counts = {"verified": 0, "rejected": 0, "drawn": 0}
    for sample in view.iter_samples(autosave=True, batch_size=200):
        working = sample[LABELS] or fo.Detections()
        for box in working.detections:
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
