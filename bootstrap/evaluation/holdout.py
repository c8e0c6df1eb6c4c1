"""Held-out measurement of review policies: k folds, tune on k-1, measure on the one left out.

The figure that matters is the human time a policy costs on images nobody tuned it on. This
module replays the whole review workflow offline, on cached proposal views
(``bootstrap.evaluation.viewcache``) and ground truth, with the same rules as the pipeline:

* proposals: the policy's views fused (``bootstrap.proposals.fuse_views``);
* triage: ``bootstrap.triage.triage_image`` with the policy's thresholds, which are first fitted
  on the training folds (``Policy.fit``: defaults as they are, or calibrated from ground truth);
* review: batches of the highest-priority ``needs_review`` images; a simulated reviewer who
  follows the reviewer's contract (sees every kept box, rejects the wrong ones, draws what is
  missing); after each batch the thresholds can be recalibrated from the reviewed images and
  the untouched images re-triaged (``bootstrap.learning``); the stopping rule is evaluated
  (``bootstrap.stopping``);
* export: reviewed and ``auto_accepted`` images, the export's default; precision and recall are
  counted against every ground-truth box of the fold (an image left out of the export loses its
  boxes' recall).

Matching is class-aware, IoU >= 0.5, greedy in descending confidence, as FiftyOne's
``evaluate_detections`` (COCO style) does; ``tests`` check the two agree on real data.

Public API (issue 11's fine-tuning reuses it): ``load_cases`` (cached views + ground truth),
``assign_folds``, ``Policy``, ``cross_validate`` -> ``CrossValidation`` (per fold and pooled).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bootstrap.boxes import pairwise_iou
from bootstrap.config import TriageConfig
from bootstrap.detections import Detections
from bootstrap.evaluation.costs import CostModel
from bootstrap.proposals import BASE_FAMILY, View, fuse_views
from bootstrap.schema import ImageState, Route
from bootstrap.triage import triage_image

# -- the data: one case per image ------------------------------------------------------------


@dataclass(frozen=True)
class ImageCase:
    """One image: its ground truth and the raw boxes of every cached view."""

    key: str  # content hash
    name: str  # file stem
    image_wh: tuple[int, int]
    truth_labels: np.ndarray  # (M,) class names
    truth_xyxy: np.ndarray  # (M, 4) pixels
    views: Mapping[str, Detections]


def load_cases(images_dir: str | Path, ground_truth: str | Path, cache_dir: str | Path) -> list[ImageCase]:
    """Every image of ``images_dir`` with its ground truth (YOLO folder or COCO json, as
    ``evaluation.ground_truth.load_ground_truth``) and every cached view in ``cache_dir`` (``*.npz``).

    Raises:
        ValueError: a view in the cache lacks an image of the folder (rerun the cache).
    """
    from bootstrap.evaluation.ground_truth import load_ground_truth
    from bootstrap.evaluation.viewcache import load_view
    from bootstrap.sources import content_hash

    truth = load_ground_truth(Path(ground_truth))
    views = [load_view(p) for p in sorted(Path(cache_dir).glob("*.npz"))]
    by_view = {v.name: v.by_key() for v in views}
    cases = []
    for path in sorted(p for p in Path(images_dir).iterdir() if p.is_file()):
        key = content_hash(str(path))
        found = {name: boxes[key] for name, boxes in by_view.items() if key in boxes}
        missing = sorted(set(by_view) - set(found))
        if missing:
            raise ValueError(f"{path.name}: not in the cached views {missing}; rerun the cache")
        if not found:
            continue
        wh = next(iter(found.values())).image_wh
        labels, xyxy = _truth_arrays(_truth_boxes(truth.get(path.stem)), wh)
        cases.append(ImageCase(key, path.stem, wh, labels, xyxy, found))
    return cases


def _truth_boxes(detections) -> list[tuple[str, list[float]]]:
    """``(label, relative [x, y, w, h])`` of an ``fo.Detections`` (None: no boxes)."""
    return [(d.label, list(d.bounding_box)) for d in (detections.detections if detections else [])]


def _truth_arrays(boxes, wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    scale = np.array([wh[0], wh[1], wh[0], wh[1]], dtype=np.float64)
    xywh = np.array([b for _, b in boxes], dtype=np.float64).reshape(-1, 4)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) * scale
    return np.array([label for label, _ in boxes], dtype=object), xyxy


def view_seconds(cache_dir: str | Path) -> dict[str, float]:
    """Machine seconds per image of each cached view."""
    from bootstrap.evaluation.viewcache import load_view

    return {v.name: v.seconds_per_image for v in map(load_view, sorted(Path(cache_dir).glob("*.npz")))}


def assign_folds(keys: Sequence[str], k: int, salt: str = "") -> dict[str, int]:
    """Fold of each image: images sorted by a hash of their content hash, dealt round-robin, so
    folds are balanced (sizes differ by at most one), fixed for given images, and unrelated to
    file names or order. Another ``salt`` gives another partition (to see how much a figure
    owes to one particular split)."""
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    order = sorted(keys, key=lambda key: hashlib.sha256((salt + key).encode()).hexdigest())
    return {key: rank % k for rank, key in enumerate(order)}


# -- matching ----------------------------------------------------------------------------------


def _xywh(xyxy: np.ndarray) -> np.ndarray:
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def match_boxes(
    pred_xyxy: np.ndarray,
    pred_labels: Sequence[str],
    pred_scores: np.ndarray,
    truth_xyxy: np.ndarray,
    truth_labels: Sequence[str],
    iou: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Class-aware greedy matching, best score first, each prediction to the unmatched truth box
    of its class it overlaps most (IoU >= ``iou``): COCO's rule, as FiftyOne applies it.

    Returns ``(true_positive per prediction, matched per truth box)``.
    """
    n, m = len(pred_labels), len(truth_labels)
    hit, taken = np.zeros(n, dtype=bool), np.zeros(m, dtype=bool)
    if not n or not m:
        return hit, taken
    overlap = pairwise_iou(_xywh(pred_xyxy), _xywh(truth_xyxy))
    same = np.asarray(pred_labels, dtype=object)[:, None] == np.asarray(truth_labels, dtype=object)[None, :]
    overlap = np.where(same, overlap, -1.0)
    for i in np.argsort(-np.asarray(pred_scores, dtype=np.float64), kind="stable"):
        candidates = np.where(taken, -1.0, overlap[i])
        j = int(candidates.argmax())
        if candidates[j] >= iou:
            hit[i], taken[j] = True, True
    return hit, taken


# -- policies ----------------------------------------------------------------------------------

#: Fits the triage thresholds on the training cases (their proposals and ground truth).
ThresholdFit = Callable[[Sequence["Proposed"]], TriageConfig]


@dataclass(frozen=True)
class Policy:
    """Everything that decides what a person does, and how it is tuned.

    Attributes:
        views: cached view names fused into proposals, the first model's views first;
            ``families`` gives each its family (``base`` or ``second``), ``kinds`` its kind
            (``plain``, ``large``, ``tiles``, ...: ``schema.VIEW_KINDS``; default plain), which
            name the per-view scores of the fused boxes as in the pipeline.
        triage: thresholds and signals; ``fit`` may replace them from the training folds.
        fit: thresholds from the training folds' proposals and ground truth (None: ``triage``).
        batch: images per review batch (None: the whole queue at once).
        learn: after each batch, recalibrate thresholds from the reviewed images
            (``bootstrap.learning``) and re-triage the rest.
        stop: end the review when the stopping rule says the targets are met.
        order: review order: ``priority`` (expected corrections, triage's) or ``rate``
            (expected corrections per expected second of the person).
        windows: per view, the largest box it can report (relative width, height), for views
            that see only part of the image (tiles); fusion then counts such a view only for
            boxes that fit.
        check_accepted: the reviewer checks every kept box of an image it opens (True), or
            only the boxes routed to review: the accepted ones are shown as context, need no
            decision and ship unchecked, as on an ``auto_accepted`` image (False; an audited
            image is still checked whole). Unchecked boxes are no evidence for learning, and
            the stopping rule estimates them from the audit (``ImageRecord.unchecked``).
    """

    name: str
    views: tuple[str, ...]
    families: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    fusion_iou: float = 0.55
    triage: TriageConfig = TriageConfig()
    fit: ThresholdFit | None = None
    batch: int | None = None
    learn: bool = False
    stop: bool = False
    audit: float = 0.0
    targets: tuple[float, float] = (0.97, 0.95)
    order: str = "priority"
    prior_boxes: float = 150.0
    windows: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    check_accepted: bool = True

    def view_families(self) -> tuple[str, ...]:
        return self.families or tuple(BASE_FAMILY for _ in self.views)

    def view_kinds(self) -> tuple[str, ...]:
        return self.kinds or tuple("plain" for _ in self.views)


@dataclass(frozen=True)
class Proposed:
    """One case with the policy's fused proposals, matched once against its ground truth."""

    case: ImageCase
    proposals: Detections
    true_positive: np.ndarray  # per proposal, matching all proposals at once

    @property
    def truth_count(self) -> int:
        return len(self.case.truth_labels)


def propose(case: ImageCase, policy: Policy) -> Proposed:
    """Fuse the policy's views of ``case`` and match the result against its ground truth."""
    missing = [v for v in policy.views if v not in case.views]
    if missing:
        raise ValueError(f"{case.name}: views {missing} are not cached; have {sorted(case.views)}")
    families = policy.view_families()
    if len(policy.views) == 1:
        fused = case.views[policy.views[0]]
    else:
        views = [View(f, case.views[v], policy.windows.get(v), kind)
                 for v, f, kind in zip(policy.views, families, policy.view_kinds(), strict=True)]
        names = sorted({str(label) for v in views for label in v.detections.model_label})
        fused = fuse_views(views, names, policy.fusion_iou)
    hit, _ = match_boxes(fused.xyxy, list(fused.label), fused.confidence, case.truth_xyxy, list(case.truth_labels))
    return Proposed(case, fused, hit)


# -- one fold: the review loop -----------------------------------------------------------------


@dataclass
class LoopResult:
    """Cost and export quality of one simulated review of a set of images."""

    images: int
    truth_boxes: int
    opened: int = 0
    shown: int = 0
    drawn: int = 0
    rejected: int = 0
    audited: int = 0
    batches: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    stopped_early: bool = False
    estimate: dict = field(default_factory=dict)
    thresholds_changed: int = 0
    cost: CostModel = field(default_factory=CostModel)

    @property
    def review_seconds(self) -> float:
        return self.cost.review_seconds(self.opened, self.shown, self.drawn)

    @property
    def scratch_seconds(self) -> float:
        return self.cost.scratch_seconds(self.images, self.truth_boxes)

    @property
    def cost_fraction(self) -> float:
        return self.review_seconds / self.scratch_seconds if self.scratch_seconds else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def to_dict(self) -> dict:
        raw = asdict(self)
        raw.pop("cost")
        return raw | {
            "review_seconds": round(self.review_seconds, 1),
            "scratch_seconds": round(self.scratch_seconds, 1),
            "cost_fraction": round(self.cost_fraction, 4),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
        }

    def __add__(self, other: LoopResult) -> LoopResult:
        summed = {
            name: getattr(self, name) + getattr(other, name)
            for name in ("images", "truth_boxes", "opened", "shown", "drawn", "rejected", "audited",
                         "batches", "tp", "fp", "fn", "thresholds_changed")
        }
        return LoopResult(**summed, cost=self.cost)


def _triage(item: Proposed, config: TriageConfig):
    boxes = item.proposals
    wh = np.array(boxes.image_wh * 2, dtype=np.float64)
    xywh = _xywh(boxes.xyxy) / wh if len(boxes) else np.zeros((0, 4))
    return triage_image(list(boxes.label), boxes.confidence, xywh, config, boxes.extras)


def _without(item: Proposed, boxes: np.ndarray) -> Proposed:
    """``item`` without the proposals at indices ``boxes``."""
    keep = np.ones(len(item.proposals), dtype=bool)
    keep[boxes] = False
    return Proposed(item.case, item.proposals[keep], item.true_positive[keep])


def _expected_seconds(outcome, cost: CostModel) -> float:
    kept = sum(route != Route.REJECT for route in outcome.routes)
    return cost.open_image + cost.verify_box * kept


def _unreviewed_record(outcome):
    from bootstrap.stopping import ImageRecord

    return ImageRecord(outcome.state.value, sum(r == Route.ACCEPT for r in outcome.routes))


def simulate_loop(
    items: Sequence[Proposed],
    policy: Policy,
    triage: TriageConfig,
    cost: CostModel = CostModel(),
) -> LoopResult:
    """Play the review workflow on ``items`` (see the module docstring) and score the export."""
    from bootstrap.learning import recalibrate
    from bootstrap.stopping import ImageRecord, audit_sample, estimate_quality

    result = LoopResult(len(items), sum(i.truth_count for i in items), cost=cost)
    reviewed: dict[int, ImageRecord] = {}
    unchecked: dict[int, np.ndarray] = {}  # per opened image: its proposals shipped unchecked
    unchecked_wrong: dict[int, int] = {}  # ... and how many of them are wrong
    audit = set(audit_sample([i.case.key for i in items], policy.audit)) if policy.audit else set()
    config = triage
    while True:
        outcomes = {n: _triage(item, config) for n, item in enumerate(items) if n not in reviewed}
        waiting = [n for n, o in outcomes.items() if o.state == ImageState.NEEDS_REVIEW]
        audits = [n for n, item in enumerate(items) if item.case.key in audit and n not in reviewed
                  and n not in waiting]
        if policy.order == "rate":
            waiting.sort(key=lambda n: -outcomes[n].priority / _expected_seconds(outcomes[n], cost))
        else:
            waiting.sort(key=lambda n: -outcomes[n].priority)
        size = policy.batch or len(waiting) + len(audits)
        batch = audits[:size] + waiting[:max(size - len(audits[:size]), 0)]
        if not batch:
            break
        result.batches += 1
        for n in batch:
            item, outcome = items[n], outcomes[n]
            kept = np.array([r != Route.REJECT for r in outcome.routes], dtype=bool)
            boxes = item.proposals[kept]
            hit, matched = match_boxes(boxes.xyxy, list(boxes.label), boxes.confidence,
                                       item.case.truth_xyxy, list(item.case.truth_labels))
            audited = item.case.key in audit and outcome.state != ImageState.NEEDS_REVIEW
            accepted = np.array([r == Route.ACCEPT for r in outcome.routes], dtype=bool)[kept]
            # An audit checks everything; otherwise accepted boxes may ship unchecked.
            checked = np.ones(len(boxes), dtype=bool) if policy.check_accepted or audited else ~accepted
            result.opened += 1
            result.shown += int(checked.sum())
            result.rejected += int((~hit & checked).sum())
            result.drawn += int((~matched).sum())
            result.audited += audited
            unchecked[n] = np.flatnonzero(kept)[~checked]
            unchecked_wrong[n] = int((~hit & ~checked).sum())
            reviewed[n] = ImageRecord(
                "reviewed", int((accepted & checked).sum()), item.truth_count - int(hit[~checked].sum()),
                int(hit[accepted & checked].sum()), audited, unchecked=int((~checked).sum()),
            )
        if policy.learn:
            # A box shipped unchecked is no evidence of whether it was right.
            evidence = [_without(items[n], unchecked[n]) for n in reviewed]
            updated = recalibrate(triage, evidence, prior_boxes=policy.prior_boxes)
            result.thresholds_changed += updated != config
            config = updated
        if policy.stop:
            records = [
                reviewed.get(n) or _unreviewed_record(_triage(item, config))
                for n, item in enumerate(items)
            ]
            estimate = estimate_quality(records)
            result.estimate = estimate.to_dict(policy.targets)
            if estimate.met(*policy.targets):
                result.stopped_early = any(
                    _triage(items[n], config).state == ImageState.NEEDS_REVIEW
                    for n in range(len(items)) if n not in reviewed
                )
                break

    for n, item in enumerate(items):
        if n in reviewed:
            result.tp += item.truth_count
            result.fp += unchecked_wrong[n]
            continue
        outcome = _triage(item, config)
        if outcome.state != ImageState.AUTO_ACCEPTED:
            result.fn += item.truth_count  # not exported: its boxes are lost to the dataset
            continue
        accepted = np.array([r == Route.ACCEPT for r in outcome.routes], dtype=bool)
        boxes = item.proposals[accepted]
        hit, matched = match_boxes(boxes.xyxy, list(boxes.label), boxes.confidence,
                                   item.case.truth_xyxy, list(item.case.truth_labels))
        result.tp += int(hit.sum())
        result.fp += int((~hit).sum())
        result.fn += int((~matched).sum())
    return result


# -- k folds -----------------------------------------------------------------------------------


@dataclass
class CrossValidation:
    policy: str
    folds: list[LoopResult]
    fitted: list[TriageConfig]

    @property
    def pooled(self) -> LoopResult:
        total = self.folds[0]
        for fold in self.folds[1:]:
            total = total + fold
        return total

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "folds": [f.to_dict() for f in self.folds],
            "pooled": self.pooled.to_dict(),
        }


def cross_validate(
    cases: Sequence[ImageCase],
    policy: Policy,
    k: int = 4,
    folds: Mapping[str, int] | None = None,
    cost: CostModel = CostModel(),
    proposed: Sequence[Proposed] | None = None,
) -> CrossValidation:
    """For each fold: fit the policy's thresholds on the other folds, simulate the review loop on
    the fold. ``proposed`` reuses proposals already made for ``cases`` with this policy's views."""
    folds = folds or assign_folds([c.key for c in cases], k)
    items = list(proposed) if proposed is not None else [propose(c, policy) for c in cases]
    results, fitted = [], []
    for fold in sorted(set(folds.values())):
        train = [i for i in items if folds[i.case.key] != fold]
        test = [i for i in items if folds[i.case.key] == fold]
        triage = policy.fit(train) if policy.fit is not None else policy.triage
        fitted.append(triage)
        results.append(simulate_loop(test, policy, triage, cost))
    return CrossValidation(policy.name, results, fitted)


def in_sample(cases: Sequence[ImageCase], policy: Policy, cost: CostModel = CostModel()) -> LoopResult:
    """The same loop fitted and measured on the same images (optimistic; for comparison only)."""
    items = [propose(c, policy) for c in cases]
    triage = policy.fit(items) if policy.fit is not None else policy.triage
    return simulate_loop(items, policy, triage, cost)


def with_policy(policy: Policy, **changes) -> Policy:
    return replace(policy, **changes)


def cases_from_store(store, ground_truth: str | Path, ontology=None) -> list[ImageCase]:
    """Cases from a dataset's stored predictions (one view named ``stored``: the proposals as
    annotate fused them, with their support) and ground truth (YOLO folder or COCO json, classes
    through ``ontology``), for ``simulate-review --folds`` on any dataset."""
    from fiftyone import ViewField as F

    from bootstrap.evaluation.ground_truth import load_ground_truth
    from bootstrap.ontology import Ontology
    from bootstrap.schema import BOX_EXTRAS, CONTENT_HASH, PREDICTIONS, STATE

    ontology = ontology or Ontology(None)
    truth = load_ground_truth(Path(ground_truth))
    view = store.dataset.match(~F(STATE).is_in([ImageState.PENDING.value, ImageState.FAILED.value]))
    keys, paths, widths, heights, stored = view.values(
        [CONTENT_HASH, "filepath", "metadata.width", "metadata.height", f"{PREDICTIONS}.detections"]
    )
    cases = []
    for key, path, width, height, boxes in zip(keys, paths, widths, heights, stored, strict=True):
        boxes = boxes or []
        wh = (int(width), int(height))
        scale = np.array(wh * 2, dtype=np.float64)
        rel = np.array([b.bounding_box for b in boxes], dtype=np.float64).reshape(-1, 4)
        labels = np.array([b.label for b in boxes], dtype=object)
        extras = {
            k: np.array([b[k] for b in boxes], dtype=np.float32)
            for k in BOX_EXTRAS
            if boxes and all(b.get_field(k) is not None if b.has_field(k) else False for b in boxes)
        }
        detections = Detections(
            (np.concatenate([rel[:, :2], rel[:, :2] + rel[:, 2:]], axis=1) * scale).astype(np.float32),
            np.array([b.confidence or 0.0 for b in boxes], dtype=np.float32),
            np.full(len(boxes), -1, dtype=np.int64), labels, labels.copy(), wh, extras,
        )
        gt = [(name, box) for label, box in _truth_boxes(truth.get(Path(path).stem))
              if (name := ontology.dataset_class(label)) is not None]
        truth_labels, truth_xyxy = _truth_arrays(gt, wh)
        cases.append(ImageCase(key, Path(path).stem, wh, truth_labels, truth_xyxy, {STORED_VIEW: detections}))
    return cases


#: The view name of a dataset's stored (already fused) predictions.
STORED_VIEW = "stored"


def fit_calibrated(target_precision: float = 0.95, min_boxes: int = 20, base: TriageConfig = TriageConfig()) -> ThresholdFit:
    """A ``Policy.fit``: per-class thresholds calibrated on the training folds' ground truth
    (``bootstrap.calibrate``), the defaults for classes with too little evidence."""
    from bootstrap.calibrate import calibrate, calibrated_triage
    from bootstrap.evaluation.metrics import BoxOutcome

    def fit(train: Sequence[Proposed]) -> TriageConfig:
        outcomes = [
            BoxOutcome(item.case.key, str(label), float(score), bool(hit))
            for item in train
            for label, score, hit in zip(item.proposals.label, item.proposals.confidence,
                                         item.true_positive, strict=True)
        ]
        return calibrated_triage(base, calibrate(outcomes, target_precision, base, min_boxes))

    return fit


def simulate_store(
    store, ground_truth, triage: TriageConfig, folds: int | None = None, batch: int | None = None,
    learn: bool = True, stop: bool = False, audit: float = 0.0, fit: str = "config",
    ontology_config=None, cost: CostModel = CostModel(), check_accepted: bool = True,
) -> dict:
    """``simulate-review --folds/--loop``: the review loop on a dataset's stored predictions
    (``cases_from_store``), per fold (thresholds fitted on the other folds) or on all images.

    Raises:
        ValueError: an unknown ``fit``.
    """
    from bootstrap.ontology import Ontology

    if fit not in ("config", "calibrate"):
        raise ValueError(f"fit must be 'config' or 'calibrate', got {fit!r}")
    cases = cases_from_store(store, ground_truth, Ontology(ontology_config))
    policy = Policy(
        "stored", (STORED_VIEW,), triage=triage, batch=batch, learn=learn, stop=stop, audit=audit,
        check_accepted=check_accepted,
        fit=fit_calibrated(base=triage) if fit == "calibrate" else None,
    )
    if folds is None:
        items = [propose(c, policy) for c in cases]
        fitted = policy.fit(items) if policy.fit else triage
        result = simulate_loop(items, policy, fitted, cost)
        return {"policy": policy.name, "folds": [result.to_dict()], "pooled": result.to_dict()}
    return cross_validate(cases, policy, folds, cost=cost).to_dict()


def fit_grid(
    candidates: Sequence[TriageConfig],
    targets: tuple[float, float] = (0.97, 0.95),
    margin: float = 0.01,
    policy: Policy | None = None,
    cost: CostModel = CostModel(),
) -> ThresholdFit:
    """A ``Policy.fit`` that tunes on the training folds: every candidate triage config is played
    through the review loop on the training images; the cheapest whose precision and recall
    there reach the targets plus ``margin`` wins (none: the one with the best recall)."""

    def fit(train: Sequence[Proposed]) -> TriageConfig:
        loop = policy or Policy("fit", ())  # the loop rules only; views are already fused
        scored = []
        for candidate in candidates:
            result = simulate_loop(train, loop, candidate, cost)
            ok = result.precision >= targets[0] + margin and result.recall >= targets[1] + margin
            scored.append((not ok, result.review_seconds if ok else -result.recall, candidate))
        return min(scored, key=lambda s: (s[0], s[1]))[2]

    return fit


def triage_grid(
    accepts: Sequence[float], rejects: Sequence[float], review_ats: Sequence[float | None],
    base: TriageConfig = TriageConfig(),
) -> list[TriageConfig]:
    """Candidate triage configs: every accept x reject x review_at (reject below accept)."""
    return [
        base.model_copy(update={"accept": a, "reject": r, "review_at": q})
        for a in accepts for r in rejects for q in review_ats if r < a
    ]


def fit_scores_and_thresholds(
    candidates: Sequence[TriageConfig], targets: tuple[float, float] = (0.97, 0.95), margin: float = 0.02,
    policy: Policy | None = None,
) -> ThresholdFit:
    """A ``Policy.fit``: the score model fitted on the training folds' proposals and ground truth
    (``bootstrap.learning.fit_score_model``), then the thresholds on that score (``fit_grid``,
    played with ``policy``'s review rules)."""
    from bootstrap.learning import fit_score_model, relative_xywh

    def fit(train: Sequence[Proposed]) -> TriageConfig:
        model = score_model_of(train)
        scored = [c.model_copy(update={"score_model": model}) for c in candidates]
        return fit_grid(scored, targets, margin, policy)(train)

    def score_model_of(train):
        return fit_score_model(
            (list(item.proposals.label), item.proposals.confidence, relative_xywh(item.proposals),
             item.proposals.extras, item.true_positive)
            for item in train
        )

    return fit


#: The thresholds the default policy is tuned over (on training folds only).
DEFAULT_GRID = dict(accepts=(0.4, 0.5, 0.6, 0.7), rejects=(0.15, 0.2, 0.25, 0.3, 0.35),
                    review_ats=(None, 1.0, 1.5, 2.0, 3.0))
