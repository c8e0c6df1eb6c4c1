"""The ``annotate`` flow: register new images, detect them chunk by chunk, triage, summarise.

The steps and their order are the library's (``bootstrap.annotate.run_annotation``); this flow
runs each step as a Prefect task (``PrefectSteps``), the chunks locally or on Dask, holds one
run per dataset, and publishes the progress and summary artifacts. Resumable by construction:
the dataset is the work queue.
"""

from __future__ import annotations

import contextvars
from typing import Annotated
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from pydantic import Field

from bootstrap import annotate as steps
from bootstrap.config import DetectorOptions, PipelineConfig, load_pipeline_config
from bootstrap.lease import DEFAULT_WAIT_SECONDS, hold_lease
from bootstrap.reannotate import resolve_model_version
from bootstrap.store import database_errors
from flows import artifact_key
from flows.runners import check_task_runner, dask_task_runner

# Database and file errors are usually transient (a restarting MongoDB, a flaky mount); a bad
# setup (missing weights, an ontology that does not fit) is not, so check_setup is not retried.
IO_RETRIES = dict(retries=2, retry_delay_seconds=5)


def _task(fn, **options):
    return task(fn, name=fn.__name__.replace("_", "-"), cache_policy=NONE, **options)


TASKS = {
    steps.check_setup: _task(steps.check_setup),
    steps.discover_new_images: _task(steps.discover_new_images, **IO_RETRIES),
    steps.plan_chunks: _task(steps.plan_chunks, **IO_RETRIES),
    steps.annotate_chunk: _task(steps.annotate_chunk, **IO_RETRIES),
    steps.detect_chunk: _task(steps.detect_chunk, **IO_RETRIES),
    steps.store_chunk: _task(steps.store_chunk, **IO_RETRIES),
    steps.triage_new_images: _task(steps.triage_new_images, **IO_RETRIES),
    steps.dataset_totals_markdown: _task(steps.dataset_totals_markdown),
}


class PrefectSteps:
    """Runs the library's steps as Prefect tasks; chunks one after another in this process
    (``local``: each stored by a task in the library's writer thread while the next is
    detected, ``annotate.detect_and_store``) or all at once on a Dask cluster; updates the
    progress artifact per chunk."""

    def __init__(self, task_runner: str, dataset: str):
        self._task_runner = task_runner
        self._dataset = dataset

    def step(self, fn, *args):
        return TASKS[fn](*args)

    def chunks(
        self, config: PipelineConfig, run_id: str, chunks: list[list[str]], pending: int
    ) -> list[steps.BatchReport]:
        progress_id = create_progress_artifact(
            progress=0.0, key=artifact_key("annotate-progress", self._dataset),
            description=f"Images annotated of {pending} pending",
        )
        if self._task_runner == "local" or not chunks:
            # The writer thread runs its task in this flow run's context (as Prefect's own
            # thread pool task runner does), so each store is a task run of this flow run.
            flow_context = contextvars.copy_context()

            def store(detected: steps.DetectedChunk) -> steps.BatchReport:
                return flow_context.copy().run(TASKS[steps.store_chunk], config, run_id, detected)

            batches = steps.detect_and_store(
                chunks, lambda chunk: TASKS[steps.detect_chunk](config, run_id, chunk), store,
                on_stored=lambda done: _report_progress(progress_id, done, pending),
            )
        else:
            parallel = annotate_chunks_in_parallel.with_options(
                task_runner=dask_task_runner(self._task_runner)
            )
            batches = parallel(config, run_id, chunks, progress_id, pending)
        update_progress_artifact(progress_id, 100.0)
        return batches


@flow(name="annotate-chunks-dask")
def annotate_chunks_in_parallel(
    config: PipelineConfig,
    run_id: str,
    chunks: list[list[str]],
    progress_id: UUID,
    pending: int,
) -> list[steps.BatchReport]:
    """All chunks at once on the flow's (Dask) task runner; progress as each one finishes."""
    futures = [TASKS[steps.annotate_chunk].submit(config, run_id, chunk) for chunk in chunks]
    batches: list[steps.BatchReport] = []
    for future in as_completed(futures):
        batches.append(future.result())
        _report_progress(progress_id, batches, pending)
    return batches


def _report_progress(progress_id: UUID, batches: list[steps.BatchReport], pending: int) -> None:
    done = sum(b.images for b in batches)
    update_progress_artifact(progress_id, min(100.0, 100.0 * done / max(pending, 1)))


@flow(name="annotate", log_prints=True)
def annotate(
    sources: list[str] | None = None,
    dataset: str | None = None,
    config_path: str | None = None,
    detector: DetectorOptions = DetectorOptions(),  # type: ignore[valid-type]
    chunk_size: Annotated[int, Field(ge=1)] | None = None,
    max_chunks: Annotated[int, Field(ge=1)] | None = None,
    task_runner: str = "local",
    wait_seconds: Annotated[float, Field(ge=0)] = DEFAULT_WAIT_SECONDS,
    force: bool = False,
) -> dict:
    """Pre-annotate every new image of the sources into a FiftyOne dataset.

    Args:
        sources: folders, files or globs; empty uses the config's sources.
        dataset: FiftyOne dataset name; empty uses the config's.
        config_path: a pipeline YAML config; empty uses configs/default.yaml.
        detector: detector settings over the config's (model, device, batch size, image
            size, confidence floor, test-time views, second model...); empty fields keep it.
        chunk_size: images per detection task (default 8 batches).
        max_chunks: stop after this many chunks; the rest stays pending for the next run.
        task_runner: where chunks run: local (one after another in this process), dask or
            dask:N (N local Dask worker processes), or a Dask scheduler address tcp://host:8786.
        wait_seconds: how long to wait while another live run annotates the same dataset
            (runs on one dataset take turns; a dead run's lease is taken over at once).
        force: take the dataset's lease from the run holding it, even a live one.
    """
    check_task_runner(task_runner)
    config = load_pipeline_config(config_path, dataset=dataset, sources=sources, detector=detector)
    # `detector.model` may name a fine-tuned version of the dataset (v2, current).
    config, _ = resolve_model_version(config)
    runner = PrefectSteps(task_runner, config.dataset)
    run_id = str(flow_run.get_id() or "local")
    # One run per dataset at a time (bootstrap.lease): the second waits, then finds nothing new.
    key = f"annotate:{config.dataset}"
    # A lost database fails the run with a message naming it and what to do (UI and CLI).
    with database_errors(), hold_lease(
        key, run_id, wait_seconds=wait_seconds, force=force, logger=get_run_logger()
    ):
        summary = steps.run_annotation(
            config, run_id=run_id, chunk_size=chunk_size, max_chunks=max_chunks, runner=runner,
        )
    create_markdown_artifact(
        markdown=(
            f"# Annotate `{config.dataset}`\n\n{summary.to_markdown()}\n\n"
            f"{runner.step(steps.dataset_totals_markdown, config)}"
        ),
        key=artifact_key("annotate-summary", config.dataset),
        description="Pre-annotation summary",
    )
    return summary.to_dict()
