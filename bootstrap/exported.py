"""Exported runtimes: a detector's weights exported once to OpenVINO or ONNX, and cached.

On a CPU, the same network runs several times faster through OpenVINO or ONNX Runtime than
through PyTorch (docs/benchmarks.md), with the same boxes within small tolerances
(tests/integration/test_exported.py, on batches of mixed and of same-shaped photos). Ultralytics' own exporter makes the export and Ultralytics
loads it (``YOLO(path, task="detect")``), so pre- and post-processing stay Ultralytics'.

An export is made once per *key*: the weights' content hash, the runtime, the input size and the
batch shape (and the Ultralytics version that made it), so a changed weights file, another size
(the ``large`` view) or another Ultralytics never reuses a stale export. It lies in a folder per
key, beside the weights (``<weights folder>/.exports/``) or, where that folder is read-only (a
shared models folder), in ``$XDG_CACHE_HOME/bootstrap/exports``; ``$BOOTSTRAP_EXPORTS`` names
another folder. An export is written into a temporary folder and renamed into place, so
processes exporting at once (Dask workers) never load a half-written one: the first rename wins,
the others use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

EXPORTS_ENV = "BOOTSTRAP_EXPORTS"
#: What ``detector.runtime`` may name besides ``auto``.
RUNTIMES = ("torch", "openvino", "onnx")
# Ultralytics' export formats, and the file or folder each one writes beside its input weights.
_FORMATS = {"openvino": "{stem}_openvino_model", "onnx": "{stem}.onnx"}
# A temporary folder this old is left over from a killed export, not one in progress.
_STALE_SECONDS = 3600


class ExportError(RuntimeError):
    """An export could not be made or found; the caller falls back to PyTorch."""


def choose_runtime(runtime: str, device: str) -> str:
    """The runtime ``detector.runtime`` means on ``device`` (a resolved device: ``cpu``,
    ``cuda``, ``cuda:N``): ``auto`` is ONNX Runtime on a CPU (in the pipeline the fastest of the
    three there, and the leanest: docs/benchmarks.md) and PyTorch on CUDA (where PyTorch in half
    precision is the fast path).

    Raises:
        ValueError: an unknown runtime, named with the valid ones.
    """
    if runtime == "auto":
        return "torch" if device.startswith("cuda") else "onnx"
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime '{runtime}'; use auto, {', '.join(RUNTIMES)}")
    return runtime


#: The batch shape of every export. Batch 1: Ultralytics splits a batch into single images for
#: it, so a short final batch (or the tiles view's four windows) costs no padded images, and on a
#: 2-core CPU batch 1 is as fast per image as batch 16 (docs/benchmarks.md).
#: ``detector.batch_size`` stays the number of images per ``predict`` call.
EXPORT_BATCH = 1


@dataclass(frozen=True)
class ExportKey:
    """What an export depends on; its folder name spells all of it."""

    stem: str  # the weights' file name without suffix, for people reading the folder
    digest: str  # the weights' content hash (sha256, 16 hex digits)
    runtime: str
    image_size: int
    batch: int
    exporter: str  # the Ultralytics version

    @property
    def folder_name(self) -> str:
        return (f"{self.stem}-{self.digest}-{self.runtime}-{self.image_size}px-b{self.batch}"
                f"-dynamic-ultralytics{self.exporter}")

    @property
    def model_name(self) -> str:
        """The export's file or folder inside the key's folder (what ``YOLO(...)`` loads)."""
        return _FORMATS[self.runtime].format(stem=self.stem)


_digests: dict[tuple[str, int, int], str] = {}


def weights_digest(weights: Path) -> str:
    """The sha256 of the weights file's bytes (16 hex digits), memoised per path, size and
    modification time: a replaced file is hashed again."""
    stat = weights.stat()
    memo = (str(weights.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _digests:
        digest = hashlib.sha256()
        with weights.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        _digests[memo] = digest.hexdigest()[:16]
    return _digests[memo]


def export_key(weights: Path, runtime: str, image_size: int, batch: int) -> ExportKey:
    """The key of the export of ``weights`` for ``runtime`` at ``image_size`` and ``batch``."""
    from importlib.metadata import version  # not `import ultralytics`: that imports torch

    if runtime not in _FORMATS:
        raise ValueError(f"no export for runtime '{runtime}'; exported runtimes: {', '.join(_FORMATS)}")
    return ExportKey(weights.stem, weights_digest(weights), runtime, image_size, batch,
                     version("ultralytics"))


def exports_folder(weights: Path) -> Path:
    """Where the exports of ``weights`` are cached: ``$BOOTSTRAP_EXPORTS`` when set; else
    ``.exports`` beside the weights when their folder is writable; else the user's cache."""
    if os.environ.get(EXPORTS_ENV):
        return Path(os.environ[EXPORTS_ENV]).expanduser()
    beside = weights.parent / ".exports"
    if _writable(beside if beside.is_dir() else weights.parent):
        return beside
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "bootstrap" / "exports"


def _writable(folder: Path) -> bool:
    # os.access alone says yes to root everywhere; a folder without any write bit (a shared,
    # read-only models folder) is meant not to be written to, even by root.
    try:
        return os.access(folder, os.W_OK | os.X_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def exported_model(weights: str | Path, runtime: str, image_size: int, batch: int) -> Path:
    """The cached export of ``weights`` (a ``.pt`` file) for ``runtime``, made now when there
    is none (seconds: docs/benchmarks.md).

    Returns:
        The path ``YOLO(path, task="detect")`` loads.
    Raises:
        ExportError: the export failed (the message says why); nothing is left in the cache.
    """
    weights = Path(weights)
    if weights.suffix != ".pt" or not weights.is_file():
        raise ExportError(f"only a local .pt weights file can be exported, not '{weights}'")
    key = export_key(weights, runtime, image_size, batch)
    folder = exports_folder(weights)
    final = folder / key.folder_name
    if (final / key.model_name).exists():
        return final / key.model_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{key.folder_name}-", dir=folder))
        work.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    except OSError as err:
        raise ExportError(f"cannot write exports to {folder} ({err}); set {EXPORTS_ENV}") from err
    started = time.perf_counter()
    try:
        _export(weights, work, key)
        try:
            # Atomic: another process sees the whole export or none. Renaming onto a folder
            # another process has renamed into place first fails; that export is as good.
            work.rename(final)
        except OSError:
            if not (final / key.model_name).exists():
                raise
    except Exception as err:  # noqa: BLE001 - the exporter raises many types for one cause
        raise ExportError(f"exporting {weights.name} to {runtime} failed: {err}") from err
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s to %s at %d px, batch %d, in %.1f s: %s", weights.name, runtime,
             image_size, batch, time.perf_counter() - started, final)
    return final / key.model_name


def _export(weights: Path, work: Path, key: ExportKey) -> None:
    """Ultralytics' exporter writes beside its input: export a copy of the weights inside
    ``work`` (which may be in a folder other than the weights'), then drop the copy."""
    from ultralytics import YOLO

    copy = work / f"{key.stem}.pt"
    shutil.copyfile(weights, copy)
    with quiet_ultralytics():
        written = YOLO(str(copy)).export(
            # Dynamic height and width: a batch of same-shaped photos is letterboxed into the
            # smallest stride rectangle, as PyTorch does, so the boxes are PyTorch's; a static
            # square input changed some (README "Runtimes") for a few percent of speed.
            format=key.runtime, imgsz=key.image_size, batch=key.batch, dynamic=True,
            device="cpu", verbose=False,
        )
    copy.unlink()
    if Path(written).resolve() != (work / key.model_name).resolve():
        raise ExportError(f"the exporter wrote {written}, expected {work / key.model_name}")


@contextlib.contextmanager
def quiet_ultralytics():
    """Keep Ultralytics' INFO lines (export progress, 'Loading ... for OpenVINO inference') off
    stdout, which the CLI's ``--json`` output owns; warnings still show."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


@contextlib.contextmanager
def openvino_in_float32():
    """OpenVINO models loaded inside this block compute in float32 on the CPU.

    OpenVINO's CPU plugin computes in bfloat16 by default on CPUs that have it (AVX-512 BF16,
    AMX): faster, but the boxes are no longer PyTorch's (README "Runtimes"), and which boxes a
    dataset gets must not depend on the CPU it was annotated on. Ultralytics compiles the
    model itself and takes no precision option, so the ``openvino.Core`` it makes here is one
    whose ``compile_model`` asks for float32 (also when it recompiles for a new input shape).
    """
    import openvino

    plain = openvino.Core

    class Float32Core(plain):
        def compile_model(self, model, device_name=None, config=None, **kwargs):
            config = {"INFERENCE_PRECISION_HINT": openvino.Type.f32, **(config or {})}
            if device_name is None:
                return super().compile_model(model, config=config, **kwargs)
            return super().compile_model(model, device_name, config, **kwargs)

    openvino.Core = Float32Core
    try:
        yield
    finally:
        openvino.Core = plain


@contextlib.contextmanager
def runtime_on_one_thread(runtime: str):
    """Models of ``runtime`` loaded inside this block compute on the calling thread only.

    For images run side by side (``UltralyticsDetector``'s CPU streams): one runtime per
    image on one core each keeps the cores busier than one runtime splitting every layer over
    all of them (docs/benchmarks.md). Ultralytics creates the ONNX Runtime session and the
    OpenVINO compiled model itself and takes no thread option, so the classes it finds here
    are ones that ask for one thread (and, for OpenVINO, no pinning: two models pinned to the
    same core would share it).
    """
    if runtime == "onnx":
        import onnxruntime as patched_module

        plain = patched_module.InferenceSession

        class Patched(plain):
            def __init__(self, path_or_bytes, sess_options=None, *args, **kwargs):
                sess_options = sess_options or patched_module.SessionOptions()
                sess_options.intra_op_num_threads = 1
                sess_options.inter_op_num_threads = 1
                super().__init__(path_or_bytes, sess_options, *args, **kwargs)

        name = "InferenceSession"
    elif runtime == "openvino":
        import openvino as patched_module

        plain = patched_module.Core

        class Patched(plain):
            def compile_model(self, model, device_name=None, config=None, **kwargs):
                config = {**(config or {}), "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                          "ENABLE_CPU_PINNING": False}
                if device_name is None:
                    return super().compile_model(model, config=config, **kwargs)
                return super().compile_model(model, device_name, config, **kwargs)

        name = "Core"
    else:
        raise ValueError(f"no thread setting for runtime '{runtime}'")
    setattr(patched_module, name, Patched)
    try:
        yield
    finally:
        setattr(patched_module, name, plain)


@contextlib.contextmanager
def torch_single_threaded():
    """PyTorch uses one CPU thread inside this block, then as many as before.

    With an exported model PyTorch does only Ultralytics' small steps around it (scaling the
    input, non-maximum suppression); its thread pool spins between them on the cores the
    runtime's own threads need (docs/benchmarks.md). Process-wide, like any PyTorch thread
    setting: the block is kept to one ``predict`` call, so training or a PyTorch model called
    afterwards gets every thread back.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _remove_stale(folder: Path) -> None:
    for leftover in folder.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
