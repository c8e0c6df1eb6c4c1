"""The end-to-end `bootstrap` flow: annotate -> triage -> queue -> pause -> apply (-> export)."""

import importlib.util
import sys
import threading
import time

import pytest

from bootstrap.store import ImageStore
from tests.conftest import confirm_queue_and_resume, needs_model, post_prefect_filter

HAS_EXPORT = importlib.util.find_spec("flows.export") is not None


def test_export_dir_without_an_export_flow_fails_with_a_clear_message(monkeypatch):
    from flows.pipeline import export_flow

    monkeypatch.setitem(sys.modules, "flows.export", None)  # as if flows/export.py were absent
    with pytest.raises(RuntimeError, match="no export flow .flows/export.py."):
        export_flow()


def _paused_run_ids():
    runs = post_prefect_filter(
        "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}
    )
    return [run["id"] for run in runs]


@needs_model
@pytest.mark.usefixtures("prefect_api")
def test_bootstrap_flow_runs_through_the_review_pause(image_folder, dataset_name, tmp_path):

    from flows.pipeline import bootstrap

    export_dir = str(tmp_path / "export") if HAS_EXPORT else None
    outcome, errors = [], []

    def run():
        try:
            outcome.append(bootstrap(
                sources=[str(image_folder)], dataset=dataset_name, review_budget=2,
                export_dir=export_dir,
            ))
        except Exception as err:  # noqa: BLE001  (reported by the assertions below)
            errors.append(err)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 240
    while not (paused := _paused_run_ids()) and time.monotonic() < deadline and not errors:
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
    if HAS_EXPORT:
        assert result["export"], "export_dir was set but nothing was exported"
    else:
        assert result["export"] is None
