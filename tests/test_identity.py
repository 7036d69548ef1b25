"""Whose writes sync(x) waits for (every view of x's memory), what a second pipe() of an
object waits on (the object, but never for bytes, which cannot change), and which file a
failure belongs to (the one it happened on, never a new file that took its inode)."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

import numpy as np
import pytest

import turbopipe
from conftest import Reader, md5
from engine_helpers import MiB, blocks, in_thread, wait_failed, wait_full


@pytest.mark.parametrize("view", ["slice", "reshape", "memoryview of a slice"])
def test_sync_of_an_array_waits_for_the_writes_of_its_views(view: str) -> None:
    read_fd, write_fd = os.pipe()
    base = np.frombuffer(bytearray(os.urandom(8 * MiB)), np.uint8)
    expected = bytes(base[: 4 * MiB])
    piped = {
        "slice": base[: 4 * MiB],
        "reshape": base[: 4 * MiB].reshape(1024, -1),
        "memoryview of a slice": memoryview(base[: 4 * MiB]),
    }[view]
    turbopipe.pipe(piped, write_fd)  # nobody reads yet: it stays queued
    wait_full(write_fd)
    waiting = in_thread(turbopipe.sync, base)
    waited = blocks(waiting)
    reader = Reader(read_fd)  # before asserting: a failed test must not stall the others
    assert waited, "sync(base) must wait for the write of its view"
    waiting.join(timeout=30)
    assert not waiting.is_alive()
    base[:] = 0  # allowed once sync(base) returned: the reader must not see it
    os.close(write_fd)
    assert reader.join() == md5(expected)


def test_views_of_one_array_are_piped_without_waiting_for_each_other() -> None:
    """A ring of frames kept in one array: each frame is its own object to pipe()."""
    read_fd, write_fd = os.pipe()
    ring = np.frombuffer(bytearray(os.urandom(4 * 2 * MiB)), np.uint8).reshape(4, -1)
    turbopipe.pipe(ring[0], write_fd)  # fills the pipe: nobody reads yet
    wait_full(write_fd)
    second = in_thread(turbopipe.pipe, ring[1], write_fd)
    waited = blocks(second)
    reader = Reader(read_fd)  # before asserting: a failed test must not stall the others
    assert not waited, "pipe(ring[1]) waited for ring[0]'s write"
    turbopipe.sync(ring)
    os.close(write_fd)
    assert reader.join() == md5(ring[0], ring[1])


def test_bytes_go_to_a_second_file_while_the_first_stalls() -> None:
    """bytes cannot change: piping them again, to another file, does not wait."""
    stalled_read, stalled_write = os.pipe()
    read_fd, write_fd = os.pipe()
    data = os.urandom(4 * MiB)
    turbopipe.pipe(data, stalled_write)  # nobody reads this one yet
    wait_full(stalled_write)
    reader = Reader(read_fd)
    second = in_thread(turbopipe.pipe, data, write_fd)
    waited = blocks(second)
    stalled_reader = Reader(stalled_read)  # before asserting: a failed test must not stall
    assert not waited, "pipe(data, other file) waited for the stalled file"
    turbopipe.sync(file=write_fd)
    os.close(write_fd)
    assert reader.join() == md5(data)
    turbopipe.sync(data)  # waits for every write of data, the stalled one too
    os.close(stalled_write)
    assert stalled_reader.join() == md5(data)


def test_a_buffer_of_python_objects_is_refused() -> None:
    read_fd, write_fd = os.pipe()
    for objects in (
        np.array([object(), object()], dtype=object),
        np.zeros(2, dtype=[("Offset", "i4"), ("Object", "O")]),
    ):
        with pytest.raises(TypeError, match="object pointers"):
            turbopipe.pipe(objects, write_fd)
    named = np.array([(1,), (2,)], dtype=[("Offset", "<i4")])  # a name holding O: no object
    turbopipe.pipe(named, write_fd)
    turbopipe.sync()
    os.close(write_fd)
    assert os.read(read_fd, 100) == named.tobytes()
    os.close(read_fd)


def test_a_failure_stays_with_its_file_when_a_new_file_takes_its_inode(tmp_path: Path) -> None:
    """A file closed and deleted after a failed write: a new file may take its inode number
    (and its fd number) at once on ext4 and tmpfs, yet it never sees that failure, which is
    still reported, by the next call that can: here close()."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, limit[1]))  # past it: EFBIG
    try:
        failing = tmp_path / "failing"
        fd = os.open(failing, os.O_WRONLY | os.O_CREAT)
        turbopipe.pipe(bytes(2 * MiB), fd)
        wait_failed(fd)
        os.close(fd)
        failing.unlink()
        news = [tmp_path / f"new{n}" for n in range(8)]
        for path in news:
            new = os.open(path, os.O_WRONLY | os.O_CREAT)
            turbopipe.pipe(b"new bytes", new)
            turbopipe.sync(file=new)
            os.close(new)
        assert [path.read_bytes() for path in news] == [b"new bytes"] * len(news)
        with pytest.raises(OSError) as raised:
            turbopipe.close()
        assert (raised.value.errno, raised.value.fd) == (errno.EFBIG, fd)  # type: ignore[attr-defined]
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
