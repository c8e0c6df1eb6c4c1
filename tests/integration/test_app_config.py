"""The dataset's FiftyOne App settings for reviewers, read back from a real database."""

import json
import subprocess
import sys

from bootstrap.app_config import (
    APP_CONFIG_VERSION,
    INFO_KEY,
    ROUTE_COLORS,
    apply_review_app_config,
)
from bootstrap.store import ImageStore
from bootstrap.triage import SIGNALS


def _stored_app_config(name: str) -> dict:
    """The dataset's App config as a new process reads it from the database."""
    code = (
        "import json, fiftyone as fo;"
        f"ds = fo.load_dataset('{name}');"
        "print(json.dumps(ds.app_config.to_dict(), default=str))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_new_dataset_opens_in_the_app_set_up_for_review(dataset_name):
    ImageStore(dataset_name)
    config = _stored_app_config(dataset_name)

    (labels,) = config["color_scheme"]["fields"]
    assert (labels["path"], labels["colorByAttribute"]) == ("labels", "route")
    assert {c["value"]: c["color"] for c in labels["valueColors"]} == ROUTE_COLORS
    assert config["color_scheme"]["color_by"] == "value"
    assert config["color_scheme"]["label_tags"]["valueColors"][0]["value"] == "reject"
    assert config["active_fields"]["paths"] == ["labels"]

    groups = config["sidebar_groups"]
    first = groups[0]
    assert first["name"] == "review" and first["expanded"] is True
    assert first["paths"][:2] == ["state", "priority"] and set(SIGNALS) <= set(first["paths"])
    last = groups[-1]
    assert last["name"] == "internal" and last["expanded"] is False
    assert {"content_hash", "file_mtime_ns", "prediction_run", "filepath"} <= set(last["paths"])
    # Every field shows in exactly one group.
    paths = [p for g in groups for p in g["paths"]]
    assert len(paths) == len(set(paths))
    assert "labels" in next(g for g in groups if g["name"] == "labels")["paths"]


def test_the_annotate_tab_draws_labels_boxes_of_the_dataset_classes(dataset_name):
    import fiftyone as fo

    ImageStore(dataset_name, classes=["car", "dog"])
    dataset = fo.load_dataset(dataset_name)
    assert dataset.active_label_schemas == ["labels"]
    schema = dataset.label_schemas["labels"]
    assert (schema["type"], schema["classes"]) == ("detections", ["car", "dog"])
    ImageStore(dataset_name, classes=["car", "dog", "cat"])  # the ontology grew
    dataset.reload()
    assert dataset.label_schemas["labels"]["classes"] == ["car", "dog", "cat"]


def test_a_persons_own_app_settings_are_kept_until_ours_change(dataset_name):
    store = ImageStore(dataset_name)
    store.dataset.app_config.color_scheme.color_pool = ["#000000"]  # changed in the App
    store.dataset.save()
    ImageStore(dataset_name)  # reopening does not undo it
    assert _stored_app_config(dataset_name)["color_scheme"]["color_pool"] == ["#000000"]
    assert store.dataset.info[INFO_KEY] == APP_CONFIG_VERSION

    # A dataset set up by an older version of ours gets the new settings on the next open.
    store.dataset.info[INFO_KEY] = APP_CONFIG_VERSION - 1
    store.dataset.save()
    ImageStore(dataset_name)
    assert _stored_app_config(dataset_name)["color_scheme"]["color_pool"] != ["#000000"]
    assert not apply_review_app_config(store.dataset)  # up to date: nothing written
