"""A labelled dataset in seconds, without the model: real coco128 photos registered as they are,
their ground truth imported (the library's reader), predictions made from it (scores spread so
that triage routes every way), then the library's triage. For the cases where the fault is in
export, review or calibration, not in detection."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.helpers import COCO, add_images


def coco_classes() -> list[str]:
    names = yaml.safe_load((COCO / "data.yaml").read_text())["names"]
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)


def labelled_dataset(name: str, images: list[Path]):
    """Dataset ``name`` over ``images`` (coco128 photos or copies with the same names), triaged
    from ground-truth-derived predictions; returns its ``ImageStore``."""
    import fiftyone as fo

    from bootstrap.config import TriageConfig
    from bootstrap.evaluation.ground_truth import import_ground_truth
    from bootstrap.ontology import Ontology
    from bootstrap.schema import GROUND_TRUTH
    from bootstrap.store import ImageStore
    from bootstrap.triage import apply_triage

    store = ImageStore(name, classes=coco_classes())
    add_images(store, images)
    import_ground_truth(store, COCO, Ontology(None))
    ids, truths = store.dataset.values(["id", GROUND_TRUTH])
    predictions = {}
    for n, (sid, truth) in enumerate(zip(ids, truths, strict=True)):
        boxes = truth.detections if truth is not None else []
        predictions[sid] = fo.Detections(detections=[
            fo.Detection(label=b.label, bounding_box=list(b.bounding_box),
                         confidence=(0.95, 0.5, 0.3)[(n + i) % 3], model_label=b.label)
            for i, b in enumerate(boxes)
        ])
    store.dataset.set_values("predictions", predictions, key_field="id")
    store.dataset.set_values("state", dict.fromkeys(ids, "predicted"), key_field="id")
    store.dataset.set_values("prediction_model", dict.fromkeys(ids, "ground-truth"), key_field="id")
    apply_triage(store, TriageConfig())
    return store
