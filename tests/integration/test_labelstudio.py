"""Label Studio as the review backend: box conversions (pure, fast), the merge of an annotation
into working labels, and the round trip against a real Label Studio server started here."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import fiftyone as fo
import httpx
import pytest
from typer.testing import CliRunner

from bootstrap.labelstudio import (
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioError,
    LabelStudioSettings,
    LabelStudioUnreachable,
    from_label_studio_box,
    image_url,
    label_config,
    merge_annotation,
    pull_annotations,
    push_review_queue,
    to_label_studio_box,
)
from bootstrap.review import apply_reviews
from tests.helpers import PLAIN_CONFIG, needs_model
from tests.labelstudio_server import LS_BIN, USER, free_port, start_fresh

# -- conversions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box",
    [
        [0.0, 0.0, 1.0, 1.0],
        [0.1, 0.2, 0.3, 0.4],
        [0.123456789, 0.987654321, 0.000123, 0.0125],
        [1 / 3, 2 / 3, 1 / 7, 1 / 9],
        [0.999999, 0.5, 1e-6, 0.25],
    ],
)
def test_box_round_trip_is_exact(box):
    value = to_label_studio_box(box)
    assert value["x"] == pytest.approx(box[0] * 100) and value["height"] == pytest.approx(box[3] * 100)
    back = from_label_studio_box(value | {"rotation": 0})
    assert all(abs(a - b) < 1e-9 for a, b in zip(back, box, strict=True)), (back, box)


@pytest.mark.parametrize(
    ("rotation", "expected"),
    [
        # 200 x 100 image; box at (20, 10) px, 40 x 20 px; rotated about its top-left corner.
        (0, [0.1, 0.1, 0.2, 0.2]),
        (90, [0.0, 0.1, 0.1, 0.4]),  # corners (20,10) (20,50) (0,50) (0,10)
        (180, [-0.1, -0.1, 0.2, 0.2]),
        (360, [0.1, 0.1, 0.2, 0.2]),
    ],
)
def test_rotated_box_becomes_its_enclosing_box(rotation, expected):
    value = {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": rotation}
    got = from_label_studio_box(value, width=200, height=100)
    assert got == pytest.approx(expected, abs=1e-9)


def test_label_config_lists_the_classes_escaped():
    classes = ["person", 'traffic "light"', "a & b <c>"]
    root = ET.fromstring(label_config(classes))
    rect = root.find("RectangleLabels")
    assert rect.get("name") == "label" and rect.get("toName") == "image"
    assert [label.get("value") for label in rect.findall("Label")] == classes


def test_image_outside_the_files_root_is_refused(tmp_path):
    assert image_url(str(tmp_path / "a b" / "x.jpg"), str(tmp_path)) == "/data/local-files/?d=a%20b/x.jpg"
    with pytest.raises(LabelStudioError, match="is not below LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):
        image_url("/etc/x.jpg", str(tmp_path))
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT is not set"):
        image_url("/etc/x.jpg", "")


def test_missing_token_and_unreachable_server_are_named(monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(LabelStudioError, match="no Label Studio API token: set LABEL_STUDIO_API_KEY"):
        LabelStudioSettings.from_env()
    url = f"http://127.0.0.1:{free_port()}"
    with LabelStudioClient(LabelStudioSettings(url=url, token="x"), timeout=5) as client:
        with pytest.raises(LabelStudioUnreachable, match=f"not reachable at {url}"):
            client.projects()


def _result(box_id, label, xywh):
    return {
        "id": box_id, "from_name": "label", "to_name": "image", "type": "rectanglelabels",
        "original_width": 640, "original_height": 480,
        "value": to_label_studio_box(xywh) | {"rotation": 0, "rectanglelabels": [label]},
    }


def test_merge_keeps_rejects_redraws_and_never_touches_human_boxes():
    auto = dict(provenance="auto", confidence=0.5)
    kept = fo.Detection(label="car", bounding_box=[0.1, 0.1, 0.2, 0.2], **auto)
    deleted = fo.Detection(label="car", bounding_box=[0.5, 0.5, 0.1, 0.1], **auto)
    moved = fo.Detection(label="dog", bounding_box=[0.3, 0.3, 0.2, 0.2], **auto)
    relabelled = fo.Detection(label="cat", bounding_box=[0.6, 0.1, 0.2, 0.2], **auto)
    copied = fo.Detection(label="bus", bounding_box=[0.2, 0.6, 0.1, 0.1], **auto)
    human = fo.Detection(label="person", bounding_box=[0.0, 0.0, 0.1, 0.1], provenance="human")
    working = fo.Detections(detections=[kept, deleted, moved, relabelled, copied, human])
    results = [
        _result(kept.id, "car", [0.1, 0.1, 0.2, 0.2]),
        _result(moved.id, "dog", [0.35, 0.3, 0.2, 0.2]),
        _result(relabelled.id, "dog", [0.6, 0.1, 0.2, 0.2]),
        _result("new1", "person", [0.7, 0.7, 0.1, 0.2]),
        _result("editor-id", "bus", [0.2, 0.6, 0.1, 0.1]),  # our box under a new region id
        {"id": "t", "from_name": "comment", "type": "textarea", "value": {"text": ["hi"]}},
    ]  # the human box was deleted in Label Studio: it stays.
    boxes, counts = merge_annotation(working, results, reviewer="ann@x")
    assert counts == {"kept": 2, "rejected": 3, "drawn": 3, "human_kept": 1}
    by_id = {b.id: b for b in boxes}
    assert by_id[kept.id].tags == [] and by_id[copied.id].tags == [] and by_id[human.id].tags == []
    assert by_id[human.id].bounding_box == [0.0, 0.0, 0.1, 0.1]
    assert {b.id for b in boxes if "reject" in b.tags} == {deleted.id, moved.id, relabelled.id}
    drawn = sorted(
        (b.label, [round(v, 9) for v in b.bounding_box], b.label_studio_id, b.reviewer)
        for b in boxes if b.provenance == "human" and b.id != human.id
    )
    assert drawn == [
        ("dog", [0.35, 0.3, 0.2, 0.2], moved.id, "ann@x"),
        ("dog", [0.6, 0.1, 0.2, 0.2], relabelled.id, "ann@x"),
        ("person", [0.7, 0.7, 0.1, 0.2], "new1", "ann@x"),
    ]


# -- a real Label Studio server -------------------------------------------------------------

@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio on a free loopback port with a fresh data dir, serving files from
    the session's temp folder (where ``image_folder`` puts its photos); stopped after."""
    if not LS_BIN.is_file():
        pytest.skip(
            f"Label Studio is not installed ({LS_BIN} missing): run `make labelstudio-install` "
            "or set LABEL_STUDIO_BIN"
        )
    files_root = tmp_path_factory.getbasetemp()
    try:
        server = start_fresh(tmp_path_factory.mktemp("label-studio-data"), files_root)
    except RuntimeError as error:
        pytest.fail(str(error))
    yield LabelStudioSettings(url=server.url, token=server.token, files_root=str(files_root))
    server.stop()


def _snapshot(store):
    """Everything pull and apply may write, per sample, comparable with ==."""
    found = {}
    for sample in store.dataset.select_fields(["labels", "state", "reviewed_by"]):
        boxes = sorted(
            (d.id, d.label, tuple(d.bounding_box), d.provenance, tuple(d.tags),
             bool(d["confirmed"]) if d.has_field("confirmed") else False)
            for d in (sample.labels.detections if sample.labels else [])
        )
        found[sample.id] = (sample.state, sample.reviewed_by, tuple(sample.tags), tuple(boxes))
    return found


def test_token_refused_is_named(label_studio):
    wrong = LabelStudioSettings(url=label_studio.url, token="0" * 40)
    with LabelStudioClient(wrong) as client:
        with pytest.raises(LabelStudioAuthError, match="refused the API token"):
            client.projects()


@needs_model
def test_round_trip_through_a_real_label_studio(label_studio, image_folder, dataset_name, monkeypatch):
    from bootstrap.annotate import run_annotation
    from bootstrap.config import load_pipeline_config
    from bootstrap.review import build_review_queue
    from bootstrap.store import ImageStore
    from cli.main import app

    config = load_pipeline_config(PLAIN_CONFIG, dataset=dataset_name, sources=[str(image_folder)], detector={"batch_size": 3})
    run_annotation(config)
    store = ImageStore(dataset_name)
    queue = build_review_queue(store)
    assert len(queue.sample_ids) >= 2, "these photos should give at least two images to review"
    client = LabelStudioClient(label_studio)

    report = push_review_queue(store, client, queue.sample_ids)
    assert (report.created, report.already_there) == (len(queue.sample_ids), 0)
    tasks = client.tasks(report.project_id)
    assert sorted(t["data"]["sample_id"] for t in tasks) == sorted(queue.sample_ids)

    # The predictions are our working boxes with their scores, matched by id.
    for task in tasks:
        sample = store.dataset[task["data"]["sample_id"]]
        (prediction,) = task["predictions"]
        ours = {d.id: d for d in sample.labels.detections}
        assert {r["id"]: r["score"] for r in prediction["result"]} == pytest.approx(
            {i: d.confidence for i, d in ours.items()}
        )
        assert prediction["score"] == pytest.approx(min(d.confidence for d in ours.values()))
        assert task["predictions_score"] == pytest.approx(prediction["score"])  # sortable column
        assert task["data"]["priority"] == pytest.approx(sample.priority)
        for result in prediction["result"]:
            assert result["value"]["rectanglelabels"] == [ours[result["id"]].label]
            assert from_label_studio_box(result["value"]) == pytest.approx(
                ours[result["id"]].bounding_box, abs=1e-6
            )
    # Label Studio serves the image itself (the local-files storage is registered).
    image = httpx.get(
        label_studio.url + tasks[0]["data"]["image"],
        headers={"Authorization": f"Token {label_studio.token}"}, timeout=30,
    )
    assert image.status_code == 200
    assert image.content == Path(tasks[0]["data"]["filepath"]).read_bytes()

    # Pushing the same queue again (from the CLI) creates nothing.
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", label_studio.files_root)
    result = CliRunner().invoke(app, ["review", "push", dataset_name])
    assert result.exit_code == 0, result.output
    assert f"0 new tasks (0 boxes) in Label Studio, {len(queue.sample_ids)} were there already" in result.output
    assert len(client.tasks(report.project_id)) == len(tasks)

    # The annotator, on the task with the most boxes: keeps one, deletes one, moves one, adds one.
    task = max(tasks, key=lambda t: len(t["predictions"][0]["result"]))
    sid = task["data"]["sample_id"]
    predicted = task["predictions"][0]["result"]
    assert len(predicted) >= 3, "the busiest photo should have at least three boxes"
    keep, delete, move, *rest = predicted
    moved = {**move, "value": {**move["value"], "x": move["value"]["x"] + 5.0}}
    drawn = {**keep, "id": "drawn1", "value": {
        "x": 12.5, "y": 25.0, "width": 10.0, "height": 20.0, "rotation": 0,
        "rectanglelabels": ["dog"],
    }}
    client.request(
        "POST", f"/api/tasks/{task['id']}/annotations",
        json={"result": [keep, moved, drawn, *rest], "lead_time": 12.0},
    )
    before = _snapshot(store)

    pulled = pull_annotations(store, client)
    assert (pulled.annotated, pulled.pulled, pulled.unchanged) == (1, 1, 0)
    assert (pulled.kept, pulled.rejected, pulled.drawn) == (1 + len(rest), 2, 2)
    assert pulled.conflicts == []
    sample = store.dataset[sid]
    assert "reviewed" in sample.tags and sample.reviewed_by == USER
    rejected = {d.id for d in sample.labels.detections if "reject" in d.tags}
    assert rejected == {delete["id"], move["id"]}
    # Only the pulled sample changed.
    after = _snapshot(store)
    assert {k: v for k, v in after.items() if k != sid} == {k: v for k, v in before.items() if k != sid}

    assert apply_reviews(store, reviewer="someone-else") == {
        "images": 1, "confirmed": 1 + len(rest), "rejected": 2, "drawn": 2, "unchecked": 0,
    }
    final = store.dataset[sid]
    assert final.state == "reviewed" and final.reviewed_by == USER
    boxes = final.labels.detections
    assert all(d.provenance == "human" and d.confirmed for d in boxes)
    assert {d.id for d in boxes} >= {keep["id"], *(r["id"] for r in rest)}
    assert not {d.id for d in boxes} & {delete["id"], move["id"]}
    hand = sorted((d.label, d.label_studio_id, tuple(d.bounding_box)) for d in boxes
                  if d.has_field("label_studio_id") and d.label_studio_id)
    expected = sorted([
        (move["value"]["rectanglelabels"][0], move["id"],
         tuple(from_label_studio_box(moved["value"]))),
        ("dog", "drawn1", (0.125, 0.25, 0.1, 0.2)),
    ])
    assert [(a, b) for a, b, _ in hand] == [(a, b) for a, b, _ in expected]
    for (_, _, got), (_, _, want) in zip(hand, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    original = before[sid][3]  # (id, label, box, ...) of each box before the pull
    original_box = next(box for box_id, _, box, *_ in original if box_id == move["id"])
    redrawn = next(box for _, rid, box in hand if rid == move["id"])
    assert redrawn[0] == pytest.approx(original_box[0] + 0.05, abs=1e-6)
    assert redrawn[1:] == pytest.approx(original_box[1:], abs=1e-6)

    # A second pull (from the CLI) and apply change nothing.
    settled = _snapshot(store)
    result = CliRunner().invoke(app, ["review", "pull", dataset_name])
    assert result.exit_code == 0, result.output
    assert "0 images pulled" in result.output and "1 unchanged since the last pull" in result.output
    assert apply_reviews(store) == {"images": 0, "confirmed": 0, "rejected": 0, "drawn": 0, "unchecked": 0}
    assert _snapshot(store) == settled
    client.close()
