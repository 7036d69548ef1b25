"""The file a descriptor names at pipe() gets the bytes, and only that file: the engine
writes through its own duplicate, so the caller may close its descriptor; a number closed
and reused, or dup2'ed over, names a new file that neither waits behind the old one nor
inherits its failure; read ends and closed numbers are refused at the call; once written,
the engine holds no descriptor of the file, so its reader sees end of file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import turbopipe
from conftest import Reader, md5
from engine_helpers import MiB, descriptors_of, in_thread, make_payloads, wait_failed


def test_caller_closing_its_descriptor_does_not_cut_queued_writes() -> None:
    read_fd, write_fd = os.pipe()
    payloads = make_payloads(4, 4 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, write_fd)
    os.close(write_fd)  # the engine holds its own descriptor until the bytes are out
    reader = Reader(read_fd)
    turbopipe.sync()
    assert reader.join() == md5(*payloads)


def test_once_written_the_engine_holds_no_descriptor_of_the_pipe() -> None:
    """The engine's duplicates are closed before sync() returns: the reader sees end of
    file as soon as the caller closes its own descriptor."""
    read_fd, write_fd = os.pipe()
    reader = Reader(read_fd)
    payloads = make_payloads(8, 1 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, write_fd)
    turbopipe.sync()
    assert sorted(descriptors_of(write_fd)) == sorted([write_fd, read_fd])
    os.close(write_fd)
    assert reader.join() == md5(*payloads)


def test_closed_descriptor_raises_ebadf_at_the_call() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    os.close(write_fd)
    with pytest.raises(OSError, match="not open for writing") as caught:
        turbopipe.pipe(b"x", write_fd)
    assert caught.value.errno == errno.EBADF


def test_read_only_descriptor_raises_ebadf_at_the_call() -> None:
    read_fd, write_fd = os.pipe()
    with pytest.raises(OSError) as caught:
        turbopipe.pipe(b"x", read_fd)
    assert caught.value.errno == errno.EBADF
    os.close(read_fd)
    os.close(write_fd)


def test_the_read_end_of_a_pipe_being_written_is_refused() -> None:
    read_fd, write_fd = os.pipe()
    stalled = os.urandom(4 * MiB)  # nobody reads yet: its stream stays open
    turbopipe.pipe(stalled, write_fd)
    with pytest.raises(OSError) as raised:
        turbopipe.pipe(b"to the read end", read_fd)
    assert raised.value.errno == errno.EBADF
    reader = Reader(read_fd)
    turbopipe.sync(stalled)
    os.close(write_fd)
    assert reader.join() == md5(stalled)


def test_a_number_reopened_with_another_access_mode(tmp_path: Path) -> None:
    """The same number and file, read-only after writable and back: each call sees the
    descriptor as it is then."""
    path = tmp_path / "file"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    turbopipe.pipe(b"first", fd)
    turbopipe.sync()
    os.close(fd)
    assert os.open(path, os.O_RDONLY) == fd
    with pytest.raises(OSError) as caught:
        turbopipe.pipe(b"refused", fd)
    assert caught.value.errno == errno.EBADF
    os.close(fd)
    assert os.open(path, os.O_WRONLY | os.O_APPEND) == fd
    turbopipe.pipe(b"second", fd)
    turbopipe.sync()
    os.close(fd)
    assert path.read_bytes() == b"firstsecond"


def test_a_reused_fd_number_is_a_new_file(tmp_path: Path) -> None:
    """Closed and reused by an open(): old bytes go to the old pipe, new ones to the new
    file, which does not wait behind (or share the failure of) the old pipe."""
    old_read, fd = os.pipe()
    old = os.urandom(4 * MiB)
    turbopipe.pipe(old, fd)  # stalls: nobody reads the old pipe yet
    os.close(fd)
    assert os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT) == fd  # the lowest free
    turbopipe.pipe(b"new bytes", fd)
    turbopipe.sync(file=fd)  # would hang behind the stalled old pipe
    os.close(fd)
    assert (tmp_path / "new").read_bytes() == b"new bytes"
    old_reader = Reader(old_read)
    turbopipe.sync(old)
    assert old_reader.join() == md5(old)


def test_sync_of_a_reused_number_waits_for_the_file_it_names_now(tmp_path: Path) -> None:
    """Even with nothing piped to the new file yet, sync(file=n) does not wait behind the
    old pipe."""
    old_read, fd = os.pipe()
    old = os.urandom(4 * MiB)
    turbopipe.pipe(old, fd)  # stalls: nobody reads the old pipe yet
    new = os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT)
    os.dup2(new, fd)
    turbopipe.sync(file=fd)  # would hang behind the stalled old pipe
    for descriptor in (fd, new):
        os.close(descriptor)
    old_reader = Reader(old_read)
    turbopipe.sync(old)
    assert old_reader.join() == md5(old)


def test_sync_of_a_closed_number_that_the_engine_took() -> None:
    """Once the caller closed n, the engine's own duplicate of another file may take
    number n: sync(file=n) still waits for the file n named, not for that one."""
    read1, write1 = os.pipe()
    read2, write2 = os.pipe()
    first, second = os.urandom(4 * MiB), os.urandom(4 * MiB)
    turbopipe.pipe(first, write1)  # stalls: nobody reads yet
    os.close(write1)
    turbopipe.pipe(second, write2)  # stalls too; its duplicate takes the lowest free number
    assert os.readlink(f"/proc/self/fd/{write1}") == os.readlink(f"/proc/self/fd/{write2}")
    reader1 = Reader(read1)
    turbopipe.sync(file=write1)  # would wait behind the second, stalled pipe
    assert reader1.join() == md5(first)
    reader2 = Reader(read2)
    turbopipe.sync()
    os.close(write2)
    assert reader2.join() == md5(second)


def test_the_same_file_again_through_a_reused_number_keeps_its_order() -> None:
    """fd n names pipe X, then Y, then X again: X's bytes stay in order, never interleaved."""
    x_read, x_write = os.pipe()
    y_read, y_write = os.pipe()
    y_reader = Reader(y_read)
    n = os.dup(x_write)
    first, second = b"A" * (4 * MiB), b"C" * (4 * MiB)
    turbopipe.pipe(first, n)  # X stalls: nobody reads it yet
    os.dup2(y_write, n)
    turbopipe.pipe(b"y", n)
    os.dup2(x_write, n)
    turbopipe.pipe(second, n)
    x_reader = Reader(x_read, keep=True)
    turbopipe.sync()
    for fd in (n, x_write, y_write):
        os.close(fd)
    x_reader.join()
    assert bytes(x_reader.data or b"") == first + second
    assert y_reader.join() == md5(b"y")


def test_a_reused_number_does_not_inherit_the_failure(tmp_path: Path) -> None:
    """sync(file=n) is about the file n names now; the old pipe's failure waits for sync()."""
    read_fd, fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(b"x" * MiB, fd)  # fails: nobody will read it
    new = os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT)
    os.dup2(new, fd)
    turbopipe.sync(file=fd)
    with pytest.raises(BrokenPipeError, match=f"fd {fd}: wrote 0 of {MiB} bytes"):
        turbopipe.sync()
    for descriptor in (fd, new):
        os.close(descriptor)


def test_a_number_reused_for_a_failed_file_names_it_from_then_on() -> None:
    """pipe(data, n) that raises the failure of the file n names now records n for that
    file: sync(file=n) once n is closed does not wait for the file n named before."""
    stalled_read, fd = os.pipe()
    turbopipe.pipe(bytes(4 * MiB), fd)  # nobody reads yet: its stream stays busy
    dead_read, dead_write = os.pipe()
    os.close(dead_read)
    turbopipe.pipe(b"x" * 10, dead_write)  # fails at once: nobody will read it
    wait_failed(dead_write)  # the failure is recorded, not yet reported
    os.dup2(dead_write, fd)  # fd now names the dead pipe
    os.close(dead_write)
    with pytest.raises(BrokenPipeError):
        turbopipe.pipe(b"y", fd)
    os.close(fd)
    waiter = in_thread(turbopipe.sync, file=fd)
    waiter.join(timeout=5)
    reader = Reader(stalled_read)
    assert not waiter.is_alive(), "sync(file=fd) waited for the pipe fd named before"
    turbopipe.sync()
    assert reader.join() == md5(bytes(4 * MiB))
