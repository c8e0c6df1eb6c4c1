"""Progress reporting that the library emits and a front end (the CLI's bars) displays.

The library calls ``task(...)`` / ``advance(...)``; by default nothing is shown. The CLI installs
a listener that draws progress bars. Prefect runs publish their own progress artifact from the
flow, so the library never depends on either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class ProgressListener(Protocol):
    def start(self, name: str, total: int | None) -> None: ...
    def advance(self, name: str, amount: int) -> None: ...
    def finish(self, name: str) -> None: ...


_listener: ProgressListener | None = None


def set_listener(listener: ProgressListener | None) -> None:
    """Install (or with ``None`` remove) the process-wide progress listener."""
    global _listener
    _listener = listener


class _Task:
    def __init__(self, name: str):
        self.name = name

    def advance(self, amount: int = 1) -> None:
        advance(self.name, amount)


@contextlib.contextmanager
def task(name: str, total: int | None) -> Iterator[_Task]:
    """A named stage of work with an optional known total."""
    if _listener is not None:
        _listener.start(name, total)
    try:
        yield _Task(name)
    finally:
        if _listener is not None:
            _listener.finish(name)


def expect(name: str, total: int) -> None:
    """Announce ``total`` units of work under ``name`` that later steps will ``advance``."""
    if _listener is not None:
        _listener.start(name, total)


def advance(name: str, amount: int = 1) -> None:
    if _listener is not None:
        _listener.advance(name, amount)
