"""The words every stage shares: sample field names, image states, box provenance, tags.

A dataset's samples carry these fields (``bootstrap.store`` creates them):

==================  ==========================================================================
``content_hash``    SHA-256 of the file's bytes; unique index: an image is stored once, even
                    when two runs insert it at the same moment
``file_size``       bytes, with ``file_mtime_ns``: lets discovery skip a known file unread
``state``           ``ImageState``: pending -> predicted | failed, then triage and review states
``failure``         why the image could not be decoded (state ``failed``), else None
``metadata``        ``fo.ImageMetadata`` (upright width/height, size)
``predictions``     raw model output above the confidence floor (``fo.Detections``); each box has
                    ``confidence``, ``label`` (dataset class), ``model_label`` (model class)
``prediction_model``/``prediction_run``/``predicted_at``: which model and run made them, when
``labels``          working labels (``fo.Detections``): boxes triage wrote carry
                    ``provenance: auto``; any other box (``human``, or none: drawn in the App)
                    is a person's. Written by triage and review, never by ``annotate``
``priority``        review priority (higher first); written by triage
``reviewed_by``/``reviewed_at``: who made an image's labels final, when
``ground_truth``    reference boxes imported for evaluation and simulation
==================  ==========================================================================

Pure constants: importing this module imports nothing heavy.
"""

from __future__ import annotations

from enum import StrEnum

CONTENT_HASH = "content_hash"
FILE_SIZE = "file_size"
FILE_MTIME = "file_mtime_ns"
STATE = "state"
FAILURE = "failure"
PREDICTIONS = "predictions"
PREDICTION_MODEL = "prediction_model"
PREDICTION_RUN = "prediction_run"
PREDICTED_AT = "predicted_at"
LABELS = "labels"
PRIORITY = "priority"
REVIEWED_BY = "reviewed_by"
REVIEWED_AT = "reviewed_at"
GROUND_TRUTH = "ground_truth"
#: Sample field: the image was queued as part of the random audit (``bootstrap.stopping``).
AUDIT = "audit"
#: Box attribute ``review apply`` sets on an accepted box it ships unchecked (a review that
#: checks only the boxes routed to review, ``review.check_accepted: false``).
UNCHECKED = "unchecked"

#: Sample tag a reviewer adds when done with an image; label tag for a wrong box.
REVIEWED_TAG = "reviewed"
REJECT_TAG = "reject"

#: Per-box view support stored with fused proposals (``bootstrap.proposals``): the share of the
#: first model's views (``tta_support``) and of the models (``model_support``) that found a box.
TTA_SUPPORT = "tta_support"
MODEL_SUPPORT = "model_support"

#: Model families and view kinds of fused proposals (``bootstrap.proposals``).
FAMILIES = ("base", "second")
VIEW_KINDS = ("plain", "hflip", "upscale", "large", "tiles")


def view_score_key(family: str, kind: str) -> str:
    """The per-box field holding the confidence one view gave a fused box (0: not found), e.g.
    ``score_base`` (the first model on the image itself) or ``score_second_large``."""
    return f"score_{family}" + ("" if kind == "plain" else f"_{kind}")


VIEW_SCORE_KEYS = tuple(view_score_key(f, k) for f in FAMILIES for k in VIEW_KINDS)
#: Every per-box number stored with fused proposals: what triage's score model may read.
BOX_EXTRAS = (TTA_SUPPORT, MODEL_SUPPORT, *VIEW_SCORE_KEYS)

#: Triage's doubt signals, one float field per image (``bootstrap.triage``): the disagreement
#: signals map to the per-box support they are computed from.
DISAGREEMENT_SIGNALS = {"tta_disagreement": TTA_SUPPORT, "model_disagreement": MODEL_SUPPORT}
SIGNALS = ("class_confusion", "likely_misses", *DISAGREEMENT_SIGNALS)


class ImageState(StrEnum):
    """Where an image is in the pipeline."""

    PENDING = "pending"  # discovered, waiting for the detector
    PREDICTED = "predicted"  # detector ran; not triaged yet
    FAILED = "failed"  # could not be decoded; see `failure`
    AUTO_ACCEPTED = "auto_accepted"  # triage: every kept box accepted, no doubt signal
    NEEDS_REVIEW = "needs_review"  # triage: a person should look
    EMPTY = "empty"  # triage: nothing above the reject threshold
    REVIEWED = "reviewed"  # a person confirmed the labels


#: States triage may (re)assign; reviewed, failed and pending images are never re-triaged.
TRIAGE_INPUT_STATES = (
    ImageState.PREDICTED.value,
    ImageState.AUTO_ACCEPTED.value,
    ImageState.NEEDS_REVIEW.value,
    ImageState.EMPTY.value,
)


#: States triage assigns.
TRIAGE_OUTPUT_STATES = (
    ImageState.AUTO_ACCEPTED.value,
    ImageState.NEEDS_REVIEW.value,
    ImageState.EMPTY.value,
)


class Provenance(StrEnum):
    """Who made a working box: the pipeline (``auto``) or a person (``human``)."""

    AUTO = "auto"
    HUMAN = "human"


class Route(StrEnum):
    """Where triage sends a predicted box."""

    ACCEPT = "accept"
    REVIEW = "review"
    REJECT = "reject"
