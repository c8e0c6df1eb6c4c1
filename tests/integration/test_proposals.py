"""Fused proposals from the real models on real photos, stored and triaged."""

import pytest

from bootstrap.config import DetectorConfig
from bootstrap.decode import decode_image
from bootstrap.detectors import load_detector
from bootstrap.schema import MODEL_SUPPORT, TTA_SUPPORT
from tests.helpers import needs_model


@needs_model
def test_hflip_and_second_model_on_real_photos(coco_images):
    images = [decode_image(p).pixels for p in coco_images[:4]]
    plain = load_detector(DetectorConfig(min_confidence=0.05)).predict(images)
    fused_detector = load_detector(DetectorConfig(min_confidence=0.05, tta=("hflip",), second_model="yolo26n.pt"))
    assert fused_detector.name == "yolov8n.pt+hflip+yolo26n.pt"
    fused = fused_detector.predict(images)
    for one, many in zip(plain, fused, strict=True):
        assert set(many.extras) == {TTA_SUPPORT, MODEL_SUPPORT}
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

    config = load_pipeline_config(None, dataset=dataset_name, sources=[str(image_folder)], detector={"tta": ["hflip"]})
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
