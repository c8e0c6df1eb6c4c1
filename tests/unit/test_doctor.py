"""`bootstrap doctor`'s pure parts: where the database is, how a leftover mongod is named."""

import json
import os
from pathlib import Path

import pytest

from bootstrap.doctor import (
    MongodProcess,
    _option,
    _redact,
    database_settings,
    stop_mongod,
    wedged_message,
)


@pytest.mark.parametrize(
    ("env", "config_file", "expected"),
    [
        ({}, None, (None, "~/.fiftyone/var/lib/mongo")),
        ({"FIFTYONE_DATABASE_DIR": "/data/fo"}, None, (None, "/data/fo")),
        ({}, {"database_dir": "/cfg/fo"}, (None, "/cfg/fo")),
        ({"FIFTYONE_DATABASE_DIR": "/env/fo"}, {"database_dir": "/cfg/fo"}, (None, "/env/fo")),
        ({}, {"database_uri": "mongodb://db:27017"}, ("mongodb://db:27017", "~/.fiftyone/var/lib/mongo")),
        ({"FIFTYONE_DATABASE_URI": "mongodb://a"}, {"database_uri": "mongodb://b"}, ("mongodb://a", "~/.fiftyone/var/lib/mongo")),
        ({"FIFTYONE_DATABASE_DIR": "~/db"}, None, (None, "~/db")),
    ],
)
def test_database_settings_follow_fiftyones_precedence(tmp_path, monkeypatch, env, config_file, expected):
    for name in ("FIFTYONE_DATABASE_DIR", "FIFTYONE_DATABASE_URI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config_path = tmp_path / "config.json"
    if config_file is not None:
        config_path.write_text(json.dumps(config_file))
    monkeypatch.setenv("FIFTYONE_CONFIG_PATH", str(config_path))
    uri, folder = database_settings()
    assert (uri, folder) == (expected[0], Path(expected[1]).expanduser())


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["mongod", "--dbpath", "/x", "--port", "0"], "/x"),
        (["mongod", "--dbpath=/y"], "/y"),
        (["mongod", "--port", "0"], None),
        (["mongod", "--dbpath"], None),
    ],
)
def test_dbpath_option(cmdline, expected):
    assert _option(cmdline, "--dbpath") == expected


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://db:27017", "mongodb://db:27017"),
        ("mongodb://ana:s3cret@db:27017/x", "mongodb://ana:***@db:27017/x"),
        ("mongodb+srv://ana@db", "mongodb+srv://ana@db"),
    ],
)
def test_uri_passwords_are_not_printed(uri, shown):
    assert _redact(uri) == shown


def _mongod(uid: int, pid: int = 4321) -> MongodProcess:
    return MongodProcess(pid=pid, uid=uid, user="ana" if uid == os.getuid() else "bob",
                         folder="/tmp/fo", parent_pid=1, under_service=False, started=0.0)


def test_wedged_message_names_pid_folder_and_recovery():
    text = wedged_message([_mongod(os.getuid())], Path("/tmp/fo"))
    assert "cannot start: mongod pid 4321 (user ana" in text
    assert "still holds its data folder /tmp/fo" in text
    assert "`bootstrap doctor --fix`" in text and "`kill 4321`" in text


def test_another_users_mongod_is_named_but_never_stopped():
    theirs = _mongod(os.getuid() + 1)
    text = wedged_message([theirs], Path("/tmp/fo"))
    assert "belongs to another user" in text and "--fix" not in text
    with pytest.raises(ValueError, match="refusing to stop mongod pid 4321"):
        stop_mongod(theirs)
