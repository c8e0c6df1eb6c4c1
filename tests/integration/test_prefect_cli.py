"""Prefect's own tools work with our pins against a real server (``make server``): its CLI's
list commands and the Python client's reads. fastapi >= 0.151 broke both with 422 (see the pin
in pyproject.toml); these tests fail again if a pin brings that back."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.prefect_server import PREFECT, ROOT

# Runs in its own process against the server: one flow run that publishes an artifact, and the
# deployments of prefect.yaml registered as `make serve` registers them (without serving them).
CREATE = """
from prefect import flow
from prefect.artifacts import create_markdown_artifact

@flow(name="cli-check")
def cli_check():
    create_markdown_artifact("# checked", key="cli-check-artifact")
    return 1

cli_check()

from flows.serve import load_deployments
for deployment in load_deployments():
    deployment.apply()
"""


@pytest.fixture(scope="module")
def populated(prefect_server):
    """The server with a completed flow run, an artifact, our deployments and a work pool."""
    env = prefect_server.env() | {"COLUMNS": "250"}
    done = subprocess.run(
        [str(PREFECT.parent / "python"), "-c", CREATE], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pool = _prefect(env, "work-pool", "create", "cli-check-pool", "--type", "process")
    assert pool.returncode == 0, pool.stdout + pool.stderr
    return env


def _prefect(env, *args):
    return subprocess.run(
        [str(PREFECT), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("deployment", "ls"), ["annotate/nightly", "review/on-demand", "bootstrap/end-to-end"]),
        (("flow-run", "ls"), ["cli-check", "COMPLETED"]),
        (("flow", "ls"), ["cli-check", "annotate", "review", "export", "bootstrap"]),
        (("artifact", "ls"), ["cli-check-artifact"]),
        (("work-pool", "ls"), ["cli-check-pool"]),
    ],
)
def test_prefect_cli_lists_what_was_created(populated, command, expected):
    result = _prefect(populated, *command)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # the status code as a word, not the digits inside a listed UUID (…-422d-…)
    assert not re.search(r"(?<![0-9a-f-])422(?![0-9a-f-])", output) and "Unprocessable" not in output
    for text in expected:
        assert text in output, f"`prefect {' '.join(command)}` does not list {text!r}:\n{output}"


def test_prefect_client_reads_what_was_created(populated, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs()
            deployments = client.read_deployments()
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["cli-check-artifact"]))
            )
            flows = {f.id: f.name for f in client.read_flows()}
    assert any(flows[r.flow_id] == "cli-check" and r.state.is_completed() for r in runs)
    names = {f"{flows[d.flow_id]}/{d.name}" for d in deployments}
    assert {"annotate/nightly", "review/on-demand", "export/on-demand", "bootstrap/end-to-end"} <= names
    assert [(a.key, a.data) for a in artifacts] == [("cli-check-artifact", "# checked")]
