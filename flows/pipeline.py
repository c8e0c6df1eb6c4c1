"""The end-to-end ``bootstrap`` flow: annotate -> triage -> queue review -> pause for the
reviewer -> apply -> export.

It only sequences the ``annotate`` and ``review`` flows (each shows as a subflow run in the
Prefect UI, with its own artifacts) and, when ``export_dir`` is given, the ``export`` flow.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow

from flows.annotate import annotate
from flows.review import review


def export_flow() -> Callable[..., dict]:
    """The ``export`` flow (``flows/export.py``), imported on use.

    Raises:
        RuntimeError: this checkout has no ``flows/export.py``.
    """
    try:
        from flows.export import export
    except ImportError as err:
        if err.name not in ("flows.export", "flows"):
            raise  # flows/export.py is there but one of its own imports failed: show that
        raise RuntimeError(
            "export_dir is set but this checkout has no export flow (flows/export.py); "
            "leave export_dir empty or update the project"
        ) from None
    return export


@flow(name="bootstrap", log_prints=True)
def bootstrap(
    sources: list[str] | None = None,
    dataset: str | None = None,
    config_path: str | None = None,
    model: str | None = None,
    task_runner: str = "local",
    review_budget: int | None = 50,
    review_timeout_hours: float = 24.0,
    export_dir: str | None = None,
    export_format: str = "yolo",
    export_split: str = "train=0.8,val=0.2",
) -> dict:
    """Annotate new images, queue the doubtful ones, wait for the reviewer, apply, export.

    Args:
        sources: folders, files or globs; empty uses the config's sources.
        dataset: FiftyOne dataset name; empty uses the config's.
        config_path: a pipeline YAML config; empty uses configs/default.yaml.
        model: weights path or name; empty uses the config's.
        task_runner: local, dask, dask:N or a Dask scheduler address (see the annotate flow).
        review_budget: at most this many images in the review batch.
        review_timeout_hours: how long the run waits for the reviewer before it fails.
        export_dir: export the reviewed dataset here; empty skips the export.
        export_format: yolo or coco.
        export_split: split fractions, e.g. train=0.8,val=0.2.
    """
    # Fail before hours of work, not after the review, when the export cannot run.
    export = export_flow() if export_dir else None
    annotated = annotate(
        sources=sources, dataset=dataset, config_path=config_path, model=model,
        task_runner=task_runner,
    )
    name = annotated["dataset"]
    reviewed = review(
        dataset=name, budget=review_budget, config_path=config_path, retriage=True,
        timeout_hours=review_timeout_hours,
    )
    exported = None
    if export is not None:
        exported = export(
            dataset=name, out_dir=export_dir, format=export_format, split=export_split,
            config_path=config_path,
        )
    return {"dataset": name, "annotate": annotated, "review": reviewed, "export": exported}
