"""What the FiftyOne App shows a reviewer: the dataset's App settings (FiftyOne's own
``dataset.app_config``), stored with the dataset so every App session opens with them.

* ``labels`` boxes are coloured by their ``route``: boxes waiting for review in orange, boxes
  triage accepted in green, boxes a person drew (no route) in blue; a box tagged ``reject`` is
  red in the label-tags colouring. Only ``labels`` is drawn at first (raw ``predictions`` and
  ``ground_truth`` can be switched on in the sidebar).
* Boxes show their class and confidence: ``labels`` boxes carry the model's ``confidence``
  (FiftyOne's App settings ``show_label`` / ``show_confidence``, on by default, draw both).
* The App's Annotate tab can draw and edit ``labels`` boxes: the field has a label schema
  (FiftyOne >= 1.13) whose classes are the dataset's classes. A box drawn there carries no
  ``provenance``; the store counts it as a person's (``store.is_human_decided``).
* The sidebar leads with what decides a review: ``state``, ``priority`` and the doubt signals,
  then tags and labels; file bookkeeping and run ids sit in a collapsed group at the end.

Applied when the store opens a dataset (``apply_review_app_config``). A dataset keeps the
settings it has once ours were applied, so a person's own changes in the App (saved as the
dataset's default) are not undone; a new version of ours (``APP_CONFIG_VERSION``) replaces them.
"""

from __future__ import annotations

from bootstrap.schema import (
    CONTENT_HASH,
    FAILURE,
    FILE_MTIME,
    FILE_SIZE,
    GROUND_TRUTH,
    LABELS,
    PREDICTED_AT,
    PREDICTION_MODEL,
    PREDICTION_RUN,
    PREDICTIONS,
    PRIORITY,
    REJECT_TAG,
    REVIEWED_AT,
    REVIEWED_BY,
    SIGNALS,
    STATE,
    Route,
)

#: Bumped when the settings below change, so stored datasets get the new ones.
APP_CONFIG_VERSION = 1
#: Where a dataset records the version of our settings it has (``dataset.info``).
INFO_KEY = "bootstrap_app_config"

ROUTE_COLORS = {Route.REVIEW.value: "#ff8800", Route.ACCEPT.value: "#22aa44"}
#: Boxes without a route (drawn by a person) take the first colour of the pool.
HUMAN_COLOR = "#1f6fff"
REJECT_COLOR = "#e00000"

REVIEW_GROUP = "review"
INTERNAL_GROUP = "internal"

_REVIEW_FIELDS = (STATE, PRIORITY, *SIGNALS, REVIEWED_BY, REVIEWED_AT)
_LABEL_FIELDS = (LABELS, PREDICTIONS, GROUND_TRUTH)
_INTERNAL_FIELDS = (
    "id", "filepath", CONTENT_HASH, FILE_SIZE, FILE_MTIME, FAILURE,
    PREDICTION_MODEL, PREDICTION_RUN, PREDICTED_AT, "created_at", "last_modified_at",
)


def review_color_scheme():
    """``fo.ColorScheme``: ``labels`` coloured by route, ``reject``-tagged boxes red."""
    import fiftyone as fo

    return fo.ColorScheme(
        color_by="value",
        color_pool=[HUMAN_COLOR, "#9933cc", "#009999", "#996633", "#777799"],
        fields=[
            {
                "path": LABELS,
                "colorByAttribute": "route",
                "valueColors": [{"value": v, "color": c} for v, c in ROUTE_COLORS.items()],
            }
        ],
        label_tags={"valueColors": [{"value": REJECT_TAG, "color": REJECT_COLOR}]},
    )


def review_sidebar_groups(dataset) -> list:
    """FiftyOne's default sidebar groups for ``dataset``, reordered for review: a first group
    ``review`` (state, priority, doubt signals, who reviewed), then tags and labels, and every
    bookkeeping field in a last, collapsed group ``internal``."""
    import fiftyone as fo

    schema = dataset.get_field_schema()
    defaults = fo.DatasetAppConfig.default_sidebar_groups(dataset)
    taken = set(_REVIEW_FIELDS) | set(_INTERNAL_FIELDS) | set(_LABEL_FIELDS)
    review = fo.SidebarGroupDocument(
        name=REVIEW_GROUP, paths=[f for f in _REVIEW_FIELDS if f in schema], expanded=True
    )
    labels = fo.SidebarGroupDocument(
        name="labels", paths=[f for f in _LABEL_FIELDS if f in schema], expanded=True
    )
    internal = fo.SidebarGroupDocument(
        name=INTERNAL_GROUP,
        paths=[f for f in _INTERNAL_FIELDS if f == "id" or f in schema],
        expanded=False,
    )
    groups = [review]
    for group in defaults:
        if group.name == "labels":
            groups.append(labels)
            continue
        # Whatever else FiftyOne groups (tags, metadata, fields added later) stays, minus ours.
        paths = [p for p in group.paths if p not in taken]
        if paths or group.name == "tags":
            groups.append(fo.SidebarGroupDocument(
                name=group.name, paths=paths, expanded=group.name != "metadata"
            ))
    return [*groups, internal]


def labels_annotation_schema(dataset) -> dict:
    """FiftyOne's label schema for ``labels`` (what the Annotate tab lets a person draw): boxes
    of the dataset's classes (``default_classes``; any class name when it has none)."""
    schema = dataset.generate_label_schemas(LABELS, scan_samples=False)
    if dataset.default_classes:
        schema |= {"component": "dropdown", "classes": list(dataset.default_classes)}
    return schema


def apply_annotation_schema(dataset) -> bool:
    """Let the App's Annotate tab edit ``labels`` with the dataset's current classes. Returns
    whether anything was written (only when the classes changed or there was no schema)."""
    wanted = labels_annotation_schema(dataset)
    current = dataset.label_schemas.get(LABELS)
    if current is not None and current.get("classes") == wanted.get("classes"):
        return False
    dataset.update_label_schema(LABELS, wanted)
    if LABELS not in dataset.active_label_schemas:
        dataset.activate_label_schemas(LABELS)
    return True


def apply_review_app_config(dataset, force: bool = False) -> bool:
    """Store the review settings as ``dataset``'s App config, unless it has this version of
    them already (``force``: regardless), and keep the Annotate tab's classes those of the
    dataset. Returns whether the App config was written."""
    import fiftyone as fo

    apply_annotation_schema(dataset)
    if not force and dataset.info.get(INFO_KEY) == APP_CONFIG_VERSION:
        return False
    config = dataset.app_config
    config.color_scheme = review_color_scheme()
    config.sidebar_groups = review_sidebar_groups(dataset)
    config.active_fields = fo.ActiveFields(paths=[LABELS])
    dataset.info[INFO_KEY] = APP_CONFIG_VERSION
    dataset.save()
    return True

