"""What a dataset learns from its reviews: thresholds after each batch, and the stopping rule.

``learn_from_reviews`` runs after every ``review apply`` (CLI and the ``review`` flow): it matches
the raw predictions of every reviewed image against the labels people confirmed, learns per-class
thresholds shrunk towards the config's (``bootstrap.learning``), keeps them in the dataset's info
(``learned_triage``, with a history entry per batch: when, how many boxes of evidence, what
changed) and re-triages the images no person has touched. ``effective_triage`` lays the learned
thresholds over a config's, so a later ``triage``/``review`` does not undo them.

``quality_estimate`` is the stopping rule on a dataset (``bootstrap.stopping``): the estimated
precision and recall of what the export would ship now, with lower bounds, from the reviewed
images and the random audit.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np

from bootstrap.config import TriageConfig, validate_config
from bootstrap.evaluation.holdout import match_boxes
from bootstrap.learning import PRIOR_BOXES, learn_thresholds
from bootstrap.schema import (
    AUDIT,
    BOX_EXTRAS,
    CONTENT_HASH,
    LABELS,
    PREDICTIONS,
    REJECT_TAG,
    STATE,
    UNCHECKED,
    ImageState,
)
from bootstrap.stopping import DEFAULT_TARGETS, ImageRecord, QualityEstimate, estimate_quality
from bootstrap.store import ImageStore
from bootstrap.triage import apply_triage, box_scores, thresholds

log = logging.getLogger(__name__)

LEARNED_INFO = "learned_triage"


def effective_triage(store: ImageStore, config: TriageConfig) -> TriageConfig:
    """``config`` with the per-class thresholds the dataset learned from its reviews on top."""
    learned = (store.dataset.info or {}).get(LEARNED_INFO, {}).get("per_class")
    if not learned:
        return config
    per_class = {name: t.model_dump() for name, t in config.per_class.items()} | learned
    return validate_config({"dataset": "effective", "triage": config.model_dump() | {"per_class": per_class}}).triage


def _xyxy(boxes) -> np.ndarray:
    xywh = np.array([b.bounding_box for b in boxes], dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def _reviewed_evidence(store: ImageStore):
    """Per reviewed image: (sample id, predictions, confirmed labels, whether audited)."""
    from fiftyone import ViewField as F

    view = store.dataset.match(F(STATE) == ImageState.REVIEWED.value)
    fields = ["id", PREDICTIONS, LABELS]
    has_audit = AUDIT in store.dataset.get_field_schema()
    values = view.values(fields + ([AUDIT] if has_audit else []))
    audits = values[3] if has_audit else [None] * len(values[0])
    for sid, predictions, labels, audited in zip(*values[:3], audits, strict=True):
        preds = predictions.detections if predictions is not None else []
        kept = [b for b in (labels.detections if labels is not None else []) if REJECT_TAG not in b.tags]
        yield sid, preds, kept, bool(audited)


def _scores(config: TriageConfig, boxes) -> np.ndarray:
    """The scores triage routes these stored boxes on (``box_scores``)."""
    support = {
        key: np.array([b[key] for b in boxes], dtype=np.float64)
        for key in BOX_EXTRAS
        if boxes and all(b.has_field(key) and b[key] is not None for b in boxes)
    }
    xywh = np.array([b.bounding_box for b in boxes], dtype=np.float64).reshape(-1, 4)
    return box_scores(config, np.array([b.confidence or 0.0 for b in boxes]), xywh, support,
                      [b.label for b in boxes])


def learn_from_reviews(
    store: ImageStore, prior: TriageConfig, batch: str | None = None, prior_boxes: float = PRIOR_BOXES,
) -> dict:
    """Learn thresholds from every reviewed image, record them, re-triage untouched images.

    Returns the history entry: time, batch, evidence boxes, per-class changes, images per state.
    """
    evidence = []
    for _, preds, kept, _ in _reviewed_evidence(store):
        scores = _scores(prior, preds)
        hit, _ = match_boxes(_xyxy(preds), [b.label for b in preds], scores, _xyxy(kept), [b.label for b in kept])
        # Where accepted boxes shipped unchecked, a box at an accepted score matching one of
        # them is no evidence that it is right: only what a person checked teaches.
        unchecked = any(getattr(b, UNCHECKED, False) for b in kept)
        evidence += [
            (b.label, float(score), bool(h)) for b, score, h in zip(preds, scores, hit, strict=True)
            if not (unchecked and score >= thresholds(prior, b.label)[0])
        ]
    learned, changes = learn_thresholds(prior, evidence, prior_boxes=prior_boxes)
    moved = [c for c in changes if c.accept[0] != c.accept[1] or c.reject[0] != c.reject[1]]
    routed = apply_triage(store, learned)
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "batch": batch,
        "evidence_boxes": len(evidence),
        "classes_changed": len(moved),
        "changes": [c.to_dict() for c in moved],
        "routed": routed,
    }
    info = dict(store.dataset.info or {})
    history = list(info.get(LEARNED_INFO, {}).get("history", []))
    info[LEARNED_INFO] = {
        "per_class": {c.label: {"accept": c.accept[1], "reject": c.reject[1]} for c in changes},
        "history": history + [entry],
    }
    store.dataset.info = info
    store.dataset.save()
    log.info("learned thresholds from %d boxes of evidence: %d classes moved", len(evidence), len(moved))
    return entry


def quality_estimate(store: ImageStore, config: TriageConfig) -> QualityEstimate:
    """The stopping rule on ``store``: estimated precision/recall of the export now."""
    config = effective_triage(store, config)
    records = []
    for _, preds, kept, audited in _reviewed_evidence(store):
        scores = _scores(config, preds)
        chosen = [i for i, b in enumerate(preds) if scores[i] >= thresholds(config, b.label)[0]]
        accepted = [preds[i] for i in chosen]
        hit, _ = match_boxes(
            _xyxy(accepted), [b.label for b in accepted], scores[chosen], _xyxy(kept), [b.label for b in kept],
        )
        unchecked = sum(1 for b in kept if getattr(b, UNCHECKED, False))
        records.append(ImageRecord("reviewed", len(accepted), len(kept) - unchecked, int(hit.sum()),
                                   audited, unchecked=unchecked))
    from fiftyone import ViewField as F

    waiting = store.dataset.match(F(STATE) != ImageState.REVIEWED.value)
    states, labels = waiting.values([STATE, f"{LABELS}.detections"])
    for state, boxes in zip(states, labels, strict=True):
        accepted = sum(getattr(b, "route", None) == "accept" for b in boxes or [])
        records.append(ImageRecord(state or ImageState.PENDING.value, accepted))
    return estimate_quality(records)


def mark_audit(store: ImageStore, fraction: float) -> list[str]:
    """Draw the random audit (``bootstrap.stopping.audit_sample`` over every image's content
    hash, so it does not depend on priorities) and return the ids of audit images that are
    neither reviewed nor waiting for review: they go into the next review batch."""
    from bootstrap.stopping import audit_sample

    ids, keys, states = store.dataset.values(["id", CONTENT_HASH, STATE])
    chosen = set(audit_sample([k for k in keys if k], fraction))
    picked = [
        sid for sid, key, state in zip(ids, keys, states, strict=True)
        if key in chosen and state in (ImageState.AUTO_ACCEPTED.value, ImageState.EMPTY.value)
    ]
    if picked:
        store.dataset.set_values(AUDIT, dict.fromkeys(picked, True), key_field="id")
    return picked


def targets_line(estimate: QualityEstimate, targets: tuple[float, float] = DEFAULT_TARGETS) -> str:
    return estimate.markdown(targets)


def queue_batch(store: ImageStore, config, budget: int | None = None):
    """The next review batch: the random audit's images first (``config.review.audit``), then
    the highest-priority images waiting (``bootstrap.review.build_review_queue``)."""
    from bootstrap.review import build_review_queue, check_budget

    check_budget(budget)  # before the audit marks anything
    audit_ids = tuple(mark_audit(store, config.review.audit)) if config.review.audit else ()
    return build_review_queue(store, budget, audit_ids)


def after_apply(store: ImageStore, config, applied: dict, batch: str | None = None) -> dict:
    """What follows an applied review batch: learn thresholds and re-triage (when
    ``config.review.learn`` and the batch applied images), then the stopping rule.

    Returns ``{"learning": history entry or None, "estimate": the stopping rule's dict}``.
    """
    learning = None
    if config.review.learn and applied.get("images"):
        learning = learn_from_reviews(store, config.triage, batch, config.review.prior_boxes)
    targets = (config.review.target_precision, config.review.target_recall)
    estimate = quality_estimate(store, config.triage)
    return {"learning": learning, "estimate": estimate.to_dict(targets),
            "estimate_markdown": estimate.markdown(targets)}


def learning_markdown(entry: dict | None) -> str:
    """A history entry of ``learn_from_reviews`` as markdown (the review flow's artifact)."""
    if not entry:
        return "No thresholds learned (learning off, or nothing applied)."
    rows = [f"| {c['label']} | {c['evidence_boxes']} | {c['accept'][0]} → {c['accept'][1]} | "
            f"{c['reject'][0]} → {c['reject'][1]} |" for c in entry["changes"]]
    return "\n".join([
        f"Thresholds learned from {entry['evidence_boxes']} reviewed boxes; "
        f"{entry['classes_changed']} classes moved; untouched images re-triaged: {entry['routed']}.",
        "", "| class | evidence boxes | accept | reject |", "|---|---|---|---|", *rows,
    ])
