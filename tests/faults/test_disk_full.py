"""Case 4: the disk fills up during `export` (and `calibrate --write-config`). A small tmpfs
is mounted for the test (root or CAP_SYS_ADMIN); without mount permission the same export runs
under a file-size limit (RLIMIT_FSIZE, `ulimit -f`) instead, a real kernel limit that fails the
write with EFBIG. Either way the previous export stays intact and the message says why."""

from __future__ import annotations

import resource
import signal
import subprocess

import pytest

from tests.faults.conftest import last_line, tree
from tests.faults.harness import SmallDisk
from tests.helpers import PLAIN_CONFIG, ROOT, needs_coco
from tests.integration.processes import BOOTSTRAP, cli_env

pytestmark = needs_coco

MiB = 1024 * 1024
BIGGER = ["--include", "accepted,reviewed,needs_review"]  # 126 photos, ~20 MiB


def _run(args, env, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    def file_size_limit():
        # SIGXFSZ would kill the process; ignored, the write fails with EFBIG instead.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [BOOTSTRAP, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
        preexec_fn=file_size_limit if limit_bytes else None,
    )


@pytest.fixture
def small_disk():
    try:
        disk = SmallDisk(24 * MiB)
    except (PermissionError, FileNotFoundError) as error:
        yield None, str(error)
        return
    yield disk, None
    disk.unmount()


def test_export_to_a_full_disk_keeps_the_previous_export(
    tmp_path, labelled, small_disk, report_case
):
    disk, why_not = small_disk
    env = cli_env(tmp_path, "disk")
    if disk is None:
        # No mount permission: a file-size limit (a real kernel limit) stands in for the disk.
        out = tmp_path / "exports" / "coco"
        assert _run(["export", labelled.name, "--out", str(out)], env).returncode == 0
        previous = tree(out)
        done = _run(["export", labelled.name, "--out", str(out), *BIGGER], env, limit_bytes=100_000)
        assert done.returncode == 1, done.stderr[-3000:]
        message = last_line(done.stderr)
        assert message.startswith("error: a file is larger than the file size limit (ulimit -f)")
        assert tree(out) == previous and sorted(p.name for p in out.parent.iterdir()) == ["coco"]
        report_case("disk-full-export", seen=message.removeprefix("error: "),
                    lost="nothing: the previous export byte for byte, no partial folder",
                    note=f"RLIMIT_FSIZE stood in for a full disk: no mount permission ({why_not})")
        return

    out = disk.path / "exports" / "coco"
    first = _run(["export", labelled.name, "--out", str(out)], env)
    assert first.returncode == 0, first.stderr[-3000:]
    previous = tree(out)
    disk.fill(leave_bytes=2 * MiB)  # the bigger export needs ~20 MiB
    free = disk.free_bytes()

    done = _run(["export", labelled.name, "--out", str(out), *BIGGER], env)
    assert done.returncode == 1, done.stderr[-3000:]
    message = last_line(done.stderr)
    assert message.startswith(f"error: disk full: no space left to write the export to {out} "
                              "(No space left on device); the previous export there is intact")
    assert "Traceback" not in done.stderr
    assert tree(out) == previous
    assert sorted(p.name for p in out.parent.iterdir()) == ["coco"]  # the partial is gone
    assert disk.free_bytes() >= free - 64 * 1024  # and its space given back

    # The config is written atomically: on the full disk the old one stays whole.
    config = disk.path / "calibrated.yaml"
    (disk.path / "filler.bin").unlink()
    calibrate = ["calibrate", labelled.name, "--source", "ground_truth", "--config",
                 PLAIN_CONFIG, "--write-config", str(config)]
    assert _run([*calibrate, "--target-precision", "0.9"], env).returncode == 0
    old = config.read_text()
    disk.fill(leave_bytes=0)
    full = _run([*calibrate, "--target-precision", "0.99"], env)
    assert full.returncode == 1, full.stderr[-3000:]
    said = " ".join(full.stderr.split())
    assert f"error: cannot write the config to {config}: No space left on device; the file " \
           "there (if any) is unchanged" in said
    assert config.read_text() == old
    assert [p.name for p in disk.path.glob(".calibrated.yaml.*")] == []
    report_case(
        "disk-full-export", seen=message.removeprefix("error: "),
        lost="nothing: the previous export byte for byte; the partial folder removed and its "
             "space given back",
        note="a 24 MiB tmpfs filled to 2 MiB free; the export needed ~20 MiB",
    )
    report_case(
        "disk-full-calibrate",
        seen=said[said.index("error: ") + 7:][:200],
        lost="nothing: the previous config byte for byte, no temporary file",
    )
