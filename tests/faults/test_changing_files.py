"""Case 6: files that change under the pipeline, and folders and names that discovery meets.

* removed between discovery and decoding, and rewritten between hashing and decoding: the
  library's own steps (discover, plan, annotate a chunk) with the file changed between them,
  real yolov8n, the real database;
* a symlink loop, a folder without read permission, names with spaces, newlines and bytes that
  are not UTF-8: one `bootstrap annotate` over such a folder. Root reads any folder, so when the
  tests run as root the command runs without the two capabilities that let it
  (`setpriv --bounding-set=-dac_override,-dac_read_search`): the kernel then refuses the
  locked folder to it as to any user.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from bootstrap.sources import content_hash
from tests.faults.harness import OwnMongod
from tests.helpers import PLAIN_CONFIG, ROOT, needs_model
from tests.integration.processes import BOOTSTRAP, cli_env

pytestmark = needs_model


def _config(dataset: str, folder: Path):
    from bootstrap.config import load_pipeline_config

    return load_pipeline_config(PLAIN_CONFIG, dataset=dataset, sources=[str(folder)],
                                detector={"batch_size": 4})


def test_removed_and_rewritten_files_are_named_or_requeued(
    photo_folder, coco_images, dataset_name, report_case
):
    from bootstrap.annotate import (
        REQUEUED,
        annotate_chunk,
        discover_new_images,
        plan_chunks,
        run_annotation,
    )
    from bootstrap.store import ImageStore

    folder = photo_folder(6)
    removed, rewritten, copied, *_ = sorted(folder.glob("*.jpg"))
    config = _config(dataset_name, folder)
    assert discover_new_images(config).new == 6
    # Between discovery (hashed) and detection (decoded):
    removed.unlink()
    stranger = coco_images[40]  # bytes the dataset does not hold
    rewritten.write_bytes(stranger.read_bytes())
    sibling = sorted(folder.glob("*.jpg"))[-1]
    copied.write_bytes(sibling.read_bytes())  # now a copy of another stored image
    (chunk,) = plan_chunks(config, chunk_size=16)
    report = annotate_chunk(config, "run-1", chunk)
    failed = dict(report.failed)
    assert failed[str(removed)] == "file disappeared before it could be read"
    assert failed[str(rewritten)] == REQUEUED
    assert failed[str(copied)] == REQUEUED

    store = ImageStore(dataset_name)
    rows = {p: (s, h, f) for p, s, h, f in zip(*store.dataset.values(
        ["filepath", "state", "content_hash", "failure"]), strict=True)}
    assert rows[str(removed)][0] == "failed"
    # Re-queued under the hash of the bytes now in the file, so what will be decoded is what
    # the stored hash says.
    assert rows[str(rewritten)][:2] == ("pending", content_hash(str(stranger)))
    # The same bytes as another stored image: the unique hash refuses a second copy.
    assert rows[str(copied)][0] == "failed"
    assert rows[str(copied)][2].startswith("the file was rewritten during the run with the bytes of another stored image")

    summary = run_annotation(config)  # the next run
    assert summary.new == 0 and summary.annotated == 1 and summary.failed == []
    sample = next(s for s in store.dataset if s.filepath == str(rewritten))
    assert sample.state in ("auto_accepted", "needs_review", "empty")
    assert sample.content_hash == content_hash(str(rewritten))
    from PIL import Image

    with Image.open(stranger) as image:  # the boxes are the new image's: its size
        assert (sample.metadata.width, sample.metadata.height) == image.size
    hashes = store.dataset.values("content_hash")
    assert len(hashes) == len(set(hashes))
    report_case(
        "file-removed",
        seen=f"failed {removed.name}: file disappeared before it could be read",
        lost="nothing: that one image is failed with its reason; the run went on",
    )
    report_case(
        "file-rewritten",
        seen=f"failed {rewritten.name}: {REQUEUED}",
        lost="nothing: the image took the hash of its new bytes and the next run annotated "
             "them; a file rewritten into a copy of another stored image fails saying so",
    )


@pytest.fixture
def odd_folder(tmp_path, coco_images):
    """Odd names, a symlink loop and a locked subfolder."""
    photos = tmp_path / "odd"
    photos.mkdir()
    names = ["a b.jpg", "new\nline.jpg", "ünïcode.jpg", "plain.jpg"]
    for name, source in zip(names, coco_images, strict=False):
        (photos / name).write_bytes(source.read_bytes())
    with open(os.fsencode(str(photos)) + b"/bad\xff\xfe.jpg", "wb") as handle:
        handle.write(coco_images[10].read_bytes())
    (photos / "loop").symlink_to(".", target_is_directory=True)  # photos/loop/loop/... forever
    (photos / "self.jpg").symlink_to("self.jpg")  # a link to itself
    locked = photos / "locked"
    locked.mkdir()
    (locked / "hidden.jpg").write_bytes(coco_images[11].read_bytes())
    locked.chmod(0)
    yield photos, names
    locked.chmod(stat.S_IRWXU)


def _without_root_reading(args: list[str], env: dict) -> subprocess.CompletedProcess:
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv (util-linux): root reads every "
                        "folder, so the permission error cannot be shown")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, BOOTSTRAP, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_symlink_loop_locked_folder_and_odd_names(tmp_path, odd_folder, report_case):
    photos, names = odd_folder
    mongod = OwnMongod(tmp_path / "mongo")
    mongod.start()
    try:
        env = cli_env(tmp_path, "odd", FIFTYONE_DATABASE_URI=mongod.uri)
        env.pop("FIFTYONE_DATABASE_DIR", None)
        dataset = "odd-names"
        done = _without_root_reading(["annotate", str(photos), "--dataset", dataset, "--config",
                                      PLAIN_CONFIG, "--json"], env)
        assert done.returncode == 0, done.stderr[-4000:]
        summary = json.loads(done.stdout[done.stdout.index("{"):])
        failed = dict(summary["failed"])
        assert summary["found"] == 4 and summary["annotated"] == 4  # the loop walked once
        assert failed == {
            f"{photos}/bad\\xff\\xfe.jpg": "file name is not valid UTF-8 (the database stores "
            "paths as UTF-8 text); rename it, e.g. with `convmv -f latin1 -t utf8`",
            f"{photos}/self.jpg": "cannot read: Too many levels of symbolic links",
            f"{photos}/locked": "cannot list folder: Permission denied",
        }
        client = mongod.client()
        info = client["fiftyone"]["datasets"].find_one({"name": dataset})
        stored = sorted(Path(d["filepath"]).name for d in
                        client["fiftyone"][info["sample_collection_name"]].find({}, {"filepath": 1}))
        assert stored == sorted(names)

        out = tmp_path / "export"
        exported = _without_root_reading(["export", dataset, "--out", str(out), "--include",
                                          "accepted,reviewed,needs_review,empty", "--json"], env)
        assert exported.returncode == 0, exported.stderr[-3000:]
        images = sorted(p.name for p in (out / "images").rglob("*.jpg"))
        assert images == sorted(names)  # the odd names as they were, inside the export
        labels = sorted(p.name for p in (out / "labels").rglob("*.txt"))
        assert labels == sorted(n.removesuffix(".jpg") + ".txt" for n in names)
        report_case(
            "odd-folders-and-names",
            seen="; ".join(f"failed {k.removeprefix(str(photos) + '/')}: {v}"
                           for k, v in sorted(failed.items())),
            lost="nothing: the four readable photos (a space, a newline, non-ASCII UTF-8 in "
                 "their names) were annotated and exported under their names; the loop was "
                 "walked once; each left-out entry is named with its reason",
            how="as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv) when the "
                "tests run as root",
        )
    finally:
        mongod.stop()
