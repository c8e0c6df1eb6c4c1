"""Scale benchmark: the pipeline itself over 1k / 10k / 100k small synthetic images.

A fast stand-in detector (registered as the ``standin:`` model scheme through
``bootstrap.detectors.register_detector``) replaces YOLO, so what is measured is everything around
the model: discovery, hashing, registration, decoding, database writes and triage. Each size runs
``run_annotation`` (the library's annotate, no Prefect) into a fresh FiftyOne dataset, in its own
process so peak RSS is per size, then runs it again over the same, now known, images (the no-op
incremental rerun) and deletes the dataset.

Corpora are generated once (deterministic 64x64 JPEGs, distinct bytes per image, 1000 per
folder) under ``.bench/`` and reused.

    make bench                                   # the throughput bench, then this one
    BENCH_SCALES=1000,10000 python scripts/bench_scale.py
    python scripts/bench_scale.py --scales 1000 --profile   # cProfile to .bench/profile-1000.txt
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import logging
import os
import pstats
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: import this checkout's bootstrap

DEFAULT_SCALES = "1000,10000,100000"
SHARD = 1000  # images per folder in a corpus
SIDE = 64  # pixels
STANDIN_CLASSES = ("person", "car", "dog", "cat", "bicycle")


# -- corpus -----------------------------------------------------------------------------------


def synthetic_image(index: int) -> np.ndarray:
    """A 64x64 RGB image unique to ``index``: a colour gradient plus ``index`` written as 64
    black/white 8x8 blocks (blocks survive JPEG, so every file's bytes differ)."""
    ramp = np.linspace(0, 255, SIDE, dtype=np.float32)
    hue = np.array([(index * 37) % 256, (index * 91) % 256, (index * 53) % 256], np.float32)
    pixels = (ramp[None, :, None] * 0.5 + hue[None, None, :] * 0.5).repeat(SIDE, axis=0)
    bits = [(index >> b) & 1 for b in range(64)]
    for b, bit in enumerate(bits):
        row, col = divmod(b, 8)
        if bit:
            pixels[row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] = 255 - pixels[row * 8, col * 8]
    return pixels.astype(np.uint8)


def ensure_corpus(cache: Path, size: int) -> Path:
    """The folder of ``size`` synthetic JPEGs, generated on first use (atomically renamed into
    place, so an interrupted generation is never reused)."""
    from PIL import Image

    folder = cache / f"corpus-{size}"
    if folder.is_dir():
        return folder
    started = time.perf_counter()
    partial = cache / f".corpus-{size}-{uuid.uuid4().hex[:6]}"
    for index in range(size):
        shard = partial / f"shard-{index // SHARD:04d}"
        if index % SHARD == 0:
            shard.mkdir(parents=True)
        Image.fromarray(synthetic_image(index)).save(shard / f"img-{index:07d}.jpg", quality=90)
    partial.rename(folder)
    print(f"generated {size} images in {folder} ({time.perf_counter() - started:.1f} s)",
          file=sys.stderr)
    return folder


# -- stand-in detector -------------------------------------------------------------------------


class StandInDetector:
    """A fast, deterministic detector: 1-4 boxes per image derived from its pixels, with scores
    spread over the accept, review and reject ranges so triage has real work to do."""

    def __init__(self, config):
        self.name = config.model
        self.class_names = STANDIN_CLASSES
        # Optional stand-in inference time, spent as a real model spends it: without the GIL
        # (torch and OpenVINO release it), so other threads (decoding, the writer) can run.
        self.seconds_per_image = float(os.environ.get("BENCH_INFERENCE_MS", "0")) / 1000

    def predict(self, images: Sequence[np.ndarray]):
        from bootstrap.detections import Detections

        if self.seconds_per_image:
            time.sleep(self.seconds_per_image * len(images))
        out = []
        for image in images:
            height, width = image.shape[:2]
            rng = np.random.default_rng(int(image[::8, ::8].sum()))
            n = int(rng.integers(1, 5))
            corner = rng.uniform(0, 0.5, (n, 2)) * (width, height)
            extent = rng.uniform(0.2, 0.5, (n, 2)) * (width, height)
            class_id = rng.integers(0, len(STANDIN_CLASSES), n)
            names = np.array([STANDIN_CLASSES[i] for i in class_id], dtype=object)
            out.append(Detections(
                xyxy=np.hstack([corner, corner + extent]).astype(np.float32),
                confidence=rng.uniform(0.05, 0.99, n).astype(np.float32),
                class_id=class_id.astype(np.int64),
                model_label=names,
                label=names.copy(),
                image_wh=(width, height),
            ))
        return out


# -- one size, in a child process ---------------------------------------------------------------


def _timed(timers: dict, owner, name: str, count, key: str | None = None) -> None:
    """Wrap ``owner.name`` (a method of a class, or a function of a module) to add its wall time
    and ``count(args, result)`` items to ``timers[key or name]``; ``args`` excludes ``self``."""
    original = getattr(owner, name)
    method = key or name
    is_method = isinstance(owner, type)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        result = original(*args, **kwargs)
        args = args[1:] if is_method else args
        entry = timers.setdefault(method, {"seconds": 0.0, "items": 0, "calls": 0})
        entry["seconds"] += time.perf_counter() - started
        entry["items"] += count(args, result)
        entry["calls"] += 1
        return result

    setattr(owner, name, wrapper)


def _count_writes(counts: dict) -> None:
    """Count the documents pymongo writes to sample collections (``samples.*``), per kind, in
    ``counts``: what "writes per image" means below (inserts + updates of samples)."""
    import pymongo.collection

    many = {"bulk_write": "update", "insert_many": "insert"}
    single = {"insert_one": "insert", "update_one": "update", "replace_one": "update",
              "update_many": "update", "find_one_and_update": "update"}
    for name, kind in (many | single).items():
        original = getattr(pymongo.collection.Collection, name)

        def wrapper(self, *args, _original=original, _name=name, _kind=kind, **kwargs):
            if self.name.startswith("samples."):
                if _name in many:
                    args = (list(args[0]), *args[1:])
                    counts[_kind] = counts.get(_kind, 0) + len(args[0])
                else:
                    counts[_kind] = counts.get(_kind, 0) + 1
            return _original(self, *args, **kwargs)

        setattr(pymongo.collection.Collection, name, wrapper)


def run_size(corpus: Path, size: int, batch_size: int, profile: Path | None) -> dict:
    logging.basicConfig(level=logging.WARNING)
    from bootstrap import annotate
    from bootstrap.annotate import run_annotation
    from bootstrap.config import validate_config
    from bootstrap.detectors import register_detector
    from bootstrap.store import ImageStore

    register_detector("standin:", StandInDetector)
    timers: dict = {}
    _timed(timers, ImageStore, "add_pending", lambda args, n: n)
    _timed(timers, ImageStore, "record_results", lambda args, _: len(args[0]))
    _timed(timers, annotate, "apply_triage", lambda args, counts: sum(counts.values()))
    _timed(timers, ImageStore, "known_files", lambda args, known: len(known))
    _timed(timers, ImageStore, "list_pending", lambda args, pending: len(pending))
    writes: dict = {}
    _count_writes(writes)
    dataset = f"bench-scale-{size}-{uuid.uuid4().hex[:6]}"
    config = validate_config({
        "dataset": dataset,
        "sources": [str(corpus)],
        "detector": {"model": "standin:boxes", "batch_size": batch_size},
    })
    ImageStore(dataset)  # start/connect the database outside the clock
    profiler = cProfile.Profile() if profile else None
    try:
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        first = run_annotation(config)
        annotate_seconds = time.perf_counter() - started
        if profiler:
            profiler.disable()
        first_timers = json.loads(json.dumps(timers))
        first_writes = dict(writes)
        timers.clear()
        started = time.perf_counter()
        rerun = run_annotation(config)
        rerun_seconds = time.perf_counter() - started
    finally:
        import fiftyone as fo

        started = time.perf_counter()
        if fo.dataset_exists(dataset):
            fo.delete_dataset(dataset)
        cleanup_seconds = time.perf_counter() - started
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        profile.write_text(text.getvalue())
    if first.annotated != size or first.failed:
        raise SystemExit(f"annotated {first.annotated} of {size}, failed {first.failed[:3]}")
    if rerun.new or rerun.annotated:
        raise SystemExit(f"the rerun was not a no-op: new={rerun.new} annotated={rerun.annotated}")
    return {
        "images": size,
        "boxes": first.boxes,
        "routed": first.routed,
        "annotate_seconds": annotate_seconds,
        "rerun_seconds": rerun_seconds,
        "cleanup_seconds": cleanup_seconds,
        "steps": first_timers,
        "writes": first_writes,  # documents written to the samples collection, per kind
        "rerun_steps": timers,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# -- driver -------------------------------------------------------------------------------------


def _rate(step: dict | None) -> float:
    return step["items"] / step["seconds"] if step and step["seconds"] > 0 else float("nan")


def main() -> None:
    from bootstrap.environment import apply_defaults

    apply_defaults()  # before FiftyOne, Prefect or Ultralytics is imported (children inherit it)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default=os.environ.get("BENCH_SCALES", DEFAULT_SCALES),
                        help="comma-separated corpus sizes (env BENCH_SCALES)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench",
                        help="where corpora are generated once")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--profile", action="store_true",
                        help="write a cProfile of each first run to <cache>/profile-<size>.txt")
    parser.add_argument("--json", action="store_true", help="also print each size's raw figures")
    parser.add_argument("--inference-ms", type=float, default=0.0,
                        help="stand-in inference time per image, spent without the GIL as a "
                             "real model does (default 0: the pipeline's own cost only)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    try:
        sizes = [int(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        sys.exit(f"--scales/BENCH_SCALES: expected sizes like 1000,10000, got '{args.scales}'")
    if not sizes or min(sizes) < 1:
        sys.exit(f"--scales/BENCH_SCALES: expected positive sizes, got '{args.scales}'")

    if args.child:
        corpus = args.cache / f"corpus-{args.child}"
        profile = args.cache / f"profile-{args.child}.txt" if args.profile else None
        print("BENCH " + json.dumps(run_size(corpus, args.child, args.batch_size, profile)))
        return

    os.environ["BENCH_INFERENCE_MS"] = str(args.inference_ms)  # read by the children's stand-in
    args.cache.mkdir(parents=True, exist_ok=True)
    for stale in args.cache.glob(".corpus-*"):  # left by an interrupted generation
        shutil.rmtree(stale, ignore_errors=True)
    results = []
    for size in sizes:
        ensure_corpus(args.cache, size)
        command = [sys.executable, __file__, "--scales", args.scales, "--cache", str(args.cache),
                   "--batch-size", str(args.batch_size), "--child", str(size)]
        started = time.perf_counter()
        done = subprocess.run(command + (["--profile"] if args.profile else []),
                              capture_output=True, text=True, cwd=ROOT)
        child_seconds = time.perf_counter() - started
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
        if done.returncode or line is None:
            sys.exit(f"size {size} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(line[6:]) | {"process_seconds": child_seconds})
        if args.json:
            print(json.dumps(results[-1]))

    print(f"\nScale: stand-in detector ({args.inference_ms:g} ms inference per image), 64x64 "
          f"JPEGs, batch {args.batch_size}, cpu threads {os.cpu_count()}")
    # record/s: ImageStore.record_results, which stores predictions and their triage in one
    # write per image; triage/s: the final apply_triage over images left `predicted` (none).
    header = (f"{'images':>8}{'annotate s':>12}{'images/s':>10}{'insert/s':>10}"
              f"{'record/s':>10}{'triage/s':>10}{'writes/image':>14}{'peak RSS MiB':>14}"
              f"{'rerun s':>9}")
    print(header)
    for r in results:
        steps = r["steps"]
        per_image = sum(r["writes"].values()) / r["images"]
        print(f"{r['images']:>8}{r['annotate_seconds']:>12.1f}"
              f"{r['images'] / r['annotate_seconds']:>10.0f}"
              f"{_rate(steps.get('add_pending')):>10.0f}{_rate(steps.get('record_results')):>10.0f}"
              f"{f'{_rate(triage):.0f}' if (triage := steps.get('apply_triage')) and triage['items'] else '-':>10}"
              f"{per_image:>14.2f}{r['peak_rss_mib']:>14.0f}"
              f"{r['rerun_seconds']:>9.2f}")
    smallest, largest = results[0], results[-1]
    growth = largest["peak_rss_mib"] / smallest["peak_rss_mib"]
    writes = min(min(_rate(r["steps"].get(k)) for k in ("add_pending", "record_results"))
                 for r in results)
    print(f"peak RSS {largest['images']}/{smallest['images']}: {growth:.2f}x (target <= 1.2x); "
          f"slowest DB write rate {writes:.0f} samples/s (target >= 5000); "
          f"rerun at {largest['images']}: {largest['rerun_seconds']:.1f} s (target < 10 s)")


if __name__ == "__main__":
    main()
