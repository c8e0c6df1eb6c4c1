"""The store against a real FiftyOne database (FiftyOne's bundled mongod, or FIFTYONE_DATABASE_URI)."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from bootstrap.detections import Detections
from bootstrap.store import ImageResult, ImageState, ImageStore, NewImage, StoreError


def _new(i, digest=None):
    return NewImage(f"/data/img{i}.jpg", digest or f"{i:064x}", 100 + i, 1_000 + i)


def test_persistent_dataset_survives_a_new_process(dataset_name):
    store = ImageStore(dataset_name)
    assert store.add_pending([_new(1), _new(2)]) == 2
    # A separate Python process (new client, same database) must see the dataset and samples.
    code = (
        "import fiftyone as fo, sys;"
        f"ds = fo.load_dataset('{dataset_name}');"
        "print(len(ds), ds.persistent)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "2 True"


def test_add_pending_skips_known_content(dataset_name):
    store = ImageStore(dataset_name)
    assert store.add_pending([_new(1), _new(2), _new(3, digest=f"{1:064x}")]) == 2
    # Same content under a new name, and an old one again: nothing new.
    assert store.add_pending([_new(9, digest=f"{2:064x}"), _new(1)]) == 0
    assert store.add_pending([_new(4)]) == 1
    assert len(store.dataset) == 3
    assert store.known_files()["/data/img4.jpg"] == (104, 1004)
    assert store.count_pending() == 3


def test_concurrent_inserts_never_duplicate(dataset_name):
    ImageStore(dataset_name)
    images = [_new(i) for i in range(300)]
    inserted = []

    def insert(chunk):
        inserted.append(ImageStore(dataset_name).add_pending(chunk))

    # Four writers race over overlapping halves of the same images.
    threads = [threading.Thread(target=insert, args=(images[k:k + 200],)) for k in (0, 100, 0, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = ImageStore(dataset_name)
    assert len(store.dataset) == 300
    assert sum(inserted) == 300
    assert len(set(store.dataset.values("content_hash"))) == 300


def test_record_results_writes_predictions_and_failures(dataset_name):
    store = ImageStore(dataset_name)
    store.add_pending([_new(1), _new(2)])
    pending = store.list_pending(store.pending_ids())
    ok, bad = pending
    dets = Detections(
        xyxy=np.array([[10, 20, 60, 70]], np.float32), confidence=np.array([0.8], np.float32),
        class_id=np.array([2]), model_label=np.array(["car"], object),
        label=np.array(["vehicle"], object), image_wh=(100, 200),
    )
    boxes = store.record_results(
        [ImageResult(ok.sample_id, ok.uri, dets), ImageResult(bad.sample_id, bad.uri, None, "truncated")],
        model="yolov8n.pt", run_id="run-1",
    )
    assert boxes == 1
    sample = store.dataset[ok.sample_id]
    box = sample.predictions.detections[0]
    assert box.label == "vehicle" and box.model_label == "car"
    assert box.bounding_box == pytest.approx([0.1, 0.1, 0.5, 0.25])
    assert box.confidence == pytest.approx(0.8)
    assert (sample.metadata.width, sample.metadata.height) == (100, 200)
    assert sample.state == ImageState.PREDICTED
    assert sample.prediction_model == "yolov8n.pt" and sample.prediction_run == "run-1"
    assert sample.labels is None  # working labels are triage's and review's, never annotate's
    failed = store.dataset[bad.sample_id]
    assert failed.state == ImageState.FAILED and failed.failure == "truncated"
    assert store.failures() == [(bad.uri, "truncated")]
    status = store.status()
    assert status["samples"] == 2 and status["failed"] == 1 and status["predictions"] == 1
    assert status["states"]["predicted"] == 1 and store.pending_ids() == []


def test_open_existing_names_what_exists(dataset_name):
    with pytest.raises(StoreError, match=f"no dataset '{dataset_name}'"):
        ImageStore.open_existing(dataset_name)


def _dets(n, image_wh=(100, 200)):
    scores = np.linspace(0.1, 0.95, n).astype(np.float32)
    return Detections(
        xyxy=np.tile(np.array([[10, 20, 60, 70]], np.float32), (n, 1)) + np.arange(n)[:, None],
        confidence=scores, class_id=np.zeros(n, np.int64),
        model_label=np.array(["car"] * n, object), label=np.array(["car"] * n, object),
        image_wh=image_wh,
    )


def test_raw_documents_are_what_fiftyone_writes(dataset_name):
    from dataclasses import replace

    import fiftyone as fo

    from bootstrap.store import detections_document

    dets = replace(_dets(3), extras={"tta_support": np.array([1.0, 0.5, 0.5], np.float32)})
    boxes = dets.relative_xywh()
    theirs = fo.Detections(detections=[
        fo.Detection(
            label=str(dets.label[i]), bounding_box=[float(v) for v in boxes[i]],
            confidence=float(dets.confidence[i]), model_label=str(dets.model_label[i]),
            tta_support=float(dets.extras["tta_support"][i]),
        )
        for i in range(len(dets))
    ]).to_dict()
    ours = detections_document(dets)
    for box in ours["detections"] + theirs["detections"]:
        box.pop("_id")
    assert ours == theirs
    # A sample inserted by add_pending has the fields FiftyOne's own add_sample gives one.
    store = ImageStore(dataset_name)
    store.add_pending([_new(1), _new(2)])
    store.dataset.add_sample(store._fo.Sample(filepath="/data/by-fiftyone.jpg"))
    docs = {d["filepath"]: d for d in store._samples.find()}
    assert set(docs["/data/img2.jpg"]) >= set(docs["/data/by-fiftyone.jpg"]) - {"metadata"}
    assert docs["/data/img1.jpg"]["_rand"] != docs["/data/img2.jpg"]["_rand"]
    assert store.dataset.take(2, seed=1).count() == 2  # FiftyOne's sampling reads `_rand`


def test_record_results_refreshes_samples_held_in_memory(dataset_name):
    store = ImageStore(dataset_name)
    store.add_pending([_new(1)])
    (pending,) = store.list_pending(store.pending_ids())
    held = store.dataset[pending.sample_id]
    assert held.state == ImageState.PENDING
    store.record_results([ImageResult(pending.sample_id, pending.uri, _dets(2))], "m", "r")
    assert held.state == ImageState.PREDICTED and len(held.predictions.detections) == 2


def test_triage_in_chunks_covers_every_image_and_keeps_human_boxes(dataset_name, monkeypatch):
    import fiftyone as fo

    from bootstrap import store as store_module
    from bootstrap.config import TriageConfig

    monkeypatch.setattr(store_module, "TRIAGE_CHUNK", 2)  # 5 images: three round trips
    store = ImageStore(dataset_name)
    store.add_pending([_new(i) for i in range(5)])
    pending = store.list_pending(store.pending_ids())
    store.record_results([ImageResult(p.sample_id, p.uri, _dets(i)) for i, p in enumerate(pending)],
                         "m", "r")
    first = store.apply_triage(TriageConfig())
    # Scores per image: none; 0.1; 0.1 0.95; 0.1 0.53 0.95; 0.1 0.38 0.67 0.95.
    assert first == {"empty": 2, "auto_accepted": 1, "needs_review": 2}
    # A person draws a box on one image and confirms an automatic one: re-triage keeps both.
    sample = store.dataset[pending[4].sample_id]
    confirmed = sample.labels.detections[-1]
    confirmed.provenance = "human"
    sample.labels.detections.append(
        fo.Detection(label="dog", bounding_box=[0.5, 0.5, 0.1, 0.1], provenance="human")
    )
    sample.save()
    again = store.apply_triage(TriageConfig(accept=0.05, reject=0.01))
    assert again == {"auto_accepted": 4, "empty": 1}
    labels = store.dataset[pending[4].sample_id].labels.detections
    human = [(b.label, b.id) for b in labels if b.provenance == "human"]
    assert human == [(confirmed.label, confirmed.id), ("dog", labels[1].id)]
    predictions = {b.prediction_id for b in labels if b.provenance == "auto"}
    assert confirmed.prediction_id not in predictions and len(labels) == 2 + 3  # 2 human + 3 automatic


def test_known_files_can_be_asked_for_some_paths(dataset_name):
    store = ImageStore(dataset_name)
    store.add_pending([_new(1), _new(2)])
    assert store.known_files(["/data/img2.jpg", "/data/unknown.jpg"]) == {"/data/img2.jpg": (102, 1002)}
    assert store.known_files(iter([])) == {}
    assert set(store.known_files()) == {"/data/img1.jpg", "/data/img2.jpg"}


def _detection(**fields):
    import fiftyone as fo

    return fo.Detection(label="dog", bounding_box=[0.1, 0.1, 0.2, 0.2], **fields)


@pytest.mark.parametrize(
    ("box", "human"),
    [
        # What triage writes, untouched: the pipeline's to replace.
        ({"provenance": "auto", "tags": []}, False),
        (lambda: _detection(provenance="auto"), False),
        # Tagged by a person (e.g. reject), drawn with provenance human, or drawn with none at
        # all (the App's Annotate tab writes no provenance): a person's, never replaced.
        ({"provenance": "auto", "tags": ["reject"]}, True),
        ({"provenance": "human", "tags": []}, True),
        ({"tags": []}, True),
        ({"provenance": None}, True),
        (lambda: _detection(), True),
        (lambda: _detection(provenance="human"), True),
    ],
)
def test_every_box_the_pipeline_did_not_write_is_human(box, human):
    from bootstrap.store import is_human_decided, merge_working_labels

    box = box() if callable(box) else box
    assert is_human_decided(box) is human
    proposed = [{"provenance": "auto", "prediction_id": "p1", "tags": []}]
    merged = merge_working_labels({"detections": [box]}, proposed)
    assert (box in merged) is human
