"""The ``export`` flow: the final labels as a YOLO or COCO dataset, with its manifest."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from bootstrap.config import PipelineConfig, load_pipeline_config
from bootstrap.export import check_export_target, export_dataset, manifest_markdown
from bootstrap.store import ImageStore
from flows import artifact_key


@task(cache_policy=NONE, retries=1, retry_delay_seconds=5)
def export_final_labels(
    config: PipelineConfig, out_dir: str, format: str, include: list[str] | None, split: str, run_id: str
) -> dict:
    store = ImageStore.open_existing(config.dataset)
    return export_dataset(store, out_dir, format, include, split, config=config, flow_run=run_id)


@flow(name="export", log_prints=True)
def export(
    dataset: str,
    out_dir: str,
    format: str = "yolo",
    include: list[str] | None = None,
    split: str = "train=0.8,val=0.2",
    config_path: str | None = None,
) -> dict:
    """Export the final labels (auto-accepted + reviewed images by default) to ``out_dir``.

    Args:
        dataset: FiftyOne dataset name.
        out_dir: target folder, replaced as a whole when the export is complete.
        format: yolo or coco.
        include: image states to export (default auto_accepted, reviewed).
        split: fractions by content hash, e.g. train=0.8,val=0.2.
        config_path: pipeline config (its hash and thresholds go into the manifest).

    Returns the manifest.
    """
    config = load_pipeline_config(config_path, dataset=dataset)
    check_export_target(out_dir, config.sources)  # a file, a folder of other files, the sources
    manifest = export_final_labels(config, out_dir, format, include, split, str(flow_run.get_id()))
    create_markdown_artifact(
        markdown=manifest_markdown(manifest, out_dir),
        key=artifact_key("export", dataset),
        description="Export manifest",
    )
    return manifest
