"""Cached proposal views: run a view once over a folder of images, keep its raw boxes.

Exploring review policies (thresholds, fusions, review orders) needs the boxes of every view of
every image many times over; inference is the only slow part. A ``CachedView`` holds one view's
raw boxes for a set of images (keyed by content hash) and the machine time it took, saved as one
``.npz`` file, so that ``bootstrap.evaluation.holdout`` can replay any policy in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bootstrap.decode import decode_image
from bootstrap.detections import Detections
from bootstrap.sources import content_hash

if TYPE_CHECKING:
    from bootstrap.detections import Detector


@dataclass(frozen=True)
class CachedView:
    """One view's raw boxes per image.

    Attributes:
        name: the view, e.g. ``yolov8n@640``.
        keys: content hash of each image, in order.
        detections: the view's boxes of each image (pixels of the upright image).
        seconds_per_image: machine time of the view (decoding excluded), for the cost report.
        device: where it ran, e.g. ``cpu (2 cores, shared)``.
    """

    name: str
    keys: tuple[str, ...]
    detections: tuple[Detections, ...]
    seconds_per_image: float
    device: str = "cpu"

    def by_key(self) -> dict[str, Detections]:
        return dict(zip(self.keys, self.detections, strict=True))


def run_view(
    name: str, detector: Detector, paths: Sequence[str | Path], batch_size: int = 8, device: str = "cpu"
) -> CachedView:
    """Run ``detector`` over ``paths`` (decoded the pipeline's way) and keep every box."""
    images = [decode_image(str(p)).pixels for p in paths]
    keys = tuple(content_hash(str(p)) for p in paths)
    detector.predict(images[:1])  # warm-up: the first call pays for lazy setup, not the view
    found: list[Detections] = []
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        found += detector.predict(images[start:start + batch_size])
    seconds = (time.perf_counter() - started) / max(len(images), 1)
    return CachedView(name, keys, tuple(found), seconds, device)


def save_view(view: CachedView, path: str | Path) -> Path:
    """Write ``view`` to one ``.npz`` file (boxes of all images concatenated)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dets = view.detections
    np.savez_compressed(
        path,
        name=np.array(view.name),
        device=np.array(view.device),
        seconds_per_image=np.array(view.seconds_per_image),
        keys=np.array(view.keys),
        image_wh=np.array([d.image_wh for d in dets], dtype=np.int64).reshape(-1, 2),
        counts=np.array([len(d) for d in dets], dtype=np.int64),
        xyxy=np.concatenate([d.xyxy for d in dets] or [np.zeros((0, 4))]).astype(np.float32),
        confidence=np.concatenate([d.confidence for d in dets] or [np.zeros(0)]).astype(np.float32),
        class_id=np.concatenate([d.class_id for d in dets] or [np.zeros(0)]).astype(np.int64),
        model_label=np.concatenate([d.model_label for d in dets] or [np.zeros(0)]).astype(str),
    )
    return path


def load_view(path: str | Path) -> CachedView:
    """Read a view written by ``save_view``."""
    with np.load(Path(path), allow_pickle=False) as data:
        counts = data["counts"]
        ends = np.cumsum(counts)
        detections = []
        for wh, end, count in zip(data["image_wh"], ends, counts, strict=True):
            part = slice(end - count, end)
            labels = data["model_label"][part].astype(object)
            detections.append(Detections(
                data["xyxy"][part], data["confidence"][part], data["class_id"][part],
                labels, labels.copy(), (int(wh[0]), int(wh[1])),
            ))
        return CachedView(
            str(data["name"]), tuple(str(k) for k in data["keys"]), tuple(detections),
            float(data["seconds_per_image"]), str(data["device"]),
        )
