"""``bootstrap doctor``: find what keeps the pipeline from running, explain it, fix what is safe.

Checks (each a ``Finding``): a leftover bundled ``mongod`` that holds our database folder, the
database answering, stale dataset leases (``bootstrap.lease``), the Prefect API when
``PREFECT_API_URL`` is set, and the configured weights. ``fix=True`` stops only a leftover
``mongod`` of this user on our database folder and deletes only leases whose holder is gone.

Why a leftover mongod wedges everything: FiftyOne runs its bundled mongod under a small service
process (``fiftyone/service/main.py --51-service db``) that stops mongod when its last client
exits. Kill that service together with the command that started it (``pkill -9 -P <pid>``,
an OOM kill of the process group) and mongod lives on with no service above it, holding the
folder's lock. Every later start of a new mongod on that folder then fails, and FiftyOne only
says ``ServiceListenTimeout: DatabaseService failed to bind to port`` after a minute.
``check_database_not_wedged`` recognises this at once, before FiftyOne tries.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

MONGOD = "mongod"
SERVICE_ARGS = ("--51-service", "db")
FIFTYONE_DEFAULT_DB_DIR = Path("~/.fiftyone/var/lib/mongo")


class DatabaseWedged(RuntimeError):
    """A leftover mongod holds the bundled database's folder, so FiftyOne cannot start one."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome: ``status`` is ok, warn or fail; ``fix`` says what to do, or what
    ``--fix`` did when ``fixed``."""

    check: str
    status: str
    message: str
    fix: str = ""
    fixed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MongodProcess:
    """A running mongod that uses our database folder."""

    pid: int
    uid: int
    user: str
    folder: str
    parent_pid: int
    under_service: bool  # started by a live FiftyOne database service (in use: leave alone)
    started: float

    @property
    def mine(self) -> bool:
        return self.uid == os.getuid()

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"mongod pid {self.pid} (user {self.user}, started {when}, parent pid {self.parent_pid})"


# -- the bundled database -----------------------------------------------------------------------


def database_settings() -> tuple[str | None, Path]:
    """``(database_uri, database_dir)`` as FiftyOne will resolve them, without importing it
    (a 5-10 s import): environment first, then FiftyOne's config file, then its default."""
    config_path = Path(os.environ.get("FIFTYONE_CONFIG_PATH") or "~/.fiftyone/config.json")
    try:
        stored = json.loads(config_path.expanduser().read_text())
    except (OSError, ValueError):
        stored = {}
    uri = os.environ.get("FIFTYONE_DATABASE_URI") or stored.get("database_uri") or None
    folder = os.environ.get("FIFTYONE_DATABASE_DIR") or stored.get("database_dir")
    folder = Path(folder or FIFTYONE_DEFAULT_DB_DIR).expanduser()
    return uri, Path(os.path.abspath(folder))


def database_location() -> str:
    """Where the datasets live, for messages: the MongoDB URI (its password hidden) or the
    bundled database's data folder."""
    uri, folder = database_settings()
    if uri is not None:
        where = "FIFTYONE_DATABASE_URI" if os.environ.get("FIFTYONE_DATABASE_URI") else "FiftyOne's config"
        return f"MongoDB at {_redact(uri)} ({where})"
    return f"FiftyOne's bundled MongoDB (data folder {folder})"


def mongods_on(folder: Path) -> list[MongodProcess]:
    """Every running mongod (any user's) whose ``--dbpath`` is ``folder``."""
    import psutil

    wanted = os.path.realpath(folder)
    found = []
    for process in psutil.process_iter(["name", "cmdline", "ppid", "uids", "username",
                                        "create_time"]):
        info = process.info
        cmdline = info.get("cmdline") or []
        if not cmdline or os.path.basename(cmdline[0]) != MONGOD:
            continue
        dbpath = _option(cmdline, "--dbpath")
        if dbpath is None or os.path.realpath(dbpath) != wanted:
            continue
        found.append(MongodProcess(
            pid=process.pid, uid=info["uids"].real if info.get("uids") else -1,
            user=info.get("username") or "?", folder=dbpath, parent_pid=info.get("ppid") or 0,
            under_service=_is_database_service(info.get("ppid") or 0),
            started=info.get("create_time") or 0.0,
        ))
    return found


def leftover_mongods(folder: Path) -> list[MongodProcess]:
    """The mongods on ``folder`` that no FiftyOne service runs: they block a new one."""
    return [m for m in mongods_on(folder) if not m.under_service]


def wedged_message(leftover: list[MongodProcess], folder: Path) -> str:
    """What is wrong and how to recover, naming each mongod and the folder."""
    lines = [
        f"FiftyOne's bundled database cannot start: {m.describe()} still holds its data folder "
        f"{folder}, and no FiftyOne database service runs it (left behind by a killed process, "
        "or started by hand)."
        for m in leftover
    ]
    if all(m.mine for m in leftover):
        pids = " ".join(str(m.pid) for m in leftover)
        lines.append(
            f"Recover: `bootstrap doctor --fix` (stops it), or `kill {pids}`; then run the "
            "command again. Nothing stored is lost: mongod shuts down cleanly on SIGTERM."
        )
    else:
        lines.append(
            "It belongs to another user, so bootstrap will not stop it: ask them, or give "
            "yourself a folder of your own with FIFTYONE_DATABASE_DIR."
        )
    return "\n".join(lines)


_checked_ok = False


def check_database_not_wedged() -> None:
    """Fail fast, with the reason, where FiftyOne would wait a minute and then fail obscurely.

    Cheap (one scan of the process table); once it has passed, it is not repeated in this
    process. No-op with ``FIFTYONE_DATABASE_URI`` (a database someone else runs) and in a
    child of a connected FiftyOne process (it connects to its parent's mongod).

    Raises:
        DatabaseWedged: a leftover mongod holds the bundled database's folder.
    """
    global _checked_ok
    if _checked_ok:
        return
    uri, folder = database_settings()
    # FiftyOne sets this in a process that has connected; its children use that mongod as it is.
    inherited = os.environ.get("FIFTYONE_PRIVATE_DATABASE_PORT")
    if uri is None and not inherited:
        leftover = leftover_mongods(folder)
        if leftover:
            raise DatabaseWedged(wedged_message(leftover, folder))
    _checked_ok = True


def stop_mongod(mongod: MongodProcess, timeout: float = 30.0) -> None:
    """Stop a leftover mongod of this user: SIGTERM (a clean shutdown), SIGKILL if it hangs."""
    import psutil

    if not mongod.mine or mongod.under_service:
        raise ValueError(f"refusing to stop {mongod.describe()}: not a leftover of this user")
    process = psutil.Process(mongod.pid)
    if abs(process.create_time() - mongod.started) > 1.0:
        return  # it exited and its PID went to another process
    process.terminate()
    if not _exited(process, timeout):
        process.kill()
        _exited(process, 10)


def _exited(process, timeout: float) -> bool:
    # Not process.wait(): an orphan is not our child, and until its new parent reaps it, it
    # lingers as a zombie that psutil would count as running.
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


# -- the checks ---------------------------------------------------------------------------------


def run_checks(fix: bool = False, config_path: str | None = None) -> list[Finding]:
    """Run every check (fixing what is safe when ``fix``) and return the findings in order."""
    uri, folder = database_settings()
    findings = []
    wedged = False
    if uri is None:
        finding = _check_leftover_mongod(folder, fix)
        wedged = finding.status == "fail"
        findings.append(finding)
    reachable = _check_database(uri, folder, skip=wedged)
    findings.append(reachable)
    if reachable.status != "fail":
        findings.append(_check_leases(fix))
    findings.append(_check_prefect())
    findings.extend(_check_weights(config_path))
    return findings


def _check_leftover_mongod(folder: Path, fix: bool) -> Finding:
    try:
        leftover = leftover_mongods(folder)
    except Exception as error:  # noqa: BLE001 - a process table we cannot read is a finding
        return Finding("mongod", "warn", f"could not list processes: {error}")
    if not leftover:
        running = mongods_on(folder)
        note = f" (pid {running[0].pid}, run by a FiftyOne service)" if running else ""
        return Finding("mongod", "ok", f"no leftover mongod holds {folder}{note}")
    if fix and all(m.mine for m in leftover):
        for mongod in leftover:
            stop_mongod(mongod)
        stopped = ", ".join(m.describe() for m in leftover)
        return Finding("mongod", "ok", f"{folder} was held by a leftover {stopped}",
                       fix="stopped it (SIGTERM: clean shutdown)", fixed=True)
    message = wedged_message(leftover, folder)
    first, _, recover = message.rpartition("\n")
    return Finding("mongod", "fail", first, fix=recover.removeprefix("Recover: "))


def _check_database(uri: str | None, folder: Path, skip: bool) -> Finding:
    if skip:
        return Finding("database", "fail", f"not tried: the leftover mongod above holds {folder}",
                       fix="stop it first (bootstrap doctor --fix)")
    if uri is not None:
        return _ping_uri(uri)
    try:
        import fiftyone.core.odm as foo

        db = foo.get_db_conn()
        db.command("ping")
        served = db.client.admin.command("getCmdLineOpts")["parsed"]["storage"]["dbPath"]
    except Exception as error:  # noqa: BLE001 - FiftyOne raises many types for a dead database
        return Finding("database", "fail", f"FiftyOne's bundled database did not start: "
                       f"{type(error).__name__}: {error}",
                       fix=f"see {folder / 'log' / 'mongo.log'}; or set FIFTYONE_DATABASE_URI")
    if os.path.realpath(served) != os.path.realpath(folder):
        return Finding(
            "database", "warn",
            f"FiftyOne answers, but from {served}, not the configured {folder}: FiftyOne runs "
            "one bundled database per user and attaches to the one already running, whatever "
            "its folder",
            fix="stop the other FiftyOne processes of this user, or set FIFTYONE_DATABASE_URI "
                "to a MongoDB of your own for a separate database",
        )
    return Finding("database", "ok", f"FiftyOne's bundled database answers (folder {folder})")


def _ping_uri(uri: str) -> Finding:
    from pymongo import MongoClient

    shown = _redact(uri)
    try:
        with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            client.admin.command("ping")
    except Exception as error:  # noqa: BLE001
        return Finding("database", "fail", f"MongoDB at {shown} does not answer: {error}",
                       fix="start it, or fix FIFTYONE_DATABASE_URI")
    return Finding("database", "ok", f"MongoDB at {shown} answers")


def _check_leases(fix: bool) -> Finding:
    from bootstrap import lease

    try:
        collection = lease.default_collection()
        leases, now = lease.list_leases(collection)
        here = lease.process_space()
        stale = [(x, r) for x in leases
                 if (r := lease.stale_reason(x, now, here, lease.process_alive))]
        if fix and stale:
            cleared = lease.clear_stale(collection, here)
            return Finding("leases", "ok", "; ".join(
                f"{x.key} held by {x.describe(now)}: {r}" for x, r in cleared
            ) or "no stale lease", fix=f"cleared {len(cleared)} stale lease(s)", fixed=True)
    except Exception as error:  # noqa: BLE001
        return Finding("leases", "warn", f"could not read the leases: {error}")
    if stale:
        return Finding(
            "leases", "warn",
            "; ".join(f"{x.key} held by {x.describe(now)}: {r}" for x, r in stale),
            fix="harmless (the next run takes it over at once); `bootstrap doctor --fix` clears it",
        )
    if leases:
        return Finding("leases", "ok", "; ".join(
            f"{x.key} held by live {x.describe(now)}" for x in leases
        ))
    return Finding("leases", "ok", "no run holds a dataset")


def _check_prefect() -> Finding:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return Finding("prefect", "ok", "PREFECT_API_URL is not set: each command starts an "
                       "ephemeral Prefect API of its own")
    import httpx

    health = url.rstrip("/") + "/health"
    try:
        response = httpx.get(health, timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as error:
        return Finding("prefect", "fail", f"the Prefect API at {url} does not answer ({error})",
                       fix="start it (make server), or unset PREFECT_API_URL to run without one")
    return Finding("prefect", "ok", f"the Prefect API at {url} answers")


def _check_weights(config_path: str | None) -> list[Finding]:
    from bootstrap.config import ConfigError, load_config
    from bootstrap.detections import DetectorError
    from bootstrap.yolo import MODELS_ENV, resolve_weights

    try:
        config = load_config(config_path)
    except ConfigError as error:
        return [Finding("weights", "fail", f"invalid configuration: {error}")]
    findings = []
    for model in filter(None, (config.detector.model, config.detector.second_model)):
        try:
            path = resolve_weights(model)
        except DetectorError as error:
            findings.append(Finding("weights", "fail", str(error)))
            continue
        if Path(path).is_file():
            findings.append(Finding("weights", "ok", f"{model}: {path}"))
        else:
            folder = os.environ.get(MODELS_ENV) or "unset"
            findings.append(Finding(
                "weights", "warn",
                f"{model}: not found as a file nor in ${MODELS_ENV} ({folder}); Ultralytics "
                "will try its cache, then a download (needs internet)",
                fix=f"put {model} in a folder and set {MODELS_ENV} to it",
            ))
    return findings


def _option(cmdline: list[str], name: str) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg == name and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _is_database_service(pid: int) -> bool:
    import psutil

    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return any(cmdline[i:i + 2] == list(SERVICE_ARGS) for i in range(len(cmdline)))


def _redact(uri: str) -> str:
    # mongodb://user:secret@host -> mongodb://user:***@host
    scheme, sep, rest = uri.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return scheme + sep + rest
