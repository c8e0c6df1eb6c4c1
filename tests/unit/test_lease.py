"""The lease's pure parts: when is a holder gone, and is a process still the one that started."""

import os
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from bootstrap.lease import (
    Lease,
    Owner,
    process_alive,
    process_space,
    process_start_time,
    stale_reason,
    ttl_seconds,
)

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
HERE = "host-a/boot-1/pid:[1]"


def _lease(space: str, renewed_ago: float, expires_in: float, pid: int = 4242) -> Lease:
    owner = Owner(run_id="run-1", host="host-a", pid=pid, started=1000.0, space=space)
    return Lease(
        key="annotate:x", token="t", owner=owner, since=NOW - timedelta(minutes=5),
        renewed_at=NOW - timedelta(seconds=renewed_ago),
        expires_at=NOW + timedelta(seconds=expires_in),
    )


@pytest.mark.parametrize(
    ("space", "renewed_ago", "expires_in", "alive", "expected"),
    [
        # A live holder in this process space, heartbeat fresh: wait for it.
        (HERE, 5, 25, True, None),
        # Same space, its process is gone: take over at once, whatever the expiry says.
        (HERE, 5, 25, False, "its process 4242 on host-a is gone"),
        # Another machine or container: its PID means nothing here, so only the heartbeat counts.
        ("host-b/boot-9/pid:[1]", 5, 25, False, None),
        ("host-a/boot-1/pid:[7]", 5, 25, False, None),  # same host, other PID namespace
        ("host-a/boot-2/pid:[1]", 5, 25, False, None),  # same name, other boot: may be another machine
        # The heartbeat has expired: gone, wherever it ran.
        ("host-b/boot-9/pid:[1]", 40, -10, True, "its heartbeat stopped 40 s ago"),
        (HERE, 31, 0, True, "its heartbeat stopped 31 s ago"),  # expiry is inclusive
        # A lease from a holder that recorded no process space: heartbeat only.
        ("", 5, 25, False, None),
    ],
)
def test_stale_reason(space, renewed_ago, expires_in, alive, expected):
    lease = _lease(space, renewed_ago, expires_in)
    assert stale_reason(lease, NOW, HERE, lambda pid, started: alive) == expected


def test_stale_reason_asks_about_the_holders_pid_and_start_time():
    asked = []
    stale_reason(_lease(HERE, 1, 29, pid=77), NOW, HERE, lambda *a: asked.append(a) or True)
    assert asked == [(77, 1000.0)]


def test_describe_names_run_host_pid_since_and_heartbeat_age():
    text = _lease(HERE, 12, 18).describe(NOW)
    assert text == (
        "run run-1 (host host-a, pid 4242) since 2026-11-24 11:55:00 UTC, last heartbeat 12 s ago"
    )


def test_this_process_is_alive_and_a_finished_one_is_not():
    me = Owner.this_process("r")
    assert me.pid == os.getpid() and me.space == process_space()
    assert process_alive(me.pid, me.started)
    done = subprocess.Popen(["sleep", "60"])
    started = process_start_time(done.pid)
    done.kill()
    done.wait()
    assert started and not process_alive(done.pid, started)


def test_a_reused_pid_is_not_the_holder():
    # Our own PID with another start time: the holder died and the PID went to a new process.
    me = Owner.this_process("r")
    assert not process_alive(me.pid, me.started - 3600)


def test_an_unreaped_child_counts_as_gone():
    child = subprocess.Popen(["sleep", "60"])
    started = process_start_time(child.pid)
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, still a zombie
    try:
        assert started and not process_alive(child.pid, started)
    finally:
        child.wait()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 30.0), ("", 30.0), ("12.5", 12.5), ("2", "at least 3 seconds"), ("soon", "expected a number")],
)
def test_ttl_from_the_environment(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("BOOTSTRAP_LEASE_TTL", raising=False)
    else:
        monkeypatch.setenv("BOOTSTRAP_LEASE_TTL", raw)
    if isinstance(expected, float):
        assert ttl_seconds() == expected
    else:
        with pytest.raises(ValueError, match=expected):
            ttl_seconds()
