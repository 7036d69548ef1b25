"""Bytes arrive whole and in call order: from every kind of buffer, in many items, to
several files from several threads, into every kind of destination (pipes, non-blocking
pipes, FIFOs, sockets, regular files, FFmpeg). Each test checks every byte a real reader got."""

from __future__ import annotations

import mmap
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

import turbopipe
from conftest import FFmpegPassthrough, Pipe, Reader, md5
from engine_helpers import MiB, in_thread, make_payloads, wait_full


def test_bytes_arrive_whole_and_in_order(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    payloads = make_payloads(40, 3 * MiB // 2)
    for payload in payloads:
        turbopipe.pipe(payload, pipe.fd)
    turbopipe.sync()
    assert pipe.finish() == md5(*payloads)


def test_many_small_items_keep_their_order(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe(keep=True)
    items = [f"{i:06d};".encode() for i in range(5000)]
    for item in items:
        turbopipe.pipe(item, pipe.fd)
    turbopipe.sync()
    pipe.finish()
    assert bytes(pipe.reader.data or b"") == b"".join(items)


@pytest.mark.parametrize(
    "kind",
    ["bytes", "bytearray", "memoryview", "numpy_rgb", "numpy_float", "mmap", "empty", "empty_2d"],
)
def test_buffer_kinds(make_pipe: type[Pipe], kind: str) -> None:
    raw = os.urandom(1920 * 1080 * 3)
    if kind == "bytes":
        data: object = raw
    elif kind == "bytearray":
        data = bytearray(raw)
    elif kind == "memoryview":
        data = memoryview(bytearray(raw))[100:-100]
    elif kind == "numpy_rgb":
        data = np.frombuffer(raw, np.uint8).reshape(1080, 1920, 3).copy()
    elif kind == "numpy_float":
        data = np.frombuffer(raw, np.float32).reshape(1080, -1).copy()
    elif kind == "empty_2d":
        data = np.zeros((2, 0), np.uint8)
    elif kind == "mmap":
        data = mmap.mmap(-1, len(raw))
        data.write(raw)
    else:
        data = b""
    expected = md5(bytes(memoryview(data)))  # type: ignore[arg-type]
    pipe = make_pipe()
    turbopipe.pipe(data, pipe.fd)
    turbopipe.sync(data)
    assert pipe.finish() == expected


class Exporter:
    """A Python class exporting a buffer (PEP 688, Python 3.12+)."""

    def __init__(self, view: memoryview) -> None:
        self.view = view

    def __buffer__(self, flags: int) -> memoryview:
        return self.view

    def __release_buffer__(self, view: memoryview) -> None:
        view.release()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ is Python 3.12's (PEP 688)")
def test_a_python_class_exporting_a_buffer(make_pipe: type[Pipe]) -> None:
    raw = bytearray(os.urandom(MiB))
    pipe = make_pipe()
    exporter = Exporter(memoryview(raw))
    turbopipe.pipe(exporter, pipe.fd)
    turbopipe.sync(exporter)
    assert pipe.finish() == md5(raw)
    with pytest.raises(ValueError, match="C-contiguous"):
        turbopipe.pipe(Exporter(memoryview(raw)[::2]), 1)


def test_several_files_from_several_threads(make_pipe: type[Pipe]) -> None:
    pipes = [make_pipe() for _ in range(4)]
    payloads = [make_payloads(12, MiB) for _ in pipes]

    def produce(pipe: Pipe, items: list[bytes]) -> None:
        for item in items:
            turbopipe.pipe(item, pipe.fd)
        turbopipe.sync(file=pipe.fd)

    threads = [in_thread(produce, pipe, items) for pipe, items in zip(pipes, payloads)]
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    for pipe, items in zip(pipes, payloads):
        assert pipe.finish() == md5(*items)


def test_non_blocking_descriptor_with_a_slow_reader() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    payloads = make_payloads(6, 2 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, write_fd)
    wait_full(write_fd)  # the engine meets EAGAIN before anyone reads
    reader = Reader(read_fd)
    turbopipe.sync()
    os.close(write_fd)
    assert reader.join() == md5(*payloads)


def test_regular_file(tmp_path: Path) -> None:
    payloads = make_payloads(5, 3 * MiB)
    with open(tmp_path / "out.bin", "wb") as file:
        for payload in payloads:
            turbopipe.pipe(payload, file.fileno())
        turbopipe.sync()
    assert md5((tmp_path / "out.bin").read_bytes()) == md5(*payloads)


def test_fifo(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    opened: list[Reader] = []
    opener = in_thread(lambda: opened.append(Reader(os.open(path, os.O_RDONLY))))
    fd = os.open(path, os.O_WRONLY)  # waits for the reader to open its end
    opener.join()
    payloads = make_payloads(5, 3 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, fd)
    turbopipe.sync()
    os.close(fd)
    assert opened[0].join() == md5(*payloads)


def test_socket() -> None:
    ours, theirs = socket.socketpair()
    reader = Reader(os.dup(theirs.fileno()))
    theirs.close()
    payloads = make_payloads(5, 3 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, ours.fileno())
    turbopipe.sync()
    ours.close()
    assert reader.join() == md5(*payloads)


def test_numpy_frames_through_ffmpeg(ffmpeg_exe: str) -> None:
    width, height = 320, 240
    frames = [np.random.randint(0, 255, (height, width, 3), np.uint8) for _ in range(30)]
    ffmpeg = FFmpegPassthrough(ffmpeg_exe, width, height)
    for frame in frames:
        turbopipe.pipe(frame, ffmpeg.fd)
    turbopipe.sync()
    assert ffmpeg.finish() == md5(*frames)
