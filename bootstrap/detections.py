"""One in-memory type for a single image's detections, and the contract every detector meets.

Detector outputs are converted into ``Detections`` once, at the detector's boundary
(``from_ultralytics``), and out of it once, into FiftyOne's documents (``bootstrap.documents``).
In between, filtering is done with masks, as in supervision: ``dets[dets.confidence >= 0.5]``.

A detector is anything with a ``name``, its ``class_names`` and one method,
``predict(images) -> list[Detections]``: batching, prefetching, the ontology, triage and storage
all live outside it (``bootstrap.detectors`` loads one from the config).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from bootstrap.boxes import relative_xywh


class DetectorError(RuntimeError):
    """The detector cannot be loaded or run."""


@dataclass(frozen=True)
class Detections:
    """Boxes of one image.

    Attributes:
        xyxy: (N, 4) float32 absolute pixel corners in the upright image.
        confidence: (N,) float32 scores.
        class_id: (N,) int model class indices.
        model_label: (N,) the model's class names.
        label: (N,) dataset class names (after the ontology; equal to ``model_label`` without one).
        image_wh: (width, height) of the image the boxes refer to.
        extras: optional (N,) per-box attributes stored with each box, e.g. the fraction of
            test-time views that found it (``bootstrap.proposals``).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    model_label: np.ndarray
    label: np.ndarray
    image_wh: tuple[int, int]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    _n: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        object.__setattr__(self, "_n", n)
        if self.xyxy.shape != (n, 4):
            raise ValueError(f"xyxy must be (N, 4), got {self.xyxy.shape}")
        columns = {c: getattr(self, c) for c in ("confidence", "class_id", "model_label", "label")}
        for name, column in (columns | self.extras).items():
            if len(column) != n:
                raise ValueError(f"{name} has {len(column)} entries for {n} boxes")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            model_label=self.model_label[index],
            label=self.label[index],
            image_wh=self.image_wh,
            extras={name: column[index] for name, column in self.extras.items()},
        )

    def with_labels(self, label: np.ndarray) -> Detections:
        """The same boxes with new dataset labels (used by the ontology)."""
        return Detections(
            self.xyxy, self.confidence, self.class_id, self.model_label,
            np.asarray(label, dtype=object), self.image_wh, self.extras,
        )

    @classmethod
    def empty(cls, image_wh: tuple[int, int]) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros(0, np.float32),
            class_id=np.zeros(0, np.int64),
            model_label=np.zeros(0, object),
            label=np.zeros(0, object),
            image_wh=image_wh,
        )

    @classmethod
    def from_ultralytics(cls, result) -> Detections:
        """Convert one ``ultralytics.engine.results.Results`` (boxes only)."""
        height, width = result.orig_shape
        boxes = result.boxes
        class_id = boxes.cls.cpu().numpy().astype(np.int64)
        names = np.array([result.names[int(i)] for i in class_id], dtype=object)
        return cls(
            xyxy=boxes.xyxy.cpu().numpy().astype(np.float32),
            confidence=boxes.conf.cpu().numpy().astype(np.float32),
            class_id=class_id,
            model_label=names,
            label=names.copy(),
            image_wh=(int(width), int(height)),
        )

    def relative_xywh(self) -> np.ndarray:
        """(N, 4) boxes as [x, y, w, h] relative to the image size (FiftyOne's convention)."""
        return relative_xywh(self.xyxy, self.image_wh)

    def on_image(self, scale: float, image_wh: tuple[int, int]) -> Detections:
        """The same boxes on the image they were found on at ``1 / scale`` of its size (a
        reduced decode, ``bootstrap.decode``): corners times ``scale``, within ``image_wh``."""
        if scale == 1 and image_wh == self.image_wh:
            return self
        xyxy = self.xyxy.astype(np.float64) * scale
        np.clip(xyxy, 0, [image_wh[0], image_wh[1], image_wh[0], image_wh[1]], out=xyxy)
        return Detections(
            xyxy.astype(np.float32), self.confidence, self.class_id, self.model_label,
            self.label, (int(image_wh[0]), int(image_wh[1])), self.extras,
        )

    def with_xyxy(self, xyxy: np.ndarray) -> Detections:
        """The same boxes at new corners (views mapped back onto the image)."""
        return Detections(
            np.asarray(xyxy, dtype=np.float32).reshape(-1, 4), self.confidence, self.class_id,
            self.model_label, self.label, self.image_wh, self.extras,
        )


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
