"""Detectors: a one-method protocol and the Ultralytics YOLO backend.

A detector turns a batch of decoded RGB images into one ``Detections`` each. Batching,
prefetching, the ontology, triage and storage all live outside it, so a second model or another
backend (torchvision, an ONNX runtime) only has to implement ``predict``.

Weights: ``detector.model`` is a file path, or a name such as ``yolov8n.pt``. A name is looked
up first in the folder named by the ``BOOTSTRAP_MODELS`` environment variable; when it is not
there, Ultralytics downloads it as usual (which needs internet).

Other backends plug in by a model-name scheme: ``register_detector("standin:", factory)`` makes
every ``detector.model`` that starts with ``standin:`` load through ``factory(config)`` instead of
Ultralytics (the scale benchmark registers a fast stand-in detector this way).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from bootstrap.config import DetectorConfig
from bootstrap.detections import Detections

log = logging.getLogger(__name__)

MODELS_ENV = "BOOTSTRAP_MODELS"


class DetectorError(RuntimeError):
    """The detector cannot be loaded or run."""


@runtime_checkable
class Detector(Protocol):
    """What the pipeline needs from a model."""

    #: A stable name for provenance, e.g. ``yolov8n.pt``.
    name: str
    #: The model's class names, indexed by class id.
    class_names: tuple[str, ...]

    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in upright HxWx3 uint8 RGB images; one result per image, in order."""
        ...


def resolve_weights(model: str) -> str:
    """Return a local weights path for ``model`` when one exists, else ``model`` unchanged.

    Order: an existing path as given; then ``$BOOTSTRAP_MODELS/<name>``; else the bare name,
    which Ultralytics resolves (its cache, then a download).
    """
    given = Path(model).expanduser()
    if given.is_file():
        return str(given.resolve())
    folder = os.environ.get(MODELS_ENV)
    if folder:
        candidate = Path(folder).expanduser() / given.name
        if candidate.is_file():
            return str(candidate.resolve())
    if given.parent != Path(".") or given.suffix not in (".pt", ".onnx", ".engine", ".torchscript"):
        raise DetectorError(
            f"detector.model: no file '{model}'; give an existing weights path or a model name "
            f"such as 'yolov8n.pt'"
        )
    return model


class UltralyticsDetector:
    """YOLO models through ``ultralytics.YOLO.predict``, batched, at a low confidence floor."""

    def __init__(self, config: DetectorConfig):
        weights = resolve_weights(config.model)
        try:
            from ultralytics import YOLO  # heavy (torch): imported only when a model is loaded

            self._model = YOLO(weights)
        except Exception as err:  # noqa: BLE001 - ultralytics raises many types for one cause
            raise DetectorError(
                f"detector.model: cannot load '{config.model}' ({err}). Without network the "
                f"weights must be local: set {MODELS_ENV} to a folder holding '{Path(weights).name}' "
                f"or give a path"
            ) from err
        self._config = config
        self._device = None if config.device == "auto" else config.device
        # One model object is not safe to call from two threads at once (its predictor
        # keeps per-call state); Dask or Prefect thread runners may share this instance.
        self._lock = threading.Lock()
        self.name = Path(config.model).name
        self.class_names = tuple(self._model.names[i] for i in sorted(self._model.names))

    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not images:
            return []
        # Ultralytics takes numpy arrays as BGR (OpenCV's order).
        bgr = [np.ascontiguousarray(image[:, :, ::-1]) for image in images]
        with self._lock:
            results = self._model.predict(
                bgr,
                conf=self._config.min_confidence,
                iou=self._config.nms_iou,
                imgsz=self._config.image_size,
                device=self._device,
                batch=self._config.batch_size,
                verbose=False,
            )
        return [Detections.from_ultralytics(result) for result in results]


#: Builds a detector from its config; registered per model-name scheme.
DetectorFactory = Callable[[DetectorConfig], Detector]

_SCHEME = re.compile(r"^[a-z][a-z0-9_-]*:$")
_BACKENDS: dict[str, DetectorFactory] = {}


def register_detector(prefix: str, factory: DetectorFactory) -> None:
    """Load every ``detector.model`` that starts with ``prefix`` (a scheme such as ``"standin:"``)
    through ``factory(config)`` instead of Ultralytics. Registering the same factory again is a
    no-op.

    Raises:
        ValueError: ``prefix`` is not a lowercase scheme ending in ``:``, or it is registered to
            another factory already.
    """
    if not _SCHEME.fullmatch(prefix):
        raise ValueError(f"detector prefix '{prefix}' must be a lowercase scheme like 'standin:'")
    if _BACKENDS.get(prefix, factory) is not factory:
        raise ValueError(f"detector prefix '{prefix}' is registered to another factory already")
    _BACKENDS[prefix] = factory


@functools.lru_cache(maxsize=8)
def load_detector(config: DetectorConfig) -> Detector:
    """Load (once per process) the detector ``config`` describes: several views fused
    (``detector.tta``, ``detector.second_model``; see ``bootstrap.proposals``), a registered
    backend when the model name starts with its prefix, else Ultralytics."""
    if config.tta or config.second_model:
        from bootstrap.proposals import fused_detector

        return fused_detector(config, load_detector)
    log.info("loading detector %s on %s", config.model, config.device)
    for prefix, factory in _BACKENDS.items():
        if config.model.startswith(prefix):
            return factory(config)
    return UltralyticsDetector(config)
