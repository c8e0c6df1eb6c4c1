"""The Prefect UI as an operator uses it, in a real browser, against a real Prefect server and the
deployments of prefect.yaml served by ``flows.serve`` (``make server`` + ``make serve``):
a custom run of ``annotate/nightly`` from the deployment's form, its summary artifact on the run's
page, and the review flow's pause form."""

from __future__ import annotations

import pytest

from bootstrap.store import ImageStore
from tests.helpers import needs_model, wait_for_paused_run
from tests.prefect_server import serve_deployments, stop_process

pytestmark = needs_model
RUN_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    """The prefect.yaml deployments served against the test's Prefect server."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    try:
        process = serve_deployments(prefect_server, log, expected=4)
    except RuntimeError as error:
        pytest.fail(str(error))
    yield prefect_server
    stop_process(process)


def _field(page, label: str):
    """The text box of a parameter in Prefect's schema form, by the parameter's label."""
    return page.locator(
        f"xpath=//span[text()='{label}']/ancestor::div"
        "[contains(concat(' ', @class, ' '), ' schema-form-property ')][1]//textarea"
    )


def _runs_on(dataset: str) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [r for r in client.read_flow_runs() if r.parameters.get("dataset") == dataset]


def _wait_for_state(page, state: str) -> None:
    """Until the run page's heading shows ``state`` (the page follows the run by itself)."""
    page.locator(".page-heading-flow-run__meta .state-badge", has_text=state).wait_for(
        timeout=RUN_TIMEOUT_MS
    )


def test_custom_run_then_review_pause_form(served, page, shots, image_folder, dataset_name):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Deployments -> annotate's nightly -> Run -> Custom run.
    page.goto(f"{served.url}/deployments", wait_until="networkidle")
    shots(page, "deployments")
    page.get_by_role("link", name="nightly").click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").click()
    page.get_by_text("dataset (Optional)").wait_for()
    run_name = page.locator("input").first.input_value()
    # The form starts from prefect.yaml's parameters (the demo dataset of 128 photos).
    assert _field(page, "dataset (Optional)").input_value() == "demo"
    _field(page, "sources (Optional)").fill(str(image_folder))
    _field(page, "dataset (Optional)").fill(dataset_name)
    shots(page, "custom-run-form")
    page.get_by_role("button", name="Submit").click()

    # Back on the deployment, the new run is listed; it completes in the served process.
    page.get_by_role("link", name=run_name).first.click()
    page.wait_for_url("**/runs/flow-run/**")
    _wait_for_state(page, "Completed")
    shots(page, "run-completed")
    page.get_by_text("Artifacts", exact=True).first.click()
    summary = page.get_by_text(f"annotate-summary-{dataset_name}")
    summary.wait_for()
    shots(page, "run-artifacts")
    summary.click()
    page.get_by_text("images found").first.wait_for()
    shots(page, "summary-artifact", full_page=True)
    store = ImageStore(dataset_name)
    assert store.status()["samples"] == 6 and store.count_pending() == 0
    with temporary_settings({PREFECT_API_URL: served.api_url}):
        runs = _runs_on(dataset_name)
    assert [(r.name, r.state.type.value) for r in runs] == [(run_name, "COMPLETED")]

    # The review flow pauses for the reviewer (started from the API: the UI part is the form).
    with temporary_settings({PREFECT_API_URL: served.api_url}):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("review/on-demand")
            client.create_flow_run_from_deployment(
                deployment.id, parameters={"dataset": dataset_name, "budget": 2}
            )
        run_id = wait_for_paused_run(dataset_name, timeout=180)
    store.dataset.reload()  # the served run saved the view from its own process
    queued = store.dataset.load_saved_view("review-queue")
    assert len(queued) == 2
    for sample in queued:  # the reviewer's work in the App (tests/browser/test_fiftyone_app.py)
        sample.tags.append("reviewed")
        sample.save()

    page.goto(f"{served.url}/runs/flow-run/{run_id}", wait_until="networkidle")
    _wait_for_state(page, "Paused")
    page.get_by_role("button", name="Resume").click()
    form = page.get_by_role("dialog")
    form.get_by_text("2 images").wait_for()
    form.get_by_role("button", name="str").click()
    _field(form, "Reviewer (Optional)").fill("ana-in-the-ui")
    shots(page, "resume-form")
    form.get_by_role("button", name="Submit").click()
    _wait_for_state(page, "Completed")
    shots(page, "review-completed")
    assert set(store.dataset.match_tags("reviewed").values("reviewed_by")) == {"ana-in-the-ui"}
    assert store.status()["states"]["reviewed"] == 2
