"""Review in the FiftyOne App, in a real browser, as the README's reviewer's contract says: open
the saved view ``review-queue`` (``bootstrap review queue --open``), expand an image, tag a
wrong box ``reject`` and draw a missing one in the App's Annotate tab, tag the image
``reviewed``; a ``bootstrap triage`` in between keeps the drawn box (it has no ``provenance``:
default-human), and ``bootstrap review apply`` makes both decisions final."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from bootstrap.annotate import run_annotation
from bootstrap.config import load_pipeline_config
from bootstrap.store import ImageStore
from tests.helpers import PLAIN_CONFIG, ROOT, needs_model
from tests.labelstudio_server import free_port
from tests.prefect_server import stop_process

pytestmark = needs_model
BOOTSTRAP = [os.path.join(os.path.dirname(sys.executable), "bootstrap")]


def _bootstrap(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*BOOTSTRAP, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.fixture
def app_on_queue(image_folder, dataset_name, tmp_path):
    """A dataset of six annotated photos and ``bootstrap review queue --open`` serving the App
    on its two highest-priority images; yields the App's URL of the saved view."""
    # One model, and no random audit: the batch is the two highest-priority images.
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(yaml.safe_load(Path(PLAIN_CONFIG).read_text()) | {"review": {"audit": 0.0}})
    )
    run_annotation(load_pipeline_config(config, dataset=dataset_name, sources=[str(image_folder)]))
    port = free_port()
    log = (tmp_path / "app.log").open("wb")
    process = subprocess.Popen(
        [*BOOTSTRAP, "review", "queue", dataset_name, "--budget", "2", "--open",
         "--port", str(port), "--config", str(config)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            pytest.fail(f"the App did not start:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
        time.sleep(1)
    yield f"{url}/datasets/{dataset_name}?view=review-queue"
    stop_process(process)
    log.close()


def _working_boxes(store, sample_id: str) -> dict:
    store.dataset.reload()
    sample = store.dataset[sample_id]
    sample.reload()
    return {d.id: d for d in sample.labels.detections}


def _click_until(target, shown, timeout: float = 90.0) -> None:
    """Click ``target`` until ``shown`` is visible: the App's React views may take a click
    before they are live (a thumbnail still loading, a list not yet bound), and on a loaded
    machine the view the click opens may take a while (the Annotate tab loads the label
    schema first, and its header is not on the page meanwhile): click again only while the
    target is there, and wait for ``shown`` until ``timeout``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout
    while True:
        if target.is_visible():
            try:
                target.click(timeout=5_000)
            except PlaywrightTimeout:  # it went away between the check and the click
                pass
        try:
            shown.wait_for(timeout=10_000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise


def _sample_tags(store, sample_id: str) -> list[str]:
    sample = store.dataset[sample_id]
    sample.reload()
    return list(sample.tags)


def _wait_until(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        time.sleep(0.5)
    return result


def test_review_in_the_app_then_apply(app_on_queue, dataset_name, page, shots):
    store = ImageStore(dataset_name)
    store.dataset.reload()  # the command saved the view from its own process
    queue = store.dataset.load_saved_view("review-queue").values("id")
    assert len(queue) == 2
    first = queue[0]
    before = _working_boxes(store, first)
    review_boxes = [d for d in before.values() if d.route == "review"]
    assert review_boxes, "the top image of the queue has a box to review"
    wrong = min(review_boxes, key=lambda d: d.confidence)

    page.goto(app_on_queue, wait_until="load")
    page.get_by_text("2 samples").wait_for(timeout=90_000)
    page.wait_for_timeout(1500)
    # Private by default: no analytics consent banner (FIFTYONE_DO_NOT_TRACK).
    assert page.get_by_text("Help us improve FiftyOne").count() == 0
    if page.get_by_role("button", name="Dismiss").count():  # FiftyOne's Enterprise notice
        page.get_by_role("button", name="Dismiss").click()
    shots(page, "review-queue")

    modal = page.locator("[data-cy=modal]")
    # Expand the first image. Headless clicks on the grid are unreliable (the thumbnails'
    # canvas sometimes swallows the first ones), so the sample's own App URL opens it.
    page.goto(f"{app_on_queue}&id={first}", wait_until="load")
    modal.locator("[data-cy=annotate]").wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    shots(page, "sample-expanded")

    # Annotate tab: the wrong box gets the tag `reject` in its edit form.
    wrong_in_list = modal.locator(f"[data-cy=annotate-label-{wrong.id}]")
    _click_until(modal.locator("[data-cy=annotate]"), wrong_in_list)
    tags = modal.get_by_placeholder("Type and press enter to add", exact=False)
    _click_until(wrong_in_list, tags)
    tags.fill("reject")
    tags.press("Enter")
    _wait_until(lambda: "reject" in _working_boxes(store, first)[wrong.id].tags,
                "the App did not save the reject tag")
    shots(page, "box-tagged-reject")
    modal.locator("[data-cy=annotate-edit-back]").click()

    # A missing box: drag one on the image in detection mode.
    modal.locator("[data-cy=detection-mode]").click()
    canvas = modal.locator("[data-cy=lighter-sample-renderer-canvas]")
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] * 0.40, box["y"] + box["height"] * 0.40
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 40, steps=5)
    page.mouse.move(x + 110, y + 90, steps=5)
    page.mouse.up()
    drawn_id = _wait_until(
        lambda: next(iter(set(_working_boxes(store, first)) - set(before)), None),
        "the App did not save the drawn box",
    )
    page.wait_for_timeout(1000)
    shots(page, "box-drawn")
    drawn = _working_boxes(store, first)[drawn_id]
    assert not drawn.has_field("provenance") or drawn["provenance"] is None  # the App writes none
    x0, y0, w, h = drawn.bounding_box
    assert 0.3 < x0 < 0.5 and 0.3 < y0 < 0.5 and w > 0.05 and h > 0.05

    # Done with the image: the sample tag `reviewed` with the App's tagger.
    if modal.locator("[data-cy=annotate-edit-back]").count():
        modal.locator("[data-cy=annotate-edit-back]").click()
    modal.locator("[data-cy=explore]").click()
    page.locator("[data-cy=modal] [data-cy=action-tag-sample-labels]").click()
    page.locator("[data-cy=tagger-switch-sample]").click()
    tagger = page.locator("[data-cy=tagger-container] input")
    tagger.fill("reviewed")
    tagger.press("Enter")
    page.locator("[data-cy=popout]").get_by_text("Apply", exact=True).wait_for()
    shots(page, "sample-tag-reviewed")
    page.locator("[data-cy=popout]").get_by_text("Apply", exact=True).click()
    _wait_until(lambda: "reviewed" in _sample_tags(store, first),
                "the App did not save the sample tag")

    # A re-triage before apply (the default config: other thresholds than the queue's) leaves
    # the finished image exactly as the person saw it; apply makes both decisions final.
    _bootstrap("triage", dataset_name)
    assert set(_working_boxes(store, first)) == set(before) | {drawn_id}
    # Applied under a contract that checks every box (no `review.check_accepted: false`).
    applied = _bootstrap("review", "apply", dataset_name, "--reviewer", "ana", "--config", PLAIN_CONFIG).stdout
    kept = len(before) - 1
    assert (f"applied 1 reviewed images: {kept} boxes confirmed, 1 rejected, 1 drawn by hand"
            in " ".join(applied.split())), applied
    final = _working_boxes(store, first)
    assert wrong.id not in final and drawn_id in final
    assert all(d.provenance == "human" and d.confirmed for d in final.values())
    assert store.dataset[first].state == "reviewed"
