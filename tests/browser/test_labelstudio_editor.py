"""Review in Label Studio's own editor, in a real browser, against a real Label Studio
(``tests/labelstudio_server.py``): ``bootstrap review push`` uploads the queued image with our
boxes as a prediction; an annotator signs up on Label Studio's sign-up page, opens the task
(the editor starts the annotation from the prediction), keeps one box, drags one, deletes one
with Backspace, draws one, submits; ``bootstrap review pull`` + ``bootstrap review apply`` give
exactly those boxes.

What the editor does with our box ids (Label Studio 1.23, seen here and asserted below): a
region that comes from the prediction keeps our result id, moved or not (``origin``
``prediction`` / ``prediction-changed``); a drawn region gets a new id of the editor's
(``origin`` ``manual``). So ``pull`` matches our boxes by id; its fallback by label and
position is not needed with this editor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from bootstrap.annotate import run_annotation
from bootstrap.config import load_pipeline_config
from bootstrap.labelstudio import LabelStudioClient, LabelStudioSettings
from bootstrap.store import ImageStore
from tests.helpers import COCO, PLAIN_CONFIG, ROOT, needs_model
from tests.labelstudio_server import LS_BIN, USER, start_fresh

pytestmark = needs_model
BOOTSTRAP = [os.path.join(os.path.dirname(sys.executable), "bootstrap")]
#: A street photo on which yolov8n finds three separate boxes, all to review (0.25-0.7):
#: two traffic lights and a car.
PHOTO = COCO / "images" / "000000000359.jpg"
ANNOTATOR = "ana@bootstrap.test"


@pytest.fixture(scope="module")
def label_studio(browser, tmp_path_factory):
    """A real Label Studio serving a folder with the one photo; yields (settings, folder).
    (After ``browser``: no server is started for a test that skips without Chromium.)"""
    if not LS_BIN.is_file():
        pytest.skip(
            f"Label Studio is not installed ({LS_BIN} missing): run `make labelstudio-install` "
            "or set LABEL_STUDIO_BIN"
        )
    if not PHOTO.is_file():
        pytest.skip(f"real test image not found at {PHOTO}")
    files_root = tmp_path_factory.mktemp("label-studio-files")
    (files_root / "images").mkdir()
    shutil.copyfile(PHOTO, files_root / "images" / PHOTO.name)
    try:
        server = start_fresh(tmp_path_factory.mktemp("label-studio-data"), files_root)
    except RuntimeError as error:
        pytest.fail(str(error))
    yield LabelStudioSettings(server.url, server.token, str(files_root)), files_root / "images"
    server.stop()


def _bootstrap(settings: LabelStudioSettings, *args: str) -> str:
    env = os.environ | {
        "LABEL_STUDIO_URL": settings.url, "LABEL_STUDIO_API_KEY": settings.token,
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": settings.files_root,
    }
    done = subprocess.run([*BOOTSTRAP, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return " ".join(done.stdout.split())


def _image_frame(page) -> dict:
    """The rendered image's box on the page. The editor computes region coordinates as
    percent of this element, which may be zoomed beyond (and clipped by) the visible stage."""
    return page.locator(".lsf-image img").bounding_box()


def _drag(page, start: tuple[float, float], by: tuple[float, float]) -> None:
    x, y = start
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + by[0] / 2, y + by[1] / 2, steps=5)
    page.mouse.move(x + by[0], y + by[1], steps=5)
    page.mouse.up()
    page.wait_for_timeout(500)


def _annotation(client: LabelStudioClient, project_id: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        (task,) = client.tasks(project_id)
        if task["annotations"]:
            (annotation,) = task["annotations"]
            return annotation
        if time.monotonic() > deadline:
            raise AssertionError(f"no annotation submitted within {timeout:.0f} s")
        time.sleep(0.5)


def test_review_in_the_label_studio_editor(label_studio, dataset_name, page, shots):
    settings, folder = label_studio
    run_annotation(load_pipeline_config(PLAIN_CONFIG, dataset=dataset_name, sources=[str(folder)]))
    store = ImageStore(dataset_name)
    (sample,) = store.dataset
    ours = {d.id: d for d in sample.labels.detections}
    lights = sorted((d for d in ours.values() if d.label == "traffic light"),
                    key=lambda d: -d.bounding_box[0])
    (car,) = [d for d in ours.values() if d.label == "car"]
    assert len(ours) == 3 and len(lights) == 2
    assert all(d.route == "review" for d in ours.values())
    accepted, moved, deleted = lights[0], lights[1], car  # right light, left light, car

    pushed = _bootstrap(settings, "review", "push", dataset_name)
    assert "1 new tasks (3 boxes) in Label Studio" in pushed, pushed
    store.dataset.reload()
    project_id = store.dataset.info["label_studio"]["project"]

    # The annotator makes an account on Label Studio's sign-up page (which logs them in).
    page.goto(f"{settings.url}/user/signup", wait_until="load")
    page.fill("#email", ANNOTATOR)
    page.fill("#password", "annotator-password")
    shots(page, "sign-up")
    page.get_by_role("button", name="Create Account").click()
    page.wait_for_url(lambda url: "/user/signup" not in url)

    # The project -> Label All Tasks: the editor starts the annotation from our prediction.
    page.goto(f"{settings.url}/projects/{project_id}/data", wait_until="load")
    page.get_by_role("button", name="Label All Tasks").click()
    submit = page.get_by_test_id("bottombar-submit-button")
    submit.wait_for(timeout=60_000)
    regions = page.locator(".lsf-outliner-item")
    regions.nth(2).wait_for()
    page.wait_for_timeout(1500)  # the image's layout settles
    assert regions.count() == 3
    shots(page, "editor-opens-on-the-prediction")

    # Move the left traffic light: drag it from its centre by (dx, dy) screen pixels.
    frame = _image_frame(page)
    x, y, w, h = moved.bounding_box
    drag = (40.0, 30.0)
    _drag(page, (frame["x"] + (x + w / 2) * frame["width"],
                 frame["y"] + (y + h / 2) * frame["height"]), drag)
    moved_frame = frame
    shots(page, "box-moved")

    # Delete the car: select it in the region list, Backspace.
    regions.filter(has_text="car").click()
    page.keyboard.press("Backspace")
    page.wait_for_function("document.querySelectorAll('.lsf-outliner-item').length == 2")
    shots(page, "box-deleted")

    # Draw a box: choose the label, drag on the image.
    page.keyboard.press("Escape")
    page.locator(".lsf-label").filter(has=page.get_by_text("traffic light", exact=True)).click()
    frame = _image_frame(page)
    start_rel, size_px = (0.72, 0.10), (60.0, 45.0)
    _drag(page, (frame["x"] + start_rel[0] * frame["width"],
                 frame["y"] + start_rel[1] * frame["height"]), size_px)
    page.wait_for_function("document.querySelectorAll('.lsf-outliner-item').length == 3")
    drawn_frame = frame
    shots(page, "box-drawn")
    submit.click()

    client = LabelStudioClient(settings)
    annotation = _annotation(client, project_id)
    client.close()
    shots(page, "submitted")
    # What the editor did with our ids: kept for regions from the prediction, new when drawn.
    results = {r["id"]: r for r in annotation["result"]}
    assert len(results) == 3 and {accepted.id, moved.id} <= set(results)
    assert results[accepted.id]["origin"] == "prediction"
    assert results[moved.id]["origin"] == "prediction-changed"
    (drawn_id,) = set(results) - {accepted.id, moved.id}
    assert results[drawn_id]["origin"] == "manual"

    pulled = _bootstrap(settings, "review", "pull", dataset_name)
    assert ("1 of 1 tasks annotated; 1 images pulled (1 boxes kept, 2 rejected, 2 drawn by "
            "hand), 0 unchanged") in pulled, pulled
    sample.reload()
    after_pull = {d.id: d for d in sample.labels.detections}
    assert {i for i, d in after_pull.items() if "reject" in d.tags} == {moved.id, deleted.id}
    assert "reviewed" in sample.tags and sample.reviewed_by == ANNOTATOR

    applied = _bootstrap(settings, "review", "apply", dataset_name, "--reviewer", "lead",
                         "--config", PLAIN_CONFIG)
    assert "applied 1 reviewed images: 1 boxes confirmed, 2 rejected, 2 drawn by hand" in applied
    sample.reload()
    assert sample.state == "reviewed"
    assert sample.reviewed_by == ANNOTATOR  # the annotator, not the token's user nor --reviewer
    assert ANNOTATOR != USER
    final = {d.id: d for d in sample.labels.detections}
    assert all(d.provenance == "human" and d.confirmed and "reject" not in d.tags
               for d in final.values())
    assert len(final) == 3 and moved.id not in final and deleted.id not in final
    # The accepted box: ours, where it was.
    assert final[accepted.id].bounding_box == pytest.approx(accepted.bounding_box, abs=1e-9)
    assert final[accepted.id].label == "traffic light"
    by_editor_id = {d.label_studio_id: d for d in final.values() if d.id != accepted.id}
    assert set(by_editor_id) == {moved.id, drawn_id}
    # The moved box: shifted by the drag, the same size. The editor converts pointer pixels to
    # percent of the rendered image, so one screen pixel is the tolerance.
    tol_x, tol_y = 1.0 / moved_frame["width"], 1.0 / moved_frame["height"]
    redrawn = by_editor_id[moved.id]
    assert redrawn.label == "traffic light" and redrawn.reviewer == ANNOTATOR
    x, y, w, h = redrawn.bounding_box
    assert x == pytest.approx(moved.bounding_box[0] + drag[0] / moved_frame["width"], abs=tol_x)
    assert y == pytest.approx(moved.bounding_box[1] + drag[1] / moved_frame["height"], abs=tol_y)
    assert (w, h) == pytest.approx(moved.bounding_box[2:], abs=1e-6)
    # The drawn box: where the pointer went down, as large as the drag.
    tol_x, tol_y = 1.0 / drawn_frame["width"], 1.0 / drawn_frame["height"]
    drawn = by_editor_id[drawn_id]
    assert drawn.label == "traffic light" and drawn.reviewer == ANNOTATOR
    assert drawn.bounding_box == pytest.approx(
        [start_rel[0], start_rel[1], size_px[0] / drawn_frame["width"],
         size_px[1] / drawn_frame["height"]],
        abs=max(tol_x, tol_y),
    )
