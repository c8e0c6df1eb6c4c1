"""Label Studio as the review backend: push the review queue, pull the annotators' boxes back.

Label Studio runs as a separate service (``make labelstudio``: its own venv, loopback only) and
we talk to it over its REST API with a small ``httpx`` client. Why not FiftyOne's Label Studio
backend: it needs ``label_studio_sdk>=1.0``, whose dependencies conflict with our pinned set, and
we use six endpoints. ``httpx`` is already installed with Prefect.

- ``push_review_queue``: one Label Studio project per dataset; one task per queued image, with
  our working boxes (``labels``) as a prediction: each result's ``id`` is our box id and its
  ``score`` the box confidence, the prediction's score the image's lowest box confidence (so
  annotators can sort the least sure images first). The task's ``data`` holds the sample id;
  the dataset's ``info["label_studio"]`` holds the project id. Pushing twice adds nothing.
- ``pull_annotations``: for each finished task, write the annotator's decisions into ``labels``
  by the reviewer's contract (``bootstrap.review``); ``bootstrap review apply`` then makes them
  final. A Label Studio annotation is the complete set of boxes for its image, so an automatic
  box the annotator deleted, moved, resized or relabelled gets the ``reject`` tag, and every
  changed or new box is added with ``provenance="human"``. Boxes a person already decided in
  our dataset are never changed. Pulling twice changes nothing.

Boxes: FiftyOne stores relative ``[x, y, w, h]`` (top-left, 0..1); Label Studio percent
``{x, y, width, height}`` (top-left, 0..100), optionally rotated about the top-left corner.
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from bson import ObjectId

from bootstrap.schema import (
    LABELS,
    PRIORITY,
    REJECT_TAG,
    REVIEWED_BY,
    REVIEWED_TAG,
    STATE,
    ImageState,
    Provenance,
)
from bootstrap.store import ImageStore, is_human_decided

log = logging.getLogger(__name__)

URL_ENV = "LABEL_STUDIO_URL"
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
#: The same variable Label Studio reads: images are served only from below this folder.
FILES_ROOT_ENV = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
DEFAULT_URL = "http://127.0.0.1:8080"

#: Names in the label config; results from other controls are ignored on pull.
FROM_NAME = "label"
TO_NAME = "image"
#: Sample field recording which annotation version was pulled ("task:annotation:updated_at").
PULLED_FIELD = "label_studio_annotation"
INFO_KEY = "label_studio"
#: Two boxes whose coordinates differ by less than this (relative units) are the same box.
SAME_BOX_TOLERANCE = 1e-6


class LabelStudioError(RuntimeError):
    """Label Studio answered with an error, or the data cannot be pushed as it is."""


class LabelStudioUnreachable(LabelStudioError):
    """No Label Studio server answers at the configured URL."""


class LabelStudioAuthError(LabelStudioError):
    """Label Studio refused the API token."""


# -- box conversion (pure) ---------------------------------------------------------------


def to_label_studio_box(bounding_box: Sequence[float]) -> dict[str, float]:
    """FiftyOne relative ``[x, y, w, h]`` -> Label Studio percent ``{x, y, width, height}``."""
    x, y, w, h = (float(v) for v in bounding_box)
    return {"x": x * 100.0, "y": y * 100.0, "width": w * 100.0, "height": h * 100.0}


def from_label_studio_box(value: dict, width: float = 1.0, height: float = 1.0) -> list[float]:
    """Label Studio percent box (a result's ``value``) -> FiftyOne relative ``[x, y, w, h]``.

    A rotated box (``rotation`` in degrees, clockwise about its top-left corner, in pixels of
    an image ``width`` x ``height``) becomes the axis-aligned box that encloses it: our labels
    have no rotation.
    """
    x, y = float(value["x"]) / 100.0, float(value["y"]) / 100.0
    w, h = float(value["width"]) / 100.0, float(value["height"]) / 100.0
    rotation = float(value.get("rotation") or 0.0) % 360.0
    if rotation == 0.0:
        return [x, y, w, h]
    cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    corners = [
        (x + (dx * width * cos - dy * height * sin) / width,
         y + (dx * width * sin + dy * height * cos) / height)
        for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))
    ]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def label_config(classes: Iterable[str]) -> str:
    """The labelling interface: one image, rectangles with our classes."""
    labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n'
        "  </RectangleLabels>\n"
        "</View>"
    )


def box_to_result(box, width: int, height: int) -> dict:
    """One of our boxes as a Label Studio ``rectanglelabels`` result; its id is our box id."""
    result = {
        "id": box.id,
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": to_label_studio_box(box.bounding_box) | {
            "rotation": 0, "rectanglelabels": [box.label],
        },
    }
    if box.confidence is not None:
        result["score"] = float(box.confidence)
    return result


def result_box(result: dict) -> tuple[str, list[float]] | None:
    """``(label, relative [x, y, w, h])`` of a rectangle result, or None for any other result."""
    value = result.get("value") or {}
    labels = value.get("rectanglelabels")
    if result.get("from_name") != FROM_NAME or not labels or "width" not in value:
        return None
    size = (result.get("original_width") or 1.0, result.get("original_height") or 1.0)
    return labels[0], from_label_studio_box(value, *size)


def same_box(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(float(u) - float(v)) < SAME_BOX_TOLERANCE for u, v in zip(a, b, strict=True))


# -- the HTTP client ---------------------------------------------------------------------


@dataclass(frozen=True)
class LabelStudioSettings:
    """Where Label Studio is and how we log in; from the environment by default."""

    url: str = DEFAULT_URL
    token: str = ""
    files_root: str = ""

    @classmethod
    def from_env(cls, url: str | None = None, token: str | None = None,
                 files_root: str | None = None) -> LabelStudioSettings:
        """Settings from arguments, else ``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY`` and
        ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``.

        Raises:
            LabelStudioError: no token.
        """
        settings = cls(
            url=(url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/"),
            token=token or os.environ.get(TOKEN_ENV, ""),
            files_root=files_root or os.environ.get(FILES_ROOT_ENV, ""),
        )
        if not settings.token:
            raise LabelStudioError(
                f"no Label Studio API token: set {TOKEN_ENV} (make labelstudio prints it; or "
                "Label Studio > Account & Settings > Legacy token)"
            )
        return settings


class LabelStudioClient:
    """The few Label Studio REST calls we need, with named errors."""

    def __init__(self, settings: LabelStudioSettings, timeout: float = 60.0):
        import httpx

        self.settings = settings
        self._http = httpx.Client(
            base_url=settings.url,
            headers={"Authorization": f"Token {settings.token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs):
        """One call; returns the decoded JSON (None for an empty body).

        Raises:
            LabelStudioUnreachable: nothing answers at the URL.
            LabelStudioAuthError: the token was refused.
            LabelStudioError: any other error status (with Label Studio's message).
        """
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as err:
            raise LabelStudioUnreachable(
                f"Label Studio at {self.settings.url} did not answer {method} {path} within "
                f"{self._http.timeout.read:.0f} s ({type(err).__name__}); it may be overloaded "
                "or hung: check it, then run the command again (what it did is not repeated)"
            ) from err
        except httpx.TransportError as err:
            raise LabelStudioUnreachable(
                f"Label Studio is not reachable at {self.settings.url} ({err}); start it with "
                f"`make labelstudio` or set {URL_ENV}"
            ) from err
        if response.status_code in (401, 403):
            raise LabelStudioAuthError(
                f"Label Studio at {self.settings.url} refused the API token "
                f"({response.status_code}: {response.text[:200]}); check {TOKEN_ENV}"
            )
        if response.status_code >= 400:
            raise LabelStudioError(
                f"{method} {path}: Label Studio answered {response.status_code}: "
                f"{response.text[:500]}"
            )
        return response.json() if response.content else None

    # -- projects, storage, tasks ------------------------------------------------------------

    def projects(self) -> list[dict]:
        found = self.request("GET", "/api/projects", params={"page_size": 10000})
        return found["results"] if isinstance(found, dict) else found

    def project(self, project_id: int) -> dict | None:
        try:
            return self.request("GET", f"/api/projects/{project_id}")
        except LabelStudioAuthError:
            raise
        except LabelStudioError:
            return None

    def create_project(self, title: str, config: str) -> dict:
        return self.request("POST", "/api/projects", json={"title": title, "label_config": config})

    def set_label_config(self, project_id: int, config: str) -> None:
        self.request("PATCH", f"/api/projects/{project_id}", json={"label_config": config})

    def local_storages(self, project_id: int) -> list[dict]:
        return self.request("GET", "/api/storages/localfiles", params={"project": project_id})

    def add_local_storage(self, project_id: int, path: str) -> dict:
        return self.request(
            "POST", "/api/storages/localfiles",
            json={"project": project_id, "title": f"images {path}", "path": path,
                  "use_blob_urls": True},
        )

    def import_tasks(self, project_id: int, tasks: list[dict]) -> dict:
        return self.request("POST", f"/api/projects/{project_id}/import", json=tasks)

    def tasks(self, project_id: int, page_size: int = 100) -> list[dict]:
        """Every task of the project with its data, predictions and annotations.

        (The project export lists predictions by id only, so the task list is used.)
        """
        found: list[dict] = []
        page = 1
        while True:
            answer = self.request(
                "GET", "/api/tasks",
                params={"project": project_id, "fields": "all", "page": page,
                        "page_size": page_size},
            )
            found += answer["tasks"]
            if not answer["tasks"] or len(found) >= answer["total"]:
                return found
            page += 1

    def user_email(self, user_id: int) -> str | None:
        """The user's email; None when Label Studio has no such user (404). Any other error
        is raised: a reviewer recorded by number because the server failed would be wrong."""
        try:
            return self.request("GET", f"/api/users/{user_id}").get("email")
        except LabelStudioError as err:
            if " answered 404:" in str(err):
                return None
            raise


# -- push --------------------------------------------------------------------------------


@dataclass
class PushReport:
    project_id: int
    project_url: str
    queued: int = 0
    created: int = 0
    already_there: int = 0
    boxes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def project_title(dataset: str) -> str:
    # Label Studio limits titles to 50 characters.
    return f"bootstrap {dataset}"[:50]


def ensure_project(client: LabelStudioClient, store: ImageStore, classes: Sequence[str]) -> int:
    """The dataset's project (reused when it exists; its labels extended when classes are new).

    The project id is remembered in the dataset's ``info``; a project of that title is reused
    when the id is unknown to this server (e.g. a new Label Studio data dir).
    """
    info = dict(store.dataset.info.get(INFO_KEY) or {})
    title = project_title(store.name)
    project = None
    if info.get("url") == client.settings.url and info.get("project"):
        project = client.project(info["project"])
    if project is None:
        project = next((p for p in client.projects() if p.get("title") == title), None)
    if project is None:
        project = client.create_project(title, label_config(classes))
        log.info("created Label Studio project %s (%s)", project["id"], title)
    else:
        config = project.get("label_config") or "<View/>"
        known = [label.get("value") for label in ET.fromstring(config).iter("Label")]
        missing = [c for c in classes if c not in known]
        if missing:  # only ever add labels: existing annotations may use the old ones
            client.set_label_config(project["id"], label_config(known + missing))
    if info != {"url": client.settings.url, "project": project["id"]}:
        store.dataset.info[INFO_KEY] = {"url": client.settings.url, "project": project["id"]}
        store.dataset.save()
    return project["id"]


def image_url(filepath: str, files_root: str) -> str:
    """The URL Label Studio serves a local image at (``/data/local-files/?d=...``).

    Raises:
        LabelStudioError: the image is not below the files root.
    """
    relative = _relative_to_root(filepath, files_root)
    return "/data/local-files/?d=" + quote(relative)


def _relative_to_root(path: str, files_root: str) -> str:
    if not files_root:
        raise LabelStudioError(
            f"{FILES_ROOT_ENV} is not set: set it to the folder Label Studio serves images from "
            "(the same value `make labelstudio` started it with)"
        )
    root = Path(files_root).resolve()
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        raise LabelStudioError(
            f"image {path} is not below {FILES_ROOT_ENV}={files_root}: Label Studio can only "
            "serve images from below that folder; start it with a root that holds your images"
        ) from None


def _ensure_storages(client: LabelStudioClient, project_id: int, folders: set[str]) -> None:
    """Register each image folder as a local-files storage unless one already covers it."""
    known = [Path(s["path"]) for s in client.local_storages(project_id)]
    for folder in sorted(folders):
        path = Path(folder)
        if not any(path == k or k in path.parents for k in known):
            client.add_local_storage(project_id, folder)
            known.append(path)


def push_review_queue(
    store: ImageStore, client: LabelStudioClient, sample_ids: Sequence[str]
) -> PushReport:
    """Create (or reuse) the dataset's project and import one task per sample not there yet,
    with the sample's working boxes as a scored prediction.

    Raises:
        LabelStudioError (and subclasses): unreachable, token refused, image outside the root.
    """
    view = store.dataset.select(list(sample_ids), ordered=True)
    ids, paths, metas, working, priorities = view.values(
        ["id", "filepath", "metadata", LABELS, PRIORITY]
    )
    files_root = client.settings.files_root
    for path in paths:  # fail before creating anything in Label Studio
        _relative_to_root(path, files_root)
    box_labels = {d.label for w in working if w is not None for d in w.detections}
    classes = list(store.dataset.default_classes or [])
    classes += sorted(box_labels - set(classes))
    project_id = ensure_project(client, store, classes)
    report = PushReport(project_id, f"{client.settings.url}/projects/{project_id}",
                        queued=len(ids))
    existing = {t["data"].get("sample_id") for t in client.tasks(project_id)}
    tasks, folders = [], set()
    for sid, path, meta, labels, priority in zip(
        ids, paths, metas, working, priorities, strict=True
    ):
        if sid in existing:
            report.already_there += 1
            continue
        if meta is None or not meta.width or not meta.height:
            raise LabelStudioError(f"sample {sid} ({path}) has no image size; annotate it first")
        boxes = list(labels.detections) if labels is not None else []
        results = [box_to_result(b, meta.width, meta.height) for b in boxes]
        scores = [b.confidence for b in boxes if b.confidence is not None]
        models = {getattr(b, "model", None) for b in boxes} - {None}
        tasks.append({
            "data": {
                "image": image_url(path, files_root),
                "sample_id": sid,
                "dataset": store.name,
                "filepath": path,
                "priority": priority,
            },
            "predictions": [{
                "model_version": ",".join(sorted(models)) or "bootstrap",
                "score": min(scores) if scores else 0.0,
                "result": results,
            }],
        })
        folders.add(str(Path(path).resolve().parent))
        report.boxes += len(results)
    if tasks:
        _ensure_storages(client, project_id, _common_folders(folders))
        client.import_tasks(project_id, tasks)
        report.created = len(tasks)
    log.info("pushed %d new tasks to Label Studio project %s", report.created, project_id)
    return report


def _common_folders(folders: set[str]) -> set[str]:
    """One storage for the common parent of all image folders (one storage per push)."""
    return {os.path.commonpath(sorted(folders))} if folders else set()


# -- pull --------------------------------------------------------------------------------


@dataclass
class PullReport:
    project_id: int
    tasks: int = 0
    annotated: int = 0
    pulled: int = 0  # images written this time
    unchanged: int = 0  # pulled before, same annotation
    kept: int = 0  # our boxes the annotator left as they were
    rejected: int = 0  # our boxes deleted or changed by the annotator
    drawn: int = 0  # boxes added with provenance human (changed or new)
    human_kept: int = 0  # boxes a person had decided before: never changed
    conflicts: list[str] = field(default_factory=list)  # sample ids not written, with why

    def to_dict(self) -> dict:
        return asdict(self)


def latest_annotation(task: dict) -> dict | None:
    """The task's newest annotation that was not skipped, or None."""
    finished = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not finished:
        return None
    return max(finished, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0))


def annotation_version(task: dict, annotation: dict) -> str:
    return f"{task['id']}:{annotation['id']}:{annotation.get('updated_at') or ''}"


def merge_annotation(working, results: list[dict], reviewer: str | None):
    """Our working boxes after an annotator's Label Studio results.

    ``working`` is a detached copy (from ``values()``); its boxes are tagged in place.
    Returns ``(boxes, counts)``: every box of ``working`` is kept (an automatic box the
    annotator deleted or changed gets the ``reject`` tag; a box a person decided is never
    touched), plus one ``provenance="human"`` box per changed or new result.
    """
    import fiftyone as fo

    drawn = {}
    for result in results:
        parsed = result_box(result)
        if parsed is not None:
            drawn[result.get("id")] = parsed
    boxes = list(working.detections) if working is not None else []
    matched = {box.id: drawn.pop(box.id) for box in boxes if box.id in drawn}
    # Label Studio 1.23's editor keeps our id on a region it took from the prediction, moved or
    # not (tests/browser/test_labelstudio_editor.py); for annotations made otherwise (the API,
    # another version), an unmatched result identical to an unmatched box of ours is that box.
    for box in boxes:
        if box.id in matched or is_human_decided(box):
            continue
        for result_id, (label, xywh) in drawn.items():
            if label == box.label and same_box(xywh, box.bounding_box):
                matched[box.id] = drawn.pop(result_id)
                break
    counts = {"kept": 0, "rejected": 0, "drawn": 0, "human_kept": 0}
    for box in boxes:
        result = matched.get(box.id)
        unchanged = result is not None and result[0] == box.label and same_box(
            result[1], box.bounding_box
        )
        if is_human_decided(box):
            counts["human_kept"] += 1
        elif unchanged:
            counts["kept"] += 1
        else:
            box.tags = [*box.tags, REJECT_TAG]
            counts["rejected"] += 1
            if result is not None:
                drawn[box.id] = result  # moved, resized or relabelled: re-added as human
    for result_id, (label, xywh) in drawn.items():
        boxes.append(fo.Detection(
            label=label, bounding_box=xywh, provenance=Provenance.HUMAN.value,
            reviewer=reviewer, label_studio_id=result_id,
        ))
        counts["drawn"] += 1
    return boxes, counts


def pull_annotations(store: ImageStore, client: LabelStudioClient) -> PullReport:
    """Write finished Label Studio annotations of the dataset's project into ``labels``.

    For each annotated task whose annotation was not pulled yet: boxes by ``merge_annotation``,
    the sample tag ``reviewed`` and ``reviewed_by`` (the annotator's email). An image already
    pulled whose annotation changed afterwards is not written again (it is listed in
    ``conflicts``): what was pulled may already be final.

    Raises:
        LabelStudioError (and subclasses); also when the dataset was never pushed.
    """
    import fiftyone as fo

    info = store.dataset.info.get(INFO_KEY) or {}
    if not info.get("project"):
        raise LabelStudioError(
            f"dataset '{store.name}' has no Label Studio project: push its review queue first"
        )
    project_id = info["project"]
    tasks = client.tasks(project_id)
    report = PullReport(project_id, tasks=len(tasks))
    by_sample = {}
    for task in tasks:
        annotation = latest_annotation(task)
        sid = (task.get("data") or {}).get("sample_id")
        if annotation is not None and sid:
            by_sample[sid] = (task, annotation)
    report.annotated = len(by_sample)
    if not by_sample:
        return report
    if PULLED_FIELD not in store.dataset.get_field_schema():
        store.dataset.add_sample_field(PULLED_FIELD, fo.StringField)
    ids = [ObjectId(sid) for sid in by_sample if ObjectId.is_valid(sid)]
    found = {str(doc["_id"]) for doc in store.read_documents(ids, {"_id": 1})}
    report.conflicts += [
        f"{sid}: no such sample in '{store.name}'" for sid in sorted(set(by_sample) - found)
    ]
    emails: dict = {}
    for _ in range(PULL_ATTEMPTS):
        ids = _pull_images(store, client, ids, by_sample, report, emails)
        if not ids:
            break
    else:
        raise LabelStudioError(
            f"pull: {len(ids)} images of '{store.name}' changed under every one of "
            f"{PULL_ATTEMPTS} attempts; pull again"
        )
    log.info("pulled %d annotated images from Label Studio project %s", report.pulled, project_id)
    return report


#: How often an image that changed in the dataset while it was being pulled is pulled again.
PULL_ATTEMPTS = 5


def _pull_images(store, client, ids, by_sample, report: PullReport, emails: dict) -> list:
    """Merge the annotations of the samples ``ids`` into their working labels: one write per
    image (boxes, pulled version, reviewer and the ``reviewed`` tag together, so an interrupted
    pull leaves each image pulled or not), made only if the image is still as it was read.
    Returns the ids that changed under us."""
    import fiftyone as fo

    now = datetime.now(UTC).replace(tzinfo=None)
    changes, expected, counted = {}, {}, {}
    projection = {LABELS: 1, PULLED_FIELD: 1, STATE: 1, "tags": 1}
    for doc in store.read_documents(ids, projection):
        sid = str(doc["_id"])
        task, annotation = by_sample[sid]
        version, version_before = annotation_version(task, annotation), doc.get(PULLED_FIELD)
        if version_before == version:
            report.unchanged += 1
            continue
        if version_before is not None or doc.get(STATE) == ImageState.REVIEWED.value:
            report.conflicts.append(
                f"{sid}: annotation changed in Label Studio after it was pulled or reviewed; "
                "not written again"
            )
            continue
        reviewer = _annotator(client, annotation, emails)
        current = fo.Detections.from_dict(doc[LABELS]) if doc.get(LABELS) else None
        boxes, counts = merge_annotation(current, annotation.get("result") or [], reviewer)
        tags = list(doc.get("tags") or [])
        changes[doc["_id"]] = {
            LABELS: fo.Detections(detections=boxes).to_dict(),
            PULLED_FIELD: version,
            REVIEWED_BY: reviewer,
            "tags": tags if REVIEWED_TAG in tags else [*tags, REVIEWED_TAG],
            "last_modified_at": now,
        }
        expected[doc["_id"]] = {LABELS: doc.get(LABELS), PULLED_FIELD: version_before,
                                STATE: doc.get(STATE), "tags": doc.get("tags")}
        counted[doc["_id"]] = counts
    changed = store.bulk_set(changes, expected=expected)
    for oid, counts in counted.items():
        if oid not in changed:
            report.pulled += 1
            for key, value in counts.items():
                setattr(report, key, getattr(report, key) + value)
    return changed


def _annotator(client: LabelStudioClient, annotation: dict, cache: dict) -> str | None:
    """The annotator's email: exports give ``completed_by`` as a user object or an id."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return who.get("email") or (str(who["id"]) if "id" in who else None)
    if isinstance(who, int):
        if who not in cache:
            cache[who] = client.user_email(who) or str(who)
        return cache[who]
    return None
