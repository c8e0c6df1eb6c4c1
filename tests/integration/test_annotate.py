"""The library's pipeline driver (``bootstrap.annotate``) on real photos, the real model and a
real FiftyOne database: how many writes an image costs, what is stored for a large JPEG decoded
reduced, and the chunk writer (errors surface, interruptions leave whole images)."""

from __future__ import annotations

import collections

import pymongo.collection
import pytest

from bootstrap.config import load_pipeline_config
from bootstrap.schema import CONTENT_HASH, STATE
from tests.helpers import PLAIN_CONFIG, needs_model

pytestmark = needs_model

#: pymongo's write methods, and how many documents each call writes (ops of a bulk).
_WRITES = {
    "bulk_write": lambda args, kwargs: len(list(args[0] if args else kwargs["requests"])),
    "insert_many": lambda args, kwargs: len(list(args[0] if args else kwargs["documents"])),
    **{name: lambda args, kwargs: 1 for name in (
        "insert_one", "update_one", "replace_one", "delete_one", "find_one_and_update",
        "find_one_and_replace", "find_one_and_delete")},
    **{name: lambda args, kwargs: "many" for name in ("update_many", "delete_many")},
}


@pytest.fixture
def writes(monkeypatch):
    """Every write call of this process, as ``{collection name: Counter({method: documents})}``:
    pymongo's own write methods counted (the pipeline and FiftyOne both write through them)."""
    seen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, count in _WRITES.items():
        original = getattr(pymongo.collection.Collection, name)

        def wrapper(self, *args, _original=original, _name=name, _count=count, **kwargs):
            requests = list(args[0]) if args and _name in ("bulk_write", "insert_many") else None
            if requests is not None:
                args = (requests, *args[1:])
            n = _count(args, kwargs)
            seen[self.name][_name] += n if isinstance(n, int) else 1
            seen[self.name]["calls"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(pymongo.collection.Collection, name, wrapper)
    return seen


def test_an_image_is_written_once_after_detection(image_folder, dataset_name, writes):
    """Discovery inserts each image (``pending``: the work queue); after detection one update
    per image stores its predictions, triage outcome and state together."""
    from bootstrap.annotate import run_annotation
    from bootstrap.store import ImageStore

    config = load_pipeline_config(PLAIN_CONFIG, dataset=dataset_name, sources=[str(image_folder)])
    store = ImageStore(dataset_name)
    samples = store.dataset._sample_collection_name
    writes.clear()
    summary = run_annotation(config, chunk_size=4)  # two chunks: 4 + 2
    images = 6
    assert summary.annotated == images and sum(summary.routed.values()) == images
    on_samples = writes[samples]
    print(dict(on_samples))
    assert on_samples["insert_many"] == images  # discovery: one insert each
    updates = sum(n for method, n in on_samples.items() if method not in ("insert_many", "calls"))
    assert updates == images, dict(on_samples)
    states = collections.Counter(store.dataset.values(STATE))
    assert sum(n for s, n in states.items() if s in ("auto_accepted", "needs_review", "empty")) == images
    hashes = store.dataset.values(CONTENT_HASH)
    assert len(set(hashes)) == images
