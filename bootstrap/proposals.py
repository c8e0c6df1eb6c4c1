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

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bootstrap.boxes import mirror_xyxy, pairwise_iou, xyxy_to_xywh
from bootstrap.detections import Detections, Detector
from bootstrap.schema import MODEL_SUPPORT, TTA_SUPPORT, view_score_key

log = logging.getLogger(__name__)

BASE_FAMILY = "base"
SECOND_FAMILY = "second"


@dataclass(frozen=True)
class View:
    """One model run on one version of the image, already mapped back to its coordinates."""

    family: str  # BASE_FAMILY for the first model's views, SECOND_FAMILY for the second model
    detections: Detections
    # Views of part of the image (tiles, bootstrap.tiles) report only boxes up to this size
    # (relative width, height): a larger box is not held against them (neither in the fused
    # score nor in the support). None: the whole image.
    window: tuple[float, float] | None = None
    # What version of the image the view saw (schema.VIEW_KINDS): names the per-box field with
    # this view's confidence (schema.view_score_key), which the score model can weigh.
    kind: str = "plain"

    def covers(self, xyxy: np.ndarray) -> bool:
        if self.window is None:
            return True
        width, height = self.detections.image_wh
        return (xyxy[2] - xyxy[0]) <= self.window[0] * width and (xyxy[3] - xyxy[1]) <= self.window[1] * height


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
        view) and ``model_support`` (when there are two families) extras, and with more than one
        view the confidence each view gave the box (0 where it did not find it), e.g.
        ``score_base_large`` (``schema.view_score_key``).
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

    for c in clusters:
        # The views that could have found this box: all, unless some see only part of the image.
        c["able"] = [v for v, view in enumerate(views) if v in c["views"] or view.covers(c["xyxy"])]
    clusters.sort(key=lambda c: -sum(s for s, _ in c["views"].values()) / len(c["able"]))
    extras: dict[str, np.ndarray] = {}
    if base_views > 1:
        extras[TTA_SUPPORT] = np.array(
            [sum(views[v].family == BASE_FAMILY for v in c["views"])
             / sum(views[v].family == BASE_FAMILY for v in c["able"]) for c in clusters],
            dtype=np.float32,
        )
    if len(families) > 1:
        extras[MODEL_SUPPORT] = np.array(
            [len({views[v].family for v in c["views"]}) / len(families) for c in clusters],
            dtype=np.float32,
        )
    if len(views) > 1:
        # Which view found a box, and how sure it was, says more than their mean: one model's
        # or one size's confidence is worth more on some boxes (fitted in the score model).
        for v, view in enumerate(views):
            key = view_score_key(view.family, view.kind)
            scores = np.array([c["views"][v][0] if v in c["views"] else 0.0 for c in clusters],
                              dtype=np.float32)
            extras[key] = np.maximum(extras[key], scores) if key in extras else scores
    labels = np.array([c["label"] for c in clusters], dtype=object)
    return Detections(
        xyxy=np.array([c["xyxy"] for c in clusters], dtype=np.float32).reshape(-1, 4),
        confidence=np.array(
            [sum(s for s, _ in c["views"].values()) / len(c["able"]) for c in clusters],
            dtype=np.float32,
        ),
        class_id=np.array([index_of.get(c["label"], -1) for c in clusters], dtype=np.int64),
        model_label=labels,
        label=labels.copy(),
        image_wh=image_wh,
        extras=extras,
    )


@dataclass(frozen=True)
class ViewRun:
    """How ``FusedDetector`` makes one view: which detector, on which version of the image.

    ``kind``: ``plain`` (the image itself; the detector may run at another size), ``hflip``
    (the mirrored image, boxes mapped back) or ``tiles`` (a ``bootstrap.tiles.TiledDetector``:
    only boxes that fit in a window, so larger boxes are not held against it). ``view`` is the
    config's name of the view (``schema.VIEW_KINDS``: ``plain``, ``large``, ...), which names
    its per-box score.
    """

    family: str
    name: str
    detector: Detector
    kind: str = "plain"
    window: tuple[float, float] | None = None
    view: str = "plain"


class FusedDetector:
    """A ``Detector`` that runs several views of each batch and returns the fused boxes.

    Each view is one more inference pass (tiles: one per window), so annotating costs about as
    many times the plain model's time as there are passes; triage and review get better
    proposals in exchange.
    """

    def __init__(self, runs: Sequence[ViewRun], iou_threshold: float = 0.55, name: str | None = None):
        if not runs:
            raise ValueError("FusedDetector needs at least one view")
        unknown = {run.kind for run in runs} - {"plain", "hflip", "tiles"}
        if unknown:
            raise ValueError(f"unknown view kinds {sorted(unknown)}; use plain, hflip, tiles")
        self._runs, self._iou = tuple(runs), iou_threshold
        self.name = name or "+".join(run.name for run in runs)
        names: list[str] = []
        for run in runs:
            names += [n for n in run.detector.class_names if n not in names]
        self.class_names = tuple(names)

    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        found = []
        for run in self._runs:
            if run.kind == "hflip":
                mirrored = [np.ascontiguousarray(image[:, ::-1]) for image in images]
                found.append([mirror(d) for d in run.detector.predict(mirrored)])
            else:
                found.append(run.detector.predict(images))
        return [
            fuse_views(
                [View(run.family, boxes[i], run.window, run.view)
                 for run, boxes in zip(self._runs, found, strict=True)],
                self.class_names, self._iou,
            )
            for i in range(len(images))
        ]


def input_side(config) -> int:
    """The longest side, in pixels, to which any view of ``config`` (a ``DetectorConfig``)
    resizes an image: the plain, ``upscale`` and ``large`` views their inference size, the tiled
    view its windows (``tiles.magnification`` times the model's size for the whole image).
    Decoding needs no more of an image than that (``bootstrap.decode``, draft mode)."""
    import math

    from bootstrap.tiles import magnification

    sides = {"upscale": config.upscaled_size, "large": config.large_size,
             "tiles": math.ceil(config.image_size * magnification())}
    return max([config.image_size, *(sides[view] for view in config.tta if view in sides)])


def fused_detector(config, load) -> FusedDetector:
    """The ``FusedDetector`` of ``config`` (``detector.tta`` views of the model, and of the
    second model when there is one); ``load(single_view_config)`` loads each plain detector.

    A second model whose weights cannot be found is left out with a warning: the views of the
    first model still run.
    """
    from bootstrap.detections import DetectorError
    from bootstrap.tiles import WINDOW, TiledDetector

    models = [(BASE_FAMILY, config.model)]
    if config.second_model:
        try:
            load(config.single_view(model=config.second_model))
            models.append((SECOND_FAMILY, config.second_model))
        except DetectorError as err:
            log.warning("second model left out, going on with %s alone: %s", config.model, err)
    runs = []
    for family, model in models:
        plain = load(config.single_view(model=model))
        runs.append(ViewRun(family, plain.name, plain))
        for view in config.tta:
            if view == "hflip":
                runs.append(ViewRun(family, f"{plain.name}:hflip", plain, "hflip", view="hflip"))
            elif view == "upscale":
                runs.append(ViewRun(family, f"{plain.name}:upscale",
                                    load(config.single_view(model=model, image_size=config.upscaled_size)),
                                    view="upscale"))
            elif view == "large":
                runs.append(ViewRun(family, f"{plain.name}:large",
                                    load(config.single_view(model=model, image_size=config.large_size)),
                                    view="large"))
            elif view == "tiles":
                runs.append(ViewRun(family, f"{plain.name}:tiles", TiledDetector(plain), "tiles", WINDOW,
                                    view="tiles"))
    if len(runs) == 1:
        return runs[0].detector
    # e.g. yolov8n.pt+large+yolo26n.pt: the views, then the second model (which gets them too)
    name = "+".join([runs[0].name, *config.tta, *(m for f, m in models if f == SECOND_FAMILY)])
    return FusedDetector(runs, config.fusion_iou, name)
