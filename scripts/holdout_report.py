"""Held-out economics of review policies, from cached proposal views (the README's figures).

    .venv/bin/python scripts/cache_views.py ../shared/data/coco128-train/images   # once
    .venv/bin/python scripts/holdout_report.py ../shared/data/coco128-train [--folds 4] [--json out.json]

Prints markdown: machine time and findable objects per view and combination, then each policy
measured on held-out folds (thresholds and score model fitted on the other folds only), pooled
and per fold, and the default workflow per fold. ``bootstrap.evaluation.holdout`` does the work.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from bootstrap.evaluation.holdout import (
    DEFAULT_GRID,
    Policy,
    assign_folds,
    cross_validate,
    fit_calibrated,
    fit_grid,
    fit_scores_and_thresholds,
    in_sample,
    load_cases,
    match_boxes,
    propose,
    triage_grid,
    view_seconds,
)
from bootstrap.tiles import WINDOW

V8, V26, V8L, V26L = "yolov8n.pt@640", "yolo26n.pt@640", "yolov8n.pt@1280", "yolo26n.pt@1280"
T8, T26 = "yolov8n.pt@640+tiles2", "yolo26n.pt@640+tiles2"
FAMILY = {V8: "base", V8L: "base", T8: "base", V26: "second", V26L: "second", T26: "second"}
KIND = {V8: "plain", V26: "plain", V8L: "large", V26L: "large", T8: "tiles", T26: "tiles"}


def views_policy(name: str, views: tuple[str, ...], **changes) -> Policy:
    return Policy(name, views, tuple(FAMILY[v] for v in views), tuple(KIND[v] for v in views),
                  windows={v: WINDOW for v in views if "tiles" in v}, **changes)


def policies() -> list[tuple[str, Policy, bool]]:
    """(what, policy, part of the default) in the order the README tells them."""
    grid = triage_grid(**DEFAULT_GRID)
    scored = fit_scores_and_thresholds(grid)
    default_views = (V8, V26, T8, T26)  # tiles won over 1280 held out, at the same machine time
    # Unchecked accepted boxes ship with the export, so accept needs higher thresholds to try.
    wide = triage_grid(**{**DEFAULT_GRID, "accepts": (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)})
    unchecked = fit_scores_and_thresholds(wide, policy=Policy("fit", (), check_accepted=False))
    return [
        ("old defaults: yolov8n, 0.7 / 0.25", views_policy("old", (V8,)), False),
        ("yolov8n + yolo26n, 0.7 / 0.25", views_policy("2m", (V8, V26)), False),
        ("yolov8n + yolo26n, per-class calibration (target 0.95) on the training folds",
         views_policy("2m-cal", (V8, V26), fit=fit_calibrated()), False),
        ("yolov8n + yolo26n, thresholds tuned on the training folds",
         views_policy("2m-grid", (V8, V26), fit=fit_grid(grid)), False),
        ("yolov8n + yolo26n, score model + thresholds tuned on the training folds",
         views_policy("2m-score", (V8, V26), fit=scored), False),
        ("+ both models at 1280 (large), score model + tuned thresholds",
         views_policy("4v-score", (V8, V26, V8L, V26L), fit=scored), False),
        ("+ tiles of both models (2x2) instead of 1280", views_policy("tiles", default_views, fit=scored), True),
        ("+ 1280 and tiles of both models", views_policy("6v", (V8, V26, V8L, V26L, T8, T26), fit=scored), False),
        ("the large views + the default loop (learning, audit, stopping rule)",
         views_policy("large-loop", (V8, V26, V8L, V26L), fit=scored, batch=8, learn=True, prior_boxes=150,
                      audit=0.05, stop=True), False),
        ("default views + learning after each batch of 8 (prior worth 40 boxes)",
         views_policy("learn40", default_views, fit=scored, batch=8, learn=True, prior_boxes=40), False),
        ("default views + learning after each batch of 8 (prior worth 150 boxes)",
         views_policy("learn150", default_views, fit=scored, batch=8, learn=True, prior_boxes=150), False),
        ("the previous default workflow: + random audit 5% and the stopping rule, every kept box checked",
         views_policy("checked-loop", default_views, fit=scored, batch=8, learn=True, prior_boxes=150,
                      audit=0.05, stop=True), False),
        ("tiles, accepted boxes on opened images shipped unchecked (accept tuned up to 0.95)",
         views_policy("unchecked", default_views, fit=unchecked, check_accepted=False), True),
        ("**default workflow**: the same + the default loop (learning from checked boxes only, audit, stopping rule)",
         views_policy("default", default_views, fit=unchecked, check_accepted=False, batch=8,
                      learn=True, prior_boxes=150, audit=0.05, stop=True), True),
    ]


def findable(cases, views: tuple[str, ...]) -> int:
    policy = views_policy("f", views)
    total = 0
    for case in cases:
        item = propose(case, policy)
        boxes = item.proposals
        total += int(match_boxes(boxes.xyxy, list(boxes.label), boxes.confidence,
                                 case.truth_xyxy, list(case.truth_labels))[1].sum())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="folder with images/, labels/ and data.yaml")
    parser.add_argument("--cache", default=".cache/views")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=0,
                        help="also measure every policy on this many other fold partitions (mean)")
    parser.add_argument("--json")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # calibration warns per class and fold
    root = Path(args.dataset)
    cases = load_cases(root / "images", root, args.cache)
    truth = sum(len(c.truth_labels) for c in cases)
    seconds = view_seconds(args.cache)
    out: dict = {"images": len(cases), "truth_boxes": truth, "views": {}, "policies": []}

    print(f"## Views ({len(cases)} images, {truth} true boxes)\n")
    print("| views | machine s/image | findable objects (class-aware IoU >= 0.5, floor 0.05) |")
    print("|---|---|---|")
    combos = [(V8,), (V26,), (V8L,), (V26L,), (T8,), (T26,), (V8, V26), (V8, V8L), (V8, T8),
              (V8, V26, V8L, V26L), (V8, V26, T8, T26), (V8, V26, V8L, V26L, T8, T26)]
    for combo in combos:
        found = findable(cases, combo)
        cost = sum(seconds[v] for v in combo)
        out["views"]["+".join(combo)] = {"seconds_per_image": cost, "findable": found}
        print(f"| {' + '.join(combo)} | {cost:.2f} | {found} ({found / truth:.1%}) |")

    print(f"\n## Policies, held out ({args.folds} folds: fitted on {args.folds - 1}, measured on the one left)\n")
    other = f" | mean of {args.partitions} other partitions: time, P, R" if args.partitions else ""
    print(f"| policy | default | human time vs scratch | precision | recall | opened | shown | drawn | per fold{other} |")
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.partitions else ""))
    default_cv = None
    keys = [c.key for c in cases]
    for what, policy, is_default in policies():
        cv = cross_validate(cases, policy, args.folds)
        pooled = cv.pooled
        folds = ", ".join(f"{f.cost_fraction:.1%}" for f in cv.folds)
        partitions = [
            cross_validate(cases, policy, args.folds, folds=assign_folds(keys, args.folds, salt=str(n))).pooled
            for n in range(args.partitions)
        ]
        mean = (f" | {np.mean([p.cost_fraction for p in partitions]):.1%}, "
                f"{np.mean([p.precision for p in partitions]):.3f}, {np.mean([p.recall for p in partitions]):.3f}"
                if partitions else "")
        print(f"| {what} | {'yes' if is_default else ''} | {pooled.cost_fraction:.1%} | {pooled.precision:.3f} | "
              f"{pooled.recall:.3f} | {pooled.opened} | {pooled.shown} | {pooled.drawn} | {folds}{mean} |", flush=True)
        out["policies"].append({"policy": what, "default": is_default, **cv.to_dict(),
                                "partitions": [p.to_dict() for p in partitions],
                                "fitted": [t.model_dump(mode="json") for t in cv.fitted]})
        if policy.name == "default":
            default_cv, default_policy = cv, policy

    print("\n## The default workflow per fold\n")
    print("| fold | images | true boxes | opened | shown | drawn | human time | precision | recall | fitted accept / reject / review_at |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, (fold, fitted) in enumerate(zip(default_cv.folds, default_cv.fitted, strict=True)):
        print(f"| {n} | {fold.images} | {fold.truth_boxes} | {fold.opened} | {fold.shown} | {fold.drawn} | "
              f"{fold.cost_fraction:.1%} | {fold.precision:.3f} | {fold.recall:.3f} | "
              f"{fitted.accept} / {fitted.reject} / {fitted.review_at} |")
    pooled = default_cv.pooled
    print(f"| all | {pooled.images} | {pooled.truth_boxes} | {pooled.opened} | {pooled.shown} | {pooled.drawn} | "
          f"{pooled.cost_fraction:.1%} | {pooled.precision:.3f} | {pooled.recall:.3f} | |")
    optimistic = in_sample(cases, default_policy)
    print(f"\nIn-sample (fitted and measured on all {len(cases)} images, optimistic): "
          f"{optimistic.cost_fraction:.1%}, P {optimistic.precision:.3f}, R {optimistic.recall:.3f}.")
    fitted = default_policy.fit([propose(c, default_policy) for c in cases])
    print("\nFitted on all images (configs/default.yaml's triage):\n")
    print(json.dumps(fitted.model_dump(mode="json", include={"accept", "reject", "review_at", "score_model"})))
    out["in_sample_default"] = optimistic.to_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))


if __name__ == "__main__":
    main()
