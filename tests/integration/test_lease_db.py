"""Leases against the real database (FiftyOne's MongoDB): atomic acquire, waiting, takeover of
dead holders, force, heartbeat, release."""

import logging
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from bootstrap.lease import (
    LeaseBusy,
    Owner,
    clear_stale,
    hold_lease,
    list_leases,
    process_start_time,
    read_lease,
    try_acquire,
)


@pytest.fixture
def leases():
    """A lease collection of its own in the real database, dropped afterwards."""
    import fiftyone.core.odm as foo

    collection = foo.get_db_conn()[f"test_leases_{uuid.uuid4().hex[:8]}"]
    yield collection
    collection.drop()


def _dead_owner(run_id: str = "dead-run") -> Owner:
    """The owner record of a real process that has exited (this machine, this PID space)."""
    gone = subprocess.Popen(["sleep", "60"])
    started = process_start_time(gone.pid)
    gone.kill()
    gone.wait()
    me = Owner.this_process(run_id)
    return Owner(run_id=run_id, host=me.host, pid=gone.pid, started=started, space=me.space)


def _elsewhere(run_id: str = "remote-run") -> Owner:
    """A holder on another machine: its PID cannot be checked from here."""
    return Owner(run_id=run_id, host="gpu-7", pid=123, started=1.0, space="gpu-7/boot/pid:[1]")


def test_hold_and_release(leases):
    with hold_lease("annotate:a", "run-1", collection=leases, wait_seconds=0) as held:
        stored, now = read_lease(leases, "annotate:a")
        assert stored == held
        assert stored.owner == Owner.this_process("run-1")
        assert stored.since <= now < stored.expires_at
    assert leases.count_documents({}) == 0


def test_a_live_holder_makes_the_next_run_wait_then_fail_naming_the_holder(leases):
    with hold_lease("annotate:a", "first", collection=leases):
        with pytest.raises(LeaseBusy) as busy:
            with hold_lease("annotate:a", "second", collection=leases, wait_seconds=1.5):
                pass
    message = str(busy.value)
    me = Owner.this_process("x")
    assert "annotate:a is held by run first" in message
    assert f"host {me.host}, pid {me.pid}" in message and " UTC" in message
    assert "waited 2 s of 2 s" in message or "waited 1 s of 2 s" in message
    assert "--force" in message
    # Other datasets are not blocked.
    with hold_lease("annotate:b", "third", collection=leases, wait_seconds=0):
        pass


def test_the_waiting_run_says_so_at_once_and_goes_on_when_the_holder_releases(leases, caplog):
    caplog.set_level(logging.INFO, logger="bootstrap.lease")
    holding = threading.Event()
    release = threading.Event()

    def first():
        with hold_lease("annotate:a", "first", collection=leases):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(30)
    waited_at = []

    def let_go_once_announced():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any("waiting for annotate:a" in r.getMessage() for r in caplog.records):
                waited_at.append(time.monotonic())
                release.set()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=let_go_once_announced)
    watcher.start()
    started = time.monotonic()
    with hold_lease("annotate:a", "second", collection=leases, wait_seconds=60) as held:
        assert held.owner.run_id == "second"
    thread.join()
    watcher.join()
    assert waited_at and waited_at[0] - started < 5  # announced at once, not after a timeout
    messages = [r.getMessage() for r in caplog.records]
    waiting = next(m for m in messages if m.startswith("waiting for annotate:a"))
    assert "held by run first" in waiting and "waiting up to 60 s more" in waiting
    assert any(m.startswith("lease annotate:a acquired after waiting") for m in messages)


def test_a_dead_holder_on_this_machine_is_taken_over_at_once(leases, caplog):
    dead = _dead_owner()
    assert try_acquire(leases, "annotate:a", dead, ttl=600)  # would block for 10 minutes
    started = time.monotonic()
    with hold_lease("annotate:a", "next", collection=leases, wait_seconds=0) as held:
        assert held.owner.run_id == "next"
    assert time.monotonic() - started < 5
    assert f"its process {dead.pid} on {dead.host} is gone" in caplog.text
    assert "took over lease annotate:a from run dead-run" in caplog.text


def test_a_holder_elsewhere_counts_until_its_heartbeat_expires(leases, caplog):
    assert try_acquire(leases, "annotate:a", _elsewhere(), ttl=600)
    with pytest.raises(LeaseBusy, match="held by run remote-run \\(host gpu-7, pid 123\\)"):
        with hold_lease("annotate:a", "next", collection=leases, wait_seconds=0):
            pass
    # Its machine died: no heartbeat for longer than the lease lives.
    leases.update_one({"_id": "annotate:a"}, [{"$set": {
        "renewed_at": {"$subtract": ["$$NOW", 45_000]}, "expires_at": {"$subtract": ["$$NOW", 15_000]},
    }}])
    with hold_lease("annotate:a", "next", collection=leases, wait_seconds=0) as held:
        assert held.owner.run_id == "next"
    assert "its heartbeat stopped 45 s ago" in caplog.text


def test_force_takes_a_live_lease_and_the_old_holder_learns_it(leases, caplog):
    with hold_lease("annotate:a", "first", collection=leases, ttl=3):
        with hold_lease("annotate:a", "second", collection=leases, force=True, wait_seconds=0):
            stored, _ = read_lease(leases, "annotate:a")
            assert stored.owner.run_id == "second"
            deadline = time.monotonic() + 10
            while "taken over by another run" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.1)
        # The second run released its own lease; the first run's exit then deletes nothing.
    assert "took over lease annotate:a from run first" in caplog.text and "--force" in caplog.text
    assert "lease annotate:a was taken over by another run" in caplog.text
    assert leases.count_documents({}) == 0


def test_the_heartbeat_keeps_a_long_run_alive(leases):
    with hold_lease("annotate:a", "long", collection=leases, ttl=3):
        first, _ = read_lease(leases, "annotate:a")
        time.sleep(4.5)  # longer than the lease lives without renewal
        later, now = read_lease(leases, "annotate:a")
        assert later.token == first.token and later.expires_at > first.expires_at > now - timedelta(seconds=3)
        with pytest.raises(LeaseBusy):
            with hold_lease("annotate:a", "other", collection=leases, wait_seconds=0):
                pass


def test_racing_acquirers_exactly_one_wins(leases):
    owners = [Owner.this_process(f"run-{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(lambda o: try_acquire(leases, "annotate:new", o, ttl=60), owners))
    assert sum(t is not None for t in tokens) == 1
    # Eight runs taking over the same dead lease: one wins, the others see it is no longer
    # the lease they saw.
    dead_token = try_acquire(leases, "annotate:dead", _dead_owner(), ttl=60)
    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(
            lambda o: try_acquire(leases, "annotate:dead", o, ttl=60, replacing=dead_token), owners
        ))
    assert sum(t is not None for t in tokens) == 1
    assert leases.count_documents({}) == 2


def test_clear_stale_removes_only_dead_holders(leases):
    try_acquire(leases, "annotate:dead", _dead_owner(), ttl=600)
    try_acquire(leases, "annotate:remote", _elsewhere(), ttl=600)
    try_acquire(leases, "annotate:mine", Owner.this_process("live"), ttl=600)
    cleared = clear_stale(leases)
    assert [(lease.key, "is gone" in reason) for lease, reason in cleared] == [("annotate:dead", True)]
    remaining, _ = list_leases(leases)
    assert sorted(lease.key for lease in remaining) == ["annotate:mine", "annotate:remote"]
