"""Real processes for the crash tests: the installed `bootstrap` command in a session of its own,
polled from outside through the database, killed the way an operator or the OOM killer would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import ROOT

BOOTSTRAP = str(Path(sys.executable).parent / "bootstrap")


def cli_env(homes: Path, name: str, **extra: str) -> dict:
    """The environment of one command: Prefect's ephemeral API with a home of its own (two
    commands sharing one SQLite file lock each other out), and leases that would live 10
    minutes without a heartbeat, so a run that goes on at once proves it saw the holder die."""
    env = dict(os.environ)
    # Unset, not empty: PREFECT_API_URL="" makes Prefect's event worker fail on every event.
    env.pop("PREFECT_API_URL", None)
    env.update(PREFECT_HOME=str(homes / f"prefect-{name}"), BOOTSTRAP_LEASE_TTL="600", **extra)
    return env


class Command:
    """A `bootstrap` command running in its own session, its output in files."""

    def __init__(self, args: list[str], env: dict, logs: Path, name: str):
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = logs / f"{name}.out", logs / f"{name}.err"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(
                [BOOTSTRAP, *args], env=env, cwd=ROOT, stdout=out, stderr=err,
                start_new_session=True,
            )
        self.pid = self.process.pid
        self.started = time.monotonic()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def finish(self, timeout: float = 600) -> dict:
        """Wait for a `--json` command to succeed; return its JSON output."""
        code = self.process.wait(timeout)
        assert code == 0, f"exit {code}\n{self.stderr[-4000:]}"
        text = self.stdout
        return json.loads(text[text.index("{"):])

    def kill_group(self) -> None:
        """Whatever is left of it (Prefect's ephemeral server, ...)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 300, every: float = 0.1):
    """Poll ``condition`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def lease_doc(dataset: str) -> dict | None:
    from bootstrap.lease import default_collection

    return default_collection().find_one({"_id": f"annotate:{dataset}"})


def held_by(dataset: str, pid: int) -> dict | None:
    doc = lease_doc(dataset)
    return doc if doc and doc["owner"]["pid"] == pid else None


def sample_counts(dataset: str) -> tuple[int, int]:
    """(samples, pending) of a dataset, (0, 0) before it exists."""
    import fiftyone as fo

    from bootstrap.store import ImageStore

    if not fo.dataset_exists(dataset):
        return 0, 0
    store = ImageStore(dataset)
    return len(store.dataset), store.count_pending()


def assert_every_image_once(dataset: str, folder: Path) -> None:
    """Each file of ``folder`` is one sample, detected, none pending, none twice."""
    from bootstrap.store import ImageStore

    store = ImageStore(dataset)
    files = sorted(folder.glob("*.jpg"))
    status = store.status()
    assert status["samples"] == len(files) and status["pending"] == 0 and status["failed"] == 0
    hashes = store.dataset.values("content_hash")
    assert len(set(hashes)) == len(hashes) == len(files)
    assert all(store.dataset.values("prediction_run"))
    assert sorted(Path(p).name for p in store.dataset.values("filepath")) == [f.name for f in files]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """A long-running process (a Prefect server, `flows.serve`) in a session of its own."""

    def __init__(self, args: list[str], env: dict, log: Path):
        with open(log, "w") as out:
            self.process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.log = log

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue


class PrefectApi:
    """Plain HTTP calls to a Prefect server (the client's filters send nulls that
    prefect 3.8.8's server refuses, see tests/conftest.py)."""

    def __init__(self, url: str):
        import httpx

        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)

    def _call(self, method: str, path: str, **kwargs):
        # 503 is the server's "retry": its SQLite database was busy (Prefect's client retries too).
        for _ in range(30):
            response = self.http.request(method, path, **kwargs)
            if response.status_code != 503:
                return response
            time.sleep(1)
        return response

    def healthy(self) -> bool:
        import httpx

        try:
            return self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def deployment(self, name: str) -> dict | None:
        response = self._call("GET", f"/deployments/name/{name}")
        return response.json() if response.status_code == 200 else None

    def run_deployment(self, deployment_id: str, parameters: dict) -> str:
        response = self._call("POST", f"/deployments/{deployment_id}/create_flow_run",
                              json={"parameters": parameters})
        response.raise_for_status()
        return response.json()["id"]

    def state(self, flow_run_id: str) -> str | None:
        state = self._call("GET", f"/flow_runs/{flow_run_id}").json().get("state") or {}
        return state.get("type")

    def cancel(self, flow_run_id: str) -> None:
        # What the UI's Cancel button does.
        response = self._call("POST", f"/flow_runs/{flow_run_id}/set_state", json={
            "state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True,
        })
        response.raise_for_status()

    def logs(self, flow_run_id: str) -> str:
        response = self._call("POST", "/logs/filter", json={
            "logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "offset": 0,
            "sort": "TIMESTAMP_ASC",
        })
        response.raise_for_status()
        return "\n".join(entry["message"] for entry in response.json())
