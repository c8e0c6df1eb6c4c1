"""The ``evaluate`` flow: import ground truth, evaluate, write the report, publish it.

The plots are published as Prefect image artifacts (``create_image_artifact``) with the PNG
embedded as a ``data:`` URI: the Prefect UI cannot read files from the machine that ran the
flow, and a data URI needs no file server. The markdown artifact embeds the same URIs.
"""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.cache_policies import NONE

from bootstrap.config import PipelineConfig, load_pipeline_config
from bootstrap.evaluation.ground_truth import import_ground_truth
from bootstrap.evaluation.metrics import Evaluation, evaluate_field
from bootstrap.evaluation.report import evaluation_markdown, write_report
from bootstrap.evaluation.simulation import SimulationReport, cost_quality_curve
from bootstrap.ontology import Ontology
from bootstrap.store import ImageStore
from flows import artifact_key


@task(cache_policy=NONE)
def import_truth(config: PipelineConfig, ground_truth: str) -> int:
    return import_ground_truth(ImageStore.open_existing(config.dataset), Path(ground_truth), Ontology(config.ontology))


@task(cache_policy=NONE)
def evaluate_labels(dataset: str, field: str) -> Evaluation:
    return evaluate_field(ImageStore.open_existing(dataset), field)


@task(cache_policy=NONE)
def simulate_budgets(config: PipelineConfig, ground_truth: str) -> list[tuple[str, SimulationReport]]:
    store = ImageStore.open_existing(config.dataset)
    return cost_quality_curve(store, Path(ground_truth), config.triage, ontology_config=config.ontology,
                              check_accepted=config.review.check_accepted)


@task(cache_policy=NONE)
def write_evaluation_report(dataset, evaluation, report_dir, curve) -> dict[str, Path]:
    return write_report(dataset, evaluation, report_dir, curve)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


@flow(name="evaluate", log_prints=True)
def evaluate(
    dataset: str,
    ground_truth: str,
    report_dir: str,
    field: str = "predictions",
    simulate: bool = True,
    config_path: str | None = None,
) -> dict:
    """Measure ``field`` against ground truth and publish the report.

    Args:
        dataset: FiftyOne dataset name.
        ground_truth: YOLO folder (data.yaml + labels/) or COCO detection json.
        report_dir: where report.md and the PNG plots are written.
        field: predictions (raw model output) or labels (working labels).
        simulate: add the review simulation's cost-vs-quality curve (one clone per budget).
        config_path: pipeline config (ontology, triage thresholds for the simulation).
    """
    config = load_pipeline_config(config_path, dataset=dataset)
    import_truth(config, ground_truth)
    evaluation = evaluate_labels(dataset, field)
    curve = simulate_budgets(config, ground_truth) if simulate else None
    paths = write_evaluation_report(dataset, evaluation, report_dir, curve)
    plots = {k: v for k, v in paths.items() if k != "markdown"}
    for kind, path in plots.items():
        create_image_artifact(
            image_url=_data_uri(path), key=artifact_key(f"evaluation-{kind.replace('_', '-')}", dataset),
            description=f"{kind.replace('_', ' ')} ({field})",
        )
    create_markdown_artifact(
        markdown=evaluation_markdown(
            dataset, evaluation, curve, {kind: _data_uri(path) for kind, path in plots.items()}
        ),
        key=artifact_key("evaluation", dataset),
        description=f"Evaluation of {field}",
    )
    return evaluation.to_dict() | {"report": {k: str(v) for k, v in paths.items()}}
