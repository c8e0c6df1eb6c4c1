"""Case 3: Ctrl+C (SIGINT) and SIGTERM during `annotate`, `export` and `calibrate
--write-config` (review push/pull: tests/faults/test_labelstudio_faults.py). Each stops within
seconds, says so, and leaves only states that the same command finishes: no partial export
folder, no half-written config."""

from __future__ import annotations

import os
import signal
import time

import pytest
import yaml

from bootstrap.config import load_config
from bootstrap.schema import TRIAGE_OUTPUT_STATES
from bootstrap.store import ImageStore
from tests.faults.conftest import tree
from tests.helpers import PLAIN_CONFIG, needs_coco, needs_model
from tests.integration.processes import (
    Command,
    assert_every_image_once,
    cli_env,
    lease_doc,
    sample_counts,
    wait_for,
)

pytestmark = needs_coco

INTERRUPTED = "what was stored is kept and nothing half-written is left; run the same command again to finish"


def _said(command: Command) -> str:
    # Rich wraps the line at the console's width: join what it printed.
    lines = [line.strip() for line in command.stderr.splitlines() if line.strip()]
    return " ".join(lines[-2:])


def _stop(command: Command, signum: int) -> tuple[int, float]:
    began = time.monotonic()
    os.kill(command.pid, signum)
    code = command.process.wait(120)
    return code, time.monotonic() - began


PHOTOS = 48


@needs_model
def test_annotate_interrupted_twice_then_finished(
    tmp_path, photo_folder, prefect_homes, commands, dataset_name, report_case
):
    # Three chunks of 16 (8 batches of 2), through PyTorch: a chunk takes about a second here, so
    # the signal lands while a chunk is detected, as a person's Ctrl-C usually does. (With the
    # faster exported runtimes a chunk of 8 took 0.3 s and the signal often landed inside
    # Prefect's task-run creation, which then logs a traceback of its own.)
    photos = photo_folder(PHOTOS)
    args = ["annotate", str(photos), "--dataset", dataset_name, "--config", PLAIN_CONFIG,
            "--batch-size", "2", "--runtime", "torch", "--json"]
    pending_before, seen = PHOTOS, {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        run = Command(args, cli_env(prefect_homes, "signals"), tmp_path, signum.name)
        commands.append(run)
        wait_for(lambda before=pending_before: (n := sample_counts(dataset_name))[0] == PHOTOS
                 and n[1] < before, "a chunk to be stored", timeout=300, every=0.05)
        # The next chunk's task starts as this one is stored: signal into its detection, not
        # into Prefect's task-run creation (a signal there makes Prefect log its own traceback).
        time.sleep(0.4)
        code, seconds = _stop(run, signum)
        assert code == 128 + signum, run.stderr[-3000:]
        assert seconds < 15, seconds
        message = _said(run)
        assert f"interrupted ({signum.name}): {INTERRUPTED}" in message, run.stderr[-2000:]
        assert "Traceback" not in run.stderr.split("Crash detected")[-1]
        samples, pending = sample_counts(dataset_name)
        assert samples == PHOTOS and pending < pending_before
        # Each chunk is stored with its triage (one write per image): what the interrupted run
        # stored is triaged, and an image is either that or still pending.
        states = ImageStore(dataset_name).state_counts()
        assert states["pending"] + sum(states[s] for s in TRIAGE_OUTPUT_STATES) == PHOTOS, states
        assert lease_doc(dataset_name) is None  # released on the way out
        seen[signum.name] = (message.split(": what")[0], round(seconds, 1), pending_before - pending)
        pending_before = pending
    if pending_before == 0:
        pytest.fail("the runs finished before they could be interrupted: use more photos")
    rerun = Command(args, cli_env(prefect_homes, "signals"), tmp_path, "rerun")
    commands.append(rerun)
    summary = rerun.finish()
    assert summary["new"] == 0 and summary["known"] == PHOTOS and summary["annotated"] == pending_before
    assert sum(summary["routed"].values()) == pending_before
    states = ImageStore(dataset_name).state_counts()
    assert sum(states[s] for s in TRIAGE_OUTPUT_STATES) == PHOTOS, states
    assert_every_image_once(dataset_name, photos)
    report_case(
        "signal-annotate",
        seen=f"interrupted (SIGINT|SIGTERM): {INTERRUPTED}",
        lost="nothing: each interrupted run kept the chunks it had stored (triaged, in one "
             "write per image) and released its lease; the rerun annotated the rest, every "
             "image once",
        seconds={name: s for name, (_, s, _) in seen.items()},
    )


def test_export_interrupted_leaves_the_previous_export_and_no_partial(
    tmp_path, labelled, commands, report_case
):
    out = tmp_path / "exports" / "coco"
    env = cli_env(tmp_path, "export")
    first = Command(["export", labelled.name, "--out", str(out)], env, tmp_path, "first")
    commands.append(first)
    assert first.process.wait(120) == 0, first.stderr[-2000:]
    previous = tree(out)
    bigger = ["export", labelled.name, "--out", str(out), "--include",
              "accepted,reviewed,needs_review"]  # 126 images to copy: a second or more
    seconds = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        run = Command(bigger, env, tmp_path, signum.name)
        commands.append(run)
        wait_for(lambda: list(out.parent.glob(".coco.partial-*")), "the export to start writing",
                 timeout=120, every=0.005)
        time.sleep(0.2)  # inside FiftyOne's exporter, copying images
        code, seconds[signum.name] = _stop(run, signum)
        assert code == 128 + signum, run.stderr[-2000:]
        assert seconds[signum.name] < 10
        assert f"interrupted ({signum.name}): {INTERRUPTED}" in _said(run)
        assert sorted(p.name for p in out.parent.iterdir()) == ["coco"]  # no partial, no .old
        assert tree(out) == previous

    # SIGKILL runs no clean-up at all: its partial folder stays (hidden, beside the target),
    # the target is untouched, and the next export removes the abandoned partial.
    run = Command(bigger, env, tmp_path, "killed")
    commands.append(run)
    wait_for(lambda: list(out.parent.glob(".coco.partial-*")), "the export to start writing",
             timeout=120, every=0.005)
    os.kill(run.pid, signal.SIGKILL)
    run.process.wait(30)
    assert tree(out) == previous and len(list(out.parent.glob(".coco.partial-*"))) == 1
    done = Command(bigger, env, tmp_path, "done")
    commands.append(done)
    assert done.process.wait(120) == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["coco"]
    assert len(list((out / "images").rglob("*.jpg"))) == 126
    report_case(
        "signal-export",
        seen=f"interrupted (SIGINT|SIGTERM): {INTERRUPTED}",
        lost="nothing: the previous export byte for byte, no partial or moved-aside folder; "
             "after SIGKILL the next export removes the abandoned hidden partial",
        seconds=seconds,
    )


def test_calibrate_write_config_interrupted_leaves_old_or_new_config(
    tmp_path, labelled, commands, report_case
):
    config = tmp_path / "calibrated.yaml"
    base = ["calibrate", labelled.name, "--source", "ground_truth", "--config", PLAIN_CONFIG,
            "--write-config", str(config)]
    env = cli_env(tmp_path, "calibrate")
    first = Command([*base, "--target-precision", "0.9"], env, tmp_path, "first")
    commands.append(first)
    assert first.process.wait(300) == 0, first.stderr[-2000:]
    old = config.read_text()
    outcomes = []
    # SIGTERM at moments spread over a run (it takes a few seconds); whatever the moment,
    # the config is the old one or the complete new one.
    for delay in (0.5, 1.5, 2.5, 3.5, 8.0):
        run = Command([*base, "--target-precision", "0.99"], env, tmp_path, f"term-{delay}")
        commands.append(run)
        time.sleep(delay)
        if run.process.poll() is None:
            code, seconds = _stop(run, signal.SIGTERM)  # 0: it had just finished
            # -15: still starting Python, before the command installed its handler.
            assert code in (0, 143, -signal.SIGTERM) and seconds < 10, run.stderr[-2000:]
            if code == 143:
                assert f"interrupted (SIGTERM): {INTERRUPTED}" in _said(run)
            if code == -signal.SIGTERM:
                assert config.read_text() == old
        text = config.read_text()
        assert text in (old, _complete(text)) and text.startswith("# Calibrated from")
        load_config(config)  # a valid config either way
        outcomes.append("old" if text == old else "new")
        assert [p.name for p in tmp_path.glob(".calibrated.yaml.*")] == []  # no temporary left
    report_case(
        "signal-calibrate",
        seen=f"interrupted (SIGTERM): {INTERRUPTED}",
        lost="nothing: after each SIGTERM the config was the previous one or the complete "
             f"new one ({', '.join(outcomes)}), never partial",
    )


def _complete(text: str) -> str:
    """``text`` if it is a whole calibrated config (it parses and has every section)."""
    data = yaml.safe_load(text)
    assert {"dataset", "detector", "triage", "review"} <= set(data), text[-500:]
    return text
