"""Write finished chunks in a thread of their own while the next chunk is detected.

Detection is the long part of a chunk; its write (one bulk round trip to MongoDB, most of it
waiting for the server) need not hold it up. ``ChunkWriter`` takes finished chunks through a
bounded queue, so at most ``depth`` of them wait besides the one being written and memory stays
flat however many chunks a run has. Chunks are written one at a time, in order.

Errors are never swallowed: a failed write is raised in the caller's thread, by its next
``put`` or when the ``with`` block ends. When the caller's block ends with an exception (Ctrl+C,
SIGTERM, a failed detection), the chunks already handed over are still written before the
exception goes on: each write stores whole images (``ImageStore.record_results``), so what an
interruption leaves is images stored complete and images still pending, never half of one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class ChunkWriter(Generic[T, R]):
    """``write(chunk)`` for every chunk ``put``, in a background thread; ``results`` holds what
    each returned, in order. Use as a context manager: leaving the block waits for the writes
    and raises the first error a write met."""

    def __init__(self, write: Callable[[T], R], depth: int = 1, name: str = "chunk-writer"):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.results: list[R] = []
        # A daemon: a second Ctrl+C (the CLI exits at once then) is not held up by a write.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, chunk: T) -> None:
        """Hand ``chunk`` over to be written; blocks while ``depth`` chunks wait already.

        Raises:
            the error of an earlier write, if one failed (this chunk is then not taken).
        """
        while True:
            self._raise_error()
            try:
                self._queue.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> list[R]:
        """Wait until every chunk handed over is written; returns ``results``.

        Raises:
            the first error a write met.
        """
        self._queue.put(_DONE)  # never blocks for long: the thread drains even after an error
        self._thread.join()
        self._raise_error()
        return self.results

    def __enter__(self) -> ChunkWriter[T, R]:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            self.close()
            return
        # The caller's exception goes on once the chunks handed over are written (whole).
        try:
            self.close()
        except BaseException as also:  # noqa: BLE001 - logged: the caller's error is raised
            log.error("writing a chunk failed as well: %s", also)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not _DONE:
            if self._error is not None:
                continue  # a write failed: take the rest off the queue unwritten (left pending)
            try:
                self.results.append(self._write(chunk))
            except BaseException as error:  # noqa: BLE001 - raised in the caller's thread
                self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error
