"""Pre-annotation: register new images, detect pending ones in chunks, triage, summarise.

``run_annotation`` is the one driver of these steps. It runs each step through a
``StepRunner``: ``InProcess`` calls them directly (CLI without Prefect, notebooks, benchmarks);
the ``annotate`` Prefect flow passes a runner that makes each step a Prefect task and can spread
the chunks over Dask workers. Each step takes the (picklable) config and opens the store itself,
so any worker process can run it.

The dataset itself is the work queue: discovery inserts new images as ``pending``; detection
takes pending images in chunks, and each image is written once more with its predictions, its
triage outcome and its state together (``auto_accepted``, ``needs_review``, ``empty``, or
``failed``). A run killed at any point therefore leaves only pending images behind, and the next
run picks them up; the unique content hash keeps every image stored once. A finished chunk is
written in a thread of its own while the next one is detected (``bootstrap.chunk_writer``).
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Protocol, TypeVar

from bootstrap import progress
from bootstrap.chunk_writer import ChunkWriter
from bootstrap.config import PipelineConfig
from bootstrap.decode import DecodedImage, ImageDecodeError, decode_image
from bootstrap.detections import Detector
from bootstrap.detectors import load_detector
from bootstrap.ontology import Ontology
from bootstrap.proposals import input_side
from bootstrap.schema import LABELS, TRIAGE_OUTPUT_STATES, ImageState
from bootstrap.sources import content_hash, iter_image_files
from bootstrap.store import ImageResult, ImageStore, NewImage, PendingImage
from bootstrap.triage import apply_triage, triage_fields

log = logging.getLogger(__name__)

DISCOVERY_CHUNK = 1000
#: Detected chunks that may wait for the writer (besides the one it writes): memory stays flat.
WRITE_AHEAD = 1

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class DiscoveryReport:
    """What discovery found: ``new`` were registered; ``known`` were in the dataset already
    (same path unchanged, or same content under another name); ``pending`` is the work left
    for the detector, including any an interrupted run left behind."""

    found: int = 0
    new: int = 0
    known: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    pending: int = 0


@dataclass
class BatchReport:
    """What one detection chunk did; ``routed``: its images per triage state."""

    images: int = 0
    boxes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    routed: dict[str, int] = field(default_factory=dict)


@dataclass
class DetectedChunk:
    """A chunk detected but not stored yet: its results and its report so far."""

    model: str
    results: list[ImageResult]
    report: BatchReport


@dataclass
class AnnotationSummary:
    """The end-of-run summary printed by the CLI and published as a Prefect artifact."""

    dataset: str
    model: str
    run_id: str
    found: int
    new: int
    known: int
    annotated: int
    failed: list[tuple[str, str]]
    boxes: int
    wall_seconds: float
    routed: dict[str, int] = field(default_factory=dict)  # new images per triage state

    @property
    def images_per_second(self) -> float:
        return self.annotated / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"images_per_second": round(self.images_per_second, 3)}

    def to_markdown(self) -> str:
        rows = [
            ("dataset", self.dataset),
            ("model", self.model),
            ("images found", self.found),
            ("new", self.new),
            ("skipped (already in the dataset)", self.known),
            ("annotated this run", self.annotated),
            ("failed", len(self.failed)),
            ("boxes stored", self.boxes),
            *((f"routed: {state}", n) for state, n in sorted(self.routed.items())),
            ("wall time", f"{self.wall_seconds:.1f} s"),
            ("throughput", f"{self.images_per_second:.2f} images/s"),
        ]
        lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
        if self.failed:
            lines += ["", "**Failed images**", ""]
            lines += [f"- `{uri}`: {reason}" for uri, reason in self.failed]
        return "\n".join(lines)


def discover_new_images(config: PipelineConfig) -> DiscoveryReport:
    """Walk the configured sources and register every image the dataset lacks as pending.

    Unchanged known paths are skipped without reading them; other files are hashed (not
    decoded), so a renamed or copied image is recognised by its content.
    """
    store = ImageStore(config.dataset)
    report = DiscoveryReport()
    left_out: list[tuple[str, str]] = []  # not yielded: not counted as found
    files = iter_image_files(config.sources, on_error=lambda path, why: left_out.append((path, why)))
    with progress.task("discovering", total=None) as bar:
        while chunk := list(itertools.islice(files, DISCOVERY_CHUNK)):
            report.found += len(chunk)
            # Per chunk, not all at once: memory stays flat however many images are known.
            known = store.known_files(image.uri for image in chunk)
            candidates = []
            for image in chunk:
                if known.get(image.uri) == (image.size, image.mtime_ns):
                    continue
                try:
                    digest = content_hash(image.uri)
                except OSError as err:
                    report.unreadable.append((image.uri, f"cannot read: {err.strerror or err}"))
                    continue
                candidates.append(NewImage(image.uri, digest, image.size, image.mtime_ns))
            report.new += store.add_pending(candidates)
            bar.advance(len(chunk))
    report.known = report.found - report.new - len(report.unreadable)
    report.unreadable += left_out
    report.pending = store.count_pending()
    progress.expect("annotating", total=report.pending)
    log.info("discovery: %s", report)
    return report


def detect_images(
    images: Sequence[PendingImage],
    detector: Detector,
    ontology: Ontology,
    batch_size: int,
    decode_workers: int | None = None,
    max_side: int | None = None,
) -> Iterator[ImageResult]:
    """Decode ``images`` ahead of the detector in a thread pool and yield one result each.

    Decoding runs up to two batches ahead, so the model does not wait for files; a file
    that cannot be decoded yields a result with its failure reason and the rest go on.
    ``max_side`` (``proposals.input_side``): large JPEGs are decoded reduced to no less than
    that; their boxes are mapped back onto the image in the file. ``decode_workers``: threads
    (default: one per core, at most 8; Pillow decodes without holding the GIL).
    """
    decode_workers = decode_workers or min(8, os.cpu_count() or 2)
    decode = functools.partial(_decode_or_failure, max_side=max_side)
    with ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="decode") as pool:
        decoded = _prefetch(pool, decode, images, ahead=2 * batch_size)
        for batch in _batched(decoded, batch_size):
            usable = [(img, out) for img, out in batch if isinstance(out, DecodedImage)]
            predictions = iter(detector.predict([out.pixels for _, out in usable]))
            for image, outcome in batch:
                if isinstance(outcome, DecodedImage):
                    found = next(predictions).on_image(outcome.scale, outcome.image_wh)
                    yield ImageResult(image.sample_id, image.uri, ontology.apply(found))
                elif isinstance(outcome, NewImage):
                    yield ImageResult(image.sample_id, image.uri, None, failure=REQUEUED,
                                      requeue=outcome)
                else:
                    yield ImageResult(image.sample_id, image.uri, None, failure=outcome)


def plan_chunks(
    config: PipelineConfig, chunk_size: int, max_chunks: int | None = None
) -> list[list[str]]:
    """Split the pending images' ids into chunks of ``chunk_size``, oldest first.

    Planned up front so that chunks running in parallel (Dask workers) get disjoint images;
    with ``max_chunks`` the rest stays pending for the next run.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    ids = ImageStore(config.dataset).pending_ids()
    chunks = [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]
    return chunks if max_chunks is None else chunks[:max_chunks]


def detect_chunk(config: PipelineConfig, run_id: str, sample_ids: Sequence[str]) -> DetectedChunk:
    """Run the detector over the images ``sample_ids`` (one planned chunk) that are still
    pending (another run may have done some meanwhile); nothing is written."""
    started = time.perf_counter()
    store = ImageStore(config.dataset)
    pending = store.list_pending(sample_ids)
    # Cached per process (load_detector): a Dask worker loads the model for its first chunk only.
    detector = load_detector(config.detector)
    ontology = Ontology(config.ontology, detector.class_names)
    report = BatchReport(images=len(pending))
    results = []
    for result in detect_images(pending, detector, ontology, config.detector.batch_size,
                                max_side=input_side(config.detector)):
        results.append(result)
        if result.failure:
            report.failed.append((result.uri, result.failure))
            log.warning("failed: %s: %s", result.uri, result.failure)
        progress.advance("annotating")
    report.seconds = time.perf_counter() - started
    return DetectedChunk(detector.name, results, report)


def store_chunk(config: PipelineConfig, run_id: str, chunk: DetectedChunk) -> BatchReport:
    """Store a detected chunk, one write per image: predictions, triage outcome (``triage``
    config) and state together (``ImageStore.record_results``)."""
    started = time.perf_counter()
    recorded = ImageStore(config.dataset).record_results(
        chunk.results, model=chunk.model, run_id=run_id,
        triage=functools.partial(triage_fields, config=config.triage),
    )
    report = chunk.report
    report.boxes = recorded.boxes
    report.routed = {s: n for s, n in recorded.states.items() if s in TRIAGE_OUTPUT_STATES}
    report.seconds += time.perf_counter() - started
    return report


def annotate_chunk(config: PipelineConfig, run_id: str, sample_ids: Sequence[str]) -> BatchReport:
    """Detect and store one planned chunk (``detect_chunk``, then ``store_chunk``)."""
    return store_chunk(config, run_id, detect_chunk(config, run_id, sample_ids))


def detect_and_store(
    chunks: Iterable[T],
    detect: Callable[[T], DetectedChunk],
    store: Callable[[DetectedChunk], BatchReport],
    on_stored: Callable[[list[BatchReport]], None] | None = None,
) -> list[BatchReport]:
    """``detect`` each chunk in this thread while ``store`` writes the previous one in a
    ``ChunkWriter`` (at most ``WRITE_AHEAD`` detected chunks wait); returns the reports in
    order. ``on_stored(reports so far)`` after each chunk is handed over.

    Raises:
        whatever ``detect`` or ``store`` raised; an interruption still writes the chunks
        already detected (each image stored whole or left pending).
    """
    writer: ChunkWriter[DetectedChunk, BatchReport] = ChunkWriter(store, depth=WRITE_AHEAD)
    with writer:
        for chunk in chunks:
            writer.put(detect(chunk))
            if on_stored is not None:
                on_stored(list(writer.results))
    return writer.results


def check_setup(config: PipelineConfig) -> None:
    """Everything that can fail before work starts: the model loads, the ontology fits the
    model's classes, ``triage.per_class`` names only those classes, the database answers (the
    dataset is created with its class list)."""
    detector = load_detector(config.detector)
    ontology = Ontology(config.ontology, detector.class_names)
    config.triage.check_classes(ontology.classes)
    ImageStore(config.dataset, classes=ontology.classes)


def triage_new_images(config: PipelineConfig) -> dict[str, int]:
    """Triage images left ``predicted`` (chunks are triaged as they are stored, so normally
    none: images predicted by an older version of the pipeline); returns images per state."""
    return apply_triage(ImageStore(config.dataset), config.triage, states=(ImageState.PREDICTED.value,))


def summarise(
    config: PipelineConfig,
    run_id: str,
    discovery: DiscoveryReport,
    batches: Iterable[BatchReport],
    wall_seconds: float,
    routed: dict[str, int] | None = None,
) -> AnnotationSummary:
    """Fold the reports of one run into its summary."""
    batches = list(batches)
    # Chunks are triaged as they are stored; ``routed``: what the last step triaged besides.
    states = collections.Counter(routed or {})
    for batch in batches:
        states.update(batch.routed)
    return AnnotationSummary(
        dataset=config.dataset,
        model=config.detector.model,
        run_id=run_id,
        found=discovery.found,
        new=discovery.new,
        known=discovery.known,
        annotated=sum(b.images for b in batches),
        failed=discovery.unreadable + [f for b in batches for f in b.failed],
        boxes=sum(b.boxes for b in batches),
        wall_seconds=wall_seconds,
        routed=dict(states),
    )


def dataset_totals_markdown(config: PipelineConfig) -> str:
    """Markdown rows for the whole dataset (not just this run): working boxes by route and the
    images waiting for review."""
    store = ImageStore(config.dataset)
    routes = store.dataset.count_values(f"{LABELS}.detections.route")
    waiting = store.state_counts()[ImageState.NEEDS_REVIEW.value]
    # Boxes a person drew have no route (None): left out, and never sorted against a string.
    rows = [(f"working boxes routed `{route}`", n) for route, n in sorted(
        (route, n) for route, n in routes.items() if route)]
    rows.append(("images waiting for review (`needs_review`)", waiting))
    return "\n".join(["| dataset now | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def default_chunk_size(config: PipelineConfig) -> int:
    """Images per detection task: several batches, so decoding overlaps inference within it."""
    return config.detector.batch_size * 8


# -- the driver ------------------------------------------------------------------------------


class StepRunner(Protocol):
    """How ``run_annotation`` runs its steps: directly, or as Prefect tasks (``flows.annotate``)."""

    def step(self, fn: Callable[..., R], *args) -> R:
        """Run one step ``fn(*args)`` and return its result."""
        ...

    def chunks(
        self, config: PipelineConfig, run_id: str, chunks: list[list[str]], pending: int
    ) -> list[BatchReport]:
        """Detect and store every chunk (``detect_chunk`` then ``store_chunk``; in any order
        or concurrently, ``detect_and_store`` to overlap them) and return their reports;
        ``pending`` images are waiting in all."""
        ...


class InProcess:
    """Every step a plain call in this process; chunks one after another, each stored while
    the next is detected (``detect_and_store``)."""

    def step(self, fn: Callable[..., R], *args) -> R:
        return fn(*args)

    def chunks(
        self, config: PipelineConfig, run_id: str, chunks: list[list[str]], pending: int
    ) -> list[BatchReport]:
        return detect_and_store(
            chunks, functools.partial(detect_chunk, config, run_id),
            functools.partial(store_chunk, config, run_id),
        )


def run_annotation(
    config: PipelineConfig,
    run_id: str | None = None,
    chunk_size: int | None = None,
    max_chunks: int | None = None,
    runner: StepRunner | None = None,
) -> AnnotationSummary:
    """Pre-annotate everything new in ``config.sources``: check the setup, register new images,
    detect the pending ones chunk by chunk, triage them, summarise.

    ``max_chunks`` stops early (the rest stays pending for the next run). ``runner`` decides
    how steps run (default ``InProcess``; the Prefect flow passes its own).
    """
    runner = runner or InProcess()
    started = time.perf_counter()
    run_id = run_id or uuid.uuid4().hex
    runner.step(check_setup, config)
    discovery = runner.step(discover_new_images, config)
    chunks = runner.step(plan_chunks, config, chunk_size or default_chunk_size(config), max_chunks)
    batches = runner.chunks(config, run_id, chunks, discovery.pending)
    routed = runner.step(triage_new_images, config)
    return summarise(config, run_id, discovery, batches, time.perf_counter() - started, routed)


#: Why an image was not annotated although it decoded: its file changed under the run.
REQUEUED = "the file changed after it was registered (rewritten in place): re-queued with its new content for the next run"


def _decode_or_failure(
    image: PendingImage, max_side: int | None = None
) -> tuple[PendingImage, DecodedImage | NewImage | str]:
    """The decoded image, or why not: a reason, or (its bytes are no longer those discovery
    hashed) what is in the file now, to re-queue it."""
    try:
        decoded = decode_image(image.uri, max_side)
    except ImageDecodeError as err:
        return image, err.reason
    if image.content_hash is None:
        return image, decoded
    # Hashed after decoding: a file rewritten before or while it was decoded no longer has
    # the registered hash (the second read comes from the page cache: ~0.1 ms per photo).
    try:
        stat = os.stat(image.uri)
        digest = content_hash(image.uri)
    except OSError as err:
        return image, f"file disappeared while it was being read ({err.strerror or err})"
    if digest != image.content_hash:
        return image, NewImage(image.uri, digest, stat.st_size, stat.st_mtime_ns)
    return image, decoded


def _prefetch(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], ahead: int
) -> Iterator[R]:
    # Executor.map would submit every item at once (all decoded images in memory); this keeps
    # at most `ahead` in flight and yields in input order.
    queue: deque[Future[R]] = deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) >= ahead:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
