"""Case 8: two writers on one dataset. `bootstrap review apply` (twice at once) while
`bootstrap triage` re-routes the whole dataset, and while `bootstrap annotate` adds new images:
every decision of the reviewer survives and every image is applied (counted) once.

Triage lists the images to route, then reads, computes and writes them 1000 at a time: an apply
landing after the listing used to be written over (the image back to `needs_review`, its
rejected box back as automatic), and two applies both applied (counted) every image. Measured
with the code before the fix: all 300 reviewed images lost their decisions, counted [300, 300].
To land the applies there for sure, triage is frozen (SIGSTOP) right after it wrote its first
chunk, the applies run, and triage goes on (SIGCONT)."""

from __future__ import annotations

import re
import time

from bson import ObjectId

from bootstrap import documents
from tests.helpers import PLAIN_CONFIG, car_detections, needs_model
from tests.integration.processes import Command, cli_env, wait_for

REVIEWED = 300


def _big_dataset(name: str, images: int, photo: str):
    from bootstrap.config import TriageConfig
    from bootstrap.store import ImageResult, ImageStore, NewImage
    from bootstrap.triage import apply_triage

    store = ImageStore(name, classes=["car"])
    store.add_pending(NewImage(photo, f"{i:064x}", 100, 1) for i in range(images))
    ids = store.pending_ids()
    for start in range(0, images, 5000):
        store.record_results([ImageResult(i, photo, car_detections(6, (640, 480)))
                              for i in ids[start:start + 5000]], "synthetic", "r")
    apply_triage(store, TriageConfig())
    return store


def review_in_the_app(store, ids: list[ObjectId]) -> dict[ObjectId, dict]:
    """What a reviewer does in the App on each image, written as the App writes it: a label tag
    `reject` on the first box, a drawn box (no provenance), the sample tag `reviewed`.
    Returns what each image must hold after `review apply`."""
    collection = documents.sample_collection(store.dataset)
    expected = {}
    for doc in collection.find({"_id": {"$in": ids}}, {"labels": 1}):
        boxes = doc["labels"]["detections"]
        drawn = documents.detection_document(label="car", bounding_box=[0.6, 0.6, 0.2, 0.2])
        boxes[0]["tags"] = ["reject"]
        collection.update_one({"_id": doc["_id"]}, {
            "$set": {"labels.detections": [*boxes, drawn]}, "$addToSet": {"tags": "reviewed"},
        })
        expected[doc["_id"]] = {"rejected": boxes[0]["_id"], "drawn": drawn["_id"],
                                "boxes": len(boxes)}  # one rejected, one drawn
    return expected


def decisions_lost(store, expected: dict[ObjectId, dict]) -> list[str]:
    lost = []
    collection = documents.sample_collection(store.dataset)
    for doc in collection.find({"_id": {"$in": list(expected)}}, {"labels": 1, "state": 1}):
        want, boxes = expected[doc["_id"]], doc["labels"]["detections"]
        ids = {box["_id"] for box in boxes}
        if doc["state"] != "reviewed":
            lost.append(f"{doc['_id']}: state {doc['state']}")
        if want["rejected"] in ids or any("reject" in box.get("tags", []) for box in boxes):
            lost.append(f"{doc['_id']}: the rejected box is back")
        if want["drawn"] not in ids:
            lost.append(f"{doc['_id']}: the drawn box is gone")
        if len(boxes) != want["boxes"] or any(
            box.get("provenance") != "human" or not box.get("confirmed") for box in boxes
        ):
            lost.append(f"{doc['_id']}: boxes {[(b.get('provenance'), b.get('route')) for b in boxes]}")
    return lost


def _applied(command: Command) -> int:
    assert command.process.wait(600) == 0, command.stderr[-3000:]
    return int(re.search(r"applied (\d+) reviewed images", command.stdout).group(1))


def test_review_apply_twice_during_a_retriage(tmp_path, coco_images, dataset_name, commands,
                                              report_case):
    import os
    import signal

    store = _big_dataset(dataset_name, 6000, str(coco_images[0]))
    ids = store.ids_in_states(["needs_review"])
    chosen = ids[1000:4000:10]  # in the chunks after the first, where triage is frozen
    expected = review_in_the_app(store, chosen)
    env = cli_env(tmp_path, "writers")
    began = time.time()
    triage = Command(["triage", dataset_name, "--config", PLAIN_CONFIG, "--accept", "0.6"], env,
                     tmp_path, "triage")
    commands.append(triage)
    collection = documents.sample_collection(store.dataset)
    wait_for(lambda: collection.find_one({"last_modified_at": {"$gt": _utc(began)}}, {"_id": 1}),
             "triage to write its first chunk", timeout=300, every=0.01)
    os.kill(triage.pid, signal.SIGSTOP)  # reading or computing its second chunk
    try:
        applies = [Command(["review", "apply", dataset_name, "--config", PLAIN_CONFIG,
                            "--reviewer", f"ana-{n}"], env, tmp_path, f"apply-{n}") for n in (1, 2)]
        commands.extend(applies)
        counted = [_applied(apply) for apply in applies]
    finally:
        os.kill(triage.pid, signal.SIGCONT)
    assert triage.process.wait(600) == 0, triage.stderr[-3000:]
    assert sum(counted) == REVIEWED, counted  # no image applied (counted) twice
    assert decisions_lost(store, expected) == []
    states = store.state_counts()
    assert states["reviewed"] == REVIEWED and sum(states.values()) == 6000
    report_case(
        "two-writers-triage",
        seen=f"applied {counted[0]} reviewed images … / applied {counted[1]} reviewed images … "
             "(two applies at once, inside a re-triage); triage printed its counts",
        lost=f"nothing: all {REVIEWED} reviewed images kept state reviewed, their drawn box and "
             "the removal of their rejected box; each counted by exactly one apply",
    )


def _utc(epoch: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


@needs_model
def test_review_apply_while_annotate_adds_images(tmp_path, coco_images, photo_folder,
                                                  dataset_name, commands, report_case):
    from bootstrap.store import ImageStore
    from tests.faults.datasets import labelled_dataset

    store = labelled_dataset(dataset_name, coco_images[:48])
    ids = store.ids_in_states(["needs_review"])[:20]
    expected = review_in_the_app(store, ids)
    new = photo_folder(0, name="new")
    for path in coco_images[48:72]:
        (new / path.name).write_bytes(path.read_bytes())
    env = cli_env(tmp_path, "annotate")
    annotate = Command(["annotate", str(new), "--dataset", dataset_name, "--config",
                        PLAIN_CONFIG, "--batch-size", "2", "--json"], env, tmp_path, "annotate")
    commands.append(annotate)
    wait_for(lambda: len(ImageStore(dataset_name).dataset) > 48, "annotate to register images",
             timeout=300, every=0.1)
    apply = Command(["review", "apply", dataset_name, "--config", PLAIN_CONFIG], env, tmp_path,
                    "apply")
    commands.append(apply)
    applied = _applied(apply)
    summary = annotate.finish(600)
    assert summary["new"] == 24 and summary["annotated"] == 24
    assert applied == 20
    assert decisions_lost(store, expected) == []
    hashes = store.dataset.values("content_hash")
    assert len(hashes) == len(set(hashes)) == 72
    assert store.status()["pending"] == 0
    report_case(
        "two-writers-annotate",
        seen="applied 20 reviewed images … ; annotate: 24 new, 24 annotated",
        lost="nothing: the 20 reviewed images kept every decision; the 24 new images were "
             "stored once each",
    )
