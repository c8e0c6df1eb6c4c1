"""Case 5 (and the review half of case 3): Label Studio down, answering errors, hanging, or
losing an answer during `review push` and `review pull`, and SIGTERM while a call is on its way.
A real Label Studio; the errors come from a small real HTTP proxy in front of it
(tests/faults/harness.py: forwards, answers 5xx, never answers, or forwards and drops the
answer). Each time: a clear error, nothing half-applied, and the rerun completes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.faults.conftest import last_line
from tests.faults.datasets import labelled_dataset
from tests.faults.harness import FaultProxy
from tests.helpers import ROOT, needs_coco
from tests.integration.processes import BOOTSTRAP, Command, free_port, wait_for
from tests.labelstudio_server import LS_BIN, start_fresh

pytestmark = needs_coco


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    if not LS_BIN.is_file():
        pytest.skip(f"Label Studio is not installed ({LS_BIN} missing): run `make "
                    "labelstudio-install` or set LABEL_STUDIO_BIN")
    files_root = tmp_path_factory.getbasetemp()
    server = start_fresh(tmp_path_factory.mktemp("ls-faults-data"), files_root)
    yield server, str(files_root)
    server.stop()


@pytest.fixture
def proxy(label_studio):
    faults = FaultProxy(label_studio[0].url)
    yield faults
    faults.close()


@pytest.fixture
def review_dataset(tmp_path, coco_images, dataset_name):
    """12 photos (copies below Label Studio's files root), triaged: most need review."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in coco_images[:12]:
        (folder / path.name).write_bytes(path.read_bytes())
    return labelled_dataset(dataset_name, sorted(folder.glob("*.jpg")))


def _settings(url: str, label_studio):
    from bootstrap.labelstudio import LabelStudioSettings

    server, files_root = label_studio
    return LabelStudioSettings(url=url, token=server.token, files_root=files_root)


def _env(url: str, label_studio) -> dict:
    server, files_root = label_studio
    return dict(os.environ, LABEL_STUDIO_URL=url, LABEL_STUDIO_API_KEY=server.token,
                LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=files_root)


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([BOOTSTRAP, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def snapshot(store) -> dict:
    """Everything push, pull and apply may write, per sample, comparable with ==."""
    from bootstrap import documents

    projection = {"labels": 1, "state": 1, "tags": 1, "reviewed_by": 1, "label_studio_annotation": 1}
    return {str(d["_id"]): d for d in documents.sample_collection(store.dataset).find({}, projection)}


def _tasks(label_studio, store) -> list[dict]:
    from bootstrap.labelstudio import LabelStudioClient

    store.dataset.reload()  # a command in another process may have recorded the project
    project = (store.dataset.info.get("label_studio") or {}).get("project")
    if project is None:
        return []
    with LabelStudioClient(_settings(label_studio[0].url, label_studio)) as direct:
        return direct.tasks(project)


def test_push_with_label_studio_down_failing_and_losing_answers(
    label_studio, proxy, review_dataset, report_case
):
    from bootstrap.labelstudio import (
        LabelStudioClient,
        LabelStudioError,
        LabelStudioUnreachable,
        push_review_queue,
    )
    from bootstrap.review import build_review_queue

    store = review_dataset
    before = snapshot(store)
    # Down: nothing listens at the URL.
    dead = f"http://127.0.0.1:{free_port()}"
    down = _cli(["review", "push", store.name], _env(dead, label_studio))
    assert down.returncode == 1
    said_down = last_line(down.stderr)
    assert said_down.startswith(f"error: Label Studio is not reachable at {dead} (")
    assert said_down.endswith("start it with `make labelstudio` or set LABEL_STUDIO_URL")

    # Answering 500 to the import: the project is made, no task is.
    proxy.reset(lambda method, path, n: 500 if path.endswith("/import") else None)
    failed = _cli(["review", "push", store.name], _env(proxy.url, label_studio))
    assert failed.returncode == 1, failed.stderr[-2000:]
    said_500 = " ".join(failed.stderr.split())
    assert "error: POST /api/projects/" in said_500
    assert '/import: Label Studio answered 500: {"detail": "injected failure"}' in said_500
    assert _tasks(label_studio, store) == []
    queued = build_review_queue(store).sample_ids
    assert len(queued) >= 6

    # The import reaches Label Studio but its answer is lost (a timeout here).
    proxy.reset(lambda method, path, n: "lost" if path.endswith("/import") else None)
    with LabelStudioClient(_settings(proxy.url, label_studio), timeout=3) as client:
        with pytest.raises(LabelStudioUnreachable, match=r"did not answer POST /api/projects/\d+/"
                           r"import within 3 s \(ReadTimeout\)") as lost:
            push_review_queue(store, client, queued)
    wait_for(lambda: len(_tasks(label_studio, store)) == len(queued), "the lost import to land",
             timeout=60, every=0.5)

    # The rerun: nothing twice.
    proxy.reset()
    with LabelStudioClient(_settings(proxy.url, label_studio)) as client:
        report = push_review_queue(store, client, queued)
    assert (report.created, report.already_there) == (0, len(queued))
    tasks = _tasks(label_studio, store)
    assert sorted(t["data"]["sample_id"] for t in tasks) == sorted(queued)
    after = snapshot(store)
    assert after == before  # push writes nothing to the samples
    assert issubclass(LabelStudioUnreachable, LabelStudioError)
    report_case("labelstudio-down", seen=said_down.removeprefix("error: "),
                lost="nothing: no task and no sample written")
    report_case("labelstudio-500-push", seen=said_500[said_500.index("error: ") + 7:],
                lost="nothing: the project made, no task; the rerun imported each image once")
    report_case("labelstudio-lost-answer-push", seen=str(lost.value),
                lost="nothing: the tasks landed; the rerun found them by sample id and added "
                     "none twice")


def _annotate_in_label_studio(label_studio, store, count: int) -> list[str]:
    """An annotator on ``count`` tasks: keeps every box but the first, draws one."""
    from bootstrap.labelstudio import LabelStudioClient

    done = []
    with LabelStudioClient(_settings(label_studio[0].url, label_studio)) as direct:
        for task in [t for t in _tasks(label_studio, store) if t["predictions"][0]["result"]][:count]:
            kept = task["predictions"][0]["result"][1:]
            drawn = {**task["predictions"][0]["result"][0], "id": f"drawn-{task['id']}", "value": {
                "x": 10.0, "y": 10.0, "width": 5.0, "height": 5.0, "rotation": 0,
                "rectanglelabels": ["dog"]}}
            direct.request("POST", f"/api/tasks/{task['id']}/annotations",
                           json={"result": [*kept, drawn], "lead_time": 3.0})
            done.append(task["data"]["sample_id"])
    return done


def test_pull_with_label_studio_failing_and_hanging(label_studio, proxy, review_dataset, report_case):
    from bootstrap.labelstudio import (
        LabelStudioClient,
        LabelStudioUnreachable,
        pull_annotations,
        push_review_queue,
    )
    from bootstrap.review import apply_reviews, build_review_queue

    store = review_dataset
    with LabelStudioClient(_settings(label_studio[0].url, label_studio)) as client:
        push_review_queue(store, client, build_review_queue(store).sample_ids)
    annotated = _annotate_in_label_studio(label_studio, store, 3)
    before = snapshot(store)

    proxy.reset(lambda method, path, n: 500 if path.startswith("/api/tasks") else None)
    failed = _cli(["review", "pull", store.name], _env(proxy.url, label_studio))
    assert failed.returncode == 1, failed.stderr[-2000:]
    said_500 = " ".join(failed.stderr.split())
    assert "error: GET /api/tasks: Label Studio answered 500" in said_500
    assert snapshot(store) == before

    proxy.reset(lambda method, path, n: "hang" if path.startswith("/api/tasks") else None)
    with LabelStudioClient(_settings(proxy.url, label_studio), timeout=3) as client:
        with pytest.raises(LabelStudioUnreachable, match="did not answer GET /api/tasks within 3 s"):
            pull_annotations(store, client)
    assert snapshot(store) == before

    proxy.reset()
    with LabelStudioClient(_settings(proxy.url, label_studio)) as client:
        pulled = pull_annotations(store, client)
        assert (pulled.annotated, pulled.pulled, pulled.conflicts) == (3, 3, [])
        again = pull_annotations(store, client)
        assert (again.pulled, again.unchanged) == (0, 3)
    changed = {sid for sid, doc in snapshot(store).items() if doc != before[sid]}
    assert changed == set(annotated)
    assert apply_reviews(store)["images"] == 3
    report_case("labelstudio-500-pull", seen=said_500[said_500.index("error: ") + 7:],
                lost="nothing: no sample written; the rerun pulled the 3 annotated images, a "
                     "second pull changed nothing")


def test_sigterm_during_push_and_pull(tmp_path, label_studio, proxy, review_dataset, report_case):
    from bootstrap.labelstudio import LabelStudioClient, pull_annotations

    store = review_dataset
    env = _env(proxy.url, label_studio)
    seconds = {}
    for command, path in (("push", "/import"), ("pull", "/api/tasks")):
        if command == "pull":
            annotated = _annotate_in_label_studio(label_studio, store, 2)
        before, tasks_before = snapshot(store), len(_tasks(label_studio, store))
        plan = proxy.reset(lambda method, p, n, path=path: "hang" if path in p else None)
        run = Command(["review", command, store.name], env, tmp_path, command)
        try:
            wait_for(lambda plan=plan, path=path: any(path in p for _, p, _ in plan.seen),
                     f"`review {command}` to call Label Studio", timeout=120, every=0.05)
            began = time.monotonic()
            os.kill(run.pid, signal.SIGTERM)
            code = run.process.wait(60)
            seconds[command] = round(time.monotonic() - began, 1)
        finally:
            run.kill_group()
        assert code == 143, run.stderr[-2000:]
        assert "interrupted (SIGTERM)" in run.stderr and seconds[command] < 10
        assert len(_tasks(label_studio, store)) == tasks_before
        if command == "pull":
            assert snapshot(store) == before
        proxy.reset()
        finished = _cli(["review", command, store.name], env)
        assert finished.returncode == 0, finished.stderr[-2000:]
    tasks = _tasks(label_studio, store)
    assert len({t["data"]["sample_id"] for t in tasks}) == len(tasks) > 0
    assert len(annotated) == 2
    with LabelStudioClient(_settings(label_studio[0].url, label_studio)) as client:
        assert pull_annotations(store, client).unchanged == len(annotated)
    report_case(
        "signal-review-push-pull",
        seen="interrupted (SIGTERM): what was stored is kept and nothing half-written is left; "
             "run the same command again to finish",
        lost="nothing: no task imported and no sample written by the interrupted commands; "
             "the reruns pushed every queued image once and pulled the annotations",
        seconds=seconds,
    )

