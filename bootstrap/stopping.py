"""The stopping rule: how good would the export be now, and are the targets met?

Reviewed images are known exactly (a person confirmed every box). The images the export would
ship unreviewed (``auto_accepted``) are estimated from a **random audit**: a small random sample
of the images triage did not send to review is queued anyway (``audit_sample``); on those, the
reviewer's corrections measure, without the bias of the priority order, how many accepted boxes
are wrong and how many objects triage missed. Images left out of the export (``needs_review``
still waiting, ``empty``) lose their objects; their count is estimated from the reviewed images.

The interval is a bootstrap over the audited images (resampled with replacement, 5th
percentile): with few audited images it is wide, and the rule says "not yet"; under
``MIN_AUDITED_TO_STOP`` audited images it never says "met". Pure functions on
per-image records; ``bootstrap.review_learning`` builds the records from a dataset.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: Quality targets of the exported labels (precision, recall).
DEFAULT_TARGETS = (0.97, 0.95)
#: Share of the not-reviewed images audited (at least MIN_AUDIT of them).
DEFAULT_AUDIT = 0.05
MIN_AUDIT = 2
#: Audited images below which the rule never says "met": a bootstrap over one or two images
#: has (almost) no spread, so its bound would claim a certainty the evidence does not have.
MIN_AUDITED_TO_STOP = 5
_BOOTSTRAP_DRAWS = 400


def audit_sample(keys: Sequence[str], fraction: float, minimum: int = MIN_AUDIT) -> list[str]:
    """A fixed pseudo-random share of ``keys`` (content hashes): ordered by a hash of the key, so
    the same images are drawn every time, independently of names, order and priority."""
    if not keys or fraction <= 0:
        return []
    count = min(len(keys), max(minimum, math.ceil(fraction * len(keys))))
    return sorted(keys, key=lambda k: hashlib.sha256(f"audit:{k}".encode()).hexdigest())[:count]


@dataclass(frozen=True)
class ImageRecord:
    """What the stopping rule knows of one image.

    ``state`` is the image's state now (``reviewed`` once a person applied it). For reviewed
    images: ``truth`` (boxes a person confirmed or drew), and for audited ones (sampled while
    not queued for review) also ``accepted`` boxes triage would have exported unreviewed and how
    many of them the person kept (``accepted_kept``). For unreviewed images: ``accepted``.
    ``unchecked``: on a reviewed image, accepted boxes that shipped without a person's check
    (a review that checks only the boxes routed to review); they are estimated like the
    accepted boxes of unreviewed images and are not part of ``truth``.
    """

    state: str
    accepted: int = 0
    truth: int | None = None
    accepted_kept: int | None = None
    audited: bool = False
    unchecked: int = 0


@dataclass(frozen=True)
class QualityEstimate:
    precision: float | None
    recall: float | None
    precision_low: float | None  # one-sided 95% bootstrap bounds
    recall_low: float | None
    reviewed: int
    audited: int
    exported_unreviewed: int
    left_out: int  # images the export would not ship (needs_review waiting, empty)
    note: str = ""

    def met(self, precision: float = DEFAULT_TARGETS[0], recall: float = DEFAULT_TARGETS[1]) -> bool:
        enough = self.audited >= MIN_AUDITED_TO_STOP or self.exported_unreviewed == 0
        return (
            enough and self.precision_low is not None and self.recall_low is not None
            and self.precision_low >= precision and self.recall_low >= recall
        )

    def to_dict(self, targets: tuple[float, float] = DEFAULT_TARGETS) -> dict:
        rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return rounded | {"targets": list(targets), "met": self.met(*targets)}

    def markdown(self, targets: tuple[float, float] = DEFAULT_TARGETS) -> str:
        if self.precision is None:
            return f"Export quality: not estimable yet ({self.note})."
        if self.met(*targets):
            verdict = "**targets met**: you can stop reviewing"
        elif self.audited < MIN_AUDITED_TO_STOP and self.exported_unreviewed:
            verdict = f"not judged yet (needs {MIN_AUDITED_TO_STOP} audited images, has {self.audited})"
        else:
            verdict = "targets not met yet"
        return (
            f"Export quality now (estimated; 95% lower bound): precision {self.precision:.3f} "
            f"(≥ {self.precision_low:.3f}), recall {self.recall:.3f} (≥ {self.recall_low:.3f}); "
            f"targets P ≥ {targets[0]}, R ≥ {targets[1]}: {verdict}. From {self.reviewed} reviewed "
            f"images ({self.audited} random audits); {self.exported_unreviewed} exported unreviewed, "
            f"{self.left_out} left out of the export."
        )


def _point(reviewed_truth: np.ndarray, audits: np.ndarray, accepted_total: int, unreviewed: int,
           left_out: int) -> tuple[float, float]:
    truth_reviewed = float(reviewed_truth.sum())
    accepted, kept, truth = audits[:, 0].sum(), audits[:, 1].sum(), audits[:, 2].sum()
    share_right = kept / accepted if accepted else 1.0
    misses_per_image = (truth - kept) / len(audits)
    per_image = float(reviewed_truth.mean()) if len(reviewed_truth) else 0.0
    tp = truth_reviewed + share_right * accepted_total
    fp = (1 - share_right) * accepted_total
    objects = truth_reviewed + share_right * accepted_total + misses_per_image * unreviewed + per_image * left_out
    return (tp / (tp + fp) if tp + fp else 1.0), (tp / objects if objects else 1.0)


def estimate_quality(records: Sequence[ImageRecord], seed: int = 0) -> QualityEstimate:
    """Precision and recall of what the export would ship now, with 95% lower bounds."""
    reviewed = [r for r in records if r.state == "reviewed"]
    audits = [r for r in reviewed if r.audited and r.accepted_kept is not None]
    exported = [r for r in records if r.state == "auto_accepted"]
    unchecked = sum(r.unchecked for r in reviewed)
    left_out = [r for r in records if r.state not in ("reviewed", "auto_accepted", "failed")]
    common = dict(reviewed=len(reviewed), audited=len(audits), exported_unreviewed=len(exported),
                  left_out=len(left_out))
    truth = np.array([r.truth or 0 for r in reviewed], dtype=np.float64)
    if (exported or unchecked) and not audits:
        return QualityEstimate(None, None, None, None, **common,
                               note="no audited image yet: the unreviewed export cannot be judged")
    table = np.array([[r.accepted, r.accepted_kept, r.truth or 0] for r in audits], dtype=np.float64)
    accepted_total = sum(r.accepted for r in exported) + unchecked
    if not len(table):
        table = np.zeros((1, 3))
    precision, recall = _point(truth, table, accepted_total, len(exported), len(left_out))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(_BOOTSTRAP_DRAWS):
        audit_draw = table[rng.integers(0, len(table), len(table))]
        truth_draw = truth[rng.integers(0, len(truth), len(truth))] if len(truth) else truth
        draws.append(_point(truth_draw, audit_draw, accepted_total, len(exported), len(left_out)))
    draws = np.array(draws)
    # Reviewed images are exact; the bootstrap draws vary only what is estimated.
    return QualityEstimate(
        float(precision), float(recall), float(min(precision, np.quantile(draws[:, 0], 0.05))),
        float(min(recall, np.quantile(draws[:, 1], 0.05))), **common,
    )
