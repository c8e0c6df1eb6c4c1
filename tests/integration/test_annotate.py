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


def _config(dataset, folder):
    return load_pipeline_config(PLAIN_CONFIG, dataset=dataset, sources=[str(folder)])


def _states(dataset):
    from bootstrap.store import ImageStore

    return collections.Counter(ImageStore(dataset).dataset.values(STATE))


def _slowed(monkeypatch, name, seconds, log):
    """Make ``bootstrap.annotate.<name>`` take ``seconds`` longer; record (name, start, end, thread)."""
    import threading
    import time

    from bootstrap import annotate

    original = getattr(annotate, name)

    def slowed(*args):
        start = time.monotonic()
        time.sleep(seconds)
        result = original(*args)
        log.append((name, start, time.monotonic(), threading.current_thread().name))
        return result

    monkeypatch.setattr(annotate, name, slowed)


def test_a_chunk_is_stored_while_the_next_one_is_detected(image_folder, dataset_name, monkeypatch):
    from bootstrap.annotate import run_annotation

    log = []
    _slowed(monkeypatch, "store_chunk", 1.0, log)
    _slowed(monkeypatch, "detect_chunk", 1.0, log)
    summary = run_annotation(_config(dataset_name, image_folder), chunk_size=2)  # 3 chunks
    assert summary.annotated == 6 and sum(summary.routed.values()) == 6
    detects = [entry for entry in log if entry[0] == "detect_chunk"]
    stores = [entry for entry in log if entry[0] == "store_chunk"]
    assert len(detects) == len(stores) == 3
    assert {thread for *_, thread in stores} == {"chunk-writer"}
    assert {thread for *_, thread in detects} == {"MainThread"}
    # Chunk 1 was being stored while chunk 2 was detected.
    assert stores[0][1] < detects[1][2] and stores[0][2] > detects[1][1]


def test_a_failed_write_stops_the_run_with_its_error(image_folder, dataset_name, monkeypatch):
    from bootstrap import annotate
    from bootstrap.store import StoreError

    original, calls = annotate.store_chunk, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise StoreError("the disk under the database is full")
        return original(*args)

    monkeypatch.setattr(annotate, "store_chunk", failing)
    with pytest.raises(StoreError, match="the disk under the database is full"):
        annotate.run_annotation(_config(dataset_name, image_folder), chunk_size=2)
    states = _states(dataset_name)
    assert states["pending"] == 4 and sum(states.values()) == 6  # chunk 1 stored, whole


def test_an_interruption_writes_the_chunks_detected_and_leaves_the_rest_pending(
    image_folder, dataset_name, monkeypatch
):
    from bootstrap import annotate
    from bootstrap.annotate import run_annotation

    log = []
    _slowed(monkeypatch, "store_chunk", 1.0, log)  # chunk 2 still waiting when Ctrl+C comes
    original, calls = annotate.detect_chunk, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(annotate, "detect_chunk", interrupted)
    config = _config(dataset_name, image_folder)
    with pytest.raises(KeyboardInterrupt):
        run_annotation(config, chunk_size=2)
    states = _states(dataset_name)
    assert states["pending"] == 2 and states["predicted"] == 0 and sum(states.values()) == 6
    assert len(log) == 2  # both detected chunks were stored before the interruption went on
    monkeypatch.undo()
    rerun = run_annotation(config, chunk_size=2)
    assert rerun.new == 0 and rerun.annotated == 2 and sum(rerun.routed.values()) == 2
    assert _states(dataset_name)["pending"] == 0


def test_a_large_jpeg_is_decoded_reduced_and_stored_at_its_own_size(
    tmp_path, coco_images, dataset_name, monkeypatch
):
    from PIL import Image

    from bootstrap import annotate
    from bootstrap.sources import content_hash
    from bootstrap.store import ImageStore

    folder = tmp_path / "large"
    folder.mkdir()
    with Image.open(coco_images[1]) as image:
        factor = 4000 / max(image.size)
        size = (round(image.width * factor), round(image.height * factor))
        image.convert("RGB").resize(size, Image.LANCZOS).save(folder / "large.jpg", quality=92)
    (folder / "small.jpg").write_bytes(coco_images[2].read_bytes())
    scales, original = {}, annotate.decode_image

    def recorded(uri, max_side=None):
        decoded = original(uri, max_side)
        scales[uri.rsplit("/", 1)[-1]] = decoded.scale
        return decoded

    monkeypatch.setattr(annotate, "decode_image", recorded)
    summary = annotate.run_annotation(_config(dataset_name, folder))
    assert summary.annotated == 2 and summary.failed == []
    assert scales == {"large.jpg": 4, "small.jpg": 1}  # 4000 -> 1000 pixels, above 640
    store = ImageStore(dataset_name)
    for sample in store.dataset:
        with Image.open(sample.filepath) as image:
            assert (sample.metadata.width, sample.metadata.height) == image.size
        assert sample.content_hash == content_hash(sample.filepath)  # the file's own bytes
        boxes = [b.bounding_box for b in sample.predictions.detections]
        assert boxes and all(0 <= x <= 1 and 0 <= y <= 1 and x + w <= 1.0001 and y + h <= 1.0001
                             for x, y, w, h in boxes)
