"""The evaluation report: markdown tables and PNG plots (matplotlib, Agg backend: no display).

Plots: precision and recall against the confidence threshold for the classes with the most
ground truth, and the human-time vs quality curve of the review simulation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bootstrap.evaluation.metrics import Evaluation
from bootstrap.evaluation.simulation import SimulationReport

PR_PLOT = "precision_recall_vs_confidence.png"
COST_PLOT = "cost_vs_quality.png"
REPORT = "report.md"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_precision_recall(evaluation: Evaluation, path: Path, max_classes: int = 6) -> Path:
    """Precision and recall of boxes kept at each confidence threshold: all classes, then the
    ``max_classes`` classes with the most ground truth, one panel each."""
    plt = _pyplot()
    thresholds = np.linspace(0.0, 1.0, 101)
    panels = [None] + evaluation.classes[:max_classes]
    cols = 4 if len(panels) > 4 else len(panels)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, label in zip(axes.flat, panels, strict=False):
        rates = [evaluation.rates(t, label) for t in thresholds]
        ax.plot(thresholds, [np.nan if r.precision is None else r.precision for r in rates], label="precision")
        ax.plot(thresholds, [np.nan if r.recall is None else r.recall for r in rates], label="recall")
        truth = evaluation.truth_counts.get(label, 0) if label else sum(evaluation.truth_counts.values())
        ax.set_title(f"{label or 'all classes'} ({truth} true)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence threshold", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{evaluation.field} vs {evaluation.gt_field} (IoU {evaluation.iou})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cost_vs_quality(points: list[tuple[str, SimulationReport]], path: Path) -> Path:
    """Human time (share of labelling from scratch) against the precision and recall the dataset
    ships, one point per simulated review budget."""
    plt = _pyplot()
    cost = [100 * r.cost_fraction for _, r in points]
    recall = [np.nan if r.recall is None else r.recall for _, r in points]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(cost, recall, "o-", label="recall")
    ax.plot(cost, [np.nan if r.precision is None else r.precision for _, r in points], "s-",
            label="precision")
    for (name, _), x, y in zip(points, cost, recall, strict=True):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(3, -11), fontsize=7)
    ax.set_xlabel("human time, % of labelling from scratch")
    ax.set_ylabel("quality of the shipped labels")
    ax.set_ylim(np.nanmin([0.5, *recall]) - 0.02, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("review budget: cost vs quality", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def evaluation_markdown(
    dataset: str,
    evaluation: Evaluation,
    simulation: list[tuple[str, SimulationReport]] | None = None,
    images: dict[str, str] | None = None,
) -> str:
    """The report as markdown; ``images`` maps a plot's title to its link (file or data URI)."""
    s = evaluation.summary()
    lines = [
        f"# Evaluation of `{dataset}`: `{s['field']}` vs `{s['gt_field']}`",
        "",
        f"{s['images']} images, {s['truth_boxes']} true boxes, {s['boxes']} evaluated boxes; "
        f"IoU {s['iou']}, class-aware (FiftyOne `evaluate_detections`).",
        "",
        "| precision | recall | mAP@[.5:.95] | TP | FP | FN |",
        "|---|---|---|---|---|---|",
        f"| {_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['mAP'])} | {s['tp']} | {s['fp']} | {s['fn']} |",
        "",
        "## By confidence band",
        "",
        "| band | boxes | TP | FP | precision | share of true boxes found |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {b['band']} | {b['boxes']} | {b['tp']} | {b['fp']} | {_fmt(b['precision'])} | {_fmt(b['recall_share'])} |"
        for b in evaluation.by_band()
    ]
    lines += ["", "## Per class", "", "| class | true | boxes | precision | recall | AP |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {c['class']} | {c['truth']} | {c['boxes']} | {_fmt(c['precision'])} | {_fmt(c['recall'])} | {_fmt(c['ap'])} |"
        for c in evaluation.per_class()
    ]
    if simulation:
        lines += [
            "", "## Review simulation: human time vs quality", "",
            "| budget | queued | human time | vs scratch | precision | recall |", "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {r.queued} | {r.review_seconds / 3600:.2f} h | {100 * r.cost_fraction:.1f}% | "
            f"{_fmt(r.precision)} | {_fmt(r.recall)} |"
            for name, r in simulation
        ]
    for title, link in (images or {}).items():
        lines += ["", f"![{title}]({link})"]
    return "\n".join(lines) + "\n"


def write_report(
    dataset: str,
    evaluation: Evaluation,
    out_dir: str | Path,
    simulation: list[tuple[str, SimulationReport]] | None = None,
) -> dict[str, Path]:
    """Write ``report.md`` and the plots into ``out_dir``; returns their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"precision_recall": plot_precision_recall(evaluation, out / PR_PLOT)}
    if simulation:
        paths["cost_quality"] = plot_cost_vs_quality(simulation, out / COST_PLOT)
    images = {
        "precision and recall vs confidence": PR_PLOT,
        **({"cost vs quality": COST_PLOT} if simulation else {}),
    }
    paths["markdown"] = out / REPORT
    paths["markdown"].write_text(evaluation_markdown(dataset, evaluation, simulation, images))
    return paths
