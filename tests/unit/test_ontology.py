import numpy as np
import pytest

from bootstrap.config import OntologyConfig
from bootstrap.detections import Detections
from bootstrap.ontology import Ontology, OntologyError

MODEL_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "dog")


def _detections(names):
    n = len(names)
    return Detections(
        xyxy=np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1)),
        confidence=np.linspace(0.9, 0.1, n).astype(np.float32),
        class_id=np.array([MODEL_CLASSES.index(x) for x in names]),
        model_label=np.array(names, dtype=object),
        label=np.array(names, dtype=object),
        image_wh=(100, 50),
    )


@pytest.mark.parametrize(
    ("mapping", "names", "labels", "model_labels"),
    [
        ({"car": "vehicle", "truck": "vehicle", "bus": "vehicle"}, ["car", "dog", "bus", "truck"],
         ["vehicle", "vehicle", "vehicle"], ["car", "bus", "truck"]),
        ({"person": "pedestrian"}, ["person", "car"], ["pedestrian"], ["person"]),
        ({"dog": "dog"}, ["car"], [], []),
    ],
    ids=["merge", "rename", "drop-all"],
)
def test_rename_merge_drop(mapping, names, labels, model_labels):
    ontology = Ontology(OntologyConfig(mapping=mapping), MODEL_CLASSES)
    mapped = ontology.apply(_detections(names))
    assert list(mapped.label) == labels
    assert list(mapped.model_label) == model_labels  # the model's class is kept
    assert len(mapped.xyxy) == len(labels)


def test_identity_without_ontology():
    ontology = Ontology(None, MODEL_CLASSES)
    assert ontology.classes == MODEL_CLASSES
    dets = _detections(["car", "dog"])
    assert list(ontology.apply(dets).label) == ["car", "dog"]


def test_unknown_model_class_is_named():
    with pytest.raises(OntologyError, match="\\['lorry'\\] are not classes of the model"):
        Ontology(OntologyConfig(mapping={"lorry": "vehicle"}), MODEL_CLASSES)


def test_detections_masks_and_relative_boxes():
    dets = _detections(["car", "dog", "bus"])
    strong = dets[dets.confidence >= 0.5]
    assert len(strong) == 2
    assert np.allclose(strong.relative_xywh()[0], [0, 0, 0.1, 0.2])
    assert Detections.empty((4, 4)).relative_xywh().shape == (0, 4)
    with pytest.raises(ValueError, match="confidence has 1 entries for 2 boxes"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2), np.zeros(2), np.zeros(2), (1, 1))
