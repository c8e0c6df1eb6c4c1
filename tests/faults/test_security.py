"""Security: every server the project starts listens on the loopback interface only (read from
the kernel's socket table), secrets stay out of output, command lines, samples, manifests and
logs and their files are 0600, and exported paths cannot leave the export folder whatever the
file names. (`make server` / `make serve`: tests/faults/test_prefect_faults.py.)"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest

from tests.faults.harness import listening_addresses, wait_for_listening
from tests.helpers import ROOT, needs_coco
from tests.integration.processes import BOOTSTRAP, Service, free_port, wait_for
from tests.labelstudio_server import LS_BIN, migrated_template

LOOPBACK = ("127.0.0.1", "::1")


def _public(addresses) -> list:
    return sorted(a for a in addresses if a[0] not in LOOPBACK)


def _cmdlines(pid: int) -> str:
    root = psutil.Process(pid)
    return "\n".join(" ".join(p.cmdline()) for p in [root, *root.children(recursive=True)])


@pytest.fixture
def labelstudio_by_make(tmp_path):
    """`make labelstudio` on a copy of the migrated test template (a first start would spend
    1-2.5 min on migrations), on a free port; its secrets are made by make itself."""
    if not LS_BIN.is_file():
        pytest.skip(f"Label Studio is not installed ({LS_BIN} missing): run `make "
                    "labelstudio-install` or set LABEL_STUDIO_BIN")
    template, _ = migrated_template()
    data = tmp_path / "ls-data"
    shutil.copytree(template, data)
    (data / "token").unlink()
    port = free_port()
    log = tmp_path / "make-labelstudio.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    service = Service(["make", "--no-print-directory", "labelstudio", f"LS_VENV={LS_BIN.parent.parent}",
                       f"LS_DATA={data}", f"LABEL_STUDIO_PORT={port}",
                       f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={tmp_path}"], env, log)
    try:
        wait_for(lambda: _healthy(f"http://127.0.0.1:{port}"), "make labelstudio", timeout=400, every=1)
        yield service, port, data, log
    finally:
        service.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_make_labelstudio_listens_on_loopback_and_keeps_its_secrets(labelstudio_by_make, report_case):
    service, port, data, log = labelstudio_by_make
    token, password = (data / "api-key").read_text().strip(), (data / "password").read_text().strip()
    for secret in ("api-key", "password"):
        assert stat.S_IMODE((data / secret).stat().st_mode) == 0o600
    # The token works: it reached Label Studio through the environment, not the command line.
    answer = httpx.get(f"http://127.0.0.1:{port}/api/projects",
                       headers={"Authorization": f"Token {token}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    addresses = wait_for_listening(service.process.pid, port)
    assert _public(addresses) == [] and ("127.0.0.1", port) in addresses
    commands = _cmdlines(service.process.pid)
    assert "label-studio start" in commands
    assert token not in commands and password not in commands  # `ps` shows every user this
    printed = log.read_text()
    assert token not in printed and password not in printed
    assert "password in" in printed  # where to find it, not what it is
    report_case("listen-labelstudio", seen=f"make labelstudio: {sorted(addresses)}",
                lost="-: api-key and password 0600, in no command line and not in its output")


@needs_coco
def test_bootstrap_app_and_the_database_listen_on_loopback(tmp_path, labelled, report_case):
    from bootstrap.doctor import database_settings, mongods_on

    port = free_port()
    app = Service([BOOTSTRAP, "app", labelled.name, "--port", str(port)], dict(os.environ),
                  tmp_path / "app.log")
    try:
        addresses = wait_for_listening(app.process.pid, port, timeout=300)
        assert _public(addresses) == [], addresses
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert page.status_code == 200
    finally:
        app.stop()
    uri, folder = database_settings()
    mongods = [] if uri else mongods_on(folder)
    for mongod in mongods:  # FiftyOne's bundled database, started for these tests
        database = listening_addresses(mongod.pid)
        assert database and _public(database) == [], database
    report_case("listen-app", seen=f"bootstrap app: {sorted(addresses)}; the bundled mongod: "
                f"{sorted(listening_addresses(mongods[0].pid)) if mongods else 'external'}",
                lost="-")


def test_database_password_is_never_printed(tmp_path):
    """A MongoDB URI with credentials: `doctor` and the lost-database error hide the password."""
    secret = "s3cret-pw"
    env = dict(os.environ, FIFTYONE_DATABASE_URI=f"mongodb://ana:{secret}@127.0.0.1:{free_port()}"
               "/?serverSelectionTimeoutMS=1500")
    env.pop("FIFTYONE_DATABASE_DIR", None)
    for args in (["doctor", "--json"], ["status", "any", "--json"]):
        done = subprocess.run([BOOTSTRAP, *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode != 0
        assert secret not in done.stdout + done.stderr, args
        assert "mongodb://ana:***@127.0.0.1" in done.stdout + done.stderr, (args, done.stderr[-1500:])


@needs_coco
def test_label_studio_token_stays_out_of_samples_and_manifests(tmp_path, coco_images, dataset_name):
    """What push and pull store (dataset info, samples) and what an export writes never hold
    the token (a real Label Studio, started fresh)."""
    if not LS_BIN.is_file():
        pytest.skip(f"Label Studio is not installed ({LS_BIN} missing)")
    from bootstrap import documents
    from bootstrap.export import export_dataset
    from bootstrap.labelstudio import (
        LabelStudioClient,
        LabelStudioSettings,
        pull_annotations,
        push_review_queue,
    )
    from bootstrap.review import build_review_queue
    from tests.faults.datasets import labelled_dataset
    from tests.labelstudio_server import start_fresh

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in coco_images[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    store = labelled_dataset(dataset_name, sorted(folder.glob("*.jpg")))
    server = start_fresh(tmp_path / "ls", tmp_path)
    try:
        settings = LabelStudioSettings(url=server.url, token=server.token, files_root=str(tmp_path))
        with LabelStudioClient(settings) as client:
            push_review_queue(store, client, build_review_queue(store).sample_ids)
            pull_annotations(store, client)
    finally:
        server.stop()
    manifest = export_dataset(store, tmp_path / "export", include="accepted,reviewed,needs_review")
    stored = json.dumps(store.dataset.info, default=str) + "".join(
        json.dumps(doc, default=str) for doc in documents.sample_collection(store.dataset).find()
    )
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "export").rglob("*")
                      if p.is_file() and p.suffix in (".json", ".yaml", ".txt"))
    assert server.token not in stored + json.dumps(manifest) + written
    assert store.dataset.info["label_studio"]["url"] == server.url  # what is kept: where, not how


CRAFTED = ["-rf .jpg", "a\\b.jpg", "%2e%2e%2fescape.jpg", " .jpg", "new\nline.jpg",
           "x..\\..\\win.jpg", "€.jpg", "a..jpg"]


@needs_coco
@pytest.mark.parametrize("format", ["yolo", "coco"])
def test_exported_paths_stay_inside_the_export_folder(tmp_path, coco_images, dataset_name, format):
    """Files with crafted names, and a path with `..` segments: every file the export writes is
    below its folder, and its labels name files by their base name only. A name starting with
    '..' (which FiftyOne's exporters mishandle) is refused before anything is written."""
    from bootstrap.export import ExportError, export_dataset
    from bootstrap.store import ImageStore
    from tests.faults.datasets import coco_classes
    from tests.helpers import add_images, set_image

    sources = tmp_path / "src" / "deep"
    sources.mkdir(parents=True)
    paths = []
    for name, photo in zip(CRAFTED, coco_images, strict=False):
        (sources / name).write_bytes(photo.read_bytes())
        paths.append(sources / name)
    (tmp_path / "src" / "other.jpg").write_bytes(coco_images[20].read_bytes())
    paths.append(Path(str(tmp_path / "src" / "deep" / ".." / "other.jpg")))
    store = ImageStore(dataset_name, classes=coco_classes())
    add_images(store, paths)
    box = {"label": "person", "bounding_box": [0.1, 0.1, 0.2, 0.2], "provenance": "human"}
    for path in paths:
        set_image(store, path, "reviewed", [box])
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "exports" / "crafted"
    manifest = export_dataset(store, out, format=format)
    assert manifest["counts"]["images"] == len(paths)
    created = {p for p in tmp_path.rglob("*")} - before
    real_out = os.path.realpath(out)
    for path in created:
        assert os.path.realpath(path) == real_out or os.path.realpath(path).startswith(real_out + os.sep) \
            or path == out.parent, path
    images = [p for p in out.rglob("*") if p.is_file() and p.suffix == ".jpg"]
    assert len(images) == len(paths)
    if format == "coco":
        for split in (p for p in out.iterdir() if p.is_dir()):
            for image in json.loads((split / "labels.json").read_text())["images"]:
                name = image["file_name"]
                assert "/" not in name and name not in ("..", ".") and (split / "data" / name).is_file()

    dotted = tmp_path / "src" / "..evil.jpg"
    dotted.write_bytes(coco_images[21].read_bytes())
    add_images(store, [dotted])
    set_image(store, dotted, "reviewed", [box])
    listed = sorted(p.name for p in out.parent.iterdir())
    with pytest.raises(ExportError, match=r"cannot export images whose names start with '\.\.'"):
        export_dataset(store, out, format=format)
    assert sorted(p.name for p in out.parent.iterdir()) == listed
