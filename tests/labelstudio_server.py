"""A real Label Studio server for the tests: started from its own venv on a free loopback port,
with a fresh data dir, stopped after.

Label Studio's first start on a new data dir runs Django's migrations (1-2.5 min on our CI
machine); a copy of a migrated data dir starts in ~15 s. So the first session migrates a
template once (kept inside the Label Studio venv, so it goes with that install and version) and
every session starts from a fresh copy of it. ``python -m tests.labelstudio_server`` builds the
template ahead of the tests (``.ci/run`` does).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LS_BIN = Path(
    os.environ.get("LABEL_STUDIO_BIN") or ROOT / ".venv-labelstudio" / "bin" / "label-studio"
)
TEMPLATE = LS_BIN.parent.parent / "bootstrap-test-template"
USER = "annotator@bootstrap.test"
START_TIMEOUT = 400.0


@dataclass
class RunningServer:
    url: str
    token: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(data_dir: Path, files_root: Path, token: str) -> RunningServer:
    """Start Label Studio on ``data_dir`` and wait until /health answers.

    Raises:
        RuntimeError: it exited or did not become healthy in time (with its log's tail).
    """
    port = free_port()
    env = os.environ | {
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        # Token auth (`Authorization: Token ...`) works only if enabled when the dir is created.
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
    }
    log_path = data_dir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(LS_BIN), "start", "--internal-host", "127.0.0.1", "--port", str(port),
             # `=`: a url-safe password may start with "-", which argparse reads as a flag
             # (exit 2 with the usage text, about one start in 64).
             "--no-browser", "--username", USER, f"--password={secrets.token_urlsafe(12)}",
             f"--user-token={token}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = RunningServer(f"http://127.0.0.1:{port}", token, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"Label Studio exited ({process.returncode}):\n{log_path.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"Label Studio not healthy after {START_TIMEOUT:.0f} s:\n"
                f"{log_path.read_text()[-3000:]}"
            )
        time.sleep(1)


def migrated_template() -> tuple[Path, str]:
    """The migrated template data dir and its user's token; built on first use."""
    if (TEMPLATE / "token").is_file():
        return TEMPLATE, (TEMPLATE / "token").read_text().strip()
    building = Path(tempfile.mkdtemp(prefix="bootstrap-test-template-", dir=TEMPLATE.parent))
    token = secrets.token_hex(20)
    try:
        start(building, building, token).stop()
        (building / "server.log").unlink()
        (building / "token").write_text(token)
        building.rename(TEMPLATE)
    except OSError:
        if not (TEMPLATE / "token").is_file():  # not another session that finished first
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return TEMPLATE, (TEMPLATE / "token").read_text().strip()


def start_fresh(data_dir: Path, files_root: Path) -> RunningServer:
    """A server on a fresh copy of the template in ``data_dir`` (which may exist, empty)."""
    template, token = migrated_template()
    shutil.copytree(template, data_dir, dirs_exist_ok=True)
    return start(data_dir, files_root, token)


if __name__ == "__main__":
    if not LS_BIN.is_file():
        sys.exit(f"no Label Studio at {LS_BIN}: run `make labelstudio-install`")
    began = time.monotonic()
    path, _ = migrated_template()
    print(f"Label Studio test template ready in {path} ({time.monotonic() - began:.0f} s)")
