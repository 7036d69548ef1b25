"""How the bytes go: the options chunk, pipe_size and relay deliver alike; a pipe is grown
as asked, also when a later item asks, and again once a FIFO is reopened; a packet-mode
pipe keeps its packets; small items take no more of an unread pipe than write()s would."""

from __future__ import annotations

import fcntl
import os
import select
from pathlib import Path

import pytest

import turbopipe
from conftest import Pipe, md5, run_with_engine
from engine_helpers import F_GETPIPE_SZ, MiB, in_thread, make_payloads, native_only

PIPE_MAX_SIZE = int(Path("/proc/sys/fs/pipe-max-size").read_text())  # for the unprivileged


@pytest.mark.parametrize(
    "options",
    [
        {"chunk": 4096},
        {"chunk": 65536, "pipe_size": 0},
        {"relay": False},
        {"relay": True, "chunk": 100_000, "pipe_size": 0},
    ],
)
def test_write_options(make_pipe: type[Pipe], options: dict[str, int]) -> None:
    pipe = make_pipe()
    payloads = make_payloads(4, 3 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, pipe.fd, **options)
    turbopipe.sync()
    assert pipe.finish() == md5(*payloads)


@pytest.mark.parametrize("size", [MiB, 1 << 40])
def test_pipe_is_grown(make_pipe: type[Pipe], size: int) -> None:
    pipe = make_pipe()
    turbopipe.pipe(b"x", pipe.fd, pipe_size=size)
    turbopipe.sync()
    # As far as allowed: unprivileged processes stop at /proc/sys/fs/pipe-max-size.
    assert fcntl.fcntl(pipe.fd, F_GETPIPE_SZ) >= min(MiB, PIPE_MAX_SIZE)
    assert pipe.finish() == md5(b"x")


def test_pipe_is_grown_when_a_later_item_asks(make_pipe: type[Pipe]) -> None:
    # The writer learns a pipe's size once; a larger pipe_size later must still apply.
    pipe = make_pipe()
    before = fcntl.fcntl(pipe.fd, F_GETPIPE_SZ)
    turbopipe.pipe(b"x", pipe.fd, pipe_size=0)
    turbopipe.sync()
    assert fcntl.fcntl(pipe.fd, F_GETPIPE_SZ) == before
    turbopipe.pipe(b"y", pipe.fd, pipe_size=MiB)
    turbopipe.sync()
    assert fcntl.fcntl(pipe.fd, F_GETPIPE_SZ) > before
    assert pipe.finish() == md5(b"xy")


def test_a_fifo_reopened_is_grown_again(tmp_path: Path) -> None:
    # Closed on both sides, a FIFO starts over as a new pipe of the default size.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    for _ in range(2):
        reader = in_thread(lambda: got.append(fifo.read_bytes()))
        write_fd = os.open(fifo, os.O_WRONLY)
        turbopipe.pipe(bytes(100_000), write_fd, pipe_size=MiB)
        turbopipe.sync(file=write_fd)
        assert fcntl.fcntl(write_fd, F_GETPIPE_SZ) >= min(MiB, PIPE_MAX_SIZE)
        os.close(write_fd)
        reader.join(timeout=60)
    assert got == [bytes(100_000)] * 2


@pytest.mark.parametrize("vmsplice", [False, True])
def test_a_packet_mode_pipe_keeps_its_packets(engine: str, vmsplice: bool) -> None:
    """An O_DIRECT pipe makes a packet of each write() (at most PIPE_BUF bytes), and a
    read() returns one packet: spliced pages would not be packets."""
    if vmsplice:
        native_only(engine, "the Python engine has no vmsplice; it write()s such items")
    read_fd, write_fd = os.pipe2(os.O_DIRECT)
    reads: list[int] = []

    def read_all() -> None:
        while chunk := os.read(read_fd, MiB):
            reads.append(len(chunk))

    reader = in_thread(read_all)
    turbopipe.pipe(os.urandom(256 * 1024), write_fd, vmsplice=vmsplice)
    turbopipe.sync()
    os.close(write_fd)
    reader.join(timeout=60)
    os.close(read_fd)
    assert sum(reads) == 256 * 1024
    assert max(reads) <= select.PIPE_BUF


def test_small_items_fill_a_pipe_as_write_would() -> None:
    """A 64 KiB pipe nobody reads yet holds 60 items of 1000 bytes: sync() returns."""
    result = run_with_engine(
        """
        import os
        read_fd, write_fd = os.pipe()
        items = [bytes([i]) * 1000 for i in range(60)]
        for item in items:
            turbopipe.pipe(item, write_fd, pipe_size=0)
        turbopipe.sync()
        os.close(write_fd)
        assert os.read(read_fd, 1 << 20) == b"".join(items)
        """
    )
    assert result.returncode == 0, result.stderr
