"""The ``improve`` flow, the bootstrap loop in one run: train -> re-annotate the images no person
has decided -> re-triage -> queue the next review batch.

It stops after training when the new version is not better than the current detector on the
validation split: the current detector stays, and the log and the ``improve-<dataset>`` artifact
say so. Re-annotating holds the dataset's lease (``annotate:<dataset>``), as ``annotate`` does.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from bootstrap.config import PipelineConfig, TrainOptions, load_pipeline_config
from bootstrap.lease import DEFAULT_WAIT_SECONDS, hold_lease
from bootstrap.reannotate import ReannotationReport, reannotate
from bootstrap.review import ReviewQueue, queue_markdown
from bootstrap.review_learning import effective_triage, queue_batch
from bootstrap.store import ImageStore
from bootstrap.triage import apply_triage
from flows import artifact_key
from flows.train import publish_training, train_version_task


@task(name="reannotate", cache_policy=NONE)
def reannotate_task(config: PipelineConfig, run_id: str) -> ReannotationReport:
    return reannotate(config, "current", run_id)


@task(name="retriage", cache_policy=NONE)
def retriage_task(config: PipelineConfig) -> dict[str, int]:
    store = ImageStore.open_existing(config.dataset)
    return apply_triage(store, effective_triage(store, config.triage))


@task(name="queue-next-batch", cache_policy=NONE)
def queue_task(config: PipelineConfig, budget: int | None) -> tuple[ReviewQueue, dict[str, int]]:
    store = ImageStore.open_existing(config.dataset)
    return queue_batch(store, config, budget), store.state_counts()


@flow(name="improve", log_prints=True)
def improve(
    dataset: str,
    config_path: str | None = None,
    training: TrainOptions = TrainOptions(),  # type: ignore[valid-type]
    base: str | None = None,
    review_budget: int | None = 50,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    force: bool = False,
) -> dict:
    """Fine-tune on what people confirmed; when the new version is better, re-annotate what no
    person has decided with it, re-triage and queue the next batch for review.

    Args:
        dataset: FiftyOne dataset name.
        config_path: a pipeline YAML config; empty uses configs/default.yaml.
        training: training settings over the config's (epochs, image size, time budget...).
        base: weights to fine-tune from; empty: the dataset's current detector.
        review_budget: at most this many images in the next review batch.
        wait_seconds: how long to wait while another live run annotates the dataset.
        force: take the dataset's lease from the run holding it, even a live one.
    """
    logger = get_run_logger()
    config = load_pipeline_config(config_path, dataset=dataset, train=training)
    run_id = str(flow_run.get_id() or "local")
    outcome = train_version_task(config, base, run_id)
    publish_training(outcome)
    key = artifact_key("improve", config.dataset)
    if not outcome.promoted:
        logger.warning("stopping early: %s", outcome.decision)
        create_markdown_artifact(
            markdown=f"# Improve `{config.dataset}`: stopped early\n\n**{outcome.decision}**\n\n"
            "Nothing was re-annotated; the review queue is unchanged.",
            key=key, description="stopped early: the current detector stays",
        )
        return {"training": outcome.to_dict(), "promoted": False, "stopped_early": True}
    logger.info("%s", outcome.decision)
    with hold_lease(f"annotate:{config.dataset}", run_id, wait_seconds=wait_seconds, force=force,
                    logger=logger):
        report = reannotate_task(config, run_id)
        routed = retriage_task(config)
    queue, states = queue_task(config, review_budget)
    create_markdown_artifact(
        markdown=f"# Improve `{config.dataset}`\n\n**{outcome.decision}**\n\n## Re-annotated\n\n"
        f"{report.to_markdown()}\n\n{queue_markdown(config.dataset, queue, states)}",
        key=key, description=f"{outcome.version.version} re-annotated the undecided images",
    )
    return {"training": outcome.to_dict(), "promoted": True, "stopped_early": False,
            "reannotated": report.to_dict(), "routed": routed, "queued": len(queue.sample_ids)}
