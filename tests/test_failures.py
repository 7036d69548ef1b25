"""A failed write raises, once, from the next call that touches its file: the matching
OSError (BrokenPipeError when the reader is gone), carrying fd, written, size and dropped,
its message saying the same. Other files go on; close() reports it too. A reader that
dies got exactly a prefix of the stream; memory that vanishes under the writer is EFAULT."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import turbopipe
from conftest import Pipe, md5, run_with_engine
from engine_helpers import MiB, native_only, run_program, wait_failed, wait_full


def test_dead_reader_raises_broken_pipe_at_sync() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(os.urandom(MiB), write_fd)
    with pytest.raises(BrokenPipeError, match=rf"fd {write_fd}: wrote 0 of {MiB} bytes\)$"):
        turbopipe.sync()
    turbopipe.sync()  # reported once, then forgotten
    os.close(write_fd)


def test_reader_closing_mid_item_counts_written_and_dropped() -> None:
    read_fd, write_fd = os.pipe()
    for _ in range(4):
        turbopipe.pipe(os.urandom(4 * MiB), write_fd)
    wait_full(write_fd)  # the first item fills the pipe and waits; three more are queued
    os.close(read_fd)
    with pytest.raises(BrokenPipeError) as caught:
        turbopipe.sync()
    error = caught.value
    assert (error.errno, error.fd, error.size, error.dropped) == (errno.EPIPE, write_fd, 4 * MiB, 3)
    assert 0 < error.written < 4 * MiB
    assert f"wrote {error.written} of {4 * MiB} bytes, 3 queued items dropped" in str(error)
    os.close(write_fd)


def test_the_failure_names_the_fd_of_the_failed_item() -> None:
    read_fd, write_fd = os.pipe()
    other_fd = os.dup(write_fd)  # the same pipe under another number
    turbopipe.pipe(bytes(4 * MiB), write_fd, relay=False)  # fills the pipe and waits
    turbopipe.pipe(b"behind", other_fd)
    wait_full(write_fd)
    os.close(read_fd)
    with pytest.raises(
        BrokenPipeError, match=rf"\(fd {write_fd}: wrote \d+ of {4 * MiB} bytes"
    ) as caught:
        turbopipe.sync()
    assert (caught.value.fd, caught.value.size) == (write_fd, 4 * MiB)
    os.close(write_fd)
    os.close(other_fd)


def test_failure_is_raised_by_the_next_pipe_to_that_fd() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(b"lost", write_fd)
    wait_failed(write_fd)
    with pytest.raises(BrokenPipeError):
        turbopipe.pipe(b"more", write_fd)
    os.close(write_fd)


def test_sync_of_the_failed_object_raises() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    data = bytearray(1000)
    turbopipe.pipe(data, write_fd)
    with pytest.raises(BrokenPipeError):
        turbopipe.sync(data)
    os.close(write_fd)


def test_failure_on_one_fd_leaves_others_alone(make_pipe: type[Pipe]) -> None:
    healthy = make_pipe()
    read_fd, broken_fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(b"lost", broken_fd)
    payloads = [os.urandom(MiB) for _ in range(8)]
    for payload in payloads:
        turbopipe.pipe(payload, healthy.fd)
        turbopipe.sync(payload)
    turbopipe.sync(file=healthy.fd)
    with pytest.raises(BrokenPipeError, match=f"fd {broken_fd}"):
        turbopipe.sync()
    assert healthy.finish() == md5(*payloads)
    os.close(broken_fd)


def test_close_reports_the_failure_and_still_stops() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(b"x" * 100, write_fd)
    with pytest.raises(BrokenPipeError):
        turbopipe.close()
    os.close(write_fd)


def test_reader_dying_mid_stream_raises_and_the_process_exits_cleanly() -> None:
    """head reads 5 MiB and exits; the writer sees BrokenPipeError and exits 0."""
    result = run_with_engine(
        """
        import os, signal, subprocess
        # SIGPIPE back to its default action: the engine must not let it kill the process.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        reader = subprocess.Popen(["head", "-c", str(5 << 20)], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                turbopipe.pipe(os.urandom(1 << 20), reader.stdin.fileno())
            turbopipe.sync()
        except BrokenPipeError as error:
            print("raised", error)
        reader.wait()
        """
    )
    assert result.returncode == 0, result.stderr
    assert "raised [Errno 32] Broken pipe" in result.stdout


def accepted_bytes(error: OSError, sizes: list[int]) -> int:
    """Bytes the pipe took before the failure: the items before the failing one (found by
    its size; sizes are distinct), then its `written`."""
    failing = sizes.index(error.size)  # type: ignore[attr-defined]
    return sum(sizes[:failing]) + error.written  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["exits", "killed"])
def test_a_dying_reader_got_exactly_a_prefix(tmp_path: Path, how: str) -> None:
    """The reader exits after N bytes (head) or is SIGKILLed mid-item: what it got is a
    prefix of the stream, no longer than what the engine reports the pipe took."""
    got = tmp_path / "got"
    command = ["head", "-c", str(3 * MiB + 123)] if how == "exits" else ["cat"]
    with open(got, "wb") as out:
        reader = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out)
    assert reader.stdin is not None
    items = [os.urandom(MiB + 7 * i) for i in range(40)]
    with pytest.raises(BrokenPipeError) as caught:
        for number, item in enumerate(items):  # dropped or refused after the failure
            turbopipe.pipe(item, reader.stdin.fileno())
            if how == "killed" and number == 5:
                turbopipe.sync(item)
                reader.kill()
        turbopipe.sync()
    reader.stdin.close()
    reader.wait()
    stream = b"".join(items)
    received = got.read_bytes()
    assert stream.startswith(received)
    if how == "exits":
        assert len(received) == 3 * MiB + 123
    else:  # all the first six items but what the pipe (1 MiB) and cat still held
        assert len(received) >= sum(map(len, items[:6])) - 2 * MiB
    assert accepted_bytes(caught.value, [len(item) for item in items]) >= len(received)


@pytest.mark.parametrize("options", [{}, {"relay": False}, {"vmsplice": True}])
def test_a_mapped_file_that_shrinks_while_queued_raises_efault(
    engine: str, tmp_path: Path, options: dict[str, bool]
) -> None:
    """Its missing pages fail the write with EFAULT on every path, never SIGBUS."""
    if options.get("vmsplice"):
        native_only(engine, "the Python engine has no vmsplice; relay=False is its path")
    result = run_program("mapped_file_shrinks.py", tmp_path / "mapped", json.dumps(options))
    assert result.returncode == 0, result.stderr
    raised = re.search(r"raised (\d+) (\d+) 4194304", result.stdout)
    assert raised, result.stdout
    assert int(raised[1]) == errno.EFAULT
    assert f"read {raised[2]}" in result.stdout


def refusing(kind: str) -> tuple[int, Callable[[], None]]:
    """A descriptor of a destination that refuses every write, and how to close it."""
    if kind == "/dev/full":
        fd = os.open("/dev/full", os.O_WRONLY)
        return fd, lambda: os.close(fd)
    if kind == "sealed memfd":
        fd = os.memfd_create("sealed", os.MFD_ALLOW_SEALING)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
        return fd, lambda: os.close(fd)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if kind == "oversized UDP":
        udp.connect(("127.0.0.1", 9))
    return udp.fileno(), udp.close


@pytest.mark.parametrize(
    ("kind", "size", "code"),
    [("/dev/full", MiB, errno.ENOSPC), ("sealed memfd", 100, errno.EPERM),
     ("unconnected UDP", 100, errno.EDESTADDRREQ), ("oversized UDP", 100_000, errno.EMSGSIZE)],
)  # fmt: skip
def test_a_destination_refusing_every_write(
    make_pipe: type[Pipe], kind: str, size: int, code: int
) -> None:
    """Its errno, nothing claimed written, reported once by the next call on it; other
    files go on."""
    fd, close = refusing(kind)
    try:
        turbopipe.pipe(bytes(size), fd)
        wait_failed(fd)
        with pytest.raises(OSError) as raised:
            turbopipe.pipe(bytes(size), fd)  # not queued: it reports the failure instead
        error = raised.value
        assert (error.errno, error.fd, error.written, error.size, error.dropped) == (  # type: ignore[attr-defined]
            code,
            fd,
            0,
            size,
            0,
        )
        turbopipe.sync()  # reported once
    finally:
        close()
    pipe = make_pipe()
    turbopipe.pipe(b"others go on", pipe.fd)
    turbopipe.sync()
    assert pipe.finish() == md5(b"others go on")
