"""Run each proposal view once over a folder of images and cache its raw boxes (.npz).

    .venv/bin/python scripts/cache_views.py ../shared/data/coco128-train/images --out .cache/views

Views are named ``MODEL@SIZE`` (the model at that inference size) or ``MODEL@SIZE+tilesN``
(N x N overlapping windows, each at that size; ``bootstrap.tiles``). Existing cache files are
kept unless --force. Prints each view's machine time per image (noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bootstrap.config import DetectorConfig, SourceConfig
from bootstrap.detectors import load_detector
from bootstrap.evaluation.viewcache import run_view, save_view
from bootstrap.sources import iter_image_files
from bootstrap.tiles import TiledDetector

DEFAULT_VIEWS = (
    "yolov8n.pt@640", "yolo26n.pt@640", "yolov8n.pt@1280", "yolo26n.pt@1280",
    "yolov8n.pt@640+tiles2", "yolo26n.pt@640+tiles2", "yolov8n.pt@960",
)
_VIEW = re.compile(r"^(?P<model>[^@]+)@(?P<size>\d+)(\+tiles(?P<grid>\d+))?$")


def detector_for(view: str, min_confidence: float):
    match = _VIEW.fullmatch(view)
    if not match:
        raise SystemExit(f"view '{view}': expected MODEL@SIZE or MODEL@SIZE+tilesN")
    config = DetectorConfig(
        model=match["model"], image_size=int(match["size"]), min_confidence=min_confidence,
        device="cpu",
    )
    detector = load_detector(config)
    return TiledDetector(detector, int(match["grid"])) if match["grid"] else detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images")
    parser.add_argument("--out", default=".cache/views")
    parser.add_argument("--views", default=",".join(DEFAULT_VIEWS))
    parser.add_argument("--min-confidence", type=float, default=0.05)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    paths = [f.uri for f in iter_image_files([SourceConfig(path=args.images)])]
    for view in args.views.split(","):
        dest = Path(args.out) / f"{view.replace('/', '_')}.npz"
        if dest.exists() and not args.force:
            print(f"{view}: cached in {dest}")
            continue
        cached = run_view(view, detector_for(view, args.min_confidence), paths, device="cpu")
        save_view(cached, dest)
        boxes = sum(len(d) for d in cached.detections)
        print(f"{view}: {len(paths)} images, {boxes} boxes, {cached.seconds_per_image:.3f} s/image")


if __name__ == "__main__":
    main()
