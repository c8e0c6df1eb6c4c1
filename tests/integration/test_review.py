"""Triage into working labels, the review queue and the reviewer's contract, on a real FiftyOne
dataset filled by the real yolov8n (and yolo26n for a "new model run")."""

import fiftyone as fo
import pytest
from fiftyone import ViewField as F

from bootstrap.annotate import run_annotation
from bootstrap.config import DetectorConfig, TriageConfig, load_pipeline_config
from bootstrap.decode import decode_image
from bootstrap.detectors import load_detector
from bootstrap.evaluation.costs import CostModel
from bootstrap.evaluation.ground_truth import import_ground_truth
from bootstrap.evaluation.simulation import run_simulation
from bootstrap.ontology import Ontology
from bootstrap.review import apply_reviews, build_review_queue
from bootstrap.store import ImageResult, ImageStore
from bootstrap.triage import apply_triage
from tests.helpers import COCO, PLAIN_CONFIG, needs_model

pytestmark = needs_model


@pytest.fixture
def annotated(image_folder, dataset_name):
    config = load_pipeline_config(PLAIN_CONFIG, dataset=dataset_name, sources=[str(image_folder)], detector={"batch_size": 3})
    run_annotation(config)
    return ImageStore(dataset_name), config


def _human_boxes(store):
    """{sample id: sorted (label, box, provenance)} of every human-decided box."""
    found = {}
    for sample in store.dataset.select_fields("labels"):
        boxes = [
            (d.label, tuple(round(v, 6) for v in d.bounding_box), d.provenance)
            for d in (sample.labels.detections if sample.labels else [])
            if d.provenance == "human" or d.tags
        ]
        if boxes:
            found[sample.id] = sorted(boxes)
    return found


def test_annotate_routes_boxes_into_labels_with_provenance(annotated):
    store, config = annotated
    states = store.status()["states"]
    assert states["needs_review"] + states["auto_accepted"] + states["empty"] == 6
    for sample in store.dataset.select_fields(["labels", "predictions"]):
        kept = [p for p in sample.predictions.detections if p.confidence >= config.triage.reject]
        assert len(sample.labels.detections) == len(kept)
        for box in sample.labels.detections:
            assert box.provenance == "auto" and box.model == "yolov8n.pt" and box.run
            assert box.route == ("accept" if box.confidence >= config.triage.accept else "review")


def test_queue_is_ranked_and_bounded_by_budget(annotated):
    store, _ = annotated
    waiting = store.dataset.match(F("state") == "needs_review")
    assert len(waiting) >= 3, "these photos should give at least three images to review"
    queue = build_review_queue(store, budget=2)
    assert len(queue.sample_ids) == 2 and queue.waiting == len(waiting)
    priorities = [store.dataset[i].priority for i in queue.sample_ids]
    assert priorities == sorted(priorities, reverse=True)
    assert priorities[-1] >= max(waiting.exclude(list(queue.sample_ids)).values("priority"))
    saved = store.dataset.load_saved_view("review-queue")
    assert saved.values("id") == list(queue.sample_ids)


def test_reviewer_contract_is_applied_exactly_once(annotated):
    store, _ = annotated
    queue = build_review_queue(store, budget=1)
    sample = store.dataset[queue.sample_ids[0]]
    boxes = sample.labels.detections
    boxes[0].tags.append("reject")
    boxes.append(fo.Detection(label="person", bounding_box=[0.1, 0.1, 0.2, 0.2], provenance="human"))
    sample.tags.append("reviewed")
    sample.save()

    report = apply_reviews(store, reviewer="tester")
    assert report == {"images": 1, "confirmed": len(boxes) - 2, "rejected": 1, "drawn": 1, "unchecked": 0}
    applied = store.dataset[sample.id]
    assert applied.state == "reviewed" and applied.reviewed_by == "tester"
    assert len(applied.labels.detections) == len(boxes) - 1
    assert all(d.provenance == "human" and d.confirmed for d in applied.labels.detections)
    before = _human_boxes(store)

    assert apply_reviews(store, reviewer="tester") == {
        "images": 0, "confirmed": 0, "rejected": 0, "drawn": 0, "unchecked": 0,
    }
    assert _human_boxes(store) == before


def test_box_drawn_without_provenance_survives_retriage_and_counts_as_drawn(annotated):
    """The App's Annotate tab draws boxes with no ``provenance``: still a person's box."""
    store, config = annotated
    sample = store.dataset[build_review_queue(store, budget=1).sample_ids[0]]
    autos = len(sample.labels.detections)
    sample.labels.detections.append(fo.Detection(label="cat", bounding_box=[0.6, 0.6, 0.2, 0.2]))
    sample.save()
    drawn_id = sample.labels.detections[-1].id

    apply_triage(store, TriageConfig(accept=0.3, reject=0.1))  # a re-triage before apply
    apply_triage(store, config.triage)
    kept = [d for d in store.dataset[sample.id].labels.detections if d.id == drawn_id]
    assert len(kept) == 1 and kept[0].bounding_box == [0.6, 0.6, 0.2, 0.2]

    sample = store.dataset[sample.id]
    sample.tags.append("reviewed")
    sample.save()
    assert apply_reviews(store, reviewer="tester") == {
        "images": 1, "confirmed": autos, "rejected": 0, "drawn": 1, "unchecked": 0,
    }
    final = {d.id: d for d in store.dataset[sample.id].labels.detections}
    assert final[drawn_id].provenance == "human" and final[drawn_id].confirmed


def test_retriage_leaves_an_image_tagged_reviewed_as_the_person_saw_it(annotated):
    """Tagged ``reviewed`` but not applied yet: looser thresholds must not add boxes that
    ``review apply`` would then count as confirmed by a person who never saw them."""
    store, config = annotated
    sample = store.dataset[build_review_queue(store, budget=1).sample_ids[0]]
    seen = [d.id for d in sample.labels.detections]
    sample.tags.append("reviewed")
    sample.save()
    other = store.dataset.match(F("_id") != sample._id).values("labels.detections.id")

    apply_triage(store, TriageConfig(accept=0.3, reject=0.06))
    assert [d.id for d in store.dataset[sample.id].labels.detections] == seen
    # the same re-triage does add boxes on the images nobody has finished
    assert store.dataset.match(F("_id") != sample._id).values("labels.detections.id") != other
    assert apply_reviews(store, reviewer="tester")["confirmed"] == len(seen)


def test_rerun_retriage_and_new_model_never_change_human_boxes(annotated, image_folder, coco_images):
    store, config = annotated
    queue = build_review_queue(store)
    reviewed, in_progress = (store.dataset[i] for i in queue.sample_ids[:2])
    reviewed.labels.detections[0].tags.append("reject")
    reviewed.tags.append("reviewed")
    reviewed.save()
    apply_reviews(store)
    # A second image is being worked on: a drawn box and a rejected one, not yet "reviewed".
    in_progress.labels.detections.append(
        fo.Detection(label="dog", bounding_box=[0.3, 0.3, 0.1, 0.1], provenance="human")
    )
    in_progress.labels.detections[0].tags.append("reject")
    in_progress.save()
    human = _human_boxes(store)
    assert set(human) == {reviewed.id, in_progress.id}

    run_annotation(config)  # rerun: nothing new
    assert _human_boxes(store) == human
    apply_triage(store, TriageConfig(accept=0.3, reject=0.1))  # re-triage with new thresholds
    assert _human_boxes(store) == human
    assert store.dataset[reviewed.id].state == "reviewed"

    # A new model over the same images: new predictions, re-triaged; human boxes unchanged.
    other = load_detector(DetectorConfig(model="yolo26n.pt"))
    pending = list(zip(store.dataset.values("id"), store.dataset.values("filepath"), strict=True))
    dets = other.predict([decode_image(path).pixels for _, path in pending])
    store.record_results(
        [ImageResult(sid, path, d) for (sid, path), d in zip(pending, dets, strict=True)],
        model="yolo26n.pt", run_id="second-model",
    )
    apply_triage(store, config.triage)
    assert _human_boxes(store) == human
    assert store.dataset[reviewed.id].state == "reviewed"
    refreshed = store.dataset[in_progress.id]
    autos = [d for d in refreshed.labels.detections if d.provenance == "auto" and not d.tags]
    assert all(d.model == "yolo26n.pt" for d in autos)


def test_simulated_review_of_everything_reaches_full_quality(annotated):
    store, _ = annotated
    cost = CostModel()
    report = run_simulation(store, COCO, TriageConfig(accept=1.0, reject=0.0), budget=None, cost=cost)
    # Reviewing every box of every image: the reviewer fixes everything.
    assert report.precision == 1.0 and report.recall == 1.0
    assert report.verified == store.status()["predictions"]
    assert report.review_seconds == cost.review_seconds(report.queued, report.verified, report.drawn)
    assert report.scratch_seconds == 6 * 1.0 + report.ground_truth_boxes * 7.0
    # The simulation ran on a clone: the dataset itself has no reviewed images.
    assert store.status()["states"]["reviewed"] == 0


def test_simulated_review_within_budget_costs_less_than_scratch(annotated):
    store, _ = annotated
    full = run_simulation(store, COCO, TriageConfig(), budget=None)
    one = run_simulation(store, COCO, TriageConfig(), budget=1)
    assert one.queued == 1 and one.review_seconds < full.review_seconds < full.scratch_seconds
    assert one.recall <= full.recall


def test_ground_truth_maps_through_the_ontology(annotated):
    store, _ = annotated
    from bootstrap.config import OntologyConfig

    total_all = import_ground_truth(store, COCO, Ontology(None))
    people = import_ground_truth(store, COCO, Ontology(OntologyConfig(mapping={"person": "human"})))
    assert 0 < people < total_all
    assert set(store.dataset.distinct("ground_truth.detections.label")) == {"human"}
