"""Fused proposals from the real models on real photos, stored and triaged."""

import numpy as np
import pytest

from bootstrap.config import DetectorConfig
from bootstrap.decode import decode_image
from bootstrap.detectors import load_detector
from bootstrap.schema import MODEL_SUPPORT, TTA_SUPPORT, view_score_key
from tests.helpers import PLAIN_CONFIG, needs_model


@needs_model
def test_hflip_and_second_model_on_real_photos(coco_images):
    images = [decode_image(p).pixels for p in coco_images[:4]]
    plain = load_detector(DetectorConfig(min_confidence=0.05)).predict(images)
    fused_detector = load_detector(DetectorConfig(min_confidence=0.05, tta=("hflip",), second_model="yolo26n.pt"))
    assert fused_detector.name == "yolov8n.pt+hflip+yolo26n.pt"
    fused = fused_detector.predict(images)
    views = [view_score_key(f, k) for f in ("base", "second") for k in ("plain", "hflip")]
    for one, many in zip(plain, fused, strict=True):
        # the support shares, and each view's own confidence (0: that view did not find the box)
        assert set(many.extras) == {TTA_SUPPORT, MODEL_SUPPORT, *views}
        found_by = sum(many.extras[v] > 0 for v in views)
        assert (found_by >= 1).all() and (many.extras["score_base"] <= 1).all()
        confident = many.confidence >= 0.7
        # What all three views agree on is found with full support; the best plain boxes survive.
        assert (many.extras[TTA_SUPPORT][confident] == 1.0).all()
        assert (many.extras[MODEL_SUPPORT][confident] == 1.0).all()
        assert len(many) >= (one.confidence >= 0.5).sum()
        assert (many.xyxy[:, 2] <= many.image_wh[0] + 1).all() and (many.xyxy[:, 0] >= -1).all()


@needs_model
def test_fused_proposals_are_stored_and_triaged_with_their_support(image_folder, dataset_name):
    import fiftyone as fo

    from bootstrap.annotate import run_annotation
    from bootstrap.config import load_pipeline_config

    config = load_pipeline_config(PLAIN_CONFIG, dataset=dataset_name, sources=[str(image_folder)], detector={"tta": ["hflip"]})
    summary = run_annotation(config)
    assert summary.boxes > 0
    dataset = fo.load_dataset(dataset_name)
    assert set(dataset.distinct("prediction_model")) == {"yolov8n.pt+hflip"}
    shares = dataset.values("predictions.detections.tta_support", unwind=True)
    assert len(shares) == summary.boxes and set(shares) <= {0.5, 1.0}
    assert 0.5 in shares and 1.0 in shares  # some boxes only one view found, most both
    # Triage copied the support onto the working boxes and summed the disagreement per image.
    for sample in dataset.select_fields(["labels", "tta_disagreement", "state"]):
        kept = sample.labels.detections if sample.labels else []
        assert sample.tta_disagreement == pytest.approx(sum(1 - box.tta_support for box in kept), abs=1e-5)
        if sample.tta_disagreement >= config.triage.disagreement_at:
            assert sample.state == "needs_review"


@needs_model
def test_a_missing_second_model_is_left_out_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="bootstrap.proposals"):
        detector = load_detector(DetectorConfig(min_confidence=0.05, second_model="/nowhere/yolo99x.pt"))
    assert detector.name == "yolov8n.pt"  # the first model alone, no fusion
    assert "second model left out" in caplog.text and "yolo99x.pt" in caplog.text


@needs_model
def test_the_large_view_runs_for_each_model(coco_images):
    detector = load_detector(DetectorConfig(min_confidence=0.05, tta=("large",), second_model="yolo26n.pt",
                                            image_size=320))
    assert detector.name == "yolov8n.pt+large+yolo26n.pt"
    found = detector.predict([decode_image(coco_images[0]).pixels])[0]
    views = {view_score_key(f, k) for f in ("base", "second") for k in ("plain", "large")}
    assert set(found.extras) == {TTA_SUPPORT, MODEL_SUPPORT, *views}
    # the share of the first model's two views (0: only the second model found it)
    assert set(np.unique(found.extras[TTA_SUPPORT])) <= {0.0, 0.5, 1.0}
