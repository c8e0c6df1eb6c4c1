import os
import stat

import pytest

from bootstrap.atomic_write import write_text_atomic


def test_replaces_whole_and_keeps_the_mode(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old: 1\n")
    target.chmod(0o640)
    write_text_atomic(target, "new: 2\n")
    assert target.read_text() == "new: 2\n" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_a_secret_is_0600_from_the_start(tmp_path):
    target = write_text_atomic(tmp_path / "token", "abc\n", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old: 1\n")
    with pytest.raises(TypeError):
        write_text_atomic(target, b"not text")  # fails inside the write, after the temp exists
    assert target.read_text() == "old: 1\n" and os.listdir(tmp_path) == ["config.yaml"]
