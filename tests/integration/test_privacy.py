"""Private by default: no usage analytics from Prefect's server or FiftyOne's App unless the
user turns them on with the tools' own settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

# What the applications do first: the flows on import, the CLI and tests in main/conftest.
SETUP = {
    "flows": "import flows",
    "cli": "from bootstrap.environment import apply_defaults; apply_defaults()",
}
PROBE = """
import fiftyone as fo
from prefect.settings import get_current_settings
print(fo.config.do_not_track, get_current_settings().server.analytics_enabled)
"""


def _probe(setup: str, **env) -> list[str]:
    clean = {
        k: v for k, v in os.environ.items()
        if k not in ("FIFTYONE_DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED")
    }
    done = subprocess.run(
        [sys.executable, "-c", SETUP[setup] + PROBE], env=clean | env, cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()[-2:]


@pytest.mark.parametrize("setup", sorted(SETUP))
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ["True", "False"]),  # the defaults: do not track, no analytics
        ({"FIFTYONE_DO_NOT_TRACK": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "true"},
         ["False", "True"]),  # a user's own choice wins
    ],
)
def test_application_defaults_are_private_and_overridable(setup, env, expected):
    assert _probe(setup, **env) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "PREFECT_SERVER_ANALYTICS_ENABLED=false"),
        (("PREFECT_SERVER_ANALYTICS_ENABLED=true",), "PREFECT_SERVER_ANALYTICS_ENABLED=true"),
    ],
)
def test_make_server_and_serve_are_private_and_overridable(args, expected):
    done = subprocess.run(
        ["make", "-n", "server", "serve", *args], cwd=ROOT, capture_output=True, text=True,
        env={k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"},
    )
    commands = [line for line in done.stdout.splitlines() if "prefect server start" in line
                or "flows.serve" in line]
    assert len(commands) == 2, done.stdout + done.stderr
    assert all(expected in line for line in commands), commands
