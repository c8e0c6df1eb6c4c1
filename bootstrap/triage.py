"""Triage: route each predicted box, decide each image's state and its review priority.

Pure functions on in-memory values (no database, no model): cheap to rerun with new thresholds
over stored predictions, and unit-testable with hand-made boxes.

Per box, with the thresholds of its class (``triage.per_class``, else the defaults):

* ``accept``: confidence >= accept -> a working label with provenance ``auto``;
* ``review``: reject <= confidence < accept -> shown to a person;
* ``reject``: confidence < reject -> kept only in ``predictions``.

Per image (``ImageState``): ``empty`` when no box survives rejection and no signal fires;
``auto_accepted`` when every surviving box is accepted and no signal fires; else
``needs_review``.

Uncertainty signals (each a number stored on the sample, so people can sort by it):

* ``class_confusion``: pairs of surviving boxes that overlap (IoU >= ``confusion_iou``) with
  different classes: the model could not decide what the object is;
* ``likely_misses``: the summed confidence of the rejected boxes, i.e. how many objects the model
  half-saw but did not keep (an expected count of misses if scores were calibrated);
* ``tta_disagreement`` / ``model_disagreement``: when proposals are fused from several views
  (``detector.tta``, ``detector.second_model``; ``bootstrap.proposals``), the number of
  surviving boxes the other views did not find, counted fractionally: sum of ``1 - support``.
  At ``disagreement_at`` or more the image needs review.

With ``review_at``, a ``needs_review`` image whose priority is below it is not worth a person's
time: it becomes ``auto_accepted`` (its accepted boxes are exported) or ``empty``. With
``score_model``, routes and priority use the probability that a box is right (``box_scores``)
instead of its raw confidence.

Priority (higher is reviewed first) adds up the expected corrections on the image:
``sum over review boxes of 1 - |2c - 1|`` (1 for a coin-flip box, 0 near 0 or 1)
``+ likely_misses + class_confusion + tta_disagreement + model_disagreement``.

``triage_fields`` is all of that for one stored image (what ``annotate`` writes together with
the image's predictions, ``ImageStore.record_results``); ``apply_triage`` runs it over a stored
dataset (the one function here that touches the database, through ``ImageStore``'s bulk reads
and writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from bootstrap.boxes import pairwise_iou
from bootstrap.config import TriageConfig
from bootstrap.documents import box_list_document, detection_document
from bootstrap.schema import (
    BOX_EXTRAS,
    DISAGREEMENT_SIGNALS,
    LABELS,
    MODEL_SUPPORT,
    PREDICTION_MODEL,
    PREDICTION_RUN,
    PREDICTIONS,
    PRIORITY,
    REVIEWED_TAG,
    SIGNALS,
    STATE,
    TRIAGE_INPUT_STATES,
    TTA_SUPPORT,
    ImageState,
    Provenance,
    Route,
)
from bootstrap.store import ImageStore, merge_working_labels

#: Images triaged per read/write round trip (bounds triage's memory on any dataset size).
TRIAGE_CHUNK = 1000


@dataclass(frozen=True)
class ImageTriage:
    """The triage outcome of one image."""

    routes: tuple[Route, ...]
    state: ImageState  # auto_accepted, needs_review or empty
    priority: float
    signals: dict[str, float]


def thresholds(config: TriageConfig, label: str) -> tuple[float, float]:
    """``(accept, reject)`` for ``label``: its own where configured, else the defaults."""
    own = config.per_class.get(label)
    accept = own.accept if own is not None and own.accept is not None else config.accept
    reject = own.reject if own is not None and own.reject is not None else config.reject
    return accept, reject


def route_boxes(labels: list[str], confidences: np.ndarray, config: TriageConfig) -> list[Route]:
    """One route per box, by the thresholds of its class."""
    routes = []
    for label, confidence in zip(labels, confidences, strict=True):
        accept, reject = thresholds(config, label)
        if confidence >= accept:
            routes.append(Route.ACCEPT)
        elif confidence >= reject:
            routes.append(Route.REVIEW)
        else:
            routes.append(Route.REJECT)
    return routes


def class_confusion(
    labels: list[str], boxes_xywh: np.ndarray, keep: np.ndarray, iou_threshold: float = 0.7
) -> int:
    """Pairs of kept boxes overlapping at IoU >= ``iou_threshold`` with different classes."""
    index = np.flatnonzero(keep)
    if len(index) < 2:
        return 0
    iou = pairwise_iou(boxes_xywh[index], boxes_xywh[index])
    names = np.array(labels, dtype=object)[index]
    differs = names[:, None] != names[None, :]
    return int(np.triu((iou >= iou_threshold) & differs, k=1).sum())


#: The score model's features besides the per-view scores, in ``ScoreModel``'s field names.
SCORE_FEATURES = (
    "bias", "logit", "log_area", "logit_x_log_area", MODEL_SUPPORT, TTA_SUPPORT, "overlap", "overlap_same",
)


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(p, dtype=np.float64), 1e-3, 1 - 1e-3)
    return np.log(clipped / (1 - clipped))


def score_features(
    confidences: np.ndarray,
    boxes_xywh: np.ndarray,
    support: Mapping[str, np.ndarray | None] | None = None,
    labels: list[str] | None = None,
    view_keys: tuple[str, ...] = (),
) -> np.ndarray:
    """(N, len(SCORE_FEATURES) + len(view_keys)) features of one image's boxes for the score
    model. A box without a support share counts as fully supported, and one without a view's
    score as that view agreeing with its fused confidence (datasets annotated before views
    recorded their scores, or a missing second model). Without ``labels`` every box counts as
    one class for ``overlap_same``."""
    confidences = np.asarray(confidences, dtype=np.float64)
    n = len(confidences)
    logit = _logit(confidences)
    xywh = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    log_area = np.log(xywh[:, 2] * xywh[:, 3] + 1e-4)

    def given(key: str) -> np.ndarray | None:
        values = (support or {}).get(key)
        return None if values is None or len(values) != n else np.asarray(values, dtype=np.float64)

    overlap = overlap_same = np.zeros(n)
    if n > 1:
        iou = pairwise_iou(xywh, xywh)
        higher = confidences[None, :] > confidences[:, None]  # [i, j]: box j scores above box i
        overlap = np.where(higher, iou, 0.0).max(axis=1)
        names = np.asarray(labels if labels is not None else [""] * n, dtype=object)
        overlap_same = np.where(higher & (names[:, None] == names[None, :]), iou, 0.0).max(axis=1)
    ones = np.ones(n)
    columns = [ones, logit, log_area, logit * log_area,
               s if (s := given(MODEL_SUPPORT)) is not None else ones,
               s if (s := given(TTA_SUPPORT)) is not None else ones,
               overlap, overlap_same]
    columns += [_logit(s) if (s := given(key)) is not None else logit for key in view_keys]
    return np.column_stack(columns) if n else np.zeros((0, len(columns)))


def box_scores(
    config: TriageConfig,
    confidences: np.ndarray,
    boxes_xywh: np.ndarray,
    support: Mapping[str, np.ndarray | None] | None = None,
    labels: list[str] | None = None,
) -> np.ndarray:
    """The score triage routes on: the stored confidence, or with ``config.score_model`` the
    probability that the box is right (a logistic model of ``score_features``: its confidence,
    relative size, the views' support and own scores, its overlap with higher-scored boxes)."""
    confidences = np.asarray(confidences, dtype=np.float64)
    model = config.score_model
    if model is None or not len(confidences):
        return confidences
    keys = tuple(model.views)
    weights = np.array([getattr(model, name) for name in SCORE_FEATURES] + [model.views[k] for k in keys])
    z = score_features(confidences, boxes_xywh, support, labels, keys) @ weights
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def triage_image(
    labels: list[str],
    confidences: np.ndarray,
    boxes_xywh: np.ndarray,
    config: TriageConfig,
    support: Mapping[str, np.ndarray | None] | None = None,
) -> ImageTriage:
    """Route an image's boxes and derive its state, signals and priority.

    Args:
        labels, confidences, boxes_xywh: the image's stored predictions.
        config: thresholds, and which signals are on (``class_confusion_iou``,
            ``likely_misses_at``, ``disagreement_at``; ``None`` switches a signal off).
        support: per-box view agreement stored with fused proposals (``tta_support``,
            ``model_support``: the share of views that found each box; ``bootstrap.proposals``).
    """
    confidences = box_scores(config, confidences, boxes_xywh, support, labels)
    routes = route_boxes(labels, confidences, config)
    route_array = np.array([r.value for r in routes], dtype=object)
    kept = route_array != Route.REJECT.value
    review = route_array == Route.REVIEW.value
    signals = dict.fromkeys(SIGNALS, 0.0)
    if config.class_confusion_iou is not None:
        signals["class_confusion"] = float(
            class_confusion(labels, boxes_xywh, kept, config.class_confusion_iou)
        )
    if config.likely_misses_at is not None:
        signals["likely_misses"] = float(confidences[~kept].sum())
    if config.disagreement_at is not None:
        for signal, key in DISAGREEMENT_SIGNALS.items():
            shares = (support or {}).get(key)
            if shares is not None and len(shares) == len(kept):
                signals[signal] = float((1.0 - np.asarray(shares, dtype=np.float64)[kept]).sum())

    doubt = (
        signals["class_confusion"] > 0
        or (config.likely_misses_at is not None and signals["likely_misses"] >= config.likely_misses_at)
        or (
            config.disagreement_at is not None
            and max(signals[s] for s in DISAGREEMENT_SIGNALS) >= config.disagreement_at
        )
    )
    if review.any() or doubt:
        state = ImageState.NEEDS_REVIEW
    elif kept.any():
        state = ImageState.AUTO_ACCEPTED
    else:
        state = ImageState.EMPTY

    box_doubt = float((1.0 - np.abs(2.0 * confidences[review] - 1.0)).sum())
    priority = box_doubt + sum(signals.values())
    if state == ImageState.NEEDS_REVIEW and config.review_at is not None and priority < config.review_at:
        # Too few expected corrections to be worth a person's time: export what was accepted.
        accepted = route_array == Route.ACCEPT.value
        state = ImageState.AUTO_ACCEPTED if accepted.any() else ImageState.EMPTY
    return ImageTriage(tuple(routes), state, round(priority, 6), signals)


# -- applying triage to a dataset ------------------------------------------------------------


def apply_triage(
    store: ImageStore, config: TriageConfig, states: tuple[str, ...] = TRIAGE_INPUT_STATES
) -> dict[str, int]:
    """(Re)route a dataset's stored predictions into ``labels``, states, signals, priorities.

    No inference: this reads ``predictions`` only, so new thresholds are cheap to try.
    Reviewed, failed and pending images are left alone, and so are images tagged ``reviewed``
    but not applied yet (a person finished them); on every other image the boxes
    a human decided are kept as they are (``store.merge_working_labels``).
    ``states`` limits which images are (re)triaged (``annotate`` passes only ``predicted``);
    it never admits reviewed, failed or pending images.

    Another process may write the same images meanwhile (``review apply``, a reviewer in the
    App): each image is written only if its ``labels`` and ``state`` are still those it was
    triaged from, and the others are read and triaged again, so no human decision made during
    triage is written over.
    Returns the number of images per resulting state.
    """
    states = tuple(s for s in states if s in TRIAGE_INPUT_STATES)
    # The ids first (compact), then the documents chunk by chunk: memory stays flat however
    # large the dataset, and a cursor over `state` would meet documents again as their state
    # changes under it. Raw documents, not FiftyOne objects: building a Detection object per
    # stored box was most of triage's time.
    ids = store.ids_in_states(states)
    counts: dict[str, int] = {}
    for start in range(0, len(ids), TRIAGE_CHUNK):
        chunk = ids[start:start + TRIAGE_CHUNK]
        for _ in range(TRIAGE_ATTEMPTS):
            chunk = _triage_chunk(store, config, chunk, states, counts)
            if not chunk:
                break
        else:
            raise RuntimeError(
                f"triage: {len(chunk)} images of '{store.name}' changed under every one of "
                f"{TRIAGE_ATTEMPTS} attempts; run triage again"
            )
    return counts


#: How often an image that another process changed during triage is read and triaged again.
TRIAGE_ATTEMPTS = 5


def triage_fields(doc: dict, config: TriageConfig) -> dict | None:
    """The fields triage sets on the stored image ``doc`` (its ``predictions``, the model and
    run that made them, its ``labels`` and ``tags``): working labels (human-decided boxes kept,
    ``store.merge_working_labels``), ``state``, ``priority`` and the signals. None when triage
    leaves the image alone: a person finished it (``reviewed`` tag) and ``review apply`` will
    make what they saw final, so new boxes must not slip in unseen.

    Used by ``apply_triage`` and by ``ImageStore.record_results``, which stores an image's
    predictions and their triage in one write.
    """
    if REVIEWED_TAG in (doc.get("tags") or []):
        return None
    boxes = (doc.get(PREDICTIONS) or {}).get("detections") or []
    support = {
        key: np.array([box[key] for box in boxes], dtype=np.float64)
        for key in BOX_EXTRAS  # per-box view support and scores, when fused
        if boxes and all(box.get(key) is not None for box in boxes)
    }
    outcome = triage_image(
        [box["label"] for box in boxes],
        np.array([box.get("confidence") for box in boxes], dtype=np.float64),
        np.array([box["bounding_box"] for box in boxes], dtype=np.float64).reshape(-1, 4),
        config,
        support,
    )
    proposed = [
        detection_document(
            label=box["label"],
            bounding_box=box["bounding_box"],
            confidence=box.get("confidence"),
            provenance=Provenance.AUTO.value,
            route=route.value,
            prediction_id=str(box["_id"]),
            model=doc.get(PREDICTION_MODEL),
            run=doc.get(PREDICTION_RUN),
            **{key: box[key] for key in support if key in DISAGREEMENT_SIGNALS.values()},
        )
        for box, route in zip(boxes, outcome.routes, strict=True)
        if route != Route.REJECT
    ]
    return {
        LABELS: box_list_document(merge_working_labels(doc.get(LABELS), proposed)),
        STATE: outcome.state.value,
        PRIORITY: outcome.priority,
        **outcome.signals,
    }


def _triage_chunk(store, config, ids, states, counts) -> list:
    """Triage the images ``ids`` still in ``states``; add their new states to ``counts`` and
    return the ids that changed under us (to be triaged again)."""
    box_fields = ("_id", "label", "confidence", "bounding_box", *BOX_EXTRAS)
    projection = {
        PREDICTION_MODEL: 1, PREDICTION_RUN: 1, LABELS: 1, STATE: 1, "tags": 1,
        **{f"{PREDICTIONS}.detections.{f}": 1 for f in box_fields},
    }
    now = datetime.now(UTC).replace(tzinfo=None)
    changes, expected = {}, {}
    for doc in store.read_documents(ids, projection):
        if doc.get(STATE) not in states:  # reviewed (or else) since the ids were listed
            continue
        fields = triage_fields(doc, config)
        if fields is None:
            continue
        changes[doc["_id"]] = fields | {"last_modified_at": now}
        # Exactly what was read: the write applies only if nobody changed them since.
        expected[doc["_id"]] = {LABELS: doc.get(LABELS), STATE: doc.get(STATE)}
    changed = store.bulk_set(changes, expected=expected)
    for oid, fields in changes.items():
        if oid not in changed:
            counts[fields[STATE]] = counts.get(fields[STATE], 0) + 1
    return changed
