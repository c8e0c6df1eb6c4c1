"""The ``annotate`` flow: register new images, detect them chunk by chunk, summarise.

Each task calls one library function; the flow only sequences them and publishes artifacts.
Resumable by construction: the dataset is the work queue (see ``bootstrap.annotate``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal
from uuid import UUID

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.runtime import flow_run

from bootstrap import annotate as steps
from bootstrap.config import PipelineConfig, config_from_flags
from bootstrap.store import ImageStore
from flows import artifact_key
from flows.runners import check_task_runner, dask_task_runner

# Database and file errors are usually transient (a restarting MongoDB, a flaky mount).
IO_RETRIES = dict(retries=2, retry_delay_seconds=5)


@task(cache_policy=NONE)
def check_setup(config: PipelineConfig) -> None:
    steps.check_setup(config)


@task(cache_policy=NONE, **IO_RETRIES)
def discover_new_images(config: PipelineConfig) -> steps.DiscoveryReport:
    return steps.register_new_images(config, ImageStore(config.dataset))


@task(cache_policy=NONE, **IO_RETRIES)
def plan_chunks(
    config: PipelineConfig, chunk_size: int, max_chunks: int | None
) -> list[list[str]]:
    return steps.plan_chunks(ImageStore(config.dataset), chunk_size, max_chunks)


@task(cache_policy=NONE, **IO_RETRIES)
def annotate_chunk(
    config: PipelineConfig, run_id: str, sample_ids: list[str]
) -> steps.BatchReport:
    return steps.annotate_images(config, ImageStore(config.dataset), run_id, sample_ids)


@flow(name="annotate-chunks-dask")
def annotate_chunks_in_parallel(
    config: PipelineConfig,
    run_id: str,
    chunks: list[list[str]],
    progress_id: UUID,
    pending: int,
) -> list[steps.BatchReport]:
    """All chunks at once on the flow's (Dask) task runner; progress as each one finishes."""
    futures = [annotate_chunk.submit(config, run_id, chunk) for chunk in chunks]
    batches: list[steps.BatchReport] = []
    for future in as_completed(futures):
        batches.append(future.result())
        _report_progress(progress_id, batches, pending)
    return batches


def _report_progress(progress_id: UUID, batches: list[steps.BatchReport], pending: int) -> None:
    done = sum(b.images for b in batches)
    update_progress_artifact(progress_id, min(100.0, 100.0 * done / max(pending, 1)))


@contextmanager
def one_run_per_dataset(dataset: str) -> Iterator[None]:
    """Hold the Prefect concurrency slot ``annotate-<dataset>`` (limit 1, created on first use).

    Two runs on one dataset (a schedule firing while a manual run goes on) then take turns:
    the second waits, then finds nothing new. The store's unique content hash would already
    prevent duplicate samples; the slot also prevents detecting the same image twice. The slot
    is leased: a killed run frees it when the lease (5 minutes) runs out.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = artifact_key("annotate", dataset)
    with get_client(sync_client=True) as client:
        # Look before creating: creating one that exists makes the server log a UNIQUE
        # constraint traceback (into the CLI's output with the ephemeral API) on every rerun.
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
            except ObjectAlreadyExists:  # another run created it since we looked
                pass
    with concurrency(name, occupy=1, strict=True):
        yield


@task(cache_policy=NONE, **IO_RETRIES)
def triage_new_images(config: PipelineConfig) -> dict[str, int]:
    return ImageStore(config.dataset).apply_triage(config.triage, states=("predicted",))


@task(cache_policy=NONE)
def dataset_totals(config: PipelineConfig) -> str:
    return steps.dataset_totals_markdown(ImageStore(config.dataset))


@task(cache_policy=NONE)
def summarise(
    config: PipelineConfig,
    run_id: str,
    discovery: steps.DiscoveryReport,
    batches: list[steps.BatchReport],
    wall_seconds: float,
    routed: dict[str, int],
) -> steps.AnnotationSummary:
    return steps.summarise(config, run_id, discovery, batches, wall_seconds, routed)


@flow(name="annotate", log_prints=True)
def annotate(
    sources: list[str] | None = None,
    dataset: str | None = None,
    config_path: str | None = None,
    model: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    image_size: int | None = None,
    min_confidence: float | None = None,
    tta: list[Literal["hflip", "upscale"]] | None = None,
    second_model: str | None = None,
    chunk_size: int | None = None,
    max_chunks: int | None = None,
    task_runner: str = "local",
) -> dict:
    """Pre-annotate every new image of the sources into a FiftyOne dataset.

    Args:
        sources: folders, files or globs; empty uses the config's sources.
        dataset: FiftyOne dataset name; empty uses the config's.
        config_path: a pipeline YAML config; empty uses configs/default.yaml.
        model: weights path or name (looked up in $BOOTSTRAP_MODELS, else downloaded).
        device: auto, cpu, cuda or cuda:N.
        batch_size: images per model call.
        image_size: inference size in pixels (a multiple of 32).
        min_confidence: the lowest score stored (at most 0.1).
        tta: test-time views whose boxes are fused in: hflip, upscale (one inference pass each).
        second_model: a second detector whose boxes are fused in, e.g. yolo26n.pt.
        chunk_size: images per detection task (default 8 batches).
        max_chunks: stop after this many chunks; the rest stays pending for the next run.
        task_runner: where chunks run: local (one after another in this process), dask or
            dask:N (N local Dask worker processes), or a Dask scheduler address tcp://host:8786.
    """
    check_task_runner(task_runner)
    started = time.perf_counter()
    config = config_from_flags(
        config_path,
        dataset=dataset,
        sources=sources,
        model=model,
        device=device,
        batch_size=batch_size,
        image_size=image_size,
        min_confidence=min_confidence,
        tta=tta,
        second_model=second_model,
    )
    run_id = str(flow_run.get_id() or "local")
    check_setup(config)
    with one_run_per_dataset(config.dataset):
        discovery = discover_new_images(config)
        progress_id = create_progress_artifact(
            progress=0.0, key=artifact_key("annotate-progress", config.dataset),
            description=f"Images annotated of {discovery.pending} pending",
        )
        chunks = plan_chunks(config, chunk_size or steps.default_chunk_size(config), max_chunks)
        batches: list[steps.BatchReport] = []
        if task_runner == "local" or not chunks:
            for chunk in chunks:
                batches.append(annotate_chunk(config, run_id, chunk))
                _report_progress(progress_id, batches, discovery.pending)
        else:
            parallel = annotate_chunks_in_parallel.with_options(
                task_runner=dask_task_runner(task_runner)
            )
            batches = parallel(config, run_id, chunks, progress_id, discovery.pending)
        update_progress_artifact(progress_id, 100.0)
        routed = triage_new_images(config)
    summary = summarise(config, run_id, discovery, batches, time.perf_counter() - started, routed)
    create_markdown_artifact(
        markdown=(
            f"# Annotate `{config.dataset}`\n\n{summary.to_markdown()}\n\n"
            f"{dataset_totals(config)}"
        ),
        key=artifact_key("annotate-summary", config.dataset),
        description="Pre-annotation summary",
    )
    return summary.to_dict()

