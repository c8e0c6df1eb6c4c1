"""Human review: the ranked review queue, and applying what reviewers did.

The reviewer's contract (README, "Reviewing"): on an image of the queue, tag a wrong box of
``labels`` with the label tag ``reject``; add a missing box to ``labels`` with
``provenance="human"``; when done, add the sample tag ``reviewed``. ``apply_reviews``
(``bootstrap review apply``) then makes those decisions final.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from bootstrap.schema import (
    LABELS,
    PREDICTIONS,
    PRIORITY,
    REJECT_TAG,
    REVIEWED_AT,
    REVIEWED_BY,
    REVIEWED_TAG,
    STATE,
    ImageState,
    Provenance,
)
from bootstrap.store import ImageStore

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


def apply_reviews(store: ImageStore, reviewer: str | None = None) -> dict[str, int]:
    """Apply what reviewers did on images tagged ``reviewed``: drop ``reject``-tagged boxes,
    mark the remaining boxes human-confirmed, set the state ``reviewed``.

    Idempotent: an image already applied, with no new ``reject`` tag, is not touched again.
    Returns counts of images applied and boxes confirmed, rejected and drawn.
    """
    import fiftyone as fo
    from fiftyone import ViewField as F

    now = datetime.now(UTC).replace(tzinfo=None)
    has_reject = F(f"{LABELS}.detections").filter(F("tags").contains(REJECT_TAG)).length() > 0
    view = store.dataset.match_tags(REVIEWED_TAG).match(
        (F(STATE) != ImageState.REVIEWED.value) | has_reject
    )
    ids, current, states, recorded = view.values(["id", LABELS, STATE, REVIEWED_BY])
    # A reviewer a review backend recorded before apply (`review pull`: the annotator) is
    # kept; ``reviewer`` names the rest.
    reviewers = {
        sid: who if who and state != ImageState.REVIEWED.value else reviewer
        for sid, state, who in zip(ids, states, recorded, strict=True)
    }
    labels = {}
    report = {"images": len(ids), "confirmed": 0, "rejected": 0, "drawn": 0}
    for sid, working in zip(ids, current, strict=True):
        kept = []
        for box in working.detections if working is not None else []:
            if REJECT_TAG in box.tags:
                report["rejected"] += 1
                continue
            if getattr(box, "provenance", None) == Provenance.AUTO.value:
                report["confirmed"] += 1
            elif not getattr(box, "confirmed", False):
                # Drawn by a person: with `provenance: human`, or with none (the App's Annotate
                # tab; see store.is_human_decided).
                report["drawn"] += 1
            box.provenance = Provenance.HUMAN.value
            box.confirmed = True
            kept.append(box)
        labels[sid] = fo.Detections(detections=kept)
    if ids:
        store.dataset.set_values(LABELS, labels, key_field="id", validate=False)
        for field, value in ((STATE, ImageState.REVIEWED.value), (REVIEWED_AT, now)):
            store.dataset.set_values(field, dict.fromkeys(ids, value), key_field="id")
        store.dataset.set_values(REVIEWED_BY, reviewers, key_field="id")
    return report
