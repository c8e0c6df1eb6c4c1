"""Thresholds learned after an applied review batch, the audit and the stopping rule, and the
held-out loop on a real dataset (real yolov8n, real FiftyOne database)."""

import json

import pytest
from typer.testing import CliRunner

from bootstrap.annotate import run_annotation
from bootstrap.config import load_pipeline_config
from bootstrap.evaluation.ground_truth import import_ground_truth
from bootstrap.evaluation.simulation import simulate_reviewer
from bootstrap.ontology import Ontology
from bootstrap.review import apply_reviews
from bootstrap.review_learning import (
    AUDIT,
    LEARNED_INFO,
    after_apply,
    effective_triage,
    quality_estimate,
    queue_batch,
)
from bootstrap.store import ImageStore
from cli.main import app
from tests.helpers import COCO, PLAIN_CONFIG, needs_model

pytestmark = needs_model


@pytest.fixture
def annotated(image_folder, dataset_name):
    config = load_pipeline_config(PLAIN_CONFIG, dataset=dataset_name, sources=[str(image_folder)],
                                  detector={"batch_size": 3})
    run_annotation(config)
    store = ImageStore(dataset_name)
    import_ground_truth(store, COCO, Ontology(None))  # the simulated reviewer's answers
    return store, config


def test_a_batch_teaches_thresholds_records_them_and_retriages_only_untouched_images(annotated):
    store, config = annotated
    config = config.model_copy(update={"review": config.review.model_copy(update={"audit": 0.5})})
    queue = queue_batch(store, config, budget=3)
    audited = set(store.dataset.match({AUDIT: True}).values("id"))
    assert audited and audited <= set(queue.sample_ids)  # the audit goes first, within the budget
    simulate_reviewer(store, queue.sample_ids)
    applied = apply_reviews(store, reviewer="test")
    reviewed_before = {s.id: s.labels for s in store.dataset.match({"state": "reviewed"})}

    followed = after_apply(store, config, applied, batch="b1")
    entry = followed["learning"]
    assert entry["batch"] == "b1" and entry["evidence_boxes"] > 0
    history = store.dataset.info[LEARNED_INFO]["history"]
    assert history[-1]["evidence_boxes"] == entry["evidence_boxes"]
    learned = effective_triage(store, config.triage)
    assert set(learned.per_class) == set(store.dataset.info[LEARNED_INFO]["per_class"])
    # Reviewed images are never re-triaged: their labels are as the reviewer left them.
    for sample in store.dataset.match({"state": "reviewed"}):
        assert sample.labels == reviewed_before[sample.id]
    assert sum(entry["routed"].values()) == 6 - len(reviewed_before)
    assert followed["estimate"]["reviewed"] == len(reviewed_before)
    assert followed["estimate"]["audited"] >= 1 and followed["estimate"]["precision"] is not None


def test_status_and_quality_estimate_before_any_review_say_not_estimable(annotated):
    store, config = annotated
    estimate = quality_estimate(store, config.triage)
    assert estimate.precision is None and not estimate.met() and estimate.reviewed == 0
    result = CliRunner().invoke(app, ["status", store.name, "--json", "--config", PLAIN_CONFIG])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["quality_estimate"]["met"] is False


def test_simulate_review_folds_reports_each_fold_and_the_pool(annotated):
    store, _ = annotated
    result = CliRunner().invoke(app, [
        "simulate-review", store.name, "--ground-truth", str(COCO), "--folds", "2", "--batch", "2",
        "--json", "--config", PLAIN_CONFIG,
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["folds"]) == 2
    assert sum(f["images"] for f in report["folds"]) == report["pooled"]["images"] == 6
    assert 0 < report["pooled"]["cost_fraction"] <= 1.5
    assert report["pooled"]["recall"] > 0.5


def test_accepted_boxes_left_unchecked_ship_as_automatic_and_teach_nothing(annotated):
    store, config = annotated
    review = config.review.model_copy(update={"check_accepted": False, "audit": 0.0})
    config = config.model_copy(update={"review": review})
    queue = queue_batch(store, config, budget=6)
    queued = store.dataset.select(list(queue.sample_ids))
    routes = [r for boxes in queued.values("labels.detections.route") for r in boxes or []]
    accepted = routes.count("accept")
    assert accepted and len(routes) > accepted  # both kinds on the queued images

    counts = simulate_reviewer(store, queue.sample_ids, check_accepted=False)
    assert counts["verified"] == len(routes) - accepted  # accepted boxes asked no decision
    applied = apply_reviews(store, reviewer="test", check_accepted=False)
    assert applied["unchecked"] == accepted
    for sample in store.dataset.match({"state": "reviewed"}):
        for box in sample.labels.detections:
            unchecked = getattr(box, "unchecked", False)
            # An unchecked box is never passed off as a person's.
            assert (box.provenance == "auto") == unchecked == (getattr(box, "route", None) == "accept")

    estimate = quality_estimate(store, config.triage)
    assert estimate.precision is None  # unchecked boxes need the audit's evidence
    checked_evidence = after_apply(store, config, applied)["learning"]["evidence_boxes"]
    predictions = sum(len(p or []) for p in store.dataset.match({"state": "reviewed"}).values(
        "predictions.detections"))
    assert 0 < checked_evidence < predictions
