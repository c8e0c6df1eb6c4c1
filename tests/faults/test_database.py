"""Case 1: MongoDB dies while `annotate` writes. A mongod of this test's own (FiftyOne's bundled
binary, its own port and folder) is killed with SIGKILL mid-run: the run must fail naming the
database and what to do, leave no half-written sample, and the same command after a restart
must finish with every image stored once."""

from __future__ import annotations

import json
import time

from tests.faults.conftest import last_line
from tests.faults.harness import OwnMongod
from tests.helpers import PLAIN_CONFIG, needs_model
from tests.integration.processes import Command, cli_env, wait_for

pytestmark = needs_model

DONE_STATES = ("predicted", "auto_accepted", "needs_review", "empty")


def samples_collection(client, dataset: str):
    """The raw collection of ``dataset``'s samples in that database (None before it exists)."""
    info = client["fiftyone"]["datasets"].find_one({"name": dataset})
    return client["fiftyone"][info["sample_collection_name"]] if info else None


def half_written(collection) -> list[str]:
    """Samples whose state and results disagree: done without predictions or size, or pending
    with predictions."""
    wrong = []
    for doc in collection.find({}, {"state": 1, "predictions": 1, "metadata": 1, "failure": 1,
                                    "prediction_run": 1, "filepath": 1}):
        state, done = doc.get("state"), doc.get("predictions") is not None
        if state in DONE_STATES and not (done and doc.get("metadata") and doc.get("prediction_run")):
            wrong.append(f"{doc['filepath']}: {state} without its results")
        elif state == "pending" and (done or doc.get("prediction_run")):
            wrong.append(f"{doc['filepath']}: pending with results")
        elif state == "failed" and not doc.get("failure"):
            wrong.append(f"{doc['filepath']}: failed without a reason")
        elif state not in (*DONE_STATES, "pending", "failed"):
            wrong.append(f"{doc['filepath']}: state {state!r}")
    return wrong


def test_mongod_killed_mid_run_fails_clearly_and_the_rerun_finishes(
    tmp_path, photo_folder, prefect_homes, commands, dataset_name, report_case
):
    photos = photo_folder(24)  # three chunks of 8 at batch size 1
    mongod = OwnMongod(tmp_path / "mongo")
    mongod.start()
    try:
        # serverSelectionTimeoutMS: how long pymongo waits for a lost server (default 30 s,
        # then Prefect's two retries); a MongoDB URI option any user can set.
        uri = f"{mongod.uri}/?serverSelectionTimeoutMS=3000"
        env = cli_env(prefect_homes, "db", FIFTYONE_DATABASE_URI=uri)
        env.pop("FIFTYONE_DATABASE_DIR", None)
        args = ["annotate", str(photos), "--dataset", dataset_name, "--config", PLAIN_CONFIG,
                "--batch-size", "1", "--json"]
        first = Command(args, env, tmp_path, "first")
        commands.append(first)
        client = mongod.client()

        def a_chunk_stored():
            samples = samples_collection(client, dataset_name)
            return samples is not None and samples.count_documents({"state": {"$ne": "pending"}})

        wait_for(a_chunk_stored, "the first chunk to be stored", timeout=300, every=0.05)
        # MongoDB commits its journal every 100 ms: a write acknowledged in the last 100 ms
        # before a crash may be gone after it (those images are pending again). Killed 0.5 s
        # after the first chunk, while the second is detected, the first is on disk.
        time.sleep(0.5)
        mongod.kill()
        killed = time.monotonic()
        code = first.process.wait(300)
        seconds = time.monotonic() - killed
        message = last_line(first.stderr)
        assert code == 1, first.stderr[-3000:]
        assert message.startswith(
            f"error: the database stopped answering: MongoDB at {mongod.uri}/"
        ), first.stderr[-3000:]
        assert "(FIFTYONE_DATABASE_URI) is unreachable" in message
        assert "run the same command again to finish" in message
        assert "Traceback" not in message
        assert seconds < 120, seconds

        mongod.start()  # same folder and port: WiredTiger recovers from its journal
        client = mongod.client()
        samples = samples_collection(client, dataset_name)
        assert half_written(samples) == []
        pending = samples.count_documents({"state": "pending"})
        assert samples.count_documents({}) == 24 and 0 < pending < 24

        rerun = Command(args, env, tmp_path, "rerun")
        commands.append(rerun)
        summary = rerun.finish(600)
        assert summary["new"] == 0 and summary["known"] == 24
        assert summary["annotated"] == pending and summary["failed"] == []
        hashes = [d["content_hash"] for d in samples.find({}, {"content_hash": 1})]
        assert len(hashes) == len(set(hashes)) == 24  # every image exactly once
        assert samples.count_documents({"state": {"$in": list(DONE_STATES[1:])}}) == 24
        assert half_written(samples) == []
        status = Command(["status", dataset_name, "--json"], env, tmp_path, "status")
        commands.append(status)
        assert status.process.wait(120) == 0, status.stderr[-2000:]
        counts = json.loads(status.stdout)
        assert counts["samples"] == 24 and counts["pending"] == 0 and counts["failed"] == 0
        report_case(
            "mongod-killed",
            seen=message.removeprefix("error: "),
            lost=f"nothing: {24 - pending} images stored complete before the kill, {pending} "
                 f"left pending, no half-written sample; the rerun annotated the {pending} "
                 "and every image is stored once",
            seconds=round(seconds, 1),
        )
    finally:
        mongod.stop()
