"""The Ultralytics YOLO backend, and where its weights come from.

Weights: ``detector.model`` is a file path, or a name such as ``yolov8n.pt``. A name is looked
up first in the folder named by the ``BOOTSTRAP_MODELS`` environment variable; when it is not
there, Ultralytics downloads it as usual (which needs internet).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bootstrap.config import DetectorConfig
from bootstrap.detections import Detections, DetectorError
from bootstrap.exported import (
    EXPORT_BATCH,
    choose_runtime,
    exported_model,
    openvino_in_float32,
    quiet_ultralytics,
    runtime_on_one_thread,
    torch_single_threaded,
)

log = logging.getLogger(__name__)

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


def resolve_device(device: str) -> str:
    """The device ``detector.device`` means here: ``auto`` is the first GPU when PyTorch sees
    one, else the CPU."""
    if device != "auto":
        return device
    import torch  # heavy: only when a model is loaded

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class UltralyticsDetector:
    """YOLO models through ``ultralytics.YOLO.predict``, batched, at a low confidence floor,
    run by PyTorch or by an export of the weights (``detector.runtime``: bootstrap.exported)."""

    def __init__(self, config: DetectorConfig):
        weights = resolve_weights(config.model)
        # Ultralytics pip-installs missing optional packages at run time unless told not to; a
        # pipeline must not change its own environment mid-run (and offline that hangs).
        os.environ.setdefault("YOLO_AUTOINSTALL", "false")
        self._config = config
        self._device = resolve_device(config.device)
        self.runtime = choose_runtime(config.runtime, self._device)
        if self.runtime == "openvino" and self._device != "cpu":
            log.warning("detector.runtime openvino runs on the CPU, not %s", self._device)
            self._device = "cpu"
        self._model = None
        # Further copies of an exported model for images run side by side on a CPU (each on
        # one thread, as is ``self._model`` then); empty: one image at a time.
        self._streams: list = []
        if self.runtime != "torch":
            if not Path(weights).is_file():  # a name Ultralytics downloads: export the download
                weights = str(getattr(self._load(weights), "ckpt_path", None) or weights)
            streams = cpu_streams(config) if self._device == "cpu" else 1
            self._model = self._load_export(weights, one_thread=streams > 1)
            if self._model is not None and streams > 1:
                self._streams = [self._load_export(weights, one_thread=True)
                                 for _ in range(streams - 1)]
                self._streams = [model for model in self._streams if model is not None]
        if self._model is None:
            self.runtime = "torch"
            self._model = self._load(weights)
        self._pool = (ThreadPoolExecutor(1 + len(self._streams), thread_name_prefix="predict")
                      if self._streams else None)
        # Half precision where it is fast and supported: PyTorch on a GPU (Ultralytics keeps
        # the CPU in float32 whatever is asked).
        self._half = self.runtime == "torch" and self._device.startswith("cuda")
        # Images per call on a GPU: ``detector.batch_size`` until a batch runs out of GPU
        # memory, then halved (and kept) until one fits.
        self._gpu_batch = config.batch_size
        # One model object is not safe to call from two threads at once (its predictor
        # keeps per-call state); Dask or Prefect thread runners may share this instance.
        self._lock = threading.Lock()
        self.name = Path(config.model).name
        self.class_names = tuple(self._model.names[i] for i in sorted(self._model.names))

    def _load(self, weights: str, task: str | None = None):
        try:
            from ultralytics import YOLO  # heavy (torch): imported only when a model is loaded

            return YOLO(weights, task=task)
        except Exception as err:  # noqa: BLE001 - ultralytics raises many types for one cause
            raise DetectorError(
                f"detector.model: cannot load '{self._config.model}' ({err}). Without network the "
                f"weights must be local: set {MODELS_ENV} to a folder holding '{Path(weights).name}' "
                f"or give a path"
            ) from err

    def _load_export(self, weights: str, one_thread: bool = False):
        """The export of ``weights`` for ``self.runtime``, made once and cached; None (with a
        warning) when it cannot be made or loaded: PyTorch runs the same weights, slower.
        ``one_thread``: its runtime computes on the calling thread only."""
        config = self._config
        try:
            path = exported_model(weights, self.runtime, config.image_size, EXPORT_BATCH)
            precision = openvino_in_float32() if self.runtime == "openvino" else contextlib.nullcontext()
            threads = runtime_on_one_thread(self.runtime) if one_thread else contextlib.nullcontext()
            with quiet_ultralytics(), precision, threads:
                model = self._load(str(path), task="detect")
                # Load the runtime now (not at the first batch) so that a broken export falls
                # back here, and its start-up is outside the first batch's time.
                model.predict(np.zeros((config.image_size, config.image_size, 3), np.uint8),
                              imgsz=config.image_size, device=self._device, verbose=False)
            return model
        except Exception as err:  # noqa: BLE001 - any failure falls back (see docstring)
            log.warning("detector.runtime %s: %s; running %s with PyTorch instead", self.runtime,
                        err, config.model)
            return None

    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        # Ultralytics takes numpy arrays as BGR (OpenCV's order).
        bgr = [np.ascontiguousarray(image[:, :, ::-1]) for image in images]
        found: list[Detections | None] = [None] * len(bgr)
        exported_on_cpu = self.runtime != "torch" and self._device == "cpu"
        with self._lock, torch_single_threaded() if exported_on_cpu else contextlib.nullcontext():
            batches = self._batches(bgr)
            if self._device != "cpu":
                outcomes = [self._predict_fitting([bgr[i] for i in b]) for b in batches]
            elif self._pool is None:
                outcomes = [self._predict(self._model, [bgr[i] for i in b]) for b in batches]
            else:
                models: queue.SimpleQueue = queue.SimpleQueue()
                for model in (self._model, *self._streams):
                    models.put(model)

                def on_a_free_model(batch: list[int]) -> list[Detections]:
                    model = models.get()  # as many threads as models: one is always free
                    try:
                        return self._predict(model, [bgr[i] for i in batch])
                    finally:
                        models.put(model)

                outcomes = list(self._pool.map(on_a_free_model, batches))
            for batch, detections in zip(batches, outcomes, strict=True):
                for i, found_here in zip(batch, detections, strict=True):
                    found[i] = found_here
        return found

    def _predict(self, model, images: list[np.ndarray]) -> list[Detections]:
        results = model.predict(
            images,
            conf=self._config.min_confidence,
            iou=self._config.nms_iou,
            imgsz=self._config.image_size,
            device=self._device,
            batch=self._config.batch_size,
            verbose=False,
            # Ultralytics warns that `half` is deprecated whenever it is given, even False.
            **({"half": True} if self._half else {}),
        )
        return [Detections.from_ultralytics(result) for result in results]

    def _predict_fitting(self, images: list[np.ndarray]) -> list[Detections]:
        """``images`` on the GPU in calls that fit its memory: a call that runs out of it is
        retried with half as many images, and later calls keep the smaller size.

        Raises:
            DetectorError: not even one image fits.
        """
        import torch

        found: list[Detections] = []
        while len(found) < len(images):
            part = images[len(found):len(found) + self._gpu_batch]
            try:
                found += self._predict(self._model, part)
            except torch.cuda.OutOfMemoryError as err:
                torch.cuda.empty_cache()
                if len(part) == 1:
                    raise DetectorError(
                        f"one image at {self._config.image_size} px does not fit in the memory "
                        f"of {self._device}: use a smaller detector.image_size or another device"
                    ) from err
                self._gpu_batch = len(part) // 2
                log.warning("%d images per call ran out of GPU memory on %s; %d from now on",
                            len(part), self._device, self._gpu_batch)
        return found

    def _batches(self, images: Sequence[np.ndarray]) -> list[list[int]]:
        """The indices of ``images`` for each ``predict`` call: on a GPU batches of up to
        ``detector.batch_size`` (fewer once one ran out of memory), which it runs in parallel;
        on a CPU with streams one image per call, taken by the next
        free stream (photos of other sizes take other times: a fixed share per stream left one
        idle); else images of one shape together (see ``batches_by_shape``)."""
        if self._device != "cpu":
            size = self._gpu_batch
            return [list(range(i, min(i + size, len(images)))) for i in range(0, len(images), size)]
        if self._streams:
            return [[i] for i in range(len(images))]
        return batches_by_shape([image.shape for image in images], self._config.batch_size)


def batches_by_shape(shapes: Sequence[tuple[int, ...]], size: int) -> list[list[int]]:
    """Indices of images grouped by shape, at most ``size`` per group, in order of first
    appearance. Ultralytics letterboxes a batch of one shape into its smallest stride
    rectangle (640x480 for a 4:3 photo) but a mixed batch into the padded square (a third more
    pixels), and a CPU gains nothing from batching (measured: docs/benchmarks.md)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        by_shape.setdefault(tuple(shape), []).append(i)
    return [group[j:j + size] for group in by_shape.values() for j in range(0, len(group), size)]


def cpu_streams(config: DetectorConfig) -> int:
    """How many images an exported runtime runs at once on a CPU: ``detector.cpu_streams``, or
    for 0 one per core this process may use, at most ``detector.batch_size``."""
    if config.cpu_streams:
        return config.cpu_streams
    return max(1, min(len(os.sched_getaffinity(0)), config.batch_size))
