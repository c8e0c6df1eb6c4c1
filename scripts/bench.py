"""Throughput benchmark: `bootstrap annotate` per runtime vs plain ultralytics predict loops.

Sides, each in a fresh process (so peak memory is per side), run in alternating rounds:

* ``tuned``: the tuned PyTorch loop, ``YOLO(weights).predict(paths[i:i+B], batch=B)``;
* ``default``: Ultralytics' default loop, ``predict`` over the file list (batch 1);
* ``detector:RUNTIME``: bootstrap's detector (``load_detector``, ``detector.runtime``) over the
  decoded images (decoding inside the clock), no database;
* ``annotate:RUNTIME``: the real `annotate` Prefect flow (ephemeral API) into a fresh FiftyOne
  dataset with that runtime, so discovery, hashing, decoding, the ontology and the database
  writes are all inside the measured time.

Every side runs the same model, image size and confidence floor over the same N images. The
model is loaded and warmed up (exports made) before the clock starts: what is timed is the
steady state a long run sees. Ratios are to the tuned PyTorch loop. On CUDA (``--device cuda``)
each side also reports the GPU's mean utilisation and peak memory (nvidia-smi, when present).

    make bench                       # 128 coco128-train images, yolov8n, batch 16, 640
    make bench BENCH_ARGS="--images 64 --rounds 2 --sides tuned,annotate:openvino"
    make bench BENCH_ARGS="--repeat 8"   # the 128 photos as 1024 files: a long run's rate
    python scripts/bench.py --device cuda --runtime torch      # the same, unchanged, on a GPU
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: import this checkout's bootstrap
# The shared images; BOOTSTRAP_SHARED for a checkout elsewhere (a worktree), as the tests.
SHARED = Path(os.environ.get("BOOTSTRAP_SHARED") or ROOT.parent / "shared")
DEFAULT_IMAGES = SHARED / "data" / "coco128-train" / "images"
RUNTIMES = ("torch", "openvino", "onnx")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _device(args: argparse.Namespace) -> str | None:
    return None if args.device == "auto" else args.device


def _tuned(args: argparse.Namespace, paths: list[str]) -> dict:
    """The tuned PyTorch loop: batches of B file paths through Ultralytics' predict."""
    from ultralytics import YOLO

    from bootstrap.yolo import resolve_weights

    model = YOLO(resolve_weights(args.model))
    half = {"half": True} if args.device.startswith("cuda") else {}
    model.predict(paths[: args.batch_size], conf=args.conf, imgsz=args.imgsz, device=_device(args),
                  verbose=False, **half)
    with GpuSampler(args.device) as gpu:
        started = time.perf_counter()
        boxes = 0
        for i in range(0, len(paths), args.batch_size):
            results = model.predict(
                paths[i : i + args.batch_size], conf=args.conf, imgsz=args.imgsz,
                batch=args.batch_size, device=_device(args), verbose=False, **half,
            )
            boxes += sum(len(r.boxes) for r in results)
        seconds = time.perf_counter() - started
    return {"images": len(paths), "boxes": boxes, "seconds": seconds, **gpu.figures}


def _default(args: argparse.Namespace, paths: list[str]) -> dict:
    """Ultralytics' default loop: predict over the whole file list (Ultralytics 8.4 letterboxes a
    list of paths as one batch, padded to the square: hence its peak memory)."""
    from ultralytics import YOLO

    from bootstrap.yolo import resolve_weights

    model = YOLO(resolve_weights(args.model))
    model.predict(paths[:1], conf=args.conf, imgsz=args.imgsz, device=_device(args), verbose=False)
    with GpuSampler(args.device) as gpu:
        started = time.perf_counter()
        # stream: results one at a time, as the docs advise for long lists (memory stays flat)
        boxes = sum(len(r.boxes) for r in model.predict(
            paths, conf=args.conf, imgsz=args.imgsz, device=_device(args), stream=True,
            verbose=False))
        seconds = time.perf_counter() - started
    return {"images": len(paths), "boxes": boxes, "seconds": seconds, **gpu.figures}


def _detector_config(args: argparse.Namespace, runtime: str, streams: int):
    from bootstrap.config import DetectorConfig

    return DetectorConfig(**_detector_fields(args, runtime, streams))


def _detector_fields(args: argparse.Namespace, runtime: str, streams: int) -> dict:
    return {"model": args.model, "batch_size": args.batch_size, "image_size": args.imgsz,
            "min_confidence": args.conf, "device": args.device, "runtime": runtime,
            "cpu_streams": streams}


def _detector(args: argparse.Namespace, paths: list[str], runtime: str, streams: int) -> dict:
    """bootstrap's detector with ``runtime``: decode (bootstrap.decode) and predict in batches."""
    from bootstrap.decode import decode_image
    from bootstrap.detectors import load_detector

    started = time.perf_counter()
    detector = load_detector(_detector_config(args, runtime, streams))
    loaded = time.perf_counter() - started
    detector.predict([decode_image(p).pixels for p in paths[: args.batch_size]])
    with GpuSampler(args.device) as gpu:
        started = time.perf_counter()
        boxes = 0
        for i in range(0, len(paths), args.batch_size):
            pixels = [decode_image(p).pixels for p in paths[i : i + args.batch_size]]
            boxes += sum(len(d) for d in detector.predict(pixels))
        seconds = time.perf_counter() - started
    return {"images": len(paths), "boxes": boxes, "seconds": seconds, "load_seconds": loaded,
            "runtime": getattr(detector, "runtime", runtime), **gpu.figures}


def _pipeline(args: argparse.Namespace, paths: list[str], runtime: str, streams: int) -> dict:
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
    from bootstrap.config import DetectorOptions
    from bootstrap.decode import decode_image
    from bootstrap.detectors import load_detector
    from flows.annotate import annotate

    started = time.perf_counter()
    detector = load_detector(_detector_config(args, runtime, streams))  # makes the export when none is cached
    loaded = time.perf_counter() - started
    detector.predict([decode_image(p).pixels for p in paths[: args.batch_size]])
    folder = Path(tempfile.mkdtemp(prefix="bench-images-"))
    for path in paths:  # links: same bytes, no copy; a folder of exactly these N images
        (folder / Path(path).name).symlink_to(Path(path).resolve())
    dataset = f"bench-{uuid.uuid4().hex[:8]}"
    # Warm Prefect's ephemeral API and FiftyOne's database outside the clock, too.
    options = DetectorOptions(**_detector_fields(args, runtime, streams))
    # One model, one pass (configs/single-model.yaml): the pipeline's overhead over the same
    # inference; the default config's extra views are timed per view in docs/benchmarks.md.
    single = str(Path(__file__).resolve().parent.parent / "configs" / "single-model.yaml")
    warm = Path(tempfile.mkdtemp(prefix="bench-warm-"))  # one image: every stage runs once
    (warm / Path(paths[0]).name).symlink_to(Path(paths[0]).resolve())
    annotate(sources=[str(warm)], dataset=dataset + "-warm", detector=options, config_path=single)
    with GpuSampler(args.device) as gpu:
        started = time.perf_counter()
        summary = annotate(sources=[str(folder)], dataset=dataset, detector=options,
                           config_path=single)
        seconds = time.perf_counter() - started
    if summary["annotated"] != len(paths):  # a rate over fewer images would be meaningless
        raise SystemExit(f"annotate stored {summary['annotated']} of {len(paths)} images; "
                         f"failed: {summary['failed'][:3]}")
    import fiftyone as fo

    for name in (dataset, dataset + "-warm"):
        fo.delete_dataset(name)
    # The flow's own clock (what its summary reports as throughput) leaves out Prefect's
    # per-run bookkeeping: creating the flow run, its final state, and joining its heartbeat
    # thread, which sleeps in whole seconds (0-1 s, whatever the run's size).
    return {"images": summary["annotated"], "boxes": summary["boxes"], "seconds": seconds,
            "flow_seconds": summary["wall_seconds"], "load_seconds": loaded, "runtime": getattr(detector, "runtime", runtime), **gpu.figures}


class GpuSampler:
    """Mean GPU utilisation and peak GPU memory while the clock runs, from ``nvidia-smi`` every
    0.2 s (and PyTorch's own peak allocation); nothing on a CPU run or without nvidia-smi."""

    def __init__(self, device: str):
        self._on = device.startswith("cuda") or (device == "auto" and _cuda_available())
        self._smi = shutil.which("nvidia-smi") if self._on else None
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self.figures: dict = {}

    def __enter__(self) -> GpuSampler:
        if self._smi:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        if self._on:
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            done = subprocess.run(
                [self._smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True, text=True,
            )
            try:
                util, memory = done.stdout.splitlines()[0].split(",")
                self._samples.append((float(util), float(memory)))
            except (IndexError, ValueError):
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._smi:
            self._thread.join()
            if self._samples:
                self.figures["gpu_util_percent"] = statistics.fmean(u for u, _ in self._samples)
                self.figures["gpu_memory_mib"] = max(m for _, m in self._samples)
        if self._on:
            import torch

            self.figures["torch_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _repeated(paths: list[str], times: int) -> list[str]:
    """``paths``, then ``times - 1`` copies of each under ``.bench/`` (made once per list of
    paths): the same JPEG with k bytes after its end marker, so decoders read the same pixels
    while discovery, which recognises copies by content hash, registers each as an image."""
    key = hashlib.sha1("\n".join(str(Path(p).resolve()) for p in paths).encode()).hexdigest()
    folder = ROOT / ".bench" / f"repeat-{key[:12]}"
    copies = [(folder / f"{Path(p).stem}-{k}.jpg", p, k) for k in range(1, times) for p in paths]
    folder.mkdir(parents=True, exist_ok=True)
    for copy, photo, k in copies:
        if not copy.exists():
            copy.write_bytes(Path(photo).read_bytes() + b"\0" * k)
    return paths + [str(copy) for copy, _, _ in copies]


def _run_side(args: argparse.Namespace, paths: list[str], side: str) -> dict:
    kind, _, runtime = side.partition(":")
    runtime, _, streams = runtime.partition(":")
    if kind == "tuned":
        return _tuned(args, paths)
    if kind == "default":
        return _default(args, paths)
    if kind == "detector":
        return _detector(args, paths, runtime, int(streams or 0))
    return _pipeline(args, paths, runtime, int(streams or 0))


def _sides(text: str, runtime: str | None) -> list[str]:
    if text:
        sides = [s.strip() for s in text.split(",") if s.strip()]
    else:
        runtimes = [runtime] if runtime else list(RUNTIMES)
        sides = ["tuned", "default", *(f"annotate:{r}" for r in runtimes)]
    for side in sides:
        kind, _, runtime = side.partition(":")
        runtime, _, streams = runtime.partition(":")
        if not (kind in ("tuned", "default") and not runtime
                or kind in ("detector", "annotate") and runtime in (*RUNTIMES, "auto")
                and (not streams or streams.isdigit())):
            sys.exit(f"unknown side '{side}': use tuned, default, detector:RUNTIME[:STREAMS] or "
                     f"annotate:RUNTIME[:STREAMS] (RUNTIME: auto, {', '.join(RUNTIMES)}; "
                     f"STREAMS: detector.cpu_streams, 0 for auto)")
    return sides


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
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (every side)")
    parser.add_argument("--runtime", choices=[*RUNTIMES, "auto"],
                        help="time bootstrap with this runtime only (default: each of them)")
    parser.add_argument("--sides", default="", help="comma-separated sides instead of the "
                        "default (tuned,default,annotate:RUNTIME...), e.g. detector:openvino; "
                        "RUNTIME:STREAMS sets detector.cpu_streams, e.g. annotate:onnx:1")
    parser.add_argument("--repeat", type=int, default=1, help="each image K times, as K files "
                        "of other bytes (a longer run of the same photos: fixed per-run costs "
                        "amortised, as over a real folder of thousands)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all sides")
    parser.add_argument("--json", action="store_true", help="print every measurement as JSON")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if not args.source.is_dir():
        sys.exit(f"no images at {args.source}: pass --source DIR")
    paths = sorted(str(p) for p in args.source.glob("*.jpg"))[: args.images]
    if args.repeat < 1:
        sys.exit(f"--repeat must be at least 1, got {args.repeat}")
    if args.repeat > 1:
        paths = _repeated(paths, args.repeat)

    if args.side:
        result = _run_side(args, paths, args.side)
        result["peak_rss_mib"] = _peak_rss_mib()
        print("BENCH " + json.dumps(result))
        return

    sides = _sides(args.sides, args.runtime)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    child_args = [a for a in sys.argv[1:] if a != "--json"]
    for _ in range(args.rounds):
        for side in sides:  # alternating: a slow spell of a shared machine hits every side
            done = subprocess.run(
                [sys.executable, __file__, *child_args, "--side", side],
                capture_output=True, text=True, cwd=ROOT,
            )
            line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
            if done.returncode or line is None:
                sys.exit(f"{side} side failed:\n{done.stderr[-3000:]}")
            runs[side].append(json.loads(line[6:]))

    if args.json:
        print(json.dumps(runs, indent=1))
    # The median round per side: robust to one round slowed by another job.
    rate = {s: statistics.median(r["images"] / r["seconds"] for r in rs) for s, rs in runs.items()}
    in_flow = {s: statistics.median(r["images"] / r["flow_seconds"] for r in rs)
               for s, rs in runs.items() if all("flow_seconds" in r for r in rs)}
    reference = rate.get("tuned")
    photos = f" ({len(paths) // args.repeat} photos x {args.repeat})" if args.repeat > 1 else ""
    print(f"N={len(paths)} images{photos}, model={args.model}, batch={args.batch_size}, "
          f"imgsz={args.imgsz}, conf={args.conf}, device={args.device}, "
          f"cpu threads={os.cpu_count()}, rounds={args.rounds} (median shown)")
    gpu = any("gpu_util_percent" in r or "torch_peak_mib" in r for rs in runs.values() for r in rs)
    print(f"{'':22}{'runtime':>9}{'images/s':>10}{'x tuned':>9}{'boxes':>7}{'peak RSS MiB':>14}"
          f"{'load s':>8}{'in flow/s':>10}{'x tuned':>8}"
          + (f"{'GPU %':>7}{'GPU MiB':>9}" if gpu else ""))
    for side, rs in runs.items():
        ratio = f"{rate[side] / reference:.2f}" if reference else "-"
        load = max((r.get("load_seconds", 0.0) for r in rs), default=0.0)
        line = (f"{side:22}{rs[0].get('runtime', 'torch'):>9}{rate[side]:>10.2f}{ratio:>9}"
                f"{rs[0]['boxes']:>7}{max(r['peak_rss_mib'] for r in rs):>14.0f}"
                f"{(f'{load:.1f}' if load else '-'):>8}")
        flow_rate = in_flow.get(side)
        line += (f"{flow_rate:>10.2f}{(f'{flow_rate / reference:.2f}' if reference else '-'):>8}"
                 if flow_rate else f"{'-':>10}{'-':>8}")
        if gpu:
            util = [r["gpu_util_percent"] for r in rs if "gpu_util_percent" in r]
            memory = [r.get("gpu_memory_mib", r.get("torch_peak_mib", 0.0)) for r in rs]
            line += f"{(f'{statistics.fmean(util):.0f}' if util else '-'):>7}{max(memory):>9.0f}"
        print(line)
    if reference:
        best = max((s for s in rate if s.startswith("annotate:")), key=rate.get, default=None)
        if best:
            print(f"fastest bootstrap annotate ({best}) / tuned PyTorch loop: "
                  f"{rate[best] / reference:.2f} whole run, {in_flow[best] / reference:.2f} "
                  f"in the flow's own clock  (target >= 3 on a CPU with the default runtime)")


if __name__ == "__main__":
    main()
