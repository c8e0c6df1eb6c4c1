"""Sliced (tiled) inference: a proposal view for small objects.

Most objects every full-image view misses are small: at the model's input size they cover a few
pixels. The tiled view cuts each image into a ``grid`` x ``grid`` set of overlapping windows, runs
the model on every window at its own input size (so each window is magnified), maps the boxes
back onto the image and merges the duplicates the overlaps produce. It is fused with the other
views like any view (``bootstrap.proposals``): large objects stay the full-image views' job.

SAHI (``sahi.predict.get_sliced_prediction``) is the reference technique. We do not use the
library: it runs the model through its own ``DetectionModel`` wrappers one slice at a time,
where we batch every slice of a batch through our ``Detector`` protocol (any backend), and it
merges the slices with the full-image prediction itself (NMM), which would hide which views found
a box; we need each view's boxes apart for weighted boxes fusion and its per-box support. What
remains to write is the window geometry and the mapping back (below).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bootstrap.boxes import pairwise_iou, xyxy_to_xywh
from bootstrap.detections import Detections

if TYPE_CHECKING:
    from bootstrap.detections import Detector

#: The largest box (relative width, height) a 2x2 tiling with 25% overlap can report whole: a
#: window is 0.57 of the side; a little less, since boxes at a window's inner edge are dropped.
WINDOW = (0.55, 0.55)
#: A box this close (pixels) to a window edge that is not an image edge is cut by the window:
#: the same object lies whole in a neighbouring window or is a large one the full view finds.
EDGE_MARGIN = 2.0


def magnification(grid: int = 2, overlap: float = 0.25) -> float:
    """How many times longer an image's side is than a window's (``tile_windows``): the tiled
    view resizes each window, not the image, to the model's input size."""
    return grid - (grid - 1) * overlap


def tile_windows(
    width: int, height: int, grid: int = 2, overlap: float = 0.25
) -> list[tuple[int, int, int, int]]:
    """``grid`` x ``grid`` windows ``(x1, y1, x2, y2)`` covering the image, neighbours sharing
    ``overlap`` of a window's side.

    Raises:
        ValueError: ``grid`` < 1 or ``overlap`` outside [0, 1).
    """
    if grid < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"tiles need grid >= 1 and 0 <= overlap < 1, got {grid}, {overlap}")

    def spans(size: int) -> list[tuple[int, int]]:
        if grid == 1:
            return [(0, size)]
        side = size / magnification(grid, overlap)
        starts = [round(i * side * (1 - overlap)) for i in range(grid)]
        return [(start, min(size, round(start + side))) for start in starts[:-1]] + [
            (max(0, size - round(side)), size)
        ]

    return [(x1, y1, x2, y2) for y1, y2 in spans(height) for x1, x2 in spans(width)]


def merge_windows(
    found: Sequence[Detections],
    windows: Sequence[tuple[int, int, int, int]],
    image_wh: tuple[int, int],
    iou_threshold: float = 0.5,
) -> Detections:
    """The boxes of each window (in window pixels) as one set on the image: shifted back, boxes
    cut by an inner window edge dropped, duplicates from overlapping windows removed (class-aware
    NMS, the higher score kept)."""
    width, height = image_wh
    parts = []
    for detections, (x1, y1, x2, y2) in zip(found, windows, strict=True):
        if not len(detections):
            continue
        xyxy = detections.xyxy + np.array([x1, y1, x1, y1], dtype=np.float32)
        cut = np.zeros(len(detections), dtype=bool)
        if x1 > 0:
            cut |= xyxy[:, 0] <= x1 + EDGE_MARGIN
        if y1 > 0:
            cut |= xyxy[:, 1] <= y1 + EDGE_MARGIN
        if x2 < width:
            cut |= xyxy[:, 2] >= x2 - EDGE_MARGIN
        if y2 < height:
            cut |= xyxy[:, 3] >= y2 - EDGE_MARGIN
        shifted = Detections(
            xyxy, detections.confidence, detections.class_id, detections.model_label,
            detections.label, image_wh, detections.extras,
        )
        parts.append(shifted[~cut])
    if not parts:
        return Detections.empty(image_wh)
    merged = Detections(
        np.concatenate([p.xyxy for p in parts]).reshape(-1, 4),
        np.concatenate([p.confidence for p in parts]),
        np.concatenate([p.class_id for p in parts]),
        np.concatenate([p.model_label for p in parts]),
        np.concatenate([p.label for p in parts]),
        image_wh,
    )
    return merged[nms_keep(merged.xyxy, merged.confidence, merged.model_label, iou_threshold)]


def nms_keep(
    xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Indices of the boxes class-aware greedy NMS keeps, best score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    xywh = xyxy_to_xywh(xyxy)
    iou = pairwise_iou(xywh, xywh)
    same = np.asarray(labels, dtype=object)[:, None] == np.asarray(labels, dtype=object)[None, :]
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= same[i] & (iou[i] >= iou_threshold)
    return np.array(keep, dtype=np.int64)


class TiledDetector:
    """A ``Detector`` that runs ``base`` on overlapping windows of each image (see the module
    docstring). Costs about ``grid**2`` passes of ``base`` per image."""

    def __init__(self, base: Detector, grid: int = 2, overlap: float = 0.25):
        tile_windows(64, 64, grid, overlap)  # validates grid and overlap up front
        self._base, self._grid, self._overlap = base, grid, overlap
        self.name = f"{base.name}+tiles{grid}x{grid}"
        self.class_names = tuple(base.class_names)

    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        crops, plans = [], []
        for image in images:
            height, width = image.shape[:2]
            windows = tile_windows(width, height, self._grid, self._overlap)
            plans.append(((width, height), windows, len(crops)))
            crops += [np.ascontiguousarray(image[y1:y2, x1:x2]) for x1, y1, x2, y2 in windows]
        found = self._base.predict(crops)
        return [
            merge_windows(found[start:start + len(windows)], windows, image_wh)
            for image_wh, windows, start in plans
        ]
