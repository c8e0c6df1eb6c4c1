"""Human review: the ranked review queue, and applying what reviewers did.

The reviewer's contract (README, "Reviewing"): on an image of the queue, tag a wrong box of
``labels`` with the label tag ``reject``; add a missing box to ``labels`` with
``provenance="human"``; when done, add the sample tag ``reviewed``. ``apply_reviews``
(``bootstrap review apply``) then makes those decisions final. With
``review.check_accepted: false`` only the boxes routed to review ask for a decision; accepted
boxes left on the image ship unchecked (audit images are checked whole).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from bson import ObjectId

from bootstrap.documents import box_list_document
from bootstrap.schema import (
    AUDIT,
    LABELS,
    PREDICTIONS,
    PRIORITY,
    REJECT_TAG,
    REVIEWED_AT,
    REVIEWED_BY,
    REVIEWED_TAG,
    STATE,
    UNCHECKED,
    ImageState,
    Provenance,
    Route,
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


def check_budget(budget: int | None) -> None:
    """Raises ValueError naming ``budget`` unless it is None (no limit) or at least 1."""
    if budget is not None and budget < 1:
        raise ValueError(f"budget: at least 1 image per batch (or none for no limit), got {budget}")


def build_review_queue(
    store: ImageStore, budget: int | None = None, audit_ids: tuple[str, ...] = ()
) -> ReviewQueue:
    """Save the ``budget`` highest-priority ``needs_review`` images as the saved view
    ``review-queue`` (a fixed list of samples, in priority order) and return it. ``audit_ids``
    (the random audit, ``bootstrap.review_learning.mark_audit``) come first, within the budget.

    Raises:
        ValueError: a budget below 1.
    """
    from fiftyone import ViewField as F

    check_budget(budget)

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


def reviewer_instructions(check_accepted: bool) -> str:
    """The contract in one sentence, for the review flow's pause form."""
    decide = (
        "Tag wrong boxes `reject`"
        if check_accepted
        else "Decide on the orange boxes (green, accepted ones ship as they are unless you tag them "
        "`reject`; on an image with `audit: true` check every box), tag wrong ones `reject`"
    )
    return f"{decide}, draw missing ones, tag each finished image `reviewed`, then resume here."


def apply_reviews(
    store: ImageStore, reviewer: str | None = None, check_accepted: bool = True
) -> dict[str, int]:
    """Apply what reviewers did on images tagged ``reviewed``: drop ``reject``-tagged boxes,
    mark the remaining boxes human-confirmed, set the state ``reviewed``.

    ``check_accepted`` (``review.check_accepted``): whether reviewers check the boxes triage
    accepted too. When not, an accepted box left on an image outside the audit ships as it
    is: still ``provenance: auto``, marked ``unchecked``, never counted as a person's.

    Idempotent: an image already applied, with no new ``reject`` tag, is not touched again.
    Each image is one write (its boxes, state and reviewer together), made only if the image
    is still as it was read: a triage, pull or second apply running at the same time neither
    undoes it nor has it counted twice; an image that changed is read and applied again.
    Returns counts of images applied and boxes confirmed, rejected and drawn.
    """
    from fiftyone import ViewField as F

    has_reject = F(f"{LABELS}.detections").filter(F("tags").contains(REJECT_TAG)).length() > 0
    view = store.dataset.match_tags(REVIEWED_TAG).match(
        (F(STATE) != ImageState.REVIEWED.value) | has_reject
    )
    ids = [ObjectId(i) for i in view.values("id")]
    report = {"images": 0, "confirmed": 0, "rejected": 0, "drawn": 0, "unchecked": 0}
    for _ in range(APPLY_ATTEMPTS):
        ids = _apply_images(store, ids, reviewer, report, check_accepted)
        if not ids:
            return report
    raise RuntimeError(
        f"review apply: {len(ids)} images of '{store.name}' changed under every one of "
        f"{APPLY_ATTEMPTS} attempts; run it again"
    )


#: How often an image that changed while it was being applied is read and applied again.
APPLY_ATTEMPTS = 5


def _apply_images(
    store: ImageStore, ids: list, reviewer: str | None, report: dict, check_accepted: bool = True
) -> list:
    """Apply the images ``ids`` (raw documents: one read, one conditional write each); adds
    what was applied to ``report`` and returns the ids that changed under us."""
    now = datetime.now(UTC).replace(tzinfo=None)
    changes, expected, counted = {}, {}, {}
    projection = {LABELS: 1, STATE: 1, REVIEWED_BY: 1, "tags": 1, AUDIT: 1}
    for doc in store.read_documents(ids, projection):
        boxes = (doc.get(LABELS) or {}).get("detections") or []
        state = doc.get(STATE)
        rejects = any(REJECT_TAG in (box.get("tags") or []) for box in boxes)
        if REVIEWED_TAG not in (doc.get("tags") or []) or (
            state == ImageState.REVIEWED.value and not rejects
        ):
            continue  # untagged meanwhile, or applied by another run meanwhile
        counts = {"confirmed": 0, "rejected": 0, "drawn": 0, "unchecked": 0}
        # An audited image is checked whole, whatever the contract (the stopping rule's evidence).
        checks_accepted = check_accepted or bool(doc.get(AUDIT))
        kept = []
        for box in boxes:
            if REJECT_TAG in (box.get("tags") or []):
                counts["rejected"] += 1
                continue
            automatic = box.get("provenance") == Provenance.AUTO.value
            if automatic and box.get("route") == Route.ACCEPT.value and (
                box.get(UNCHECKED) or not checks_accepted
            ):
                counts["unchecked"] += 1
                kept.append(box | {UNCHECKED: True})
                continue
            if automatic:
                counts["confirmed"] += 1
            elif not box.get("confirmed"):
                # Drawn by a person: with `provenance: human`, or with none (the App's Annotate
                # tab; see store.is_human_decided).
                counts["drawn"] += 1
            kept.append(box | {"provenance": Provenance.HUMAN.value, "confirmed": True})
        # A reviewer a review backend recorded before apply (`review pull`: the annotator) is
        # kept; ``reviewer`` names the rest.
        recorded = doc.get(REVIEWED_BY)
        changes[doc["_id"]] = {
            LABELS: box_list_document(kept),
            STATE: ImageState.REVIEWED.value,
            REVIEWED_AT: now,
            REVIEWED_BY: recorded if recorded and state != ImageState.REVIEWED.value else reviewer,
            "last_modified_at": now,
        }
        expected[doc["_id"]] = {
            LABELS: doc.get(LABELS), STATE: state, "tags": doc.get("tags"),
            REVIEWED_BY: recorded,
        }
        counted[doc["_id"]] = counts
    changed = store.bulk_set(changes, expected=expected)
    for oid, counts in counted.items():
        if oid not in changed:
            report["images"] += 1
            for key, value in counts.items():
                report[key] += value
    return changed
