"""The end-to-end `bootstrap` flow: annotate -> triage -> queue -> pause -> apply (-> export)."""

import threading
import time

import pytest

from bootstrap.store import ImageStore
from tests.conftest import confirm_queue_and_resume, needs_model, paused_flow_run_ids


@needs_model
@pytest.mark.usefixtures("prefect_api")
def test_bootstrap_flow_runs_through_the_review_pause(image_folder, dataset_name, tmp_path):

    from flows.pipeline import bootstrap

    export_dir = tmp_path / "export"
    outcome, errors = [], []

    def run():
        try:
            outcome.append(bootstrap(
                sources=[str(image_folder)], dataset=dataset_name, review_budget=2,
                export_dir=str(export_dir),
            ))
        except Exception as err:  # noqa: BLE001  (reported by the assertions below)
            errors.append(err)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 240
    while not (paused := paused_flow_run_ids()) and time.monotonic() < deadline and not errors:
        time.sleep(1)
    assert not errors, errors
    assert paused, "the bootstrap flow never paused for the reviewer"
    store = ImageStore(dataset_name)
    assert store.status()["states"]["pending"] == 0  # annotate finished before the pause

    assert confirm_queue_and_resume(store, paused[0], reviewer="ana") == 2
    runner.join(timeout=180)
    assert not errors and outcome, errors
    result = outcome[0]
    assert result["dataset"] == dataset_name
    assert result["annotate"]["annotated"] == 6
    assert result["review"]["queued"] == 2 and result["review"]["applied"]["images"] == 2
    assert store.status()["states"]["reviewed"] == 2
    # The export holds the auto-accepted images and the two just reviewed.
    states = store.status()["states"]
    assert result["export"]["counts"]["images"] == states["auto_accepted"] + states["reviewed"]
    assert (export_dir / "data.yaml").is_file()
