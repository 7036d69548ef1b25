"""Memory the engine reads is held until written, then let go: an object deleted right
after pipe() still arrives, a piped memoryview cannot be released, a failed object is held
until its failure is raised; after sync() no reference is left, and a long run grows
neither memory nor references. Items over 2 GiB arrive whole."""

from __future__ import annotations

import gc
import mmap
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import turbopipe
from conftest import Pipe, Reader, md5
from engine_helpers import MarkedZeros, MiB, in_thread, wait_failed


def test_objects_deleted_after_pipe_still_arrive_intact(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    expected = []
    for _ in range(8):
        frame = np.random.randint(0, 255, (720, 1280, 3), dtype=np.uint8)
        expected.append(frame.tobytes())
        turbopipe.pipe(frame, pipe.fd)
        del frame
        gc.collect()
    turbopipe.sync()
    assert pipe.finish() == md5(*expected)


def test_a_piped_memoryview_cannot_be_released_until_written() -> None:
    """The engine holds the view itself, not only the memory it shares: releasing it while
    queued would let its owner resize or free that memory under the writer."""
    read_fd, write_fd = os.pipe()
    frame = bytearray(os.urandom(8 * MiB))
    view = memoryview(frame)
    turbopipe.pipe(view, write_fd)
    try:
        with pytest.raises(BufferError):
            view.release()
    finally:
        reader = Reader(read_fd)
    turbopipe.sync(frame)
    view.release()
    os.close(write_fd)
    assert reader.join() == md5(frame)


def test_references_are_dropped_after_sync(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    frame = bytearray(os.urandom(MiB))
    piped = bytes(frame)
    view = memoryview(frame)
    before = sys.getrefcount(frame), sys.getrefcount(view)
    for _ in range(20):
        turbopipe.pipe(view, pipe.fd)
    turbopipe.sync(frame)
    assert (sys.getrefcount(frame), sys.getrefcount(view)) == before
    view.release()  # refused while the engine still holds an export of it
    frame += b"x"  # refused while any export of frame is alive
    assert pipe.finish() == md5(piped * 20)


def test_a_failed_object_is_held_until_its_failure_is_reported() -> None:
    """Its address cannot be reused by a new object that would inherit the failure."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(bytearray(1000), write_fd)  # only the engine refers to it
    wait_failed(write_fd)
    for _ in range(200):
        turbopipe.sync(bytearray(1000))  # unrelated objects: nothing to report
    with pytest.raises(BrokenPipeError):
        turbopipe.sync()
    os.close(write_fd)


def test_items_larger_than_2_gib() -> None:
    """More than one write() can take (Linux moves at most 2 GiB - 4 KiB a call): untouched
    anonymous pages but for a mark per MiB, written directly into a pipe whose reader
    checks every byte."""
    expected = MarkedZeros((2 << 30) + 12345)
    huge = mmap.mmap(-1, expected.size)
    expected.mark(huge)
    read_fd, write_fd = os.pipe()
    differs: list[str] = []
    checker = in_thread(lambda: differs.append(expected.check(read_fd)))
    turbopipe.pipe(huge, write_fd, relay=False)
    turbopipe.sync(huge)
    assert turbopipe.stats(write_fd) == ("direct", 1, expected.size)
    os.close(write_fd)
    checker.join(timeout=60)
    assert differs == [""]
    huge.close()  # refused while an export is alive


def test_a_long_run_holds_no_memory_or_references() -> None:
    small = [os.urandom(64) for _ in range(8)]
    large = bytearray(MiB)
    fd = os.open(os.devnull, os.O_WRONLY)
    before_refs = [sys.getrefcount(item) for item in [*small, large]]

    def run(small_items: int, large_items: int) -> None:
        for i in range(small_items):
            turbopipe.pipe(small[i % len(small)], fd)
        for _ in range(large_items):
            turbopipe.pipe(large, fd)
        turbopipe.sync()

    run(10_000, 200)  # warm up allocators
    rss = resident_bytes()
    run(100_000, 2_000)
    assert resident_bytes() - rss < 16 * MiB
    assert [sys.getrefcount(item) for item in [*small, large]] == before_refs
    os.close(fd)


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
