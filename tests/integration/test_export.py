"""Export: YOLO (trainable by ultralytics) and COCO (re-importable) through FiftyOne, on a
hand-built dataset of real photos; splits, class indices, atomicity, identical re-exports."""

from __future__ import annotations

import json
from pathlib import Path

import fiftyone as fo
import pytest

from bootstrap import export as export_module
from bootstrap.export import ExportError, export_dataset, parse_include, parse_split, split_of
from bootstrap.sources import content_hash
from bootstrap.store import ImageStore
from tests.helpers import add_images, set_image

CLASSES = ["person", "car", "dog", "zebra"]  # zebra never appears: the index must still hold
AUTO = dict(provenance="auto", route="accept", confidence=0.9)


@pytest.fixture
def store(dataset_name, coco_images):
    """8 images: 4 auto-accepted, 2 reviewed (one background), 1 waiting for review, 1 empty."""
    images = coco_images[:8]
    store = ImageStore(dataset_name, classes=CLASSES)
    add_images(store, images)
    for i, path in enumerate(images[:4]):
        set_image(store, path, "auto_accepted", [
            dict(label="person", bounding_box=[0.1 + 0.05 * i, 0.1, 0.3, 0.4], **AUTO),
            dict(label="car", bounding_box=[0.5, 0.5, 0.2, 0.2], **AUTO),
        ])
    set_image(store, images[4], "reviewed", [
        dict(label="dog", bounding_box=[0.2, 0.3, 0.25, 0.25], provenance="human"),
        dict(label="car", bounding_box=[0.6, 0.1, 0.1, 0.1], provenance="auto", route="review",
             confidence=0.4),  # never confirmed: not final
        dict(label="person", bounding_box=[0.0, 0.0, 0.1, 0.1], provenance="human", tags=["reject"]),
    ])
    set_image(store, images[5], "reviewed", [])  # background
    set_image(store, images[6], "needs_review", [dict(label="person", bounding_box=[0.1, 0.1, 0.2, 0.2], **AUTO)])
    set_image(store, images[7], "empty", [])
    return store


def _yolo_labels(root: Path) -> dict[str, list[str]]:
    return {p.stem: p.read_text().splitlines() for p in sorted(root.glob("labels/*/*.txt"))}


def test_yolo_export_trains_one_epoch(store, tmp_path):
    out = tmp_path / "yolo"
    manifest = export_dataset(store, out, "yolo", split="train=0.5,val=0.5")
    data = (out / "data.yaml").read_text()
    assert "names" in data and "train: ./images/train/" in data and "val: ./images/val/" in data
    assert manifest["counts"]["images"] == 6 and all(manifest["splits"][s]["images"] for s in ("train", "val"))

    from ultralytics import YOLO

    model = YOLO(str(Path(__import__("os").environ["BOOTSTRAP_MODELS"]) / "yolov8n.pt"))
    model.train(
        data=str(out / "data.yaml"), epochs=1, imgsz=64, batch=4, workers=0, plots=False,
        device="cpu", project=str(tmp_path / "runs"), name="t", verbose=False, val=True, amp=False,
    )
    assert (tmp_path / "runs" / "t" / "weights" / "last.pt").is_file()


def test_only_final_labels_and_background_images_are_exported(store, tmp_path, coco_images):
    manifest = export_dataset(store, tmp_path / "out", "yolo", split="train=1.0")
    labels = _yolo_labels(tmp_path / "out")
    stems = {p.stem for p in coco_images[:8]}
    assert set(labels) == stems - {coco_images[6].stem, coco_images[7].stem}
    assert labels[coco_images[5].stem] == []  # background: an empty label file, not dropped
    assert [line.split()[0] for line in labels[coco_images[4].stem]] == ["2"]  # only the human dog
    assert manifest["counts"] == {
        "images": 6, "background_images": 1, "boxes": 9, "boxes_auto": 8, "boxes_human": 1,
    }
    more = export_dataset(store, tmp_path / "all", "yolo", include="accepted,reviewed,needs_review,empty",
                          split="train=1.0")
    assert more["counts"]["images"] == 8
    assert _yolo_labels(tmp_path / "all")[coco_images[7].stem] == []


def test_coco_export_reimports_with_identical_boxes(store, tmp_path):
    export_dataset(store, tmp_path / "coco", "coco", split="train=0.6,val=0.4")
    expected = {}
    view = export_module.final_labels_view(store)
    for path, dets in zip(*view.values(["filepath", "labels"]), strict=True):
        expected[Path(path).name] = sorted(
            (d.label, tuple(d.bounding_box)) for d in (dets.detections if dets else [])
        )
    found = {}
    for split in ("train", "val"):
        imported = fo.Dataset.from_dir(
            dataset_type=fo.types.COCODetectionDataset, data_path=str(tmp_path / "coco" / split / "data"),
            labels_path=str(tmp_path / "coco" / split / "labels.json"), label_types="detections",
            label_field="detections",
        )
        try:
            for path, dets in zip(*imported.values(["filepath", "detections"]), strict=True):
                found[Path(path).name] = sorted(
                    (d.label, tuple(d.bounding_box)) for d in (dets.detections if dets else [])
                )
        finally:
            imported.delete()
    assert found.keys() == expected.keys()
    for name, boxes in expected.items():
        assert [b[0] for b in found[name]] == [b[0] for b in boxes]
        for (_, got), (_, want) in zip(found[name], boxes, strict=True):
            assert got == pytest.approx(want, abs=1e-9)


def test_class_indices_and_splits_are_stable_as_the_dataset_grows(store, tmp_path, coco_images):
    first = export_dataset(store, tmp_path / "a", "yolo")
    before = {p.stem: p.parent.name for p in (tmp_path / "a").glob("labels/*/*.txt")}
    add_images(store, coco_images[8:20])
    for path in coco_images[8:20]:
        set_image(store, path, "auto_accepted", [dict(label="zebra", bounding_box=[0.1, 0.1, 0.2, 0.2], **AUTO)])
    second = export_dataset(store, tmp_path / "b", "yolo")
    after = {p.stem: p.parent.name for p in (tmp_path / "b").glob("labels/*/*.txt")}
    assert first["classes"] == second["classes"] == CLASSES
    assert (tmp_path / "a" / "data.yaml").read_text() == (tmp_path / "b" / "data.yaml").read_text()
    assert {stem: after[stem] for stem in before} == before
    assert len(after) == len(before) + 12
    zebra = _yolo_labels(tmp_path / "b")[coco_images[8].stem]
    assert [line.split()[0] for line in zebra] == ["3"]
    for path in coco_images[8:20]:
        assert after[path.stem] == split_of(content_hash(str(path)), parse_split("train=0.8,val=0.2"))


@pytest.mark.parametrize("format", ["yolo", "coco"])
def test_reexport_of_unchanged_data_is_identical(store, tmp_path, format):
    export_dataset(store, tmp_path / "one", format)
    export_dataset(store, tmp_path / "two", format)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    for rel in files:
        a, b = (tmp_path / "one" / rel).read_bytes(), (tmp_path / "two" / rel).read_bytes()
        if rel.name == "manifest.json":
            a, b = (
                {k: v for k, v in json.loads(x).items() if k not in export_module.VOLATILE_MANIFEST_FIELDS}
                for x in (a, b)
            )
        assert a == b, rel


def test_interrupted_export_leaves_the_previous_one_untouched(store, tmp_path, monkeypatch):
    out = tmp_path / "out"
    export_dataset(store, out, "yolo")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def fail(*_args, **_kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(export_module, "_write_manifest", fail)
    with pytest.raises(OSError, match="injected"):
        export_dataset(store, out, "coco")
    with pytest.raises(OSError, match="injected"):
        export_dataset(store, tmp_path / "fresh", "yolo")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial folders left


def test_parse_include_and_errors(store, tmp_path):
    assert parse_include("accepted,reviewed") == ("auto_accepted", "reviewed")
    with pytest.raises(ExportError, match="unknown state 'pending'"):
        parse_include("pending")
    with pytest.raises(ExportError, match="unsupported format 'voc'"):
        export_dataset(store, tmp_path / "x", "voc")


def test_export_flow_returns_the_manifest_with_its_run(store, tmp_path, prefect_api):
    from flows.export import export as export_flow

    manifest = export_flow(store.name, str(tmp_path / "flow"), "coco", None, "train=1.0")
    assert manifest["flow_run"] and manifest["format"] == "coco"
    assert manifest["config_hash"] and (tmp_path / "flow" / "train" / "labels.json").is_file()
