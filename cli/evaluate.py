"""Measuring against ground truth: ``simulate-review``, ``evaluate``, ``calibrate``
(registered on the app in ``cli.main``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    ConfigOpt,
    DatasetArg,
    JsonOpt,
    column_table,
    err,
    fail,
    open_existing,
    out,
    pipeline_config,
    triage_config,
)

GroundTruthOpt = Annotated[
    Path, typer.Option(help="YOLO folder (data.yaml + labels/) or COCO detection json.")
]
CostVerifyOpt = Annotated[float, typer.Option(help="Seconds per verified box.")]
CostDrawOpt = Annotated[float, typer.Option(help="Seconds per drawn box.")]


def simulate_review(
    dataset: Annotated[str, typer.Argument(help="Dataset name (left unchanged: a clone is used).")],
    ground_truth: GroundTruthOpt,
    budget: Annotated[int | None, typer.Option(help="Images reviewed at most.")] = None,
    config: ConfigOpt = None,
    accept: Annotated[float | None, typer.Option(help="Default accept threshold.")] = None,
    reject: Annotated[float | None, typer.Option(help="Default reject threshold.")] = None,
    cost_image: Annotated[float, typer.Option(help="Seconds per opened image.")] = 1.0,
    cost_verify: CostVerifyOpt = 2.0,
    cost_draw: CostDrawOpt = 7.0,
    signals: Annotated[
        bool, typer.Option("--signals/--no-signals", help="Doubt signals on (config) or off.")
    ] = True,
    folds: Annotated[int | None, typer.Option(
        help="Held-out: split the images into K folds by content hash; fit thresholds on K-1 "
             "(--fit), measure the whole review loop on the fold left out.")] = None,
    loop: Annotated[bool, typer.Option(
        "--loop", help="Simulate the whole loop (batches, learning, stopping rule) on all images.")] = False,
    batch: Annotated[int | None, typer.Option(help="Loop: images per review batch.")] = None,
    learn: Annotated[bool, typer.Option(
        "--learn/--no-learn", help="Loop: learn thresholds from reviewed images after each batch.")] = True,
    stop: Annotated[bool, typer.Option(
        "--stop/--no-stop", help="Loop: stop when the stopping rule says the targets are met.")] = False,
    audit: Annotated[float, typer.Option(help="Loop: share of not-queued images audited at random.")] = 0.0,
    fit: Annotated[str, typer.Option(
        help="Folds: thresholds from the training folds: 'config' (as configured) or 'calibrate'.")] = "config",
    as_json: JsonOpt = False,
) -> None:
    """Play the reviewer from ground truth; report human time and the resulting quality
    (--folds K: held out; --loop: the whole review loop)."""
    from bootstrap.evaluation.costs import CostModel
    from bootstrap.evaluation.ground_truth import GroundTruthError
    from bootstrap.evaluation.simulation import run_simulation

    thresholds = triage_config(config, dataset, accept, reject)
    if not signals:
        thresholds = thresholds.model_copy(
            update={"class_confusion_iou": None, "likely_misses_at": None, "disagreement_at": None}
        )
    store = open_existing(dataset)
    pipeline = pipeline_config(config, dataset)
    if folds is not None or loop:
        _simulate_loop(store, dataset, ground_truth, thresholds, pipeline, folds, batch, learn, stop, audit,
                       fit, CostModel(open_image=cost_image, verify_box=cost_verify, draw_box=cost_draw),
                       as_json)
        return
    try:
        report = run_simulation(
            store, ground_truth, thresholds, budget,
            CostModel(open_image=cost_image, verify_box=cost_verify, draw_box=cost_draw),
            ontology_config=pipeline.ontology, check_accepted=pipeline.review.check_accepted,
        )
    except GroundTruthError as error:
        fail(str(error), code=2)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    table = Table(title=f"simulated review of {dataset}", show_header=False)
    for key, value in report.to_dict().items():
        table.add_row(key, _number(value))
    out.print(table)
    out.print(
        f"Human time: {report.review_seconds / 3600:.2f} h, "
        f"{100 * report.cost_fraction:.1f}% of labelling from scratch "
        f"({report.scratch_seconds / 3600:.2f} h); precision {_number(report.precision)}, "
        f"recall {_number(report.recall)}.",
        soft_wrap=True,
    )


def _simulate_loop(store, dataset, ground_truth, thresholds, pipeline, folds, batch, learn, stop, audit, fit,
                   cost, as_json) -> None:
    from bootstrap.evaluation.ground_truth import GroundTruthError
    from bootstrap.evaluation.holdout import simulate_store

    try:
        result = simulate_store(
            store, ground_truth, thresholds, folds=folds, batch=batch, learn=learn, stop=stop,
            audit=audit, fit=fit, ontology_config=pipeline.ontology, cost=cost,
            check_accepted=pipeline.review.check_accepted,
        )
    except (GroundTruthError, ValueError) as error:
        fail(str(error), code=2)
    if as_json:
        print(json.dumps(result))
        return
    table = column_table(
        f"simulated review loop of {dataset}",
        ("fold", "images", "opened", "shown", "drawn", "human time", "precision", "recall"),
    )
    for name, row in [*((str(i), f) for i, f in enumerate(result["folds"])), ("all", result["pooled"])]:
        table.add_row(name, *(str(row[k]) for k in ("images", "opened", "shown", "drawn")),
                      f"{100 * row['cost_fraction']:.1f}%", f"{row['precision']:.3f}", f"{row['recall']:.3f}")
    out.print(table)


def evaluate(
    dataset: DatasetArg,
    ground_truth: GroundTruthOpt,
    field: Annotated[str, typer.Option(help="predictions (raw model) or labels (working labels).")] = "predictions",
    report: Annotated[Path | None, typer.Option(help="Write report.md + PNG plots here.")] = None,
    simulate: Annotated[
        bool, typer.Option("--simulate/--no-simulate", help="Add the review cost-vs-quality curve.")
    ] = True,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import ground truth and measure precision, recall and mAP per class and confidence band."""
    from bootstrap.evaluation.ground_truth import GroundTruthError, import_ground_truth
    from bootstrap.evaluation.metrics import EVALUATION_FIELDS, evaluate_field
    from bootstrap.ontology import Ontology

    if field not in EVALUATION_FIELDS:
        fail(f"--field: '{field}' is not one of {', '.join(EVALUATION_FIELDS)}", code=2)
    pipeline = pipeline_config(config, dataset)
    store = open_existing(dataset)
    try:
        import_ground_truth(store, ground_truth, Ontology(pipeline.ontology))
        evaluation = evaluate_field(store, field)
    except GroundTruthError as error:
        fail(str(error), code=2)
    result = evaluation.to_dict()
    if report is not None:
        from bootstrap.evaluation.report import write_report
        from bootstrap.evaluation.simulation import cost_quality_curve

        curve = cost_quality_curve(
            store, ground_truth, pipeline.triage, ontology_config=pipeline.ontology,
            check_accepted=pipeline.review.check_accepted,
        ) if simulate else None
        paths = write_report(dataset, evaluation, report, curve)
        result["report"] = {k: str(v) for k, v in paths.items()}
    if as_json:
        print(json.dumps(result))
        return
    s = result["summary"]
    out.print(
        f"{s['field']} vs ground truth on {s['images']} images: precision {_number(s['precision'])}, "
        f"recall {_number(s['recall'])}, mAP {_number(s['mAP'])} "
        f"(TP {s['tp']}, FP {s['fp']}, FN {s['fn']})",
        soft_wrap=True,
    )
    table = column_table(
        "by confidence band",
        ("band", "boxes", "TP", "FP", "precision"),
    )
    for b in result["bands"]:
        table.add_row(b["band"], str(b["boxes"]), str(b["tp"]), str(b["fp"]), _number(b["precision"]))
    out.print(table)
    if report is not None:
        out.print(f"report: {result['report']['markdown']}")


def calibrate(
    dataset: DatasetArg,
    target_precision: Annotated[float, typer.Option(help="Precision auto-accepted boxes must reach.")] = 0.95,
    source: Annotated[str, typer.Option(help="auto, ground_truth or reviewed.")] = "auto",
    min_boxes: Annotated[int, typer.Option(help="Fewer evaluated boxes: keep the defaults.")] = 20,
    max_lost_recall: Annotated[
        float | None,
        typer.Option(
            help="Reject by recall instead: the share of a class's true boxes it may drop. "
            "Default: reject where showing a box stops saving time (--cost-verify / --cost-draw)."
        ),
    ] = None,
    cost_verify: CostVerifyOpt = 2.0,
    cost_draw: CostDrawOpt = 7.0,
    write_config: Annotated[Path | None, typer.Option(help="Write the config with the thresholds here.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Choose per-class accept/reject thresholds that reach a target precision with the most recall."""
    from bootstrap.calibrate import (
        calibrate_from_evaluation,
        calibration_evidence,
        write_calibrated_config,
    )
    from bootstrap.evaluation.costs import CostModel
    from bootstrap.evaluation.ground_truth import GroundTruthError

    pipeline = pipeline_config(config, dataset)
    store = open_existing(dataset)
    try:
        evidence = calibration_evidence(store, source)
        result = calibrate_from_evaluation(
            evidence, target_precision, triage=pipeline.triage,
            min_boxes=min_boxes, max_lost_recall=max_lost_recall,
            cost=CostModel(verify_box=cost_verify, draw_box=cost_draw),
        )
    except (GroundTruthError, ValueError) as error:
        fail(str(error), code=2)
    if write_config is not None:
        try:
            write_calibrated_config(pipeline, result, write_config, config)
        except OSError as error:  # a full disk, a read-only folder: the old file is as it was
            fail(f"cannot write the config to {write_config}: {error.strerror or error}; "
                 "the file there (if any) is unchanged")
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    table = column_table(
        f"calibration of {dataset} for precision {target_precision} ({result.source})",
        ("class", "boxes", "true", "accept", "reject", "precision", "auto recall", "review", "note"),
    )
    for c in result.classes:
        table.add_row(
            c.label, str(c.boxes), str(c.true_boxes), f"{c.accept:.3f}", f"{c.reject:.3f}",
            _number(c.precision), _number(c.accepted_recall), str(c.review_boxes), c.note,
        )
    out.print(table)
    verdict = "reached" if result.reached else "NOT reached"
    out.print(
        f"Target {verdict}: auto-accepted precision {_number(result.precision)} on "
        f"{result.accepted_boxes} boxes; expected review load {result.review_boxes} boxes on "
        f"{result.review_images} of {result.images} images (before doubt signals).",
        soft_wrap=True,
    )
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    if write_config is not None:
        out.print(f"config with these thresholds: {write_config}")


def _number(value) -> str:
    """A measure for people: three decimals, ``-`` when there is nothing to measure."""
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
