"""Export the final labels as a YOLO or COCO dataset, through FiftyOne's exporters.

What is exported (``final_labels_view``): images in the ``include`` states (default
``auto_accepted`` and ``reviewed``; ``needs_review`` and ``empty`` only when asked), and on them
only final boxes: human-decided ones and automatic ones triage accepted, never a box tagged
``reject``. An image with no final box is a background image and is exported with an empty
label file.

Layout: YOLO ``DIR/images/<split>/``, ``DIR/labels/<split>/``, ``DIR/data.yaml``; COCO
``DIR/<split>/data/`` and ``DIR/<split>/labels.json``; both with ``DIR/manifest.json``.

Splits are decided by each image's content hash (``split_of``), so an image keeps its split as
the dataset grows. The class list is the dataset's (ontology or model classes), never the
classes that happen to appear, so every export shares one index. The export is written to a
hidden temporary folder beside ``DIR`` and renamed into place at the end.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections import Counter
from datetime import UTC, datetime
from glob import escape as glob_escape
from pathlib import Path

from bootstrap.config import PipelineConfig
from bootstrap.evaluation.metrics import Rates, match_counts
from bootstrap.schema import (
    CONTENT_HASH,
    GROUND_TRUTH,
    LABELS,
    PREDICTION_MODEL,
    STATE,
    ImageState,
    Provenance,
)
from bootstrap.store import ImageStore, final_box_filter

log = logging.getLogger(__name__)

FORMATS = ("yolo", "coco")
DEFAULT_INCLUDE = (ImageState.AUTO_ACCEPTED.value, ImageState.REVIEWED.value)
INCLUDABLE = DEFAULT_INCLUDE + (ImageState.NEEDS_REVIEW.value, ImageState.EMPTY.value)
MANIFEST = "manifest.json"
#: Manifest fields that change on every run; everything else is identical for unchanged data.
VOLATILE_MANIFEST_FIELDS = ("exported_at", "flow_run")


class ExportError(ValueError):
    """An export that cannot be made as asked."""


class ExportWriteError(ExportError):
    """The export could not be written (disk full, file size limit); the previous one stands."""


def parse_split(text: str) -> dict[str, float]:
    """``"train=0.8,val=0.2"`` -> ``{"train": 0.8, "val": 0.2}`` (order kept).

    Raises:
        ExportError: a malformed part, a repeated name, or fractions that do not add up to 1.
    """
    split: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if not sep or not name.strip() or not 0.0 <= fraction <= 1.0:
            raise ExportError(f"split: expected 'name=fraction' with a fraction in [0, 1], got {part!r}")
        if name.strip() in split:
            raise ExportError(f"split: {name.strip()!r} is given twice")
        split[name.strip()] = fraction
    if not split or abs(sum(split.values()) - 1.0) > 1e-6:
        raise ExportError(f"split: fractions must add up to 1, got {text!r}")
    return split


def split_of(content_hash: str, split: dict[str, float]) -> str:
    """The split of an image: the first 32 bits of its SHA-256 as a number in [0, 1), placed on
    the cumulative fractions. Depends on the image's bytes only, so it never changes as the
    dataset grows."""
    position = int(content_hash[:8], 16) / 2**32
    cumulative = 0.0
    for name, fraction in split.items():
        cumulative += fraction
        if position < cumulative:
            return name
    return next(reversed(split))  # rounding: fractions summing to 0.9999999


def parse_include(include: list[str] | tuple[str, ...] | str | None) -> tuple[str, ...]:
    """States to export: a list or ``"accepted,reviewed"``; ``accepted`` is short for
    ``auto_accepted``. Raises ExportError on an unknown state (listing the valid ones)."""
    if include is None:
        return DEFAULT_INCLUDE
    names = include.split(",") if isinstance(include, str) else list(include)
    states = []
    for name in (n.strip() for n in names if n.strip()):
        state = "auto_accepted" if name == "accepted" else name
        if state not in INCLUDABLE:
            raise ExportError(f"include: unknown state {name!r}; choose from accepted, {', '.join(INCLUDABLE)}")
        states.append(state)
    if not states:
        raise ExportError("include: no state given")
    return tuple(dict.fromkeys(states))


def config_hash(config: PipelineConfig) -> str:
    """SHA-256 of the canonical JSON of a validated config."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def final_labels_view(store: ImageStore, include: tuple[str, ...] = DEFAULT_INCLUDE):
    """Images in the ``include`` states with only their final boxes in ``labels``."""
    from fiftyone import ViewField as F

    return store.dataset.match(F(STATE).is_in(list(include))).filter_labels(
        LABELS, final_box_filter(), only_matches=False
    )


def export_dataset(
    store: ImageStore,
    out_dir: str | Path,
    format: str = "yolo",
    include: list[str] | tuple[str, ...] | str | None = None,
    split: str | dict[str, float] = "train=0.8,val=0.2",
    config: PipelineConfig | None = None,
    flow_run: str | None = None,
    media: bool | str = True,
) -> dict:
    """Export the final labels of ``store`` to ``out_dir`` (replaced as a whole) and return the
    manifest written beside them. ``media``: copy the images (True), or ``"symlink"`` them
    (training exports, ``bootstrap.training``: no second copy of every image).

    Raises:
        ExportError: unknown format or state, a bad split, or a dataset without a class list.
    """
    if format not in FORMATS:
        raise ExportError(f"format: unsupported format '{format}'; the available formats are {FORMATS}")
    states = parse_include(include)
    fractions = parse_split(split) if isinstance(split, str) else dict(split)
    classes = list(store.dataset.default_classes)
    if not classes:
        raise ExportError(
            f"dataset '{store.name}' has no class list (default_classes); annotate it first "
            "(the class list comes from the ontology or the model)"
        )
    out = check_export_target(out_dir, config.sources if config is not None else ())
    _check_holds_no_images(store, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(out)
    view = final_labels_view(store, states)
    ids, hashes, paths = view.values(["id", CONTENT_HASH, "filepath"])
    # FiftyOne's exporters take a file named "..x.jpg" for a path outside the export
    # (fiftyone.core.utils.safe_relpath tests startswith("..")): its YOLO labels land in the
    # images folder and COCO names it by an absolute path into the temporary folder.
    dotted = sorted(p for p in paths if os.path.basename(p).startswith(".."))
    if dotted:
        raise ExportError(
            f"cannot export images whose names start with '..' (FiftyOne's exporters would put "
            f"their labels in the wrong place): {', '.join(dotted[:5])}; rename them"
        )
    by_split: dict[str, list[str]] = {name: [] for name in fractions}
    for sid, content_hash in zip(ids, hashes, strict=True):
        by_split[split_of(content_hash, fractions)].append(sid)

    # The pid in the name tells a later export whether its writer is gone (see above).
    partial = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        partial.mkdir()
        for name, sample_ids in by_split.items():
            # Sorted by path: the exporters number images and boxes in iteration order.
            split_view = view.select(sample_ids).sort_by("filepath")
            if format == "yolo":
                _export_yolo_split(split_view, partial, name, classes, media)
            else:
                _export_coco_split(split_view, partial, name, classes, media)
        manifest = _manifest(store, view, by_split, format, states, fractions, classes, config, flow_run)
        _write_manifest(partial / MANIFEST, manifest)
        _replace_dir(partial, out)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            what = (
                "a file is larger than the file size limit (ulimit -f)" if err.errno == errno.EFBIG
                else f"disk full: no space left to write the export to {out}"
            )
            raise ExportWriteError(
                f"{what} ({err.strerror}); the previous export there is intact (nothing was "
                f"replaced); free space on {out.parent} and run the export again"
            ) from err
        raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("exported %d images of '%s' to %s", len(ids), store.name, out)
    return manifest


def check_export_target(out_dir: str | Path, sources=()) -> Path:
    """The resolved export folder, if an export may be written there: a new or empty folder,
    or a previous export (which it replaces as a whole), never inside a source folder or
    holding one. Checked before any work.

    Raises:
        ExportError: naming ``out_dir`` and what is wrong.
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ExportError(f"out_dir (--out): {out} is a file; the export is a folder: give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(
            f"out_dir (--out): {out} is a folder with files but no {MANIFEST}, so it is not a "
            "previous export: an export replaces its folder as a whole and would delete them; "
            "give a new or empty folder"
        )
    from bootstrap.sources import source_root

    for root in (source_root(source) for source in sources):
        if out == root or root in out.parents:
            raise ExportError(
                f"out_dir (--out): {out} is inside the source folder {root}: the next annotate "
                "run would register the exported copies; export outside the sources"
            )
        if out in root.parents:
            raise ExportError(
                f"out_dir (--out): {out} holds the source folder {root}: replacing the export "
                "would delete the source images; export beside the sources"
            )
    return out


def _check_holds_no_images(store: ImageStore, out: Path) -> None:
    """Refuse an export folder that holds images of the dataset itself (annotated from a
    previous export): replacing it would delete them."""
    if (path := store.first_image_under(out)) is not None:
        raise ExportError(
            f"out_dir (--out): {out} holds images of dataset '{store.name}' (e.g. {path}): "
            "replacing the export would delete them; export to another folder"
        )


def _remove_abandoned_partials(out: Path) -> None:
    """Delete the temporary folders of earlier exports to ``out`` whose process is gone (killed
    with SIGKILL, or the machine lost): nobody will finish them."""
    for partial in out.parent.glob(f".{glob_escape(out.name)}.partial-*"):
        pid = partial.name.rsplit(".partial-", 1)[1].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
            log.info("removing %s, left by export process %s that is gone", partial, pid)
            shutil.rmtree(partial, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _export_yolo_split(view, root: Path, split: str, classes: list[str], media: bool | str = True) -> None:
    import fiftyone as fo

    # yaml_path names the file `data.yaml` directly (FiftyOne's default is dataset.yaml):
    # `yolo train data=DIR/data.yaml` then reads it unchanged. include_path=False keeps the
    # paths relative to the yaml file, so the folder can be renamed and moved.
    view.export(
        export_dir=str(root),
        dataset_type=fo.types.YOLOv5Dataset,
        label_field=LABELS,
        split=split,
        classes=classes,
        yaml_path="data.yaml",
        include_path=False,
        export_media=media,
    )
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    # FiftyOne writes no label file for an image whose label is None (an `empty` image); a
    # background image must still have its (empty) label file.
    for image in images.iterdir():
        (labels / f"{image.stem}.txt").touch(exist_ok=True)
    if not view:  # the exporter writes data.yaml only when it exported something
        _add_yolo_split(root / "data.yaml", split, classes)


def _add_yolo_split(yaml_path: Path, split: str, classes: list[str]) -> None:
    import yaml

    data = yaml.safe_load(yaml_path.read_text()) if yaml_path.is_file() else {}
    data[split] = f"./images/{split}/"
    data["names"] = dict(enumerate(classes))
    yaml_path.write_text(yaml.safe_dump(data, default_flow_style=False))


def _export_coco_split(view, root: Path, split: str, classes: list[str], media: bool | str = True) -> None:
    import fiftyone as fo

    view.export(
        export_dir=str(root / split),
        dataset_type=fo.types.COCODetectionDataset,
        label_field=LABELS,
        classes=classes,
        export_media=media,
        # A fixed info block: FiftyOne would stamp date_created with the current time, and
        # re-exporting unchanged data must give identical files.
        info={"date_created": "", "url": "", "version": ""},
        extra_attrs=["provenance"],
    )


def _manifest(store, view, by_split, format, states, fractions, classes, config, flow_run) -> dict:
    splits, totals = {}, Counter()
    for name, sample_ids in by_split.items():
        provenances = view.select(sample_ids).values(f"{LABELS}.detections.provenance")
        counts = Counter(p for boxes in provenances for p in boxes or [])
        entry = {
            "images": len(sample_ids),
            "background_images": sum(1 for boxes in provenances if not boxes),
            "boxes": sum(counts.values()),
            "boxes_auto": counts.get(Provenance.AUTO.value, 0),
            # Every box not written by the pipeline is a person's (store.is_human_decided).
            "boxes_human": sum(counts.values()) - counts.get(Provenance.AUTO.value, 0),
        }
        splits[name] = entry
        totals.update(entry)
    return {
        "dataset": store.name,
        "format": format,
        "include": list(states),
        "split": fractions,
        "classes": classes,
        "config_hash": config_hash(config) if config is not None else None,
        "models": sorted(m for m in view.distinct(PREDICTION_MODEL) if m),
        # Which model proposed the exported automatic boxes (a fine-tuned version is named
        # <dataset>-vN.pt, bootstrap.model_registry), counted per box.
        "auto_box_models": _auto_box_models(view),
        "thresholds": config.triage.model_dump(mode="json") if config is not None else None,
        "counts": dict(totals),
        "splits": splits,
        "estimated_auto_precision": estimated_auto_precision(view),
        "quality_estimate": _quality_estimate(store, config),
        "flow_run": flow_run,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _auto_box_models(view) -> dict[str, int]:
    models = view.values(f"{LABELS}.detections.model")
    provenances = view.values(f"{LABELS}.detections.provenance")
    counts = Counter(
        model or "unknown"
        for image_models, image_provenances in zip(models, provenances, strict=True)
        for model, provenance in zip(image_models or [], image_provenances or [], strict=True)
        if provenance == Provenance.AUTO.value
    )
    return dict(sorted(counts.items()))


def _quality_estimate(store, config) -> dict:
    """The stopping rule's estimate of the export's precision/recall (bootstrap.stopping)."""
    from bootstrap.config import PipelineConfig
    from bootstrap.review_learning import quality_estimate

    config = config if config is not None else PipelineConfig(dataset=store.name)
    targets = (config.review.target_precision, config.review.target_recall)
    return quality_estimate(store, config.triage).to_dict(targets)


def estimated_auto_precision(view) -> dict | None:
    """Precision (IoU 0.5, class-aware) of the exported automatic boxes against the
    ``ground_truth`` field, on the exported images that have one; None without ground truth."""
    from fiftyone import ViewField as F

    if GROUND_TRUTH not in view.get_field_schema():
        return None
    with_truth = view.exists(GROUND_TRUTH)
    if not with_truth:
        return None
    auto = with_truth.filter_labels(
        LABELS, F("provenance") == Provenance.AUTO.value, only_matches=False
    )
    rates = Rates(*match_counts(auto, LABELS, iou=0.5))
    return {
        "precision": None if rates.precision is None else round(rates.precision, 4),
        "boxes": rates.tp + rates.fp,
        "images": len(with_truth),
        "source": GROUND_TRUTH,
    }


def _write_manifest(path: Path, manifest: dict) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _replace_dir(partial: Path, out: Path) -> None:
    """Move the finished export into place. A previous export is moved aside first and deleted
    after, so the target is always either the old or the new complete export (or, for the
    instant between the two renames, absent)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        os.rename(partial, out)
    except BaseException:
        if old is not None:  # interrupted between the renames: put the previous one back
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def manifest_markdown(manifest: dict, out_dir: str | Path) -> str:
    """The manifest as markdown: images, backgrounds and boxes by provenance per split."""
    rows = [
        f"| {name} | {c['images']} | {c['background_images']} | {c['boxes_auto']} | {c['boxes_human']} |"
        for name, c in manifest["splits"].items()
    ]
    return "\n".join([
        f"# Export of `{manifest['dataset']}` ({manifest['format']}) to `{out_dir}`", "",
        "| split | images | background | auto boxes | human boxes |", "|---|---|---|---|---|",
        *rows, "", f"estimated auto precision: {manifest['estimated_auto_precision']}",
        "", _estimate_line(manifest.get("quality_estimate")),
    ]) + "\n"


def _estimate_line(estimate: dict | None) -> str:
    if not estimate or estimate.get("precision") is None:
        return "Export quality (stopping rule): not estimable yet (no audited image reviewed)."
    return (
        f"Export quality (stopping rule, 95% lower bounds): precision {estimate['precision']:.3f} "
        f"(>= {estimate['precision_low']:.3f}), recall {estimate['recall']:.3f} "
        f"(>= {estimate['recall_low']:.3f}); targets {estimate['targets']}: "
        f"{'met' if estimate['met'] else 'not met'}."
    )

