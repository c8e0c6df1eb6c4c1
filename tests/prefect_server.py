"""A real Prefect server for the tests that need one outside the process (Prefect's own CLI, the
UI in a browser, served deployments): ``prefect server start`` on a free loopback port with a
fresh ``PREFECT_HOME``, stopped after.

``prefect_test_harness`` (tests/conftest.py) is enough for flow runs inside the test process;
this one is what a user gets from ``make server``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.labelstudio_server import free_port

ROOT = Path(__file__).resolve().parents[1]
PREFECT = Path(sys.executable).parent / "prefect"
START_TIMEOUT = 180.0


@dataclass
class PrefectServer:
    url: str  # the UI, e.g. http://127.0.0.1:4321
    home: Path
    process: subprocess.Popen
    log_path: Path

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def env(self) -> dict[str, str]:
        """The environment of a process that talks to this server (CLI, flows, serve)."""
        return os.environ | {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate ``process`` (started with ``start_new_session``) and its children."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
    except ProcessLookupError:
        pass


def start(home: Path) -> PrefectServer:
    """Start ``prefect server start`` with ``PREFECT_HOME=home`` and wait until it answers.

    Raises:
        RuntimeError: it exited or did not answer in time (with its log's tail).
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = home / "server.log"
    url = f"http://127.0.0.1:{port}"
    # The UI asks the API at PREFECT_API_URL (else port 4200, whatever --port says).
    env = os.environ | {
        "PREFECT_HOME": str(home), "PREFECT_API_URL": f"{url}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
        )
    server = PrefectServer(url, home, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"prefect server exited ({process.returncode}):\n{log_path.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"prefect server not healthy after {START_TIMEOUT:.0f} s:\n"
                f"{log_path.read_text()[-3000:]}"
            )
        time.sleep(1)


def serve_deployments(server: PrefectServer, log_path: Path, expected: int) -> subprocess.Popen:
    """``python -m flows.serve`` against ``server`` (as ``make serve``); returns once the
    ``expected`` deployments are registered.

    Raises:
        RuntimeError: serve exited or did not register them in time (with its log's tail).
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.serve"], env=server.env(), cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            while len(client.read_deployments()) < expected or "Your deployments are being" not in log_path.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    stop_process(process)
                    raise RuntimeError(f"flows.serve did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
    return process
