"""The store against a real FiftyOne database (FiftyOne's bundled mongod, or FIFTYONE_DATABASE_URI)."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from bootstrap.detections import Detections
from bootstrap.schema import ImageState
from bootstrap.store import ImageResult, ImageStore, StoreError
from bootstrap.triage import apply_triage
from tests.helpers import car_detections, new_image


def test_persistent_dataset_survives_a_new_process(dataset_name):
    store = ImageStore(dataset_name)
    assert store.add_pending([new_image(1), new_image(2)]) == 2
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
    assert store.add_pending([new_image(1), new_image(2), new_image(3, digest=f"{1:064x}")]) == 2
    # Same content under a new name, and an old one again: nothing new.
    assert store.add_pending([new_image(9, digest=f"{2:064x}"), new_image(1)]) == 0
    assert store.add_pending([new_image(4)]) == 1
    assert len(store.dataset) == 3
    assert store.known_files()["/data/img4.jpg"] == (104, 1004)
    assert store.count_pending() == 3


def test_concurrent_inserts_never_duplicate(dataset_name):
    ImageStore(dataset_name)
    images = [new_image(i) for i in range(300)]
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
    store.add_pending([new_image(1), new_image(2)])
    pending = store.list_pending(store.pending_ids())
    ok, bad = pending
    dets = Detections(
        xyxy=np.array([[10, 20, 60, 70]], np.float32), confidence=np.array([0.8], np.float32),
        class_id=np.array([2]), model_label=np.array(["car"], object),
        label=np.array(["vehicle"], object), image_wh=(100, 200),
    )
    recorded = store.record_results(
        [ImageResult(ok.sample_id, ok.uri, dets), ImageResult(bad.sample_id, bad.uri, None, "truncated")],
        model="yolov8n.pt", run_id="run-1",
    )
    assert recorded.boxes == 1 and recorded.states == {"predicted": 1, "failed": 1}
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


def test_triage_in_chunks_covers_every_image_and_keeps_human_boxes(dataset_name, monkeypatch):
    import fiftyone as fo

    from bootstrap import triage
    from bootstrap.config import TriageConfig

    monkeypatch.setattr(triage, "TRIAGE_CHUNK", 2)  # 5 images: three round trips
    store = ImageStore(dataset_name)
    store.add_pending([new_image(i) for i in range(5)])
    pending = store.list_pending(store.pending_ids())
    store.record_results([ImageResult(p.sample_id, p.uri, car_detections(i)) for i, p in enumerate(pending)],
                         "m", "r")
    first = apply_triage(store, TriageConfig())
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
    again = apply_triage(store, TriageConfig(accept=0.05, reject=0.01))
    assert again == {"auto_accepted": 4, "empty": 1}
    labels = store.dataset[pending[4].sample_id].labels.detections
    human = [(b.label, b.id) for b in labels if b.provenance == "human"]
    assert human == [(confirmed.label, confirmed.id), ("dog", labels[1].id)]
    predictions = {b.prediction_id for b in labels if b.provenance == "auto"}
    assert confirmed.prediction_id not in predictions and len(labels) == 2 + 3  # 2 human + 3 automatic


def test_known_files_can_be_asked_for_some_paths(dataset_name):
    store = ImageStore(dataset_name)
    store.add_pending([new_image(1), new_image(2)])
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


def test_results_and_triage_are_one_conditional_write(dataset_name):
    """``record_results(..., triage=)``: predictions, working labels and state in one write per
    image; a reviewed image keeps its state and labels, one tagged ``reviewed`` is left
    ``predicted`` for ``review apply``, and a person's box drawn between the read and the write
    is kept (the write did not apply; the image was read and triaged again)."""

    import fiftyone as fo
    from bson import ObjectId

    from bootstrap.config import TriageConfig
    from bootstrap.triage import triage_fields

    store = ImageStore(dataset_name)
    store.add_pending([new_image(i) for i in range(4)])
    plain, reviewed, tagged, raced = store.list_pending(store.pending_ids())
    human = fo.Detection(label="car", bounding_box=[0.1, 0.1, 0.2, 0.2], provenance="human")
    sample = store.dataset[reviewed.sample_id]
    sample["state"], sample["labels"] = "reviewed", fo.Detections(detections=[human])
    sample.save()
    sample = store.dataset[tagged.sample_id]
    sample.tags.append("reviewed")
    sample.save()
    drawn = fo.Detection(label="dog", bounding_box=[0.5, 0.5, 0.1, 0.1])  # no provenance: a person's
    calls = []

    def triage(doc):
        calls.append(str(doc["_id"]))
        if str(doc["_id"]) == raced.sample_id and calls.count(raced.sample_id) == 1:
            # A reviewer in the App draws a box after our read, before our write.
            store.dataset._sample_collection.update_one(
                {"_id": doc["_id"]}, {"$set": {"labels": fo.Detections(detections=[drawn]).to_dict()}})
        return triage_fields(doc, TriageConfig())

    recorded = store.record_results(
        [ImageResult(p.sample_id, p.uri, car_detections(4)) for p in (plain, reviewed, tagged, raced)],
        "m", "r", triage=triage,
    )
    assert recorded.boxes == 16
    # Scores 0.1 0.38 0.67 0.95 at the default thresholds: review boxes, needs_review.
    assert recorded.states == {"needs_review": 2, "reviewed": 1, "predicted": 1}
    assert calls.count(raced.sample_id) == 2 and reviewed.sample_id not in calls
    docs = {str(d["_id"]): d for d in store.read_documents(
        [ObjectId(p.sample_id) for p in (plain, reviewed, tagged, raced)],
        {"state": 1, "labels": 1, "predictions": 1})}
    for image in (plain, reviewed, tagged, raced):
        assert len(docs[image.sample_id]["predictions"]["detections"]) == 4
    assert docs[plain.sample_id]["state"] == "needs_review"
    assert [b["route"] for b in docs[plain.sample_id]["labels"]["detections"]] == ["review", "review", "accept"]
    assert docs[reviewed.sample_id]["state"] == "reviewed"
    assert [b["_id"] for b in docs[reviewed.sample_id]["labels"]["detections"]] == [ObjectId(human.id)]
    assert docs[tagged.sample_id]["state"] == "predicted" and docs[tagged.sample_id].get("labels") is None
    raced_boxes = docs[raced.sample_id]["labels"]["detections"]
    assert docs[raced.sample_id]["state"] == "needs_review"
    assert raced_boxes[0]["_id"] == ObjectId(drawn.id) and len(raced_boxes) == 1 + 3  # drawn + 3 kept


def test_results_are_stored_as_predicted_without_triage(dataset_name):
    store = ImageStore(dataset_name)
    store.add_pending([new_image(1)])
    (image,) = store.list_pending(store.pending_ids())
    recorded = store.record_results([ImageResult(image.sample_id, image.uri, car_detections(3))], "m", "r")
    assert recorded.states == {"predicted": 1}
    assert store.dataset[image.sample_id].state == ImageState.PREDICTED
    assert store.dataset[image.sample_id].labels is None
