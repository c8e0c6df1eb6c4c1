"""The end-to-end ``bootstrap`` flow: annotate -> triage -> queue review -> pause for the
reviewer -> apply -> export.

It only sequences the ``annotate`` and ``review`` flows (each shows as a subflow run in the
Prefect UI, with its own artifacts) and, when ``export_dir`` is given, the ``export`` flow.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from bootstrap.config import DetectorOptions, load_pipeline_config
from bootstrap.export import check_export_target
from flows.annotate import annotate
from flows.export import export
from flows.review import review


@flow(name="bootstrap", log_prints=True)
def bootstrap(
    sources: list[str] | None = None,
    dataset: str | None = None,
    config_path: str | None = None,
    detector: DetectorOptions = DetectorOptions(),  # type: ignore[valid-type]
    task_runner: str = "local",
    review_budget: Annotated[int, Field(ge=1)] | None = 50,
    review_timeout_hours: Annotated[float, Field(gt=0)] = 24.0,
    export_dir: str | None = None,
    export_format: str = "yolo",
    export_split: str = "train=0.8,val=0.2",
) -> dict:
    """Annotate new images, queue the doubtful ones, wait for the reviewer, apply, export.

    Args:
        sources: folders, files or globs; empty uses the config's sources.
        dataset: FiftyOne dataset name; empty uses the config's.
        config_path: a pipeline YAML config; empty uses configs/default.yaml.
        detector: detector settings over the config's (see the annotate flow).
        task_runner: local, dask, dask:N or a Dask scheduler address (see the annotate flow).
        review_budget: at most this many images in the review batch.
        review_timeout_hours: how long the run waits for the reviewer before it fails.
        export_dir: export the reviewed dataset here; empty skips the export.
        export_format: yolo or coco.
        export_split: split fractions, e.g. train=0.8,val=0.2.
    """
    # Checked before any work: an export folder that is a file, holds other files, or lies in
    # (or holds) a source folder.
    if export_dir:
        config = load_pipeline_config(config_path, dataset=dataset, sources=sources)
        check_export_target(export_dir, config.sources)
    annotated = annotate(
        sources=sources, dataset=dataset, config_path=config_path, detector=detector,
        task_runner=task_runner,
    )
    name = annotated["dataset"]
    reviewed = review(
        dataset=name, budget=review_budget, config_path=config_path, retriage=True,
        timeout_hours=review_timeout_hours,
    )
    exported = None
    if export_dir:
        exported = export(
            dataset=name, out_dir=export_dir, format=export_format, split=export_split,
            config_path=config_path,
        )
    return {"dataset": name, "annotate": annotated, "review": reviewed, "export": exported}
