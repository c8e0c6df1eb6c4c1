"""The `bootstrap` command, in-process (CliRunner) and as a real subprocess."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import PLAIN_CONFIG, ROOT, needs_model

runner = CliRunner()


def test_status_of_unknown_dataset(dataset_name):
    result = runner.invoke(app, ["status", dataset_name])
    assert result.exit_code == 1 and f"no dataset '{dataset_name}'" in result.output


@needs_model
@pytest.mark.usefixtures("prefect_api")
def test_annotate_then_status_json(image_folder, dataset_name):
    result = runner.invoke(
        app, ["annotate", str(image_folder), "--dataset", dataset_name, "--batch-size", "3", "--json",
             "--config", PLAIN_CONFIG]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["new"] == 6 and summary["annotated"] == 6 and summary["images_per_second"] > 0

    status = runner.invoke(app, ["status", dataset_name, "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert report["samples"] == 6 and report["failed"] == 0
    assert report["predictions"] == summary["boxes"]
    assert sum(report["states"][s] for s in ("auto_accepted", "needs_review", "empty")) == 6


@needs_model
def test_real_command_with_ephemeral_prefect_and_a_clean_rerun(tmp_path, image_folder, dataset_name):
    """The installed console script, in a new process, on Prefect's ephemeral API, twice."""
    # No PREFECT_API_URL at all (an empty one makes Prefect's events worker fail noisily).
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    (image_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    command = [os.path.join(os.path.dirname(sys.executable), "bootstrap"), "annotate",
               str(image_folder), "--dataset", dataset_name]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "annotated this run" in done.stdout and "│ 7" in done.stdout
    assert f"failed {image_folder / 'broken.jpg'}" in done.stdout.replace("\n", "")
    assert f"bootstrap app {dataset_name}" in done.stdout

    # The nightly case: a rerun on the annotated dataset finds nothing new, and says so cleanly
    # (it once printed the server's UNIQUE-constraint traceback for the run's concurrency slot).
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "ERROR" not in output, output[-3000:]
    assert "annotated this run" in again.stdout and "new" in again.stdout


@needs_model
def test_triage_review_and_apply_commands(image_folder, dataset_name):
    from bootstrap.annotate import run_annotation
    from bootstrap.config import load_pipeline_config

    run_annotation(load_pipeline_config(PLAIN_CONFIG, dataset=dataset_name, sources=[str(image_folder)]))
    strict = runner.invoke(app, ["triage", dataset_name, "--accept", "0.99", "--json", "--config", PLAIN_CONFIG])
    assert strict.exit_code == 0, strict.output
    counts = json.loads(strict.stdout)
    assert sum(counts.values()) == 6 and counts.get("auto_accepted", 0) == 0
    queued = runner.invoke(app, ["review", "queue", dataset_name, "--budget", "2", "--config", PLAIN_CONFIG])
    assert queued.exit_code == 0 and "2 of" in queued.output and "review-queue" in queued.output
    applied = runner.invoke(app, ["review", "apply", dataset_name, "--config", PLAIN_CONFIG])
    assert applied.exit_code == 0 and "applied 0 reviewed images" in applied.output
    bad = runner.invoke(app, ["triage", dataset_name, "--accept", "0.2", "--reject", "0.5"])
    assert bad.exit_code == 2 and "reject (0.5) is above accept (0.2)" in bad.output
