"""The FiftyOne internals behind our bulk writes (``bootstrap.documents``): each test here
fails if FiftyOne changes what it stores or how it refreshes samples."""

from dataclasses import replace

import fiftyone as fo
import numpy as np

from bootstrap.documents import detections_document, sample_collection
from bootstrap.schema import ImageState
from bootstrap.store import ImageResult, ImageStore
from tests.helpers import car_detections, new_image


def test_raw_documents_are_what_fiftyone_writes(dataset_name):
    dets = replace(car_detections(3), extras={"tta_support": np.array([1.0, 0.5, 0.5], np.float32)})
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
    store.add_pending([new_image(1), new_image(2)])
    store.dataset.add_sample(fo.Sample(filepath="/data/by-fiftyone.jpg"))
    docs = {d["filepath"]: d for d in sample_collection(store.dataset).find()}
    assert set(docs["/data/img2.jpg"]) >= set(docs["/data/by-fiftyone.jpg"]) - {"metadata"}
    assert docs["/data/img1.jpg"]["_rand"] != docs["/data/img2.jpg"]["_rand"]
    assert store.dataset.take(2, seed=1).count() == 2  # FiftyOne's sampling reads `_rand`


def test_record_results_refreshes_samples_held_in_memory(dataset_name):
    store = ImageStore(dataset_name)
    store.add_pending([new_image(1)])
    (pending,) = store.list_pending(store.pending_ids())
    held = store.dataset[pending.sample_id]
    assert held.state == ImageState.PENDING
    store.record_results([ImageResult(pending.sample_id, pending.uri, car_detections(2))], "m", "r")
    assert held.state == ImageState.PREDICTED and len(held.predictions.detections) == 2
