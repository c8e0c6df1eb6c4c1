"""The bootstrap loop measured held out: review N images, fine-tune, re-annotate the rest.

    .venv/bin/python scripts/cache_views.py IMAGES --out CACHE --views yolov8n.pt@640,yolo26n.pt@640,yolov8n.pt@1280,yolo26n.pt@1280
    .venv/bin/python scripts/loop_report.py ../shared/data/coco128-train --cache .cache/views [--reviewed 32,64]
    .venv/bin/python scripts/loop_report.py ../shared/data/coco128-train --shift gray-jpeg10   # a domain shift

For each N: the images of the first N/32 folds (``holdout.assign_folds``, 4 folds of 32) are
"reviewed": a FiftyOne dataset holds them with their ground truth as the human labels (what
the simulated reviewer produces). ``bootstrap.training.train_version`` (the product's training:
export, content-hash split, Ultralytics' trainer, registry) fine-tunes yolov8n on them. The new
version then re-annotates the remaining images in place of yolov8n (the second model and the
views stay: the default config's four views), and on those remaining images, before and after:

* findable objects: true boxes some fused proposal matches at the stored floor (class-aware
  IoU >= 0.5): the proposals' recall, which bounds what review can confirm instead of draw;
* auto-accepted precision: the accepted boxes of images triage exports unreviewed;
* simulated human time (share of labelling from scratch) of the default review workflow
  (batches of 8, learning, audit, stopping rule) with the default config's triage.

``--shift gray-jpeg10`` builds a shifted copy of the images first (grayscale, JPEG quality 10;
labels unchanged) where the pretrained model is weak, and caches its views if missing.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIEWS = ("yolov8n.pt@640", "yolo26n.pt@640", "yolov8n.pt@1280", "yolo26n.pt@1280")


def make_shift(source: Path, kind: str, out: Path) -> Path:
    """A copy of ``source`` (images/, labels/, data.yaml) with the images shifted; labels kept."""
    from PIL import Image

    if kind != "gray-jpeg10":
        raise SystemExit(f"unknown shift {kind!r}; use gray-jpeg10")
    images = out / "images"
    if not images.is_dir():
        images.mkdir(parents=True)
        for path in sorted((source / "images").glob("*.jpg")):
            with Image.open(path) as image:
                buffer = io.BytesIO()
                image.convert("L").convert("RGB").save(buffer, format="JPEG", quality=10)
            (images / path.name).write_bytes(buffer.getvalue())
        shutil.copytree(source / "labels", out / "labels")
        shutil.copy(source / "data.yaml", out / "data.yaml")
    return out


def reviewed_store(name: str, cases, images: Path, ground_truth: Path, classes: list[str]):
    """A dataset of the reviewed cases, their ground truth as human, reviewed labels."""
    import fiftyone as fo

    from bootstrap.evaluation.ground_truth import load_ground_truth
    from bootstrap.store import ImageStore
    from tests.helpers import add_images

    store = ImageStore(name, classes=classes)
    paths = [images / f"{case.name}.jpg" for case in cases]
    add_images(store, paths)
    truth = load_ground_truth(ground_truth)
    labels = {}
    for path in paths:
        gt = truth.get(path.stem)
        labels[str(path)] = fo.Detections(detections=[
            fo.Detection(label=d.label, bounding_box=list(d.bounding_box), provenance="human", confirmed=True)
            for d in (gt.detections if gt else [])
        ])
    store.dataset.set_values("labels", labels, key_field="filepath")
    store.dataset.set_values("state", dict.fromkeys(map(str, paths), "reviewed"), key_field="filepath")
    store.dataset.set_values("tags", dict.fromkeys(map(str, paths), ["reviewed"]), key_field="filepath")
    return store


def measure(items, policy, triage) -> dict:
    from bootstrap.evaluation.holdout import match_boxes, simulate_loop
    from bootstrap.schema import ImageState, Route
    from bootstrap.triage import triage_image

    findable = tp = fp = 0
    for item in items:
        boxes, case = item.proposals, item.case
        findable += int(match_boxes(boxes.xyxy, list(boxes.label), boxes.confidence,
                                    case.truth_xyxy, list(case.truth_labels))[1].sum())
        wh = np.array(boxes.image_wh * 2, dtype=np.float64)
        xyxy = boxes.xyxy.astype(np.float64)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1) / wh if len(boxes) else np.zeros((0, 4))
        outcome = triage_image(list(boxes.label), boxes.confidence, xywh, triage, boxes.extras)
        if outcome.state != ImageState.AUTO_ACCEPTED:
            continue
        accepted = boxes[np.array([r == Route.ACCEPT for r in outcome.routes], dtype=bool)]
        hit, _ = match_boxes(accepted.xyxy, list(accepted.label), accepted.confidence,
                             case.truth_xyxy, list(case.truth_labels))
        tp, fp = tp + int(hit.sum()), fp + int((~hit).sum())
    loop = simulate_loop(items, policy, triage)
    truth = sum(i.truth_count for i in items)
    return {"images": len(items), "truth_boxes": truth, "findable": findable,
            "auto_precision": tp / (tp + fp) if tp + fp else None, "auto_boxes": tp + fp,
            "human_time": loop.cost_fraction, "precision": loop.precision, "recall": loop.recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="folder with images/, labels/ and data.yaml")
    parser.add_argument("--cache", default=None, help="cached views (default .cache/views[-SHIFT])")
    parser.add_argument("--shift", default=None)
    parser.add_argument("--reviewed", default="32,64")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bootstrap.environment import apply_defaults

    apply_defaults()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("bootstrap.training").setLevel(logging.INFO)
    import os

    os.environ.setdefault("YOLO_VERBOSE", "false")
    import fiftyone as fo
    import yaml

    from bootstrap.config import DetectorConfig, load_config
    from bootstrap.detectors import load_detector
    from bootstrap.evaluation.holdout import Policy, assign_folds, load_cases, propose
    from bootstrap.evaluation.viewcache import run_view
    from bootstrap.training import train_version

    root = Path(args.dataset).resolve()
    cache = Path(args.cache or (".cache/views" + (f"-{args.shift}" if args.shift else "")))
    if args.shift:
        root = make_shift(root, args.shift, ROOT / ".cache" / f"shift-{args.shift}")
    if not all((cache / f"{v}.npz").is_file() for v in VIEWS):
        subprocess.run([sys.executable, str(ROOT / "scripts" / "cache_views.py"), str(root / "images"),
                        "--out", str(cache), "--views", ",".join(VIEWS)], check=True)
    cases = load_cases(root / "images", root, cache)
    folds = assign_folds([c.key for c in cases], 4)
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    classes = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    default = load_config()
    triage = default.triage
    loop = dict(batch=8, learn=True, prior_boxes=150, audit=0.05, stop=True,
                check_accepted=default.review.check_accepted)
    families = ("base", "second", "base", "second")
    before_policy = Policy("before", VIEWS, families, **loop)
    report = {"dataset": str(root), "shift": args.shift, "runs": []}
    print(f"## The bootstrap loop on {root.name}{' (' + args.shift + ')' if args.shift else ''}\n")
    print("| reviewed | remaining images | true boxes | detector | findable | auto-accepted precision (boxes) | human time | P | R |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.reviewed.split(",")):
        reviewed = [c for c in cases if folds[c.key] < n // 32]
        rest = [c for c in cases if folds[c.key] >= n // 32]
        name = f"loop-{uuid.uuid4().hex[:8]}"
        models_dir = Path(tempfile.mkdtemp(prefix="loop-models-"))
        config = default.model_copy(update={"dataset": name, "train": default.train.model_copy(update={
            "epochs": args.epochs, "image_size": args.image_size, "device": args.device,
            "models_dir": str(models_dir), "min_improvement": 0.0})})
        try:
            store = reviewed_store(name, reviewed, root / "images", root, classes)
            started = time.perf_counter()
            outcome = train_version(store, config, base="yolov8n.pt")
            train_seconds = time.perf_counter() - started
            weights = outcome.version.weights
            paths = [str(root / "images" / f"{c.name}.jpg") for c in rest]
            seconds = {}
            views = {}
            for size in (640, 1280):
                detector = load_detector(DetectorConfig(model=weights, image_size=size, device=args.device))
                cached = run_view(f"ft@{size}", detector, paths)
                views[size] = cached.by_key()
                seconds[size] = cached.seconds_per_image
        finally:
            if fo.dataset_exists(name):
                fo.delete_dataset(name)
        tuned = [replace(c, views={**c.views, "ft@640": views[640][c.key], "ft@1280": views[1280][c.key]}) for c in rest]
        after_policy = Policy("after", ("ft@640", "yolo26n.pt@640", "ft@1280", "yolo26n.pt@1280"), families, **loop)
        before = measure([propose(c, before_policy) for c in rest], before_policy, triage)
        after = measure([propose(c, after_policy) for c in tuned], after_policy, triage)
        run = {"reviewed": n, "before": before, "after": after, "train_seconds": round(train_seconds, 1),
               "version": outcome.version.to_dict(), "ft_seconds_per_image": seconds}
        report["runs"].append(run)
        for label, m in (("yolov8n (pretrained)", before), (f"fine-tuned on {n} ({outcome.version.version})", after)):
            auto = "-" if m["auto_precision"] is None else f"{m['auto_precision']:.3f} ({m['auto_boxes']})"
            print(f"| {n} | {m['images']} | {m['truth_boxes']} | {label} | {m['findable']} ({m['findable'] / m['truth_boxes']:.1%}) "
                  f"| {auto} | {m['human_time']:.1%} | {m['precision']:.3f} | {m['recall']:.3f} |", flush=True)
        v = outcome.version
        print(f"|  | | | training: {len(v.history)} epochs at {args.image_size} px on {v.device}, {train_seconds:.0f} s "
              f"(incl. export and two validations); val mAP50-95 {v.metrics['map50_95']:.3f} vs "
              f"{(v.base_metrics or {}).get('map50_95', float('nan')):.3f}; promoted: {v.promoted}; "
              f"re-annotation {seconds[640] + seconds[1280]:.2f} s/image for its two views | | | | | |", flush=True)
        shutil.rmtree(models_dir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
