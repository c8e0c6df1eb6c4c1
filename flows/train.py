"""The ``train`` flow: fine-tune the dataset's detector on its final labels, register the version,
promote it when it beats the current detector (``bootstrap.training.train_version``).

Artifacts: ``train-progress-<dataset>`` (epochs done, updated per epoch while training runs),
``train-<dataset>`` (the decision, the figures against the current detector, loss and mAP per
epoch) and ``train-plot-<dataset>`` (the same per epoch as a PNG, a ``data:`` URI as the
evaluate flow's plots: the UI cannot read the flow machine's files).
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from bootstrap.config import PipelineConfig, TrainOptions, load_pipeline_config
from bootstrap.store import ImageStore
from bootstrap.training import TrainingOutcome, history_markdown, plot_history, train_version
from flows import artifact_key


@task(name="train-version", cache_policy=NONE)
def train_version_task(config: PipelineConfig, base: str | None, run_id: str) -> TrainingOutcome:
    logger = get_run_logger()
    progress_id = create_progress_artifact(
        progress=0.0, key=artifact_key("train-progress", config.dataset),
        description=f"Epochs done of at most {config.train.epochs}",
    )

    def on_epoch(record) -> None:
        logger.info("%s", record.line())
        update_progress_artifact(progress_id, min(100.0, 100.0 * record.epoch / record.epochs))

    outcome = train_version(ImageStore.open_existing(config.dataset), config, base, on_epoch, run_id)
    update_progress_artifact(progress_id, 100.0)
    return outcome


def publish_training(outcome: TrainingOutcome) -> None:
    """The decision and per-epoch table (markdown) and the per-epoch plot (image artifact)."""
    dataset = outcome.version.dataset
    with tempfile.TemporaryDirectory() as folder:
        png = plot_history(outcome.version.history, Path(folder) / "training.png")
        uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    create_image_artifact(image_url=uri, key=artifact_key("train-plot", dataset),
                          description=f"{outcome.version.version}: loss and mAP per epoch")
    create_markdown_artifact(
        markdown=f"{history_markdown(outcome)}\n\n![loss and mAP per epoch]({uri})",
        key=artifact_key("train", dataset), description=outcome.decision,
    )


@flow(name="train", log_prints=True)
def train(
    dataset: str,
    config_path: str | None = None,
    training: TrainOptions = TrainOptions(),  # type: ignore[valid-type]
    base: str | None = None,
) -> dict:
    """Fine-tune the dataset's detector on its final labels and register the new version; it
    replaces the current detector only when it scores better on the validation split.

    Args:
        dataset: FiftyOne dataset name.
        config_path: a pipeline YAML config; empty uses configs/default.yaml.
        training: training settings over the config's (epochs, image size, time budget,
            device, models folder...); empty fields keep it.
        base: weights to fine-tune from (a version such as v2, a model name, a path); empty:
            the dataset's current detector.
    """
    config = load_pipeline_config(config_path, dataset=dataset, train=training)
    outcome = train_version_task(config, base, str(flow_run.get_id() or "local"))
    publish_training(outcome)
    get_run_logger().info("%s", outcome.decision)
    return outcome.to_dict()
