"""Fine-tune the detector on a dataset's final labels: the learning step of the bootstrap loop.

``train_version`` does it all, in this order, and fails with a ``TrainingError`` before any
training starts when the input is wrong (``plan_training``: no final labels yet, a class list
that changed, missing base weights):

1. **Export** the final labels with the exporter (``bootstrap.export``: human boxes and
   accepted boxes, never ``reject``-tagged ones, background images kept; images symlinked, not
   copied) into the new version's folder, split by content hash (``train.split``).
2. **Compare on people's labels.** The validation split's *reviewed* images are the yardstick
   (``val-reviewed.txt``): the current detector's own accepted boxes would favour the current
   detector. When the split holds no reviewed image, all its images are used, and the record
   says so (``compared_on``).
3. **Score the current detector** on those images with Ultralytics' validator, at the
   pipeline's inference size (``detector.image_size``: how the version will be used).
4. **Fine-tune** through Ultralytics' own trainer (GPU when there is one), at most
   ``train.epochs`` epochs, stopping after the epoch that would run past
   ``train.time_budget_minutes``; per-epoch losses and metrics go to ``on_epoch`` (the CLI's
   lines, the flow's artifact) and the log.
5. **Score the new weights** the same way, **register** the version (``bootstrap.model_registry``)
   and **promote** it to the dataset's detector only when its mAP50-95 beats the current one's
   by more than ``train.min_improvement``; otherwise the current detector stays and the
   registry records why.

Ultralytics is kept from writing anywhere but the version's folder (``project``/``name``), from
installing packages (``YOLO_AUTOINSTALL=false``), from plotting (``plots=False``: no fonts to
download) and from sending usage events (``YOLO_OFFLINE``, set in ``bootstrap.environment``).

How a version enters the pipeline (``bootstrap.reannotate``): it replaces ``detector.model``;
the second model and the views stay. Its classes are the dataset's classes (the export's
``names``); see ``check_classes`` for when that differs from the model it was tuned from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bootstrap import progress
from bootstrap.config import PipelineConfig
from bootstrap.detections import DetectorError
from bootstrap.model_registry import ModelRegistry, ModelVersion, version_name
from bootstrap.schema import STATE, ImageState

log = logging.getLogger(__name__)

#: Ultralytics' validator keys -> ours.
METRIC_KEYS = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "map50",
    "metrics/mAP50-95(B)": "map50_95",
}
COMPARED_METRIC = "map50_95"


class TrainingError(ValueError):
    """Training cannot start (or its result cannot be used) as asked; nothing was trained."""


@dataclass
class EpochRecord:
    """One epoch of fine-tuning: mean training losses, validation metrics, elapsed seconds."""

    epoch: int
    epochs: int
    box_loss: float
    cls_loss: float
    dfl_loss: float
    precision: float
    recall: float
    map50: float
    map50_95: float
    seconds: float

    def line(self) -> str:
        return (f"epoch {self.epoch}/{self.epochs}: loss box {self.box_loss:.3f} cls {self.cls_loss:.3f} "
                f"dfl {self.dfl_loss:.3f}; val P {self.precision:.3f} R {self.recall:.3f} "
                f"mAP50 {self.map50:.3f} mAP50-95 {self.map50_95:.3f} ({self.seconds:.0f} s)")


@dataclass(frozen=True)
class TrainingPlan:
    """What ``plan_training`` checked: where fine-tuning starts and on what."""

    base_weights: str  # a file
    base_reference: str  # as configured or given (a model name, a version, a path)
    base_version: str | None
    base_classes: tuple[str, ...]
    classes: tuple[str, ...]
    final_images: int
    reviewed_images: int
    current_weights: str  # the dataset's detector now: what the version must beat
    current_name: str
    current_classes: tuple[str, ...]


@dataclass
class TrainingOutcome:
    """A registered version and whether it replaced the dataset's detector."""

    version: ModelVersion
    promoted: bool
    decision: str
    history: list[EpochRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"version": self.version.to_dict(), "promoted": self.promoted, "decision": self.decision}


# -- the checks before any training ------------------------------------------------------------


def registry_for(config: PipelineConfig) -> ModelRegistry:
    """The model versions of ``config.dataset`` under ``train.models_dir``."""
    return ModelRegistry(config.train.models_dir, config.dataset)


def current_detector(config: PipelineConfig) -> tuple[str, ModelVersion | None]:
    """The dataset's detector now: its current version's weights, else ``detector.model``."""
    current = registry_for(config).current()
    return (current.weights, current) if current else (config.detector.model, None)


def model_classes(weights: str) -> tuple[str, ...]:
    """The class names stored in a weights file (loads it: torch, not the whole pipeline)."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    from ultralytics import YOLO

    try:
        names = YOLO(weights).names
    except Exception as err:  # noqa: BLE001 - ultralytics raises many types for one cause
        raise TrainingError(f"train: cannot load the base weights '{weights}' ({err})") from err
    return tuple(names[i] for i in sorted(names))


def check_classes(
    dataset_classes: tuple[str, ...], base_classes: tuple[str, ...], expected: tuple[str, ...],
    base_version: str | None, has_ontology: bool,
) -> str | None:
    """Why these class lists cannot be fine-tuned together (None: they can). Pure.

    * ``expected`` (what the config gives now: the ontology's classes, else the base model's)
      must be the dataset's: otherwise the class list changed since the dataset was annotated,
      and an export's class indices would mean something else than the labels.
    * A version's classes are its dataset's classes, so fine-tuning from a version needs the
      same list.
    * From a pretrained model without an ontology, the lists are the model's: equal too. With
      an ontology (renamed or merged classes), the version learns the dataset's classes with a
      new head (Ultralytics keeps the weights that fit) and the note says so.
    """
    if tuple(dataset_classes) != tuple(expected):
        return (f"the class list changed: the dataset was annotated with {len(dataset_classes)} classes "
                f"{list(dataset_classes)[:6]}..., the config now gives {len(expected)} "
                f"{list(expected)[:6]}...; export and train need one list: restore the ontology "
                "the dataset was made with, or annotate into a new dataset")
    if base_classes != tuple(dataset_classes) and (base_version or not has_ontology):
        what = f"version {base_version}" if base_version else "the base model"
        return (f"the class list changed: {what} has {len(base_classes)} classes "
                f"{list(base_classes)[:6]}..., the dataset has {len(dataset_classes)} "
                f"{list(dataset_classes)[:6]}...; fine-tune from weights with the dataset's classes "
                "(--base a pretrained model the dataset was annotated with)")
    return None


def plan_training(store, config: PipelineConfig, base: str | None = None) -> TrainingPlan:
    """Check everything training needs before it starts.

    Args:
        store: the dataset's ``ImageStore``.
        base: weights to fine-tune from (a version, a model name or a path); default the
            dataset's current detector (``current_detector``).

    Raises:
        TrainingError: no class list, no final labels yet (no image reviewed), missing base
            weights, or a class list that changed.
    """
    from bootstrap.ontology import Ontology

    classes = tuple(store.dataset.default_classes)
    if not classes:
        raise TrainingError(f"train: dataset '{store.name}' has no class list; annotate it first")
    states = store.state_counts()
    final = states[ImageState.AUTO_ACCEPTED.value] + states[ImageState.REVIEWED.value]
    reviewed = states[ImageState.REVIEWED.value]
    if reviewed == 0:
        raise TrainingError(
            f"train: no final labels yet in '{store.name}': no image has been reviewed "
            f"({final} auto-accepted), and fine-tuning learns from what people confirmed; review a "
            f"batch first (bootstrap review queue {store.name}, then bootstrap review apply {store.name})"
        )
    registry = registry_for(config)
    current_reference, current_version = current_detector(config)
    reference, version = (base, registry.find(base)) if base else (current_reference, current_version)
    weights = _local_weights(reference, version)
    current_weights = weights if base is None else _local_weights(current_reference, current_version)
    base_classes = model_classes(weights)
    expected = Ontology(config.ontology, base_classes).classes
    problem = check_classes(classes, base_classes, expected,
                            version.version if version else None, config.ontology is not None)
    if problem:
        raise TrainingError(f"train: {problem}")
    if base_classes != classes:
        log.warning("fine-tuning %s (%d classes) to the dataset's %d classes: a new head is trained",
                    reference, len(base_classes), len(classes))
    return TrainingPlan(
        weights, version.version if version else reference, version.version if version else None,
        base_classes, classes, final, reviewed, current_weights,
        current_version.model_name if current_version else Path(current_reference).name,
        base_classes if base is None else model_classes(current_weights),
    )


def _local_weights(reference: str, version: ModelVersion | None) -> str:
    """The weights file of ``reference`` (a version's, or a model name/path made local).

    Raises:
        TrainingError: no such file (training never downloads).
    """
    from bootstrap.yolo import resolve_weights

    if version is not None:
        if not Path(version.weights).is_file():
            raise TrainingError(f"train: missing base weights: version {version.version}'s file {version.weights} is gone")
        return version.weights
    try:
        weights = resolve_weights(reference)
    except DetectorError as err:
        raise TrainingError(f"train: missing base weights: {err}") from None
    if not Path(weights).is_file():
        raise TrainingError(
            f"train: missing base weights: no file '{reference}' (training never downloads); "
            "set BOOTSTRAP_MODELS to a folder holding it or give a path"
        )
    return weights


# -- the training export -----------------------------------------------------------------------


def manifest_hash(manifest: dict) -> str:
    """SHA-256 of an export manifest without its volatile fields (time, flow run): the same
    final labels give the same hash."""
    from bootstrap.export import VOLATILE_MANIFEST_FIELDS

    stable = {k: v for k, v in manifest.items() if k not in VOLATILE_MANIFEST_FIELDS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_training_data(store, export_dir: Path, classes: tuple[str, ...], out: Path) -> dict:
    """The data file Ultralytics trains from: the export's train split, and as validation the
    val split's reviewed images (all of its images when none is reviewed).

    Returns ``{"data": path, "compared_on": {"images": n, "labels": "reviewed"|"final"}}``.
    """
    import yaml

    val_images = sorted(p for p in (export_dir / "images" / "val").iterdir() if p.is_file())
    paths, states = store.dataset.values(["filepath", STATE])
    reviewed_files = {
        os.path.realpath(path) for path, state in zip(paths, states, strict=True)
        if state == ImageState.REVIEWED.value
    }
    # The training export links each image to its file, so the link tells which sample it is.
    reviewed = [p for p in val_images if os.path.realpath(p) in reviewed_files]
    if reviewed:
        listing = out / "val-reviewed.txt"
        listing.write_text("".join(f"{p}\n" for p in reviewed))
        val, compared = str(listing), {"images": len(reviewed), "labels": "reviewed"}
    else:
        val, compared = str(export_dir / "images" / "val"), {"images": len(val_images), "labels": "final"}
    data = out / "train.yaml"
    data.write_text(yaml.safe_dump({
        "path": str(export_dir), "train": str(export_dir / "images" / "train"), "val": val,
        "names": dict(enumerate(classes)),
    }, sort_keys=False))
    return {"data": str(data), "compared_on": compared}


# -- Ultralytics: validate and train -----------------------------------------------------------


def _device(device: str):
    # Ultralytics picks a GPU when there is one for device=None.
    return None if device == "auto" else device


def _workers(device: str) -> int:
    # On CPU the loader's worker processes would compete with training for the same cores,
    # and forking a process that holds database threads is best avoided.
    import torch

    on_gpu = device != "cpu" and torch.cuda.is_available()
    return 8 if on_gpu else 0


def validate(weights: str, data: str, image_size: int, batch_size: int, device: str, work_dir: Path) -> dict[str, float]:
    """Ultralytics' validator on ``data``'s val images: precision, recall, mAP50, mAP50-95."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    from ultralytics import YOLO

    metrics = YOLO(weights).val(
        data=data, split="val", imgsz=image_size, batch=batch_size, device=_device(device),
        plots=False, save_json=False, project=str(work_dir), name="val", exist_ok=True,
        workers=_workers(device), verbose=False,
    )
    return {ours: round(float(metrics.results_dict[key]), 5) for key, ours in METRIC_KEYS.items()}


def fine_tune(
    base_weights: str, data: str, config: PipelineConfig, work_dir: Path,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> tuple[Path, list[EpochRecord], str, float]:
    """Ultralytics' trainer from ``base_weights`` on ``data``; returns (best weights, history,
    device, seconds). At most ``train.epochs`` epochs; with ``train.time_budget_minutes`` it
    stops after the epoch that would run past the budget (Ultralytics' own ``time`` argument
    would instead re-plan the number of epochs to fill the budget)."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    from ultralytics import YOLO

    settings = config.train
    model = YOLO(base_weights)
    history: list[EpochRecord] = []
    started = time.perf_counter()
    budget = settings.time_budget_minutes * 60 if settings.time_budget_minutes else None
    progress.expect("training", total=settings.epochs)

    in_epoch = [False]

    def epoch_started(trainer) -> None:
        in_epoch[0] = True

    def after_epoch(trainer) -> None:
        if not in_epoch[0]:
            return  # Ultralytics calls it once more after validating the best weights at the end
        in_epoch[0] = False
        # The epoch's mean losses by name (a dict in Ultralytics 8.4).
        means = dict(trainer.tloss or {})
        losses = [float(means.get(k, 0.0)) for k in ("box_loss", "cls_loss", "dfl_loss")]
        metrics = {ours: float(trainer.metrics.get(key, 0.0)) for key, ours in METRIC_KEYS.items()}
        elapsed = time.perf_counter() - started
        record = EpochRecord(trainer.epoch + 1, settings.epochs, *losses[:3], **metrics, seconds=round(elapsed, 1))
        history.append(record)
        log.info("%s", record.line())
        progress.advance("training")
        if on_epoch is not None:
            on_epoch(record)
        if budget is not None and elapsed + elapsed / len(history) > budget and not trainer.stop:
            log.info("time budget of %.1f min: stopping after epoch %d", settings.time_budget_minutes, record.epoch)
            trainer.stop = True

    model.add_callback("on_train_epoch_start", epoch_started)
    model.add_callback("on_fit_epoch_end", after_epoch)
    model.train(
        data=data, epochs=settings.epochs, imgsz=settings.image_size, batch=settings.batch_size,
        device=_device(settings.device), project=str(work_dir), name="run", exist_ok=True,
        plots=False, workers=_workers(settings.device), verbose=False,
    )
    trainer = model.trainer
    best = Path(trainer.best if Path(trainer.best).is_file() else trainer.last)
    return best, history, str(trainer.device), time.perf_counter() - started


# -- the whole step ----------------------------------------------------------------------------


def is_better(new: dict[str, float], current: dict[str, float] | None, min_improvement: float) -> bool:
    """Whether ``new`` replaces ``current``: a higher mAP50-95 by more than ``min_improvement``
    on the same images. Not comparable (``current`` None) is not better. Pure."""
    if current is None:
        return False
    return new[COMPARED_METRIC] > current[COMPARED_METRIC] + min_improvement


def decision_text(version: str, new: dict, current: dict | None, current_name: str, promoted: bool,
                  min_improvement: float) -> str:
    """One sentence for the log, the CLI and the artifact: what was decided, on what figures."""
    if current is None:
        return (f"{version} was not promoted: the current detector {current_name} has other classes, "
                f"so it cannot be scored on the same labels; kept {current_name} "
                f"(use `bootstrap models DATASET --use {version}` to switch by hand)")
    figures = f"mAP50-95 {new[COMPARED_METRIC]:.4f} vs {current[COMPARED_METRIC]:.4f} for {current_name}"
    if promoted:
        return f"{version} replaces {current_name} as the detector: {figures}"
    return (f"{version} is not better than the current detector ({figures}; needs more than "
            f"+{min_improvement:g}): kept {current_name}")


def train_version(
    store, config: PipelineConfig, base: str | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None, flow_run: str | None = None,
) -> TrainingOutcome:
    """Fine-tune, register and (when better) promote a new version of the dataset's detector.

    Raises:
        TrainingError: bad input (``plan_training``) or a split of the export without images;
            nothing is registered then.
    """
    from bootstrap.export import export_dataset

    plan = plan_training(store, config, base)
    registry = registry_for(config)
    version, folder = registry.new_folder()
    try:
        manifest = export_dataset(
            store, folder / "export", "yolo", split=config.train.split, config=config,
            flow_run=flow_run, media="symlink",
        )
        images = {name: split["images"] for name, split in manifest["splits"].items()}
        if set(images) != {"train", "val"}:
            raise TrainingError(f"train.split: needs exactly the splits train and val, got {config.train.split!r}")
        empty = [name for name, n in images.items() if n == 0]
        if empty:
            raise TrainingError(
                f"train: the {' and '.join(empty)} split of the training export is empty "
                f"({plan.final_images} final images split {config.train.split}); review more images"
            )
        data = write_training_data(store, folder / "export", plan.classes, folder)
        compare_size, device = config.detector.image_size, config.train.device
        batch = config.train.batch_size
        current_metrics = None
        if plan.current_classes == plan.classes:
            current_metrics = validate(plan.current_weights, data["data"], compare_size, batch, device, folder)
            log.info("current detector %s on the validation split: %s", plan.current_name, current_metrics)
        best, history, used_device, seconds = fine_tune(plan.base_weights, data["data"], config, folder, on_epoch)
        weights = folder / version_name(config.dataset, version)
        shutil.move(str(best), weights)
        shutil.rmtree(folder / "run" / "weights", ignore_errors=True)
        new_metrics = validate(str(weights), data["data"], compare_size, batch, device, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # no half-made version stays behind
        raise
    current_name = plan.current_name
    promoted = is_better(new_metrics, current_metrics, config.train.min_improvement)
    decision = decision_text(version, new_metrics, current_metrics, current_name, promoted,
                             config.train.min_improvement)
    record = registry.register(ModelVersion(
        version=version, dataset=config.dataset, weights=str(weights), classes=list(plan.classes),
        base_weights=plan.base_weights, base_version=plan.base_version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        export_manifest_hash=manifest_hash(manifest), export_dir=str(folder / "export"),
        images=images, boxes={k: manifest["counts"].get(k, 0) for k in ("boxes", "boxes_auto", "boxes_human")},
        compared_on=data["compared_on"] | {"image_size": compare_size},
        metrics=new_metrics, base_metrics=current_metrics, promoted=promoted, decision=decision,
        settings=config.train.model_dump(mode="json"), device=used_device,
        train_seconds=round(seconds, 1), history=[asdict(h) for h in history],
    ))
    if promoted:
        registry.set_current(version, decision)
    else:
        registry.note(decision)
    log.info("%s", decision)
    return TrainingOutcome(record, promoted, decision, history)


# -- reporting ---------------------------------------------------------------------------------


def history_markdown(outcome: TrainingOutcome) -> str:
    """The version, its figures against the current detector, and the per-epoch table."""
    v = outcome.version
    rows = [f"| {h['epoch']} | {h['box_loss']:.3f} | {h['cls_loss']:.3f} | {h['dfl_loss']:.3f} | "
            f"{h['precision']:.3f} | {h['recall']:.3f} | {h['map50']:.3f} | {h['map50_95']:.3f} | {h['seconds']:.0f} |"
            for h in v.history]
    base = v.base_metrics or {}
    compare = [f"| {name} | {v.metrics[name]:.4f} | {base.get(name, float('nan')):.4f} |" for name in METRIC_KEYS.values()]
    return "\n".join([
        f"# Training `{v.dataset}` {v.version}", "",
        f"**{outcome.decision}**", "",
        f"Fine-tuned from `{v.base_weights}` on {v.images.get('train', 0)} images "
        f"({v.boxes.get('boxes', 0)} boxes: {v.boxes.get('boxes_human', 0)} human, "
        f"{v.boxes.get('boxes_auto', 0)} automatic), {len(v.history)} epochs at "
        f"{v.settings.get('image_size')} px on {v.device}, {v.train_seconds:.0f} s. Compared on "
        f"{v.compared_on.get('images')} validation images ({v.compared_on.get('labels')} labels) at "
        f"{v.compared_on.get('image_size')} px. Export manifest `{(v.export_manifest_hash or '')[:12]}`.", "",
        "| metric | new version | current detector |", "|---|---|---|", *compare, "",
        "| epoch | box loss | cls loss | dfl loss | P | R | mAP50 | mAP50-95 | s |",
        "|---|---|---|---|---|---|---|---|---|", *rows,
    ])


def plot_history(history: list[dict], path: Path) -> Path:
    """Losses and validation mAP per epoch as a PNG (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (losses, maps) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key in ("box_loss", "cls_loss", "dfl_loss"):
        losses.plot(epochs, [h[key] for h in history], marker="o", label=key.replace("_", " "))
    losses.set(xlabel="epoch", ylabel="training loss", title="losses")
    losses.legend()
    for key, label in (("map50", "mAP50"), ("map50_95", "mAP50-95")):
        maps.plot(epochs, [h[key] for h in history], marker="o", label=label)
    maps.set(xlabel="epoch", ylabel="validation", title="validation mAP", ylim=(0, 1))
    maps.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
