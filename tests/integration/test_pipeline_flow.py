"""The end-to-end `bootstrap` flow: annotate -> triage -> queue -> pause -> apply (-> export)."""

import threading

import pytest

from bootstrap.store import ImageStore
from tests.helpers import confirm_queue_and_resume, needs_model, wait_for_paused_run


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
    paused = wait_for_paused_run(dataset_name, timeout=240, failed=lambda: bool(errors))
    assert not errors, errors
    store = ImageStore(dataset_name)
    assert store.status()["states"]["pending"] == 0  # annotate finished before the pause

    assert confirm_queue_and_resume(store, paused, reviewer="ana") == 2
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
