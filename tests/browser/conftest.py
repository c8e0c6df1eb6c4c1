"""Real-browser tests: Debian's Chromium driven by Playwright for Python (never a browser that
Playwright downloads: it cannot, offline). ``make browser-install`` installs Chromium; without it
these tests skip and say why. Each test saves screenshots of its key steps under
``screenshots/<test>/`` (git-ignored); the README's pictures are chosen from them."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import ROOT

SCREENSHOTS = ROOT / "screenshots"
VIEWPORT = {"width": 1400, "height": 900}


def chromium_executable() -> str | None:
    """The system Chromium: ``BOOTSTRAP_CHROMIUM``, else ``chromium`` on the PATH."""
    explicit = os.environ.get("BOOTSTRAP_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Module scope, not session: Playwright's sync API keeps an event loop running on the main thread
# while it is open, and Prefect's sync calls made there afterwards (resume_flow_run in the flow
# tests) would then return unawaited coroutines.
@pytest.fixture(scope="module")
def browser():
    executable = chromium_executable()
    if executable is None:
        pytest.skip(
            "no Chromium: run `make browser-install` (Debian's chromium) or set BOOTSTRAP_CHROMIUM"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: `make install` installs the dev dependencies")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    context.close()


class Screenshots:
    """Numbered screenshots of one test's steps: ``screenshots/<test>/NN-<step>.png``."""

    def __init__(self, folder: Path):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.count = 0

    def __call__(self, page, step: str, **options) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        page.screenshot(path=str(path), **options)
        return path


@pytest.fixture
def shots(request) -> Screenshots:
    return Screenshots(SCREENSHOTS / re.sub(r"[^\w.-]+", "_", request.node.name))
