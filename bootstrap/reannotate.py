"""Re-annotate with a new model version: fresh predictions where no person has decided anything.

How a fine-tuned version enters the pipeline: it **replaces** ``detector.model``; the second
model (``detector.second_model``) and the views (``detector.tta``) stay, so the default config
becomes e.g. ``demo-v2.pt`` + ``yolo26n.pt``, each at 640 and 1280, fused as before. Class lists
must match: a version's classes are the dataset's classes (it was trained on the export, whose
``names`` are the dataset's). Without an ontology those are the pretrained model's classes, so
the second model's boxes fuse with the version's as before. With an ontology (classes renamed or
merged), the version already speaks the dataset's classes: the ontology is then the identity
for it, and the second model, which speaks the pretrained classes, is left out (its boxes would
not fuse with the version's).

Which images: those triage may re-route (``schema.TRIAGE_INPUT_STATES``) that no person has
touched: no ``reviewed`` tag (a reviewer may be half-way), and no human-decided box in
``labels`` (``store.is_human_decided``: a person's ``reject`` tag refers to a prediction the new
model would propose again under a new id). Images already predicted by this model are skipped,
so a killed run resumes where it stopped. Their ``predictions`` are replaced and they are
re-triaged with the thresholds the dataset learned in the same write (``ImageStore.record_results``
with ``triage.triage_fields``, which keeps human boxes by ``store.merge_working_labels``); every new
automatic box records the model that proposed it (``model``), so the review priority and the
export manifest reflect the new version.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field

from bootstrap import progress
from bootstrap.config import OntologyConfig, PipelineConfig
from bootstrap.model_registry import ModelVersion, RegistryError
from bootstrap.schema import (
    LABELS,
    PREDICTION_MODEL,
    STATE,
    TRIAGE_INPUT_STATES,
    TRIAGE_OUTPUT_STATES,
    ImageState,
)

log = logging.getLogger(__name__)

#: Images per detection call group (several batches: decoding overlaps inference).
REANNOTATE_CHUNK = 128


class ReannotationError(ValueError):
    """A model version that cannot re-annotate this dataset (classes differ, weights gone)."""


@dataclass
class ReannotationReport:
    """What a re-annotation did."""

    dataset: str
    model: str
    version: str | None
    images: int = 0  # re-annotated now
    boxes: int = 0
    skipped_human: int = 0  # not yet reviewed images a person has touched: left as they are
    already: int = 0  # predicted by this model already (a resumed run)
    failed: list[tuple[str, str]] = field(default_factory=list)
    routed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        rows = [("model", f"`{self.model}`"), ("images re-annotated", self.images),
                ("boxes stored", self.boxes), ("left alone: a person touched them", self.skipped_human),
                ("already predicted by this model", self.already), ("failed", len(self.failed)),
                *((f"routed: {state}", n) for state, n in sorted(self.routed.items())),
                ("seconds", f"{self.seconds:.1f}")]
        return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def version_config(config: PipelineConfig, version: ModelVersion, dataset_classes) -> PipelineConfig:
    """``config`` with ``version`` as ``detector.model`` (the rule in the module docstring).

    Raises:
        ReannotationError: the version's classes are not the dataset's, or its weights are gone.
    """
    from pathlib import Path

    if list(version.classes) != list(dataset_classes):
        raise ReannotationError(
            f"model {version.version} was trained on {len(version.classes)} classes "
            f"{version.classes[:6]}..., the dataset now has {len(dataset_classes)} "
            f"{list(dataset_classes)[:6]}...: the class list changed; train a new version"
        )
    if not Path(version.weights).is_file():
        raise ReannotationError(f"model {version.version}: its weights {version.weights} are gone")
    changes: dict = {"detector": config.detector.model_copy(update={"model": version.weights})}
    if config.ontology is not None:
        classes = tuple(version.classes)
        changes["ontology"] = OntologyConfig(mapping={c: c for c in classes}, classes=classes)
        if config.detector.second_model:
            log.warning("second model %s left out: it speaks the pretrained classes, %s the "
                        "dataset's (ontology)", config.detector.second_model, version.version)
            changes["detector"] = changes["detector"].model_copy(update={"second_model": None})
    return config.model_copy(update=changes)


def resolve_model_version(config: PipelineConfig, dataset_classes=None) -> tuple[PipelineConfig, ModelVersion | None]:
    """When ``detector.model`` names a version of the dataset (``v2``, ``demo-v2``,
    ``current``), the config that runs it (``version_config``); else ``config`` unchanged.

    Raises:
        ReannotationError: the version does not exist or cannot run on this dataset.
    """
    from bootstrap.training import registry_for

    try:
        version = registry_for(config).find(config.detector.model)
    except RegistryError as err:
        raise ReannotationError(str(err)) from None
    if version is None:
        return config, None
    classes = dataset_classes if dataset_classes is not None else version.classes
    return version_config(config, version, classes), version


def undecided_images(store, model_name: str) -> tuple[list, int, int]:
    """Images to re-annotate: ``(PendingImage list, skipped because a person touched them,
    skipped because ``model_name`` predicted them already)``."""
    from bootstrap.store import PendingImage, touched_by_person

    projection = {"filepath": 1, "tags": 1, PREDICTION_MODEL: 1, f"{LABELS}.detections": 1}
    ids = store.ids_in_states(TRIAGE_INPUT_STATES)
    todo, human, already = [], 0, 0
    for start in range(0, len(ids), 1000):
        for doc in store.read_documents(ids[start:start + 1000], projection):
            if touched_by_person(doc):
                human += 1
            elif doc.get(PREDICTION_MODEL) == model_name:
                already += 1
            else:
                todo.append(PendingImage(str(doc["_id"]), doc["filepath"]))
    todo.sort(key=lambda image: image.sample_id)
    return todo, human, already


def reannotate(config: PipelineConfig, model: str = "current", run_id: str | None = None) -> ReannotationReport:
    """Re-predict every undecided image with ``model`` (a version: ``v2``, ``current``; or any
    weights, as ``detector.model``) in place of ``detector.model``, store, re-triage; see the
    module docstring.

    Raises:
        ReannotationError: the version cannot run on this dataset.
        StoreError: no such dataset.
    """
    from bootstrap.annotate import detect_images
    from bootstrap.detectors import load_detector
    from bootstrap.ontology import Ontology
    from bootstrap.proposals import input_side
    from bootstrap.review_learning import effective_triage
    from bootstrap.store import ImageStore
    from bootstrap.triage import apply_triage, triage_fields

    started = time.perf_counter()
    run_id = run_id or uuid.uuid4().hex
    store = ImageStore.open_existing(config.dataset)
    config = config.model_copy(update={"detector": config.detector.model_copy(update={"model": model})})
    config, version = resolve_model_version(config, tuple(store.dataset.default_classes))
    detector = load_detector(config.detector)
    ontology = Ontology(config.ontology, detector.class_names)
    if list(ontology.classes) != list(store.dataset.default_classes):
        raise ReannotationError(
            f"{detector.name} gives the classes {list(ontology.classes)[:6]}..., the dataset has "
            f"{list(store.dataset.default_classes)[:6]}...: the class list changed"
        )
    images, human, already = undecided_images(store, detector.name)
    report = ReannotationReport(config.dataset, detector.name, version.version if version else None,
                                skipped_human=human, already=already)
    log.info("re-annotating %d images with %s (%d left alone: a person touched them)",
             len(images), detector.name, human)
    triage = effective_triage(store, config.triage)
    routed: dict[str, int] = {}
    with progress.task("re-annotating", total=len(images)) as bar:
        for start in range(0, len(images), REANNOTATE_CHUNK):
            chunk = images[start:start + REANNOTATE_CHUNK]
            results = []
            for result in detect_images(chunk, detector, ontology, config.detector.batch_size,
                                        max_side=input_side(config.detector)):
                results.append(result)
                if result.failure:
                    report.failed.append((result.uri, result.failure))
                bar.advance()
            # A person may have started on one of these images meanwhile: leave it alone.
            touched = _touched_meanwhile(store, [r.sample_id for r in results])
            results = [r for r in results if r.sample_id not in touched]
            report.skipped_human += len(touched)
            recorded = store.record_results(results, model=detector.name, run_id=run_id,
                                            triage=functools.partial(triage_fields, config=triage))
            report.boxes += recorded.boxes
            report.images += len(results)
            for state, n in recorded.states.items():
                routed[state] = routed.get(state, 0) + n
    # Images left `predicted` by an older version of the pipeline (normally none).
    for state, n in apply_triage(store, triage, states=(ImageState.PREDICTED.value,)).items():
        routed[state] = routed.get(state, 0) + n
    report.routed = {s: n for s, n in routed.items() if s in TRIAGE_OUTPUT_STATES}
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _touched_meanwhile(store, sample_ids: list[str]) -> set[str]:
    from bson import ObjectId

    from bootstrap.store import touched_by_person

    projection = {"tags": 1, STATE: 1, f"{LABELS}.detections": 1}
    touched = set()
    for doc in store.read_documents([ObjectId(i) for i in sample_ids], projection):
        if doc.get(STATE) not in TRIAGE_INPUT_STATES or touched_by_person(doc):
            touched.add(str(doc["_id"]))
    return touched
