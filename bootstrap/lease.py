"""Leases: one run at a time per dataset, never blocked by a dead holder.

A lease is one document in the collection ``bootstrap_leases`` of the database that holds the
datasets (FiftyOne's MongoDB, which every run of a dataset already shares, on any machine):

    {_id: "annotate:<dataset>", token, owner: {run_id, host, pid, started, space},
     since, renewed_at, expires_at}

* **Acquire** is one atomic write: an upsert that only inserts when no lease exists (the unique
  ``_id`` refuses a second one), or a conditional update that replaces exactly the lease that
  was seen (its ``token``), so two runs taking over the same dead lease cannot both win.
* **Heartbeat**: the holder renews ``expires_at`` every third of the lease's time to live from a
  daemon thread. Times come from the database server (``$$NOW``), so machines with skewed clocks
  agree on expiry.
* **Stale** (taken over at once): the heartbeat has expired, or the holder ran in this same
  process space (host, boot, PID namespace) and its process is gone (a PID reused by another
  process does not count: its start time differs). A holder on another machine is only known to
  be gone once its heartbeat expires (``BOOTSTRAP_LEASE_TTL`` seconds, default 30).
* **Release** on exit deletes the lease, only if it is still ours.

Nothing here imports Prefect or FiftyOne at import time; the collection is passed in (tests,
doctor) or taken from FiftyOne's connection when first needed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COLLECTION = "bootstrap_leases"
TTL_ENV = "BOOTSTRAP_LEASE_TTL"
DEFAULT_TTL_SECONDS = 30.0
#: How long a run waits for another live run of the same dataset by default: a nightly run
#: that fires during a long manual run should still run after it, not fail at once.
DEFAULT_WAIT_SECONDS = 3600.0
POLL_SECONDS = 1.0


class LeaseBusy(RuntimeError):
    """Another live run held the lease for longer than this run would wait."""


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a lease: the run, and the process that runs it."""

    run_id: str
    host: str
    pid: int
    started: float  # the process's start time (seconds since the epoch): tells PID reuse apart
    space: str  # boot id + PID namespace: PIDs mean the same process only within one space

    @classmethod
    def this_process(cls, run_id: str) -> Owner:
        return cls(
            run_id=run_id, host=socket.gethostname(), pid=os.getpid(),
            started=process_start_time(os.getpid()) or 0.0, space=process_space(),
        )

    def to_doc(self) -> dict:
        return {"run_id": self.run_id, "host": self.host, "pid": self.pid,
                "started": self.started, "space": self.space}

    @classmethod
    def from_doc(cls, doc: dict) -> Owner:
        return cls(
            run_id=str(doc.get("run_id", "?")), host=str(doc.get("host", "?")),
            pid=int(doc.get("pid") or 0), started=float(doc.get("started") or 0.0),
            space=str(doc.get("space", "")),
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as stored."""

    key: str
    token: str
    owner: Owner
    since: datetime
    renewed_at: datetime
    expires_at: datetime

    @classmethod
    def from_doc(cls, doc: dict) -> Lease:
        return cls(
            key=doc["_id"], token=doc["token"], owner=Owner.from_doc(doc.get("owner") or {}),
            since=_utc(doc["since"]), renewed_at=_utc(doc["renewed_at"]),
            expires_at=_utc(doc["expires_at"]),
        )

    def describe(self, now: datetime | None = None) -> str:
        """``run R (host H, pid P) since T`` plus the heartbeat's age when ``now`` is given."""
        text = (
            f"run {self.owner.run_id} (host {self.owner.host}, pid {self.owner.pid}) since "
            f"{self.since:%Y-%m-%d %H:%M:%S} UTC"
        )
        if now is not None:
            text += f", last heartbeat {max(0.0, (now - self.renewed_at).total_seconds()):.0f} s ago"
        return text


# -- the staleness decision (pure) ----------------------------------------------------------------


def stale_reason(
    lease: Lease,
    now: datetime,
    here: str,
    process_alive: Callable[[int, float], bool],
) -> str | None:
    """Why ``lease``'s holder is gone, or None while it may still be working.

    Args:
        lease: the stored lease.
        now: the database server's current time.
        here: this process's space (``process_space()``).
        process_alive: ``(pid, started) -> bool`` for a process in ``here``.
    """
    if lease.expires_at <= now:
        late = (now - lease.renewed_at).total_seconds()
        return f"its heartbeat stopped {late:.0f} s ago"
    owner = lease.owner
    if owner.space and owner.space == here and not process_alive(owner.pid, owner.started):
        return f"its process {owner.pid} on {owner.host} is gone"
    return None


# -- this machine ------------------------------------------------------------------------------


def process_space() -> str:
    """An id for the set of processes whose PIDs this process can check: host, boot, PID
    namespace. Two containers on one host share the boot id but not the PID namespace."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:  # not Linux: the host name alone
        pass
    return "/".join(parts)


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None when there is none."""
    import psutil  # a FiftyOne and Prefect dependency; only needed here

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # dead, its parent has not reaped it yet
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # another user's process: it exists
        return -1.0


def process_alive(pid: int, started: float) -> bool:
    """Whether ``pid`` is still the process that started at ``started``."""
    actual = process_start_time(pid)
    if actual is None:
        return False
    if actual < 0 or not started:
        return True
    return abs(actual - started) < 1.0


# -- the store ----------------------------------------------------------------------------------


def default_collection():
    """The lease collection in FiftyOne's database (connects on first use)."""
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[COLLECTION]


def ttl_seconds() -> float:
    """The lease's time to live: ``$BOOTSTRAP_LEASE_TTL`` or 30 s."""
    raw = os.environ.get(TTL_ENV)
    try:
        value = float(raw) if raw else DEFAULT_TTL_SECONDS
    except ValueError:
        raise ValueError(f"{TTL_ENV}={raw!r}: expected a number of seconds, e.g. 30") from None
    if value < 3:
        raise ValueError(f"{TTL_ENV}={raw!r}: at least 3 seconds (it is renewed every third)")
    return value


def read_lease(collection, key: str) -> tuple[Lease | None, datetime]:
    """The stored lease ``key`` (or None) and the server's time, in one round trip."""
    found = list(collection.aggregate([
        {"$match": {"_id": key}},
        {"$addFields": {"_now": "$$NOW"}},
    ]))
    if found:
        return Lease.from_doc(found[0]), _utc(found[0]["_now"])
    return None, server_now(collection)


def list_leases(collection) -> tuple[list[Lease], datetime]:
    """Every stored lease and the server's time."""
    docs = list(collection.aggregate([{"$addFields": {"_now": "$$NOW"}}]))
    now = _utc(docs[0]["_now"]) if docs else server_now(collection)
    return [Lease.from_doc(d) for d in docs], now


def server_now(collection) -> datetime:
    return _utc(collection.database.command("hello")["localTime"])


def _lease_update(token: str, owner: Owner, ttl: float) -> list[dict]:
    # An update pipeline, so that every time is the server's ($$NOW).
    return [{"$set": {
        "token": token, "owner": owner.to_doc(), "since": "$$NOW", "renewed_at": "$$NOW",
        "expires_at": {"$add": ["$$NOW", int(ttl * 1000)]},
    }}]


def try_acquire(collection, key: str, owner: Owner, ttl: float, replacing: str | None = None):
    """One atomic attempt. Returns our new token, or None when someone else holds ``key``.

    ``replacing``: the token of the lease to take over (it must still be that one); None
    inserts a new lease, which only succeeds when none exists.
    """
    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError

    token = uuid.uuid4().hex
    update = _lease_update(token, owner, ttl)
    if replacing is not None:
        taken = collection.find_one_and_update(
            {"_id": key, "token": replacing}, update, return_document=ReturnDocument.AFTER
        )
        return token if taken is not None else None
    try:
        # Matches no existing lease (each has a token), so this inserts or hits the unique _id.
        collection.update_one({"_id": key, "token": {"$exists": False}}, update, upsert=True)
    except DuplicateKeyError:
        return None
    return token


def renew(collection, key: str, token: str, ttl: float) -> bool:
    """Push our lease's expiry forward; False when it is no longer ours."""
    result = collection.update_one(
        {"_id": key, "token": token},
        [{"$set": {"renewed_at": "$$NOW", "expires_at": {"$add": ["$$NOW", int(ttl * 1000)]}}}],
    )
    return result.matched_count == 1


def release(collection, key: str, token: str) -> bool:
    """Delete our lease; False when it was no longer ours."""
    return collection.delete_one({"_id": key, "token": token}).deleted_count == 1


def clear_stale(collection, here: str | None = None) -> list[tuple[Lease, str]]:
    """Delete every lease whose holder is gone. Returns each with the reason."""
    here = here or process_space()
    leases, now = list_leases(collection)
    cleared = []
    for lease in leases:
        reason = stale_reason(lease, now, here, process_alive)
        if reason and collection.delete_one({"_id": lease.key, "token": lease.token}).deleted_count:
            cleared.append((lease, reason))
    return cleared


# -- holding a lease ----------------------------------------------------------------------------


class _Heartbeat(threading.Thread):
    """Renews a lease until stopped; logs once if the lease was taken from us."""

    def __init__(self, collection, key: str, token: str, ttl: float, logger):
        super().__init__(name=f"lease-heartbeat-{key}", daemon=True)
        self._args = (collection, key, token, ttl)
        self._log = logger
        self._stop_event = threading.Event()
        self.lost = False

    def run(self) -> None:
        collection, key, token, ttl = self._args
        while not self._stop_event.wait(ttl / 3):
            try:
                if not renew(collection, key, token, ttl):
                    self.lost = True
                    self._log.error(
                        "lease %s was taken over by another run (--force?); this run goes on, "
                        "but the two may now annotate the same images", key,
                    )
                    return
            except Exception as error:  # noqa: BLE001 - a database blip must not kill the run
                self._log.warning("lease %s: heartbeat failed (%s); retrying", key, error)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


@contextmanager
def hold_lease(
    key: str,
    run_id: str,
    *,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    force: bool = False,
    collection=None,
    ttl: float | None = None,
    logger: Any = None,
) -> Iterator[Lease]:
    """Hold lease ``key`` for the block: wait for a live holder, take over a dead one at once.

    Args:
        key: what the lease guards, e.g. ``annotate:<dataset>``.
        run_id: this run's id (a Prefect flow run id), stored as the owner.
        wait_seconds: how long to wait for a live holder before giving up.
        force: take the lease from whoever holds it, alive or not.
        collection: the lease collection (default: FiftyOne's database).
        ttl: time to live without a heartbeat (default ``ttl_seconds()``).
        logger: where waiting and taking over are reported (default this module's logger;
            the flow passes its run logger so the message reaches the CLI and the UI).

    Raises:
        LeaseBusy: a live run held it for longer than ``wait_seconds``.
    """
    if wait_seconds < 0:
        raise ValueError(f"wait_seconds: expected 0 or more seconds, got {wait_seconds}")
    collection = collection if collection is not None else default_collection()
    ttl = ttl if ttl is not None else ttl_seconds()
    logger = logger or log
    token, held = _acquire(collection, key, Owner.this_process(run_id), ttl, wait_seconds, force,
                           logger)
    heartbeat = _Heartbeat(collection, key, token, ttl, logger)
    heartbeat.start()
    try:
        yield held
    finally:
        heartbeat.stop()
        try:
            release(collection, key, token)
        except Exception as error:  # noqa: BLE001 - the lease then expires on its own
            logger.warning("lease %s: could not release (%s); it expires in %.0f s", key, error, ttl)


def _acquire(collection, key, owner, ttl, wait_seconds, force, logger) -> tuple[str, Lease]:
    here = owner.space
    started = time.monotonic()
    announced: str | None = None  # the holder we last told the user we wait for
    while True:
        token = try_acquire(collection, key, owner, ttl)
        if token is None:
            holder, now = read_lease(collection, key)
            if holder is None:  # released between our two calls: try again at once
                continue
            reason = "--force" if force else stale_reason(holder, now, here, process_alive)
            if reason:
                token = try_acquire(collection, key, owner, ttl, replacing=holder.token)
                if token is not None:
                    logger.warning("took over lease %s from %s: %s", key, holder.describe(now),
                                   reason)
        if token is not None:
            held, _ = read_lease(collection, key)
            waited = time.monotonic() - started
            if announced:
                logger.warning("lease %s acquired after waiting %.1f s", key, waited)
            else:
                logger.info("lease %s acquired", key)
            return token, held
        waited = time.monotonic() - started
        if waited >= wait_seconds:
            raise LeaseBusy(
                f"{key} is held by {holder.describe(now)}; waited {waited:.0f} s of "
                f"{wait_seconds:.0f} s. Wait longer (--wait SECONDS), or if that run is stuck, "
                f"take over with --force (`bootstrap doctor` shows every lease)"
            )
        if holder.token != announced:
            announced = holder.token
            until = datetime.now(UTC) + timedelta(seconds=wait_seconds - waited)
            logger.warning(
                "waiting for %s: held by %s; waiting up to %.0f s more (until %s UTC; --wait to "
                "change, --force to take over)",
                key, holder.describe(now), wait_seconds - waited, f"{until:%H:%M:%S}",
            )
        time.sleep(min(POLL_SECONDS, max(0.0, wait_seconds - waited)))


def _utc(value: datetime) -> datetime:
    # pymongo returns naive UTC datetimes unless the client is tz-aware.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
