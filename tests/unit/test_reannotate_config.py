"""How a fine-tuned version enters the config (bootstrap.reannotate.version_config): pure."""

import pytest

from bootstrap.config import load_config
from bootstrap.model_registry import ModelVersion
from bootstrap.reannotate import ReannotationError, version_config
from tests.helpers import ROOT


def _version(tmp_path, classes):
    weights = tmp_path / "street-v2.pt"
    weights.write_bytes(b"weights")
    return ModelVersion(version="v2", dataset="street", weights=str(weights), classes=list(classes),
                        base_weights="yolov8n.pt", created_at="2026-01-01T00:00:00+00:00")


def test_a_version_replaces_the_first_model_and_the_views_and_second_model_stay(tmp_path):
    config = load_config(None, {"dataset": "street"})  # the default: yolov8n + yolo26n, tiles
    version = _version(tmp_path, ["person", "car"])
    changed = version_config(config, version, ["person", "car"])
    assert changed.detector.model == version.weights
    assert changed.detector.second_model == "yolo26n.pt" and changed.detector.tta == ("tiles",)
    assert changed.ontology is None and changed.triage == config.triage


def test_with_an_ontology_the_version_speaks_the_dataset_classes_and_the_second_model_goes(tmp_path):
    config = load_config(ROOT / "configs" / "vehicles.yaml", {"detector": {"second_model": "yolo26n.pt"}})
    classes = ("vehicle", "two_wheeler", "person")
    changed = version_config(config, _version(tmp_path, classes), classes)
    assert changed.ontology.mapping == {c: c for c in classes} and changed.ontology.classes == classes
    assert changed.detector.second_model is None


@pytest.mark.parametrize(("dataset_classes", "message"), [
    (["person", "bus"], "the class list changed"),
    (["person"], "the class list changed"),
])
def test_a_version_of_another_class_list_is_refused(tmp_path, dataset_classes, message):
    config = load_config(None, {"dataset": "street"})
    with pytest.raises(ReannotationError, match=message):
        version_config(config, _version(tmp_path, ["person", "car"]), dataset_classes)


def test_a_version_whose_weights_are_gone_is_refused(tmp_path):
    version = _version(tmp_path, ["car"])
    (tmp_path / "street-v2.pt").unlink()
    with pytest.raises(ReannotationError, match="weights .* are gone"):
        version_config(load_config(None, {"dataset": "street"}), version, ["car"])
