"""Better proposals: fuse the boxes of several views of an image into one set.

A *view* is one model run on one version of the image: the model on the image itself, the same
model on the mirrored image (``hflip``) or at a larger size (``upscale``), or a second model.
Boxes of all views are fused with weighted boxes fusion (Solovyev et al., 2021): boxes of one
class that overlap across views become one box whose corners are the score-weighted mean and
whose score is the summed score divided by the number of views. So a box that every view finds
keeps its score, a box only one of two views finds gets half of it (and goes to review or is
rejected), and objects that one model misses but another finds still become proposals: a
person verifies them (2 s) instead of drawing them (7 s).

Each fused box also records how many views agreed on it, per family of views, as extras stored
with the box (``tta_support``: the share of the first model's views that found it;
``model_support``: the share of models that found it). Triage turns them into the
``tta_disagreement`` and ``model_disagreement`` signals.

Written by hand: the ``ensemble-boxes`` package does WBF but does not report which views
contributed to a fused box (the support we need), and it pulls in numba.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bootstrap.boxes import mirror_xyxy, pairwise_iou, xyxy_to_xywh
from bootstrap.detections import Detections, Detector
from bootstrap.schema import MODEL_SUPPORT, TTA_SUPPORT

BASE_FAMILY = "base"
SECOND_FAMILY = "second"


@dataclass(frozen=True)
class View:
    """One model run on one version of the image, already mapped back to its coordinates."""

    family: str  # BASE_FAMILY for the first model's views, SECOND_FAMILY for the second model
    detections: Detections


def mirror(detections: Detections) -> Detections:
    """Boxes found on the horizontally mirrored image, mapped back onto the image itself."""
    return detections.with_xyxy(mirror_xyxy(detections.xyxy, detections.image_wh[0]))


def fuse_views(
    views: Sequence[View], class_names: Sequence[str], iou_threshold: float = 0.55
) -> Detections:
    """Weighted boxes fusion of ``views`` of one image, class by class.

    Boxes are taken by descending score; each joins the fused box of its class it overlaps most
    (IoU >= ``iou_threshold``) that has no box of the same view yet, or starts a new one.

    Args:
        views: at least one view; all of the same image.
        class_names: the class list ``class_id`` of the result indexes.
    Returns:
        Fused boxes, best first, with ``tta_support`` (when the first model has more than one
        view) and ``model_support`` (when there are two families) extras.
    """
    if not views:
        raise ValueError("fuse_views needs at least one view")
    image_wh = views[0].detections.image_wh
    families = list(dict.fromkeys(view.family for view in views))
    base_views = sum(view.family == BASE_FAMILY for view in views)
    index_of = {name: i for i, name in enumerate(class_names)}

    boxes = [
        (float(view.detections.confidence[j]), v, str(view.detections.model_label[j]),
         view.detections.xyxy[j].astype(np.float64))
        for v, view in enumerate(views)
        for j in range(len(view.detections))
    ]
    boxes.sort(key=lambda box: -box[0])
    clusters: list[dict] = []
    by_label: dict[str, list[int]] = {}
    for score, view_index, label, xyxy in boxes:
        candidates = [c for c in by_label.get(label, []) if view_index not in clusters[c]["views"]]
        best = None
        if candidates:
            fused = np.stack([clusters[c]["xyxy"] for c in candidates])
            overlap = pairwise_iou(xyxy_to_xywh(xyxy), xyxy_to_xywh(fused))[0]
            if overlap.max() >= iou_threshold:
                best = candidates[int(overlap.argmax())]
        if best is None:
            by_label.setdefault(label, []).append(len(clusters))
            clusters.append({"label": label, "views": {}, "xyxy": xyxy})
            best = len(clusters) - 1
        cluster = clusters[best]
        cluster["views"][view_index] = (score, xyxy)
        weights = np.array([s for s, _ in cluster["views"].values()])
        corners = np.stack([b for _, b in cluster["views"].values()])
        cluster["xyxy"] = (weights[:, None] * corners).sum(0) / max(weights.sum(), 1e-12)

    clusters.sort(key=lambda c: -sum(s for s, _ in c["views"].values()))
    extras: dict[str, np.ndarray] = {}
    if base_views > 1:
        extras[TTA_SUPPORT] = np.array(
            [sum(views[v].family == BASE_FAMILY for v in c["views"]) / base_views for c in clusters],
            dtype=np.float32,
        )
    if len(families) > 1:
        extras[MODEL_SUPPORT] = np.array(
            [len({views[v].family for v in c["views"]}) / len(families) for c in clusters],
            dtype=np.float32,
        )
    labels = np.array([c["label"] for c in clusters], dtype=object)
    return Detections(
        xyxy=np.array([c["xyxy"] for c in clusters], dtype=np.float32).reshape(-1, 4),
        confidence=np.array(
            [sum(s for s, _ in c["views"].values()) / len(views) for c in clusters],
            dtype=np.float32,
        ),
        class_id=np.array([index_of.get(c["label"], -1) for c in clusters], dtype=np.int64),
        model_label=labels,
        label=labels.copy(),
        image_wh=image_wh,
        extras=extras,
    )


class FusedDetector:
    """A ``Detector`` that runs several views of each batch and returns the fused boxes.

    Each view is one more inference pass, so annotating costs about as many times the plain
    model's time as there are views; triage and review get better proposals in exchange.
    """

    def __init__(
        self,
        base: Detector,
        tta: Sequence[str] = (),
        upscaled: Detector | None = None,
        second: Detector | None = None,
        iou_threshold: float = 0.55,
    ):
        unknown = set(tta) - {"hflip", "upscale"}
        if unknown:
            raise ValueError(f"unknown test-time views {sorted(unknown)}; use hflip, upscale")
        if "upscale" in tta and upscaled is None:
            raise ValueError("the upscale view needs the upscaled detector")
        self._base, self._tta, self._upscaled, self._second = base, tuple(tta), upscaled, second
        self._iou = iou_threshold
        self.name = "+".join([base.name, *self._tta, *([second.name] if second else [])])
        extra = [n for n in (second.class_names if second else ()) if n not in base.class_names]
        self.class_names = tuple(base.class_names) + tuple(extra)

    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        runs: list[tuple[str, list[Detections]]] = [(BASE_FAMILY, self._base.predict(images))]
        if "hflip" in self._tta:
            mirrored = [np.ascontiguousarray(image[:, ::-1]) for image in images]
            runs.append((BASE_FAMILY, [mirror(d) for d in self._base.predict(mirrored)]))
        if "upscale" in self._tta:
            runs.append((BASE_FAMILY, self._upscaled.predict(images)))
        if self._second is not None:
            runs.append((SECOND_FAMILY, self._second.predict(images)))
        return [
            fuse_views([View(family, found[i]) for family, found in runs], self.class_names, self._iou)
            for i in range(len(images))
        ]
