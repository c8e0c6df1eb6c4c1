"""Box geometry shared by every stage: IoU, corner/size conversions, mirroring.

Pure numpy on (N, 4) arrays; imports nothing of the pipeline.
"""

from __future__ import annotations

import numpy as np


def pairwise_iou(a_xywh: np.ndarray, b_xywh: np.ndarray) -> np.ndarray:
    """IoU matrix of two sets of [x, y, w, h] boxes (any consistent units)."""
    # numpy, not torchvision's box_iou: for one image's few boxes, torch's per-call overhead was
    # most of the cost, and a process without a model would pay seconds to import torch.
    a = np.asarray(a_xywh, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xywh, dtype=np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.clip(high - low, 0.0, None).prod(axis=2)
    union = a[:, 2:].prod(axis=1)[:, None] + b[:, 2:].prod(axis=1)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def xyxy_to_xywh(xyxy: np.ndarray) -> np.ndarray:
    """[x1, y1, x2, y2] corners -> [x, y, w, h] (top-left corner and size)."""
    xyxy = np.asarray(xyxy).reshape(-1, 4)
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def relative_xywh(xyxy: np.ndarray, image_wh: tuple[int, int]) -> np.ndarray:
    """Absolute [x1, y1, x2, y2] -> [x, y, w, h] relative to the image size, clipped to [0, 1]
    (FiftyOne's convention)."""
    width, height = image_wh
    xywh = xyxy_to_xywh(np.asarray(xyxy, dtype=np.float64))
    if not len(xywh):
        return xywh
    return np.clip(xywh / np.array([width, height, width, height], dtype=np.float64), 0.0, 1.0)


def mirror_xyxy(xyxy: np.ndarray, width: float) -> np.ndarray:
    """Corners found on the horizontally mirrored image, mapped back onto the image itself."""
    xyxy = np.asarray(xyxy).reshape(-1, 4)
    x1, y1, x2, y2 = (xyxy[:, i] for i in range(4))
    return np.stack([width - x2, y1, width - x1, y2], axis=1).astype(xyxy.dtype)
