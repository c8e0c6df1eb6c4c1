"""Wedge the bundled database the way an operator does, then recover with `bootstrap doctor --fix`.

Run by ``tests/integration/test_crash_recovery.py`` as ``python -m tests.integration.wedge_scenario FOLDER DATASET WORK``
inside a PID namespace of its own: FiftyOne attaches every process of a user to any running
FiftyOne database service, whatever its folder, so on a machine where another FiftyOne process
runs (the test session itself), `annotate` would never start a mongod of its own to orphan.

Steps: `annotate` (batch 1) until its lease is held and a chunk is stored; `kill -9` its direct
children (FiftyOne's database service among them) and then it, leaving its mongod orphaned on
the folder; `bootstrap datasets` (must fail at once, naming the mongod); `bootstrap doctor
--json`; `bootstrap doctor --fix --json`; `annotate` again with `--wait 0`; `bootstrap status`.
Prints one JSON report for the test to check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bootstrap.doctor import mongods_on
from tests.integration.processes import BOOTSTRAP, wait_for

TOTAL_IMAGES = 16


def _database(folder: Path, owner: subprocess.Popen):
    """The fiftyone database of the mongod on ``folder``, straight through pymongo (a FiftyOne
    client would register itself with the database service and change what we test)."""
    from pymongo import MongoClient

    def started():
        assert owner.poll() is None, f"annotate exited ({owner.returncode}) before its mongod ran"
        return mongods_on(folder)

    mongod = wait_for(started, f"a mongod on {folder}", timeout=300)[0]
    ports = wait_for(lambda: [c.laddr[1] for c in psutil.Process(mongod.pid).net_connections("tcp")
                              if c.status == psutil.CONN_LISTEN], "mongod to listen")
    return MongoClient(port=ports[0], directConnection=True)["fiftyone"], mongod.pid


def _pending(db, dataset: str) -> int | None:
    found = db.datasets.find_one({"name": dataset})
    if not found:
        return None
    return db[found["sample_collection_name"]].count_documents({"state": "pending"})


def _run(args: list[str], env: dict, timeout: float = 600) -> dict:
    began = time.monotonic()
    done = subprocess.run([BOOTSTRAP, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
            "seconds": round(time.monotonic() - began, 1)}


def main(folder: Path, dataset: str, work: Path) -> dict:
    db_folder = work / "db"
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.pop("FIFTYONE_DATABASE_URI", None)
    # Set by FiftyOne in a process that has connected (the test session): its children would
    # then use that process's mongod directly and never start one of their own.
    env.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
    env.update(FIFTYONE_DATABASE_DIR=str(db_folder), PREFECT_HOME=str(work / "prefect"),
               BOOTSTRAP_LEASE_TTL="600")
    report: dict = {"db_folder": str(db_folder)}
    annotate = ["annotate", str(folder), "--dataset", dataset, "--json"]
    with open(work / "first.err", "w") as err:
        first = subprocess.Popen([BOOTSTRAP, *annotate, "--batch-size", "1"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=err)
    try:
        db, mongod_pid = _database(db_folder, first)
    except AssertionError as error:
        stderr = (work / "first.err").read_text()[-3000:]
        raise AssertionError(f"{error}\nannotate's stderr:\n{stderr}") from None
    report["mongod_pid"] = mongod_pid
    report["mongod_parent"] = " ".join(psutil.Process(psutil.Process(mongod_pid).ppid()).cmdline())
    wait_for(lambda: (doc := db.bootstrap_leases.find_one({"_id": f"annotate:{dataset}"}))
             and doc["owner"]["pid"] == first.pid, "the first run's lease")
    wait_for(lambda: 0 < (_pending(db, dataset) or 0) < TOTAL_IMAGES, "the first chunk")
    db.client.close()

    # `pkill -9 -P <pid>` then the process itself: its database service dies with it.
    for child in psutil.Process(first.pid).children():
        child.send_signal(signal.SIGKILL)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    time.sleep(1)
    report["mongod_alive_after_kill"] = psutil.pid_exists(mongod_pid) and (
        psutil.Process(mongod_pid).status() != psutil.STATUS_ZOMBIE
    )
    report["datasets"] = _run(["datasets"], env, timeout=180)
    report["doctor"] = _run(["doctor", "--json"], env)
    report["doctor_fix"] = _run(["doctor", "--fix", "--json"], env)
    report["mongod_alive_after_fix"] = psutil.pid_exists(mongod_pid) and (
        psutil.Process(mongod_pid).status() != psutil.STATUS_ZOMBIE
    )
    report["rerun"] = _run([*annotate, "--batch-size", "4", "--wait", "0"], env)
    report["status"] = _run(["status", dataset, "--json"], env)
    return report


if __name__ == "__main__":
    folder, dataset, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    print(json.dumps(main(folder, dataset, work)))
