"""Model versions on disk, and the training decisions that need no model (pure)."""

import pytest

from bootstrap.model_registry import ModelRegistry, ModelVersion, RegistryError
from bootstrap.training import check_classes, is_better


def _version(registry: ModelRegistry, **changes) -> ModelVersion:
    version, folder = registry.new_folder()
    weights = folder / f"{registry.dataset}-{version}.pt"
    weights.write_bytes(b"weights")
    record = ModelVersion(version=version, dataset=registry.dataset, weights=str(weights),
                          classes=["car"], base_weights="yolov8n.pt", created_at="2026-01-01T00:00:00+00:00")
    return registry.register(record.__class__(**(record.to_dict() | changes)))


@pytest.mark.parametrize(("reference", "expected"), [
    ("v2", "v2"), ("street-v2", "v2"), ("street-v2.pt", "v2"), ("/models/street/v2/street-v2.pt", "v2"),
    ("v12", "v12"), ("yolov8n.pt", None), ("v2.pt", None), ("other-v2", None), ("street-v", None),
])
def test_references_name_versions_of_this_dataset_only(tmp_path, reference, expected):
    assert ModelRegistry(tmp_path, "street").parse_reference(reference) == expected


def test_versions_are_numbered_listed_and_one_is_current(tmp_path):
    registry = ModelRegistry(tmp_path, "street")
    assert registry.versions() == [] and registry.current() is None
    first, second = _version(registry), _version(registry)
    assert [v.version for v in registry.versions()] == ["v1", "v2"]
    assert second.model_name == "street-v2.pt"
    registry.note("v1 not better: kept yolov8n.pt")
    registry.set_current("v2", "v2 better")
    assert registry.current() == second and registry.get("current") == second
    assert [(h["from"], h["to"]) for h in registry.history()] == [(None, None), (None, "v2")]
    assert registry.get("street-v1.pt") == first
    # Another registry object on the same folder sees the same versions (plain files).
    assert [v.version for v in ModelRegistry(tmp_path, "street").versions()] == ["v1", "v2"]


def test_a_reserved_folder_is_never_handed_out_twice(tmp_path):
    registry = ModelRegistry(tmp_path, "street")
    assert registry.new_folder()[0] == "v1"  # reserved, not registered yet
    assert registry.new_folder()[0] == "v2"


@pytest.mark.parametrize(("reference", "message"), [
    ("v3", r"no model version 'v3'.*it has: v1"),
    ("current", "no model version of dataset 'street' is current yet"),
])
def test_unknown_versions_are_named_with_those_there_are(tmp_path, reference, message):
    registry = ModelRegistry(tmp_path, "street")
    _version(registry)
    with pytest.raises(RegistryError, match=message):
        registry.find(reference)


COCO3 = ("person", "bicycle", "car")


@pytest.mark.parametrize(("dataset", "base", "expected", "base_version", "ontology", "problem"), [
    (COCO3, COCO3, COCO3, None, False, None),  # pretrained model, no ontology
    (COCO3, COCO3, COCO3, "v1", False, None),  # from a version of the same classes
    (("vehicle", "person"), COCO3, ("vehicle", "person"), None, True, None),  # ontology: a new head
    (COCO3, COCO3, ("vehicle", "person"), None, True, "the dataset was annotated with 3 classes"),
    (("vehicle", "person"), ("vehicle",), ("vehicle", "person"), "v1", True, "version v1 has 1 classes"),
    (("a", "b"), COCO3, COCO3, None, False, "the dataset was annotated with 2 classes"),
])
def test_class_lists_must_match(dataset, base, expected, base_version, ontology, problem):
    found = check_classes(dataset, base, expected, base_version, ontology)
    if problem is None:
        assert found is None
    else:
        assert "the class list changed" in found and problem in found


@pytest.mark.parametrize(("new", "current", "margin", "better"), [
    (0.5, 0.4, 0.0, True), (0.4, 0.4, 0.0, False), (0.3, 0.4, 0.0, False),
    (0.42, 0.4, 0.05, False), (0.5, None, 0.0, False),
])
def test_a_version_replaces_the_detector_only_when_better(new, current, margin, better):
    current_metrics = None if current is None else {"map50_95": current}
    assert is_better({"map50_95": new}, current_metrics, margin) is better
