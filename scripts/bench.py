"""Throughput benchmark: `bootstrap annotate` vs a plain ultralytics predict loop.

Both sides run the same model, batch size, image size and confidence floor over the same N
images, each in a fresh process (so peak memory is per side). The model is loaded and warmed
up before the clock starts on both sides: what is timed is the steady state a long run sees.
The pipeline side is the real `annotate` Prefect flow (ephemeral API) into a fresh FiftyOne
dataset, so discovery, hashing, decoding, the ontology and the database writes are all inside
the measured time.

    make bench                       # 128 coco128-train images, yolov8n, batch 16, 640
    make bench BENCH_ARGS="--images 32 --batch-size 8"
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "coco128-train" / "images"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _plain(args: argparse.Namespace, paths: list[str]) -> dict:
    from ultralytics import YOLO

    from bootstrap.yolo import resolve_weights

    model = YOLO(resolve_weights(args.model))
    model.predict(paths[: args.batch_size], conf=args.conf, imgsz=args.imgsz, verbose=False)
    started = time.perf_counter()
    boxes = 0
    for i in range(0, len(paths), args.batch_size):
        results = model.predict(
            paths[i : i + args.batch_size], conf=args.conf, imgsz=args.imgsz,
            batch=args.batch_size, verbose=False,
        )
        boxes += sum(len(r.boxes) for r in results)
    seconds = time.perf_counter() - started
    return {"images": len(paths), "boxes": boxes, "seconds": seconds}


def _pipeline(args: argparse.Namespace, paths: list[str]) -> dict:
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
    from bootstrap.config import DetectorConfig, DetectorOptions
    from bootstrap.decode import decode_image
    from bootstrap.detectors import load_detector
    from flows.annotate import annotate

    detector = load_detector(
        DetectorConfig(model=args.model, batch_size=args.batch_size, image_size=args.imgsz,
                       min_confidence=args.conf)
    )
    detector.predict([decode_image(p).pixels for p in paths[: args.batch_size]])
    folder = Path(tempfile.mkdtemp(prefix="bench-images-"))
    for path in paths:  # links: same bytes, no copy; a folder of exactly these N images
        (folder / Path(path).name).symlink_to(path)
    dataset = f"bench-{uuid.uuid4().hex[:8]}"
    # Warm Prefect's ephemeral API and FiftyOne's database outside the clock, too.
    options = DetectorOptions(
        model=args.model, batch_size=args.batch_size, image_size=args.imgsz,
        min_confidence=args.conf,
    )
    annotate(sources=[str(folder)], dataset=dataset + "-warm", max_chunks=0, detector=options)
    started = time.perf_counter()
    summary = annotate(sources=[str(folder)], dataset=dataset, detector=options)
    seconds = time.perf_counter() - started
    import fiftyone as fo

    for name in (dataset, dataset + "-warm"):
        fo.delete_dataset(name)
    return {"images": summary["annotated"], "boxes": summary["boxes"], "seconds": seconds}


def main() -> None:
    from bootstrap.environment import apply_defaults

    apply_defaults()  # before FiftyOne, Prefect or Ultralytics is imported (children inherit it)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="how many images (N)")
    parser.add_argument("--source", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--model", default="yolov8n.pt")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.05)
    parser.add_argument("--side", choices=["plain", "pipeline"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if not args.source.is_dir():
        sys.exit(f"no images at {args.source}: pass --source DIR")
    paths = sorted(str(p) for p in args.source.glob("*.jpg"))[: args.images]

    if args.side:
        result = (_plain if args.side == "plain" else _pipeline)(args, paths)
        result["peak_rss_mib"] = _peak_rss_mib()
        print("BENCH " + json.dumps(result))
        return

    sides = {}
    for side in ("plain", "pipeline"):
        done = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--side", side],
            capture_output=True, text=True, cwd=ROOT,
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
        if done.returncode or line is None:
            sys.exit(f"{side} side failed:\n{done.stderr[-3000:]}")
        sides[side] = json.loads(line[6:])

    plain, pipe = sides["plain"], sides["pipeline"]
    rate = {k: v["images"] / v["seconds"] for k, v in sides.items()}
    print(f"N={len(paths)} images, model={args.model}, batch={args.batch_size}, "
          f"imgsz={args.imgsz}, conf={args.conf}, cpu threads={os.cpu_count()}")
    print(f"{'':24}{'images/s':>10}{'seconds':>10}{'boxes':>8}{'peak RSS MiB':>14}")
    for name, side in (("plain ultralytics loop", plain), ("bootstrap annotate", pipe)):
        key = "plain" if side is plain else "pipeline"
        print(f"{name:24}{rate[key]:>10.2f}{side['seconds']:>10.2f}{side['boxes']:>8}"
              f"{side['peak_rss_mib']:>14.0f}")
    print(f"ratio annotate/plain: {rate['pipeline'] / rate['plain']:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
