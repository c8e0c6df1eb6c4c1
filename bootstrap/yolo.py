"""The Ultralytics YOLO backend, and where its weights come from.

Weights: ``detector.model`` is a file path, or a name such as ``yolov8n.pt``. A name is looked
up first in the folder named by the ``BOOTSTRAP_MODELS`` environment variable; when it is not
there, Ultralytics downloads it as usual (which needs internet).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bootstrap.config import DetectorConfig
from bootstrap.detections import Detections, DetectorError

MODELS_ENV = "BOOTSTRAP_MODELS"


def resolve_weights(model: str) -> str:
    """Return a local weights path for ``model`` when one exists, else ``model`` unchanged.

    Order: an existing path as given; then ``$BOOTSTRAP_MODELS/<name>``; else the bare name,
    which Ultralytics resolves (its cache, then a download).

    Raises:
        DetectorError: ``model`` looks like a path (has a folder) but no such file exists.
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
        # Ultralytics pip-installs missing optional packages at run time unless told not to; a
        # pipeline must not change its own environment mid-run (and offline that hangs).
        os.environ.setdefault("YOLO_AUTOINSTALL", "false")
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
