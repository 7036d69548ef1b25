"""vmsplice=True maps the caller's own pages into the pipe: sync() returns only once the
reader has taken every one of them, so what a reader holds stays as it was piped, also
when the pipe grows, the reader dies, or a later reader comes. A reader that splices
onward is the one it cannot serve, hence the relay by default.

The Python engine has no vmsplice (it write()s such items), so these tests skip it, all
but the splicing reader's case of the relay."""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

import turbopipe
from conftest import Reader, md5
from engine_helpers import F_SETPIPE_SZ, MiB, native_only, run_program, wait_full, wait_until

NO_VMSPLICE = "the Python engine has no vmsplice; it write()s such items"


def grow(write_fd: int, size: int) -> None:
    try:
        fcntl.fcntl(write_fd, F_SETPIPE_SZ, size)
    except PermissionError:
        pytest.skip(f"needs a pipe of {size} bytes (/proc/sys/fs/pipe-max-size)")


def test_vmsplice_failure_leaves_no_page_for_a_later_reader(engine: str, tmp_path: Path) -> None:
    """The reader of a FIFO dies with the caller's pages spliced in the pipe. Once the
    failure is raised the memory is the caller's again: a later reader of the FIFO must
    not read it through those pages."""
    native_only(engine, NO_VMSPLICE)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    read_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    write_fd = os.open(fifo, os.O_WRONLY)
    frame = bytearray(b"a" * (4 * MiB))
    turbopipe.pipe(frame, write_fd, vmsplice=True, pipe_size=0)
    wait_full(write_fd)  # the rest of the frame waits
    os.close(read_fd)
    with pytest.raises(BrokenPipeError):
        turbopipe.sync(frame)
    frame[:] = b"b" * len(frame)
    later_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        seen = os.read(later_fd, MiB)
    except BlockingIOError:
        seen = b""
    os.close(later_fd)
    os.close(write_fd)
    assert b"b" not in seen


def test_vmsplice_tails_are_not_overwritten_before_they_are_read(engine: str) -> None:
    """Items just over the pipe's size: their last pipe-full goes through the engine's own
    buffers, reused in turn while a slow reader still has earlier items to read."""
    native_only(engine, NO_VMSPLICE)
    read_fd, write_fd = os.pipe()  # 64 KiB
    items = [bytes([i]) * (64 * 1024 + 4096) for i in range(1, 41)]
    reader = Reader(read_fd, chunk=16 * 1024, pause=0.0005)
    for item in items:
        turbopipe.pipe(item, write_fd, pipe_size=0, vmsplice=True)
    turbopipe.sync()
    os.close(write_fd)
    assert reader.join() == md5(*items)


def test_vmsplice_when_the_pipe_grows_during_an_item(engine: str) -> None:
    """The engine splices an item against the pipe's size at its start; somebody grows
    the pipe meanwhile. Its last pipe-full of the old size no longer proves the reader
    took the spliced pages, so sync() must wait until the pipe is empty."""
    native_only(engine, NO_VMSPLICE)
    read_fd, write_fd = os.pipe()  # 64 KiB
    reader = Reader(read_fd, keep=True, chunk=64 * 1024, pause=0.001)  # 8 MiB: over 0.1 s
    frame = np.full(8 * MiB, 2, np.uint8)
    turbopipe.pipe(frame, write_fd, pipe_size=0, vmsplice=True)
    wait_until(lambda: reader.count >= MiB, "the first megabyte spliced and read")
    grow(write_fd, MiB)
    turbopipe.sync(frame)
    frame[:] = 0  # the memory is ours again
    os.close(write_fd)
    reader.join()
    assert reader.data == np.full(8 * MiB, 2, np.uint8).tobytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="becomes another user to be denied reading")
def test_vmsplice_needs_a_way_to_empty_the_pipe(engine: str) -> None:
    """A FIFO its writer may not read: if its reader died, the engine could not empty it of
    spliced pages, and a later reader would read the caller's memory as it is then. So
    the engine copies instead: the later reader gets the frame as it was piped."""
    native_only(engine, NO_VMSPLICE)
    with tempfile.TemporaryDirectory() as folder:  # in /tmp: the other user can reach it
        Path(folder).chmod(0o755)
        fifo = Path(folder) / "fifo"
        os.mkfifo(fifo)
        fifo.chmod(0o622)  # others may write, not read
        result = run_program("fifo_its_writer_cannot_read.py", fifo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["saw", "[97]", "child", "0"], result.stdout  # all b"a"


def test_vmsplice_when_the_pipe_grew_behind_the_engines_back(engine: str) -> None:
    """The engine learned the pipe's size on the first item; then somebody grows it. The
    last pipe-capacity bytes of an item no longer prove that the reader took the spliced
    pages, so sync() must wait until the pipe is empty before the memory is changed."""
    native_only(engine, NO_VMSPLICE)
    read_fd, write_fd = os.pipe()
    reader = Reader(read_fd, keep=True, chunk=64 * 1024, pause=0.001)
    first = np.full(MiB, 1, np.uint8)
    turbopipe.pipe(first, write_fd, pipe_size=0, vmsplice=True)
    turbopipe.sync(first)
    grow(write_fd, MiB)
    frame = np.full(4 * MiB, 2, np.uint8)
    turbopipe.pipe(frame, write_fd, pipe_size=0, vmsplice=True)
    turbopipe.sync(frame)
    frame[:] = 0  # the memory is ours again
    os.close(write_fd)
    reader.join()
    assert reader.data == first.tobytes() + np.full(4 * MiB, 2, np.uint8).tobytes()


def test_vmsplice_never_lets_the_reader_see_later_changes(engine: str) -> None:
    native_only(engine, NO_VMSPLICE)
    read_fd, write_fd = os.pipe()
    reader = Reader(read_fd)
    frame = np.zeros(8 * MiB, np.uint8)
    expected = []
    for value in range(1, 9):
        frame[:] = value
        expected.append(frame.tobytes())
        turbopipe.pipe(frame, write_fd, vmsplice=True)
        turbopipe.sync(frame)  # after this the memory is ours again
    frame[:] = 0
    os.close(write_fd)
    assert reader.join() == md5(*expected)


@pytest.mark.skipif(not hasattr(os, "splice"), reason="the reader needs os.splice (3.10)")
@pytest.mark.parametrize("vmsplice", [False, True])
def test_a_reader_that_splices_onward(engine: str, vmsplice: bool) -> None:
    """The reader moves our pages into another pipe and reads them only after sync()
    returned and the memory was changed. With the relay (the default) it still sees what
    was piped. With vmsplice=True the native engine splices the memory's own pages, so
    this reader sees the change: why vmsplice is off by default."""
    if vmsplice:
        native_only(engine, NO_VMSPLICE)
    ours_read, ours_write = os.pipe()
    onward_read, onward_write = os.pipe()
    frame = np.full(MiB // 2, 7, np.uint8)
    piped = frame.tobytes()
    grow(onward_write, MiB)  # holds the whole frame, in any pages

    def splice_onward() -> None:
        moved = 0
        while moved < frame.nbytes:
            moved += os.splice(ours_read, onward_write, frame.nbytes - moved)

    splicer = threading.Thread(target=splice_onward)
    splicer.start()
    turbopipe.pipe(frame, ours_write, pipe_size=128 * 1024, vmsplice=vmsplice)
    turbopipe.sync(frame)
    splicer.join()
    frame[:] = 0  # the memory is ours again
    os.close(onward_write)
    arrived = Reader(onward_read).join()
    for fd in (ours_read, ours_write):
        os.close(fd)
    if vmsplice:
        assert arrived != md5(piped)
    else:
        assert arrived == md5(piped)
