"""Crashes and overlaps with real processes: the installed `bootstrap annotate` on Prefect's
ephemeral API, real yolov8n, the real database. A killed run must never make the next one wait,
and two live runs on one dataset must still take turns.

Each command pays Prefect's ephemeral start-up and the model load (~20-40 s on 2 busy cores), so
these tests use few images and small batches."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import ROOT, needs_model
from tests.integration.processes import (
    Command,
    PrefectApi,
    Service,
    assert_every_image_once,
    cli_env,
    free_port,
    held_by,
    lease_doc,
    sample_counts,
    wait_for,
)

pytestmark = needs_model


@pytest.fixture
def photos(tmp_path, coco_images):
    """16 real photos: two detection chunks of 8 at batch size 1."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in coco_images[:16]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_a_run_killed_mid_chunk_does_not_hold_up_the_next(
    tmp_path, prefect_homes, photos, dataset_name, commands
):
    annotate = ["annotate", str(photos), "--dataset", dataset_name, "--json"]
    first = Command([*annotate, "--batch-size", "1"], cli_env(prefect_homes, "a"), tmp_path,
                    "first")
    commands.append(first)
    # Killed while its second chunk is being detected: the first chunk (8 images) is stored.
    wait_for(lambda: held_by(dataset_name, first.pid), "the first run to hold the lease")
    wait_for(lambda: 0 < sample_counts(dataset_name)[1] < 16, "the first chunk to be stored")
    os.kill(first.pid, signal.SIGKILL)  # as the OOM killer would: no clean-up runs
    assert first.process.wait(30) == -signal.SIGKILL
    samples, pending = sample_counts(dataset_name)
    assert samples == 16 and 0 < pending < 16
    dead = lease_doc(dataset_name)
    assert dead and dead["owner"]["pid"] == first.pid  # the dead run's lease is still there

    # --wait 0: had the rerun to wait for the dead run's lease (alive for 10 more minutes by
    # its expiry), it would fail at once instead of completing.
    began = time.monotonic()
    rerun = Command([*annotate, "--batch-size", "4", "--wait", "0"], cli_env(prefect_homes, "b"),
                    tmp_path, "rerun")
    commands.append(rerun)
    summary = rerun.finish()
    print(f"rerun after kill -9: {time.monotonic() - began:.1f} s (start-up included)")
    assert summary["new"] == 0 and summary["known"] == 16 and summary["annotated"] == pending
    assert (
        f"took over lease annotate:{dataset_name} from run {dead['owner']['run_id']} "
        f"(host {dead['owner']['host']}, pid {first.pid})" in rerun.stderr
    )
    assert f"its process {first.pid} on {dead['owner']['host']} is gone" in rerun.stderr
    assert "UNIQUE constraint failed" not in rerun.stderr
    assert_every_image_once(dataset_name, photos)
    assert lease_doc(dataset_name) is None  # released on exit


def test_two_live_runs_take_turns_and_the_second_finds_nothing_new(
    tmp_path, prefect_homes, photos, dataset_name, commands
):
    annotate = ["annotate", str(photos), "--dataset", dataset_name, "--json", "--batch-size", "4",
                "--wait", "600"]
    # Both start together (their start-ups overlap); whichever takes the lease first is frozen
    # there, so the other surely arrives while it holds the lease, however fast this machine
    # is (a stopped process is alive: its lease stands).
    runs = [Command(annotate, cli_env(prefect_homes, name), tmp_path, name) for name in "ab"]
    commands.extend(runs)
    by_pid = {run.pid: run for run in runs}
    held = wait_for(lambda: (doc := lease_doc(dataset_name)) and doc["owner"]["pid"] in by_pid
                    and doc, "a run to hold the lease")
    first = by_pid[held["owner"]["pid"]]
    second = next(run for run in runs if run is not first)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: "waiting for annotate:" in second.stderr, "the second run to wait")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    waiting = second.stderr
    assert (
        f"waiting for annotate:{dataset_name}: held by run {held['owner']['run_id']} "
        f"(host {held['owner']['host']}, pid {first.pid}) since " in waiting
    )
    assert "waiting up to 600 s more" in waiting and "--force to take over" in waiting

    done_first = first.finish()
    done_second = second.finish()
    assert done_first["new"] == 16 and done_first["annotated"] == 16
    assert done_second["new"] == 0 and done_second["known"] == 16
    assert done_second["annotated"] == 0
    assert f"lease annotate:{dataset_name} acquired after waiting" in second.stderr
    assert "took over" not in second.stderr  # it waited for a live run, it did not steal
    assert_every_image_once(dataset_name, photos)
    assert lease_doc(dataset_name) is None


def _pid_namespace() -> list[str] | None:
    """An `unshare` prefix that runs a command in a PID namespace of its own, or None."""
    for prefix in (
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--kill-child"],
    ):
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            return None
    return None


def test_killing_a_run_and_its_children_wedges_the_database_until_doctor_fix(tmp_path, photos):
    """`pkill -9 -P <pid>` and the run itself: FiftyOne's database service dies, its mongod
    lives on holding the folder. Commands must say so at once; `doctor --fix` must recover."""
    prefix = _pid_namespace()
    if prefix is None:
        pytest.skip("needs `unshare` (util-linux) allowed to make a PID namespace: see "
                    "tests/integration/wedge_scenario.py for why")
    # bash as the namespace's init reaps the orphans it inherits, as a real init would.
    done = subprocess.run(
        [*prefix, "bash", "-c", f'{sys.executable} -m tests.integration.wedge_scenario "$@"; exit $?', "-",
         str(photos), "wedged", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    folder, mongod = report["db_folder"], report["mongod_pid"]
    assert "--51-service db" in report["mongod_parent"]  # annotate's own database service
    assert report["mongod_alive_after_kill"]  # orphaned, still holding the folder

    datasets = report["datasets"]
    assert datasets["rc"] == 1, datasets
    assert f"mongod pid {mongod}" in datasets["stderr"] and f"data folder {folder}" in datasets["stderr"]
    assert "bootstrap doctor --fix" in datasets["stderr"] and f"kill {mongod}" in datasets["stderr"]
    # Said at once, where FiftyOne waits 60 s for a port before its ServiceListenTimeout.
    assert datasets["seconds"] < 45, datasets["seconds"]
    assert "ServiceListenTimeout" not in datasets["stderr"]

    diagnosed = {f["check"]: f for f in json.loads(report["doctor"]["stdout"])}
    assert report["doctor"]["rc"] == 1
    assert diagnosed["mongod"]["status"] == "fail" and f"mongod pid {mongod}" in diagnosed["mongod"]["message"]
    assert diagnosed["database"]["status"] == "fail"

    fixed = {f["check"]: f for f in json.loads(report["doctor_fix"]["stdout"])}
    assert report["doctor_fix"]["rc"] == 0, report["doctor_fix"]
    assert fixed["mongod"]["fixed"] and not report["mongod_alive_after_fix"]
    assert fixed["database"]["status"] == "ok"
    assert fixed["leases"]["fixed"] and "annotate:wedged" in fixed["leases"]["message"]
    assert "is gone" in fixed["leases"]["message"]

    rerun = report["rerun"]
    assert rerun["rc"] == 0, rerun["stderr"][-4000:]
    summary = json.loads(rerun["stdout"][rerun["stdout"].index("{"):])
    assert summary["new"] == 0 and summary["known"] == 16 and 0 < summary["annotated"] < 16
    status = json.loads(report["status"]["stdout"])
    assert status["samples"] == 16 and status["pending"] == 0 and status["failed"] == 0
    print(f"wedge scenario: datasets failed in {datasets['seconds']} s, doctor "
          f"{report['doctor']['seconds']} s, doctor --fix {report['doctor_fix']['seconds']} s, "
          f"rerun {rerun['seconds']} s")


def test_served_deployment_runs_recover_from_cancel_and_kill(tmp_path, photos, dataset_name):
    """`make server` + `make serve` (a real Prefect server, the deployments of prefect.yaml
    served from flows/serve.py): a run cancelled from the API, then a run whose flow-run process
    is killed; the next run still goes on at once and completes."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_API_URL=api_url,
               BOOTSTRAP_LEASE_TTL="600")
    prefect = str(Path(sys.executable).parent / "prefect")
    server = Service([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                     env, tmp_path / "server.log")
    serve = None
    try:
        api = PrefectApi(api_url)
        wait_for(api.healthy, "the Prefect server", timeout=240, every=1)
        serve = Service([sys.executable, "-m", "flows.serve"], env, tmp_path / "serve.log")
        deployment = wait_for(lambda: api.deployment("annotate/nightly"), "the served deployments",
                              timeout=240, every=1)
        # 4 chunks of 4 images, so each run stops between stored chunks.
        params = {"dataset": dataset_name, "sources": [str(photos)],
                  "detector": {"batch_size": 1}, "chunk_size": 4}

        def run_until_a_chunk_is_stored(pending_before: int) -> tuple[str, dict]:
            run_id = api.run_deployment(deployment["id"], params)

            def holds_the_lease():
                state = api.state(run_id)
                assert state not in ("COMPLETED", "FAILED", "CRASHED"), api.logs(run_id)[-3000:]
                doc = lease_doc(dataset_name)
                return doc if doc and doc["owner"]["run_id"] == run_id else None

            held = wait_for(holds_the_lease, f"run {run_id}'s lease", every=0.5)
            wait_for(lambda: (counts := sample_counts(dataset_name))[0] == 16
                     and counts[1] < pending_before, "a stored chunk")
            return run_id, held

        # 1. Cancelled from the API (the UI's Cancel): the runner stops the flow-run process.
        cancelled, held = run_until_a_chunk_is_stored(16)
        api.cancel(cancelled)
        wait_for(lambda: api.state(cancelled) == "CANCELLED", "the cancellation", timeout=120)
        wait_for(lambda: not psutil.pid_exists(held["owner"]["pid"]), "the cancelled process")
        assert lease_doc(dataset_name) is None  # SIGTERM: the run released its lease
        pending_after_cancel = sample_counts(dataset_name)[1]
        assert 0 < pending_after_cancel < 16

        # 2. Its flow-run process killed (OOM killer): a child of the serve process.
        killed, held = run_until_a_chunk_is_stored(pending_after_cancel)
        victim = psutil.Process(held["owner"]["pid"])
        assert victim in psutil.Process(serve.process.pid).children(recursive=True)
        victim.kill()
        wait_for(lambda: api.state(killed) in ("CRASHED", "FAILED"), "the runner to see the crash",
                 timeout=120)
        left = lease_doc(dataset_name)
        assert left and left["owner"]["run_id"] == killed  # the dead run's lease stays behind
        assert 0 < sample_counts(dataset_name)[1] < pending_after_cancel

        # 3. The next run must not wait for it (wait_seconds 0 would fail it) and completes.
        last = api.run_deployment(deployment["id"], params | {"wait_seconds": 0})
        wait_for(lambda: api.state(last) in ("COMPLETED", "FAILED", "CRASHED"), "the last run",
                 timeout=600, every=1)
        logs = api.logs(last)
        assert api.state(last) == "COMPLETED", logs[-3000:]
        assert f"took over lease annotate:{dataset_name} from run {killed}" in logs
        assert f"its process {victim.pid}" in logs and "is gone" in logs
        assert_every_image_once(dataset_name, photos)
        assert lease_doc(dataset_name) is None
    finally:
        if serve is not None:
            serve.stop()
        server.stop()
