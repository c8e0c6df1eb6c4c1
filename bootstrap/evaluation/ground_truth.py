"""Ground truth: reference boxes read with FiftyOne's own YOLO and COCO readers and written,
classes mapped through the ontology, into the ``ground_truth`` field."""

from __future__ import annotations

from pathlib import Path

import yaml

from bootstrap.ontology import Ontology
from bootstrap.schema import GROUND_TRUTH
from bootstrap.store import ImageStore


class GroundTruthError(ValueError):
    """Ground truth that cannot be read or matched to the dataset."""


def load_yolo_ground_truth(root: Path) -> dict:
    """``{image file stem: fo.Detections}`` from ``root/labels/*.txt`` (or ``root/*.txt``) with
    class names from ``root/data.yaml``. An image with no label file is background.

    Raises:
        GroundTruthError: no data.yaml, a malformed line or an unknown class index (file named).
    """
    from fiftyone.utils.yolo import load_yolo_annotations

    root = Path(root)
    data_yaml = root / "data.yaml"
    labels_dir = root / "labels" if (root / "labels").is_dir() else root
    if not data_yaml.is_file():
        raise GroundTruthError(f"{root}: no data.yaml with the class names")
    names = (yaml.safe_load(data_yaml.read_text()) or {}).get("names")
    if not names:
        raise GroundTruthError(f"{data_yaml}: no 'names' with the class names")
    class_names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    truth = {}
    for path in sorted(labels_dir.glob("*.txt")):
        try:
            boxes = load_yolo_annotations(str(path), class_names)
        except (ValueError, IndexError) as err:
            raise GroundTruthError(f"{path}: expected lines 'class cx cy w h' ({err})") from None
        # FiftyOne keeps an index it cannot name as the label "7": that is a wrong file here.
        unknown = sorted({box.label for box in boxes.detections} - set(class_names))
        if unknown:
            raise GroundTruthError(
                f"{path}: class {unknown[0]} is not in the {len(class_names)} names of {data_yaml}"
            )
        truth[path.stem] = boxes
    return truth


def load_coco_ground_truth(json_path: Path) -> dict:
    """``{image file stem: fo.Detections}`` from a COCO detection json (FiftyOne's reader).
    Images listed without annotations are background.

    Raises:
        GroundTruthError: not a COCO detection json, or boxes it cannot place.
    """
    import fiftyone as fo
    from fiftyone.utils.coco import load_coco_detection_annotations

    json_path = Path(json_path)
    try:
        _, classes_map, _, images, annotations = load_coco_detection_annotations(
            str(json_path), extra_attrs=False
        )
    except (ValueError, KeyError, TypeError) as err:
        raise GroundTruthError(f"{json_path}: not a COCO detection json ({err})") from None
    if not classes_map:
        raise GroundTruthError(f"{json_path}: no 'categories' with the class names")
    truth = {}
    for image_id, image in images.items():
        size = (image.get("width"), image.get("height"))
        objects = (annotations or {}).get(image_id, [])
        if objects and not all(size):
            raise GroundTruthError(f"{json_path}: image {image_id} has boxes but no width/height")
        boxes = []
        for obj in objects:
            if obj.category_id not in classes_map:
                raise GroundTruthError(
                    f"{json_path}: annotation {obj.id} has category {obj.category_id}, "
                    f"which 'categories' does not list"
                )
            boxes.append(obj.to_detection(size, classes_map=classes_map))
        truth[Path(image["file_name"]).stem] = fo.Detections(detections=boxes)
    return truth


def load_ground_truth(path: Path) -> dict:
    """YOLO ground truth (a folder with ``data.yaml``) or COCO (a ``.json`` file, or a folder
    holding exactly one); ``{image file stem: fo.Detections}``.

    Raises:
        GroundTruthError: neither layout, or the files cannot be read.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return load_coco_ground_truth(path)
    if path.is_dir() and (path / "data.yaml").is_file():
        return load_yolo_ground_truth(path)
    jsons = sorted(path.glob("*.json")) if path.is_dir() else []
    if len(jsons) == 1:
        return load_coco_ground_truth(jsons[0])
    raise GroundTruthError(
        f"{path}: expected a YOLO folder (data.yaml + labels/) or a COCO detection json"
    )


def import_ground_truth(store: ImageStore, root: Path, ontology: Ontology) -> int:
    """Write ground truth (see ``load_ground_truth``; classes mapped through the ontology, boxes
    of unmapped classes dropped) into the ``ground_truth`` field, matched to images by file
    stem. Returns the number of boxes imported.

    Raises:
        GroundTruthError: unreadable ground truth, or no label file matches any image.
    """
    import fiftyone as fo

    truth = load_ground_truth(root)
    ids, paths = store.dataset.values(["id", "filepath"])
    if truth and not any(Path(p).stem in truth for p in paths):
        raise GroundTruthError(f"{root}: no label file matches any image of '{store.name}' by name")
    values, total = {}, 0
    for sid, path in zip(ids, paths, strict=True):
        boxes = []
        for box in truth[Path(path).stem].detections if Path(path).stem in truth else []:
            label = ontology.dataset_class(box.label)
            if label is not None:
                boxes.append(fo.Detection(label=label, bounding_box=list(box.bounding_box)))
        total += len(boxes)
        values[sid] = fo.Detections(detections=boxes)
    store.dataset.set_values(GROUND_TRUTH, values, key_field="id")
    return total
