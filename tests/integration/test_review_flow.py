"""The `review` flow pauses for the reviewer in Prefect and applies their work on resume."""

import threading

import pytest

from bootstrap.annotate import run_annotation
from bootstrap.config import load_pipeline_config
from bootstrap.store import ImageStore
from tests.helpers import confirm_queue_and_resume, needs_model, wait_for_paused_run

pytestmark = [needs_model, pytest.mark.usefixtures("prefect_api")]


def test_review_flow_pauses_then_applies_on_resume(image_folder, dataset_name):

    from flows.review import review

    run_annotation(load_pipeline_config(None, dataset=dataset_name, sources=[str(image_folder)]))
    store = ImageStore(dataset_name)
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(review(dataset=dataset_name, budget=2)))
    runner.start()
    paused = wait_for_paused_run(dataset_name, timeout=120)
    assert runner.is_alive() and not outcome

    # The reviewer works in the App: confirm both queued images as they are.
    assert confirm_queue_and_resume(store, paused, reviewer="ana") == 2
    runner.join(timeout=120)
    assert outcome and outcome[0]["queued"] == 2
    assert outcome[0]["applied"]["images"] == 2
    assert set(store.dataset.match_tags("reviewed").values("reviewed_by")) == {"ana"}
    assert store.status()["states"]["reviewed"] == 2
