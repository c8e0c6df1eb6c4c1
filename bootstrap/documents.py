"""Our boxes as the documents FiftyOne stores, and the FiftyOne internals bulk I/O needs.

FiftyOne's public API builds one ``fo.Sample``/``fo.Detection`` object per item and validates
each; at pipeline scale that was most of the time (see docs/benchmarks.md, "Scale"). The store
therefore reads and writes raw MongoDB documents in bulk. This module is the one place that
knows what those documents look like and that touches FiftyOne internals; each internal it uses
has a test that fails if FiftyOne changes it (``tests/integration/test_documents.py``):

* ``dataset._sample_collection``: the pymongo collection behind a dataset;
* ``dataset._make_dict``: FiftyOne's own serialisation of a new sample (its bookkeeping fields);
* ``_rand``: the random field FiftyOne gives every sample;
* ``fo.Sample._reload_docs``: refreshes in-memory samples after a raw write, as ``set_values`` does.
"""

from __future__ import annotations

import random
from datetime import datetime

from bson import ObjectId

from bootstrap.detections import Detections


def detection_document(**fields) -> dict:
    """The stored form of ``fo.Detection(**fields)``: dynamic attributes sit beside the built-in
    ones, as FiftyOne stores them."""
    return {"_id": ObjectId(), "_cls": "Detection", "attributes": {}, "tags": [], **fields}


def detections_document(detections: Detections, **box_fields) -> dict:
    """Our ``Detections`` as the document FiftyOne stores for ``fo.Detections`` (relative
    [x, y, w, h] boxes), without building ``fo.Detection`` objects. ``box_fields`` are added
    to every box."""
    boxes = detections.relative_xywh().tolist()
    return {
        "_cls": "Detections",
        "detections": [
            detection_document(
                label=str(detections.label[i]),
                bounding_box=boxes[i],
                confidence=float(detections.confidence[i]),
                model_label=str(detections.model_label[i]),
                **{key: float(values[i]) for key, values in detections.extras.items()},
                **box_fields,
            )
            for i in range(len(detections))
        ],
    }


def box_list_document(boxes: list[dict]) -> dict:
    """An ``fo.Detections`` document holding ``boxes`` (documents)."""
    return {"_cls": "Detections", "detections": boxes}


def image_metadata_document(width: int, height: int, mime_type: str | None) -> dict:
    """The stored form of ``fo.ImageMetadata(width=, height=, mime_type=)``."""
    return {"_cls": "ImageMetadata", "width": width, "height": height, "mime_type": mime_type}


def box_field(box, name: str):
    """Attribute ``name`` of a box given as an ``fo.Detection`` or as its stored document."""
    return box.get(name) if isinstance(box, dict) else getattr(box, name, None)


def sample_collection(dataset):
    """The pymongo collection holding ``dataset``'s samples."""
    return dataset._sample_collection


def new_sample_documents(dataset, samples: list[dict], now: datetime) -> list[dict]:
    """Documents for new samples with the given top-level ``fields`` each (``filepath`` among
    them), as FiftyOne's ``add_samples`` would insert them.

    FiftyOne serialises the first one (its own bookkeeping fields); the rest are copies of it
    with their own fields and ``_rand``: building an ``fo.Sample`` per image was most of the
    insert time.
    """
    import fiftyone as fo

    if not samples:
        return []
    template = dataset._make_dict(fo.Sample(**samples[0]), created_at=now, last_modified_at=now)
    # Every sample is an image (discovery registers only images); FiftyOne guesses the media
    # type from the name, and the first sample's guess would otherwise be copied to all: a
    # name it cannot read ("..jpg": 'unknown') made every export of the chunk fail.
    return [template | fields | {"_rand": _sample_rand(), "_media_type": "image"}
            for fields in samples]


def reload_samples(dataset, sample_ids: list) -> None:
    """Refresh in-memory ``fo.Sample`` objects of ``sample_ids`` after a raw write (what
    FiftyOne's own ``set_values`` does), so a caller holding one sees the new values."""
    import fiftyone.core.sample as fos

    fos.Sample._reload_docs(dataset._sample_collection_name, sample_ids=list(sample_ids))


def _sample_rand() -> float:
    # What FiftyOne puts in a new sample's `_rand` (fiftyone.core.odm.sample._generate_rand).
    return random.random() * 0.001 + 0.999
