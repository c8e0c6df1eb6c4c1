"""Evaluation figures against an independent count on a hand-built case; COCO ground truth;
calibration on coco128-train with the real yolov8n."""

from __future__ import annotations

import json

import pytest

from bootstrap.annotate import run_annotation
from bootstrap.calibrate import calibrate, calibrated_triage, calibration_evidence
from bootstrap.config import load_pipeline_config
from bootstrap.evaluation.ground_truth import (
    GroundTruthError,
    import_ground_truth,
    load_coco_ground_truth,
    load_yolo_ground_truth,
)
from bootstrap.evaluation.metrics import evaluate_field
from bootstrap.evaluation.report import write_report
from bootstrap.ontology import Ontology
from bootstrap.store import ImageStore
from bootstrap.triage import apply_triage
from tests.helpers import COCO, PLAIN_CONFIG, add_images, needs_model, set_image

A = [0.10, 0.10, 0.20, 0.20]
B = [0.50, 0.50, 0.30, 0.30]
FAR = [0.80, 0.05, 0.10, 0.10]
SHIFTED = [0.15, 0.10, 0.20, 0.20]  # IoU with A = 0.15*0.2 / (0.08 - 0.03) = 0.6 -> a match


def _box(label, xywh, confidence):
    return dict(label=label, bounding_box=xywh, confidence=confidence)


@pytest.fixture
def constructed(dataset_name, coco_images):
    """Three images; the expected counts are worked out by hand in the test."""
    store = ImageStore(dataset_name, classes=["cat", "dog"])
    add_images(store, coco_images[:3])
    truth = {0: [("cat", A), ("dog", B)], 1: [("cat", A)], 2: []}
    predictions = {
        0: [_box("cat", SHIFTED, 0.9), _box("dog", B, 0.6), _box("dog", FAR, 0.3)],
        1: [_box("dog", A, 0.8), _box("cat", A, 0.2)],  # wrong class at 0.8, right class at 0.2
        2: [_box("cat", B, 0.95)],  # nothing there
    }
    for i, path in enumerate(coco_images[:3]):
        set_image(store, path, "predicted", predictions[i], field="predictions")
        set_image(store, path, "predicted", [dict(label=c, bounding_box=b) for c, b in truth[i]],
                  field="ground_truth")
    return store


def test_evaluation_equals_an_independent_count(constructed):
    evaluation = evaluate_field(constructed, "predictions")
    # Hand count: TP = cat 0.9 (image 0), dog 0.6 (image 0), cat 0.2 (image 1); FP = dog 0.3,
    # dog 0.8, cat 0.95; no ground truth is missed.
    assert evaluation.summary() | {"mAP": None} == {
        "field": "predictions", "gt_field": "ground_truth", "iou": 0.5, "images": 3,
        "boxes": 6, "truth_boxes": 3, "tp": 3, "fp": 3, "fn": 0,
        "precision": 0.5, "recall": 1.0, "mAP": None,
    }
    assert 0.0 < evaluation.mean_ap <= 1.0
    at_half = evaluation.rates(0.5)  # keep 0.9, 0.6, 0.8, 0.95: 2 TP, 2 FP, misses the 0.2 cat
    assert (at_half.tp, at_half.fp, at_half.fn) == (2, 2, 1)
    per_class = {row["class"]: row for row in evaluation.per_class()}
    assert (per_class["cat"]["tp"], per_class["cat"]["fp"], per_class["cat"]["fn"]) == (2, 1, 0)
    assert (per_class["dog"]["tp"], per_class["dog"]["fp"], per_class["dog"]["fn"]) == (1, 2, 0)
    bands = {row["band"]: (row["boxes"], row["tp"]) for row in evaluation.by_band((0.0, 0.5, 0.85, 1.0))}
    assert bands == {"[0.00, 0.50)": (2, 1), "[0.50, 0.85)": (2, 1), "[0.85, 1.00]": (2, 1)}


def test_report_writes_markdown_and_plots(constructed, tmp_path):
    paths = write_report(constructed.name, evaluate_field(constructed, "predictions"), tmp_path)
    assert paths["precision_recall"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["markdown"].read_text()
    assert "| 0.500 | 1.000 |" in text and "precision_recall_vs_confidence.png" in text


def test_coco_ground_truth_is_mapped_through_the_ontology(dataset_name, coco_images, tmp_path):
    from bootstrap.config import OntologyConfig

    store = ImageStore(dataset_name)
    add_images(store, coco_images[:2])
    coco = {
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}, {"id": 3, "name": "kite"}],
        "images": [{"id": 7, "file_name": coco_images[0].name, "width": 640, "height": 480},
                   {"id": 8, "file_name": coco_images[1].name, "width": 640, "height": 480}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [64, 48, 128, 96]},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [0, 0, 320, 240]},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 10, 10]},
        ],
    }
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(coco))
    first_boxes = load_coco_ground_truth(path)[coco_images[0].stem].detections
    assert first_boxes[0].bounding_box == pytest.approx([0.1, 0.1, 0.2, 0.2])
    ontology = Ontology(OntologyConfig(mapping={"person": "human", "car": "vehicle"}))
    assert import_ground_truth(store, path, ontology) == 2  # the kite is dropped
    first = store.dataset.one(__import__("fiftyone").ViewField("filepath") == str(coco_images[0]))
    assert sorted(d.label for d in first.ground_truth.detections) == ["human", "vehicle"]
    coco["annotations"][0]["category_id"] = 9
    path.write_text(json.dumps(coco))
    with pytest.raises(GroundTruthError, match="category 9"):
        load_coco_ground_truth(path)


def test_yolo_ground_truth_is_read_and_bad_files_are_named(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "data.yaml").write_text("names: {0: person, 1: car}\n")
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n")
    (tmp_path / "labels" / "b.txt").write_text("")  # background
    truth = load_yolo_ground_truth(tmp_path)
    (car,) = truth["a"].detections
    assert car.label == "car" and car.bounding_box == pytest.approx([0.4, 0.3, 0.2, 0.4])
    assert truth["b"].detections == []
    (tmp_path / "labels" / "c.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(GroundTruthError, match=r"c.txt: class 7 is not in the 2 names"):
        load_yolo_ground_truth(tmp_path)
    (tmp_path / "labels" / "c.txt").write_text("1 0.5 half 0.2 0.2\n")
    with pytest.raises(GroundTruthError, match=r"c.txt: expected lines 'class cx cy w h'"):
        load_yolo_ground_truth(tmp_path)


@pytest.fixture(scope="module")
def coco128():
    """coco128-train annotated once by yolov8n (at 320 px to keep the suite fast) with its ground
    truth imported."""
    if not (COCO / "images").is_dir():
        pytest.skip(f"real test images not found at {COCO}")
    import uuid

    import fiftyone as fo

    name = f"test-calibrate-{uuid.uuid4().hex[:8]}"
    config = load_pipeline_config(PLAIN_CONFIG, dataset=name, sources=[str(COCO / "images")], detector={"image_size": 320})
    run_annotation(config)
    store = ImageStore(name)
    import_ground_truth(store, COCO, Ontology(None))
    yield store, calibration_evidence(store)
    fo.delete_dataset(name)


@needs_model
@pytest.mark.parametrize("target", [0.9, 0.95])
def test_calibration_reaches_a_reachable_target_on_coco128(coco128, target):
    from fiftyone import ViewField as F

    coco128, evidence = coco128
    result = calibrate(evidence.outcomes, target, min_boxes=10)
    calibrated = [c for c in result.classes if c.calibrated]
    assert calibrated, "coco128 should have classes with enough boxes to calibrate"
    assert result.reached and result.precision >= target
    # Independently: re-triage with the thresholds, then FiftyOne's own count of the accepted
    # boxes of the calibrated classes.
    triage = calibrated_triage(load_pipeline_config(PLAIN_CONFIG, dataset=coco128.name).triage, result).model_copy(
        update={"class_confusion_iou": None, "likely_misses_at": None})
    apply_triage(coco128, triage)
    names = [c.label for c in calibrated]
    accepted = coco128.dataset.filter_labels(
        "labels", (F("route") == "accept") & F("label").is_in(names), only_matches=False
    )
    accepted.evaluate_detections("labels", gt_field="ground_truth", eval_key="cal", iou=0.5, classwise=True)
    tp, fp = sum(accepted.values("cal_tp")), sum(accepted.values("cal_fp"))
    coco128.dataset.delete_evaluation("cal")
    assert tp / (tp + fp) >= target
    assert tp + fp == sum(
        1 for o in evidence.outcomes if o.label in names and o.confidence >= triage.per_class[o.label].accept
    )


@needs_model
def test_unreachable_target_is_reported(coco128):
    result = calibrate(coco128[1].outcomes, 1.0, min_boxes=10)
    unreachable = [c for c in result.classes if "not reachable" in c.note]
    assert unreachable, "at precision 1.0 some class's top-scored box should be wrong"
    for c in unreachable:
        assert c.accept == 1.0 and not c.calibrated
        assert any(w.startswith(f"{c.label}: target precision 1.0 not reachable") for w in result.warnings)


@needs_model
def test_evaluate_flow_publishes_the_report_as_artifacts(image_folder, dataset_name, tmp_path, prefect_api):
    from flows import artifact_key
    from flows.evaluate import evaluate as evaluate_flow
    from tests.helpers import latest_artifacts

    run_annotation(load_pipeline_config(PLAIN_CONFIG, dataset=dataset_name, sources=[str(image_folder)]))
    result = evaluate_flow(dataset_name, str(COCO), str(tmp_path / "report"), simulate=False)
    summary = result["summary"]
    assert summary["tp"] > 0 and 0 < summary["precision"] <= 1
    assert (tmp_path / "report" / "report.md").is_file()
    keys = {artifact_key("evaluation", dataset_name), artifact_key("evaluation-precision-recall", dataset_name)}
    found = latest_artifacts(*keys)
    assert set(found) == keys
    assert "data:image/png;base64," in found[artifact_key("evaluation", dataset_name)].data
