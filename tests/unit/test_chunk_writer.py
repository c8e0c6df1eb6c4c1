"""``ChunkWriter``: writes in a thread of its own, in order, bounded, errors raised in the caller."""

import threading
import time

import pytest

from bootstrap.chunk_writer import ChunkWriter


def test_chunks_are_written_in_order_off_the_callers_thread():
    threads = []

    def write(chunk):
        threads.append(threading.current_thread().name)
        return chunk * 10

    with ChunkWriter(write) as writer:
        for chunk in range(5):
            writer.put(chunk)
    assert writer.results == [0, 10, 20, 30, 40]
    assert set(threads) == {"chunk-writer"}


@pytest.mark.parametrize("depth", [1, 2])
def test_at_most_depth_chunks_wait_besides_the_one_being_written(depth):
    release, written = threading.Event(), []
    writer = ChunkWriter(lambda chunk: (release.wait(5), written.append(chunk)), depth=depth)
    handed = []

    def caller():
        for chunk in range(6):
            writer.put(chunk)
            handed.append(chunk)

    thread = threading.Thread(target=caller)
    thread.start()
    time.sleep(0.5)  # the first write is held: the caller can only queue `depth` more
    assert handed == list(range(1 + depth)) and written == []
    release.set()
    thread.join(5)
    assert len(writer.close()) == 6 and written == list(range(6))


def test_a_failed_write_is_raised_in_the_caller_and_later_chunks_are_not_written():
    written = []

    def write(chunk):
        if chunk == 1:
            raise ConnectionError("database gone")
        written.append(chunk)

    with pytest.raises(ConnectionError, match="database gone"):  # noqa: PT012 - the block is the test
        with ChunkWriter(write) as writer:
            for chunk in range(50):
                writer.put(chunk)
                time.sleep(0.01)
    assert written == [0]


def test_the_callers_exception_goes_on_after_the_chunks_handed_over_are_written():
    written = []

    def write(chunk):
        time.sleep(0.2)  # still writing when the caller is interrupted
        written.append(chunk)

    with pytest.raises(KeyboardInterrupt):  # noqa: PT012 - the block is the test
        with ChunkWriter(write) as writer:
            writer.put(0)
            writer.put(1)
            raise KeyboardInterrupt
    assert written == [0, 1]


def test_a_failed_write_is_not_lost_behind_the_callers_exception(caplog):
    def write(chunk):
        raise ValueError("bad chunk")

    with pytest.raises(KeyboardInterrupt):  # noqa: PT012 - the block is the test
        with ChunkWriter(write) as writer:
            writer.put(0)
            raise KeyboardInterrupt
    assert "writing a chunk failed as well: bad chunk" in caplog.text
