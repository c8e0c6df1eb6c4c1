from pathlib import Path

import pytest

from bootstrap.config import (
    ConfigError,
    DetectorConfig,
    DetectorOptions,
    load_config,
    load_pipeline_config,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    assert load_config(path).dataset


@pytest.mark.parametrize(
    ("yaml_text", "field", "problem"),
    [
        ("dataset: x\ndetector: {batchsize: 4}\n", "detector.batchsize", "Extra inputs"),
        ("dataset: x\ndetector: {batch_size: 0}\n", "detector.batch_size", "greater than or equal to 1"),
        ("dataset: x\ndetector: {min_confidence: 0.5}\n", "detector.min_confidence", "less than or equal to 0.1"),
        ("dataset: x\ndetector: {device: tpu}\n", "detector.device", "'tpu' is not a device"),
        ("dataset: x\ndetector: {image_size: 100}\n", "detector.image_size", "multiple of 32"),
        ("dataset: x\nsources: [{path: a, glob: '*.jpg'}]\n", "sources.0", "exactly one of 'path' or 'glob'"),
        ("dataset: 'bad name!'\n", "dataset", "not a usable dataset name"),
        ("dataset: x\ntriage: {accept: 0.3, reject: 0.5}\n", "triage", "reject \\(0.5\\) is above accept"),
        ("dataset: x\nontology: {mapping: {car: vehicle}, classes: [person]}\n", "ontology", "does not list \\['vehicle'\\]"),
        ("dataset: x\nontology: {mapping: {}}\n", "ontology", "mapping is empty"),
        ("detector: {}\n", "dataset", "Field required"),
    ],
)
def test_bad_config_names_file_field_and_problem(tmp_path, yaml_text, field, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=rf"{path}: {field}: .*{problem}"):
        load_config(path)


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listing)


def test_flags_override_file_and_keep_the_rest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: a\ndetector: {model: m.pt, batch_size: 4, image_size: 320}\n")
    config = load_pipeline_config(
        path, dataset="b", detector=DetectorOptions(batch_size=8), sources=["imgs/"]
    )
    assert config.dataset == "b"
    assert config.detector.batch_size == 8
    assert config.detector.image_size == 320  # untouched by flags
    assert config.detector.model == "m.pt"
    assert config.sources[0].path == "imgs/"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("data/street", {"path": "data/street", "glob": None}),
        ("data/**/*.jpg", {"path": None, "glob": "data/**/*.jpg"}),
        ({"path": "x", "recursive": False}, {"path": "x", "recursive": False}),
        ({"path": "x", "extensions": ["JPG", ".Png"]}, {"extensions": (".jpg", ".png")}),
    ],
)
def test_source_shorthands(source, expected):
    config = validate_config({"dataset": "d", "sources": [source]})
    for key, value in expected.items():
        assert getattr(config.sources[0], key) == value


def test_ontology_class_order():
    config = validate_config(
        {"dataset": "d", "ontology": {"mapping": {"truck": "vehicle", "person": "person", "car": "vehicle"}}}
    )
    assert config.ontology.dataset_classes == ("vehicle", "person")


def test_detector_options_are_the_config_fields_all_optional():
    # One definition: every DetectorConfig field is an option, with its description and limits.
    assert list(DetectorOptions.model_fields) == list(DetectorConfig.model_fields)
    assert DetectorOptions().model_dump() == dict.fromkeys(DetectorConfig.model_fields)
    for name, field in DetectorConfig.model_fields.items():
        assert DetectorOptions.model_fields[name].description == field.description
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        DetectorOptions(batch_size=0)
    # A dict (a flow run from the UI form) works like the model; None keeps the file's value.
    config = load_pipeline_config(None, dataset="d", detector={"tta": ["hflip"], "model": None})
    assert config.detector.tta == ("hflip",) and config.detector.model == "yolov8n.pt"


@pytest.mark.parametrize(
    ("per_class", "classes", "message"),
    [
        ({"persn": {"accept": 0.9}}, ("person", "car"),
         r"triage.per_class: unknown class 'persn' \(did you mean 'person'\?\); the dataset's "
         r"classes are person, car$"),
        ({"zzz": {}}, tuple(f"c{i}" for i in range(20)),
         r"unknown class 'zzz'; the dataset's classes are c0, .*, c11, … \(20 in all\)$"),
        ({"car": {"accept": 0.9}}, ("person", "car"), None),
        ({"anything": {}}, (), None),  # no class list yet: nothing to check against
    ],
)
def test_per_class_names_only_classes_of_the_dataset(per_class, classes, message):
    triage = validate_config({"dataset": "d", "triage": {"per_class": per_class}}).triage
    if message is None:
        triage.check_classes(classes)
    else:
        with pytest.raises(ConfigError, match=message):
            triage.check_classes(classes)
