"""Build small FiftyOne datasets by hand (no model): real photos, chosen states and boxes."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from bootstrap.sources import content_hash
from bootstrap.store import NewImage


def add_images(store, paths: list[Path]) -> None:
    """Register ``paths`` with their content hashes and upright sizes."""
    import fiftyone as fo

    store.add_pending(
        NewImage(str(p), content_hash(str(p)), p.stat().st_size, p.stat().st_mtime_ns) for p in paths
    )
    sizes = {}
    for p in paths:
        with Image.open(p) as image:
            sizes[str(p)] = fo.ImageMetadata(width=image.width, height=image.height)
    store.dataset.set_values("metadata", sizes, key_field="filepath")


def set_image(store, path: Path, state: str, boxes: list[dict], field: str = "labels", **fields) -> None:
    """Give one image a state and boxes (dicts of Detection attributes)."""
    import fiftyone as fo

    sample = store.dataset.one(fo.ViewField("filepath") == str(path))
    sample["state"] = state
    sample[field] = fo.Detections(detections=[fo.Detection(**box) for box in boxes])
    for key, value in fields.items():
        sample[key] = value
    sample.save()
