"""vmsplice="auto", the default: zero-copy into a pipe only FFmpeg reads, the relay elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import turbopipe
from conftest import Reader, md5

MiB = 1 << 20
WIDTH, HEIGHT = 2048, 1024  # gray frames of 2 MiB: more than the pipe holds, so spliced
FRAME = WIDTH * HEIGHT
PROGRAMS = Path(__file__).with_name("programs")


def ffmpeg_md5(ffmpeg_exe: str, source: str = "-", **popen: object) -> subprocess.Popen[bytes]:
    """FFmpeg reading gray frames from `source`, printing the md5 of every byte it read."""
    return subprocess.Popen(
        [ffmpeg_exe, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt",
         "gray", "-s", f"{WIDTH}x{HEIGHT}", "-i", source, "-f", "md5", "-"],
        stdout=subprocess.PIPE, **popen,  # type: ignore[call-overload]
    )  # fmt: skip


def finish(process: subprocess.Popen[bytes]) -> str:
    if process.stdin:
        process.stdin.close()
        process.stdin = None
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    return out.decode().strip().removeprefix("MD5=")


def expected_path(engine: str) -> str:
    # The Python engine has no kernel zero-copy: it takes the relay, and says so.
    return "vmsplice" if engine == "native" else "relay"


@pytest.mark.parametrize("kind", ["bytes", "numpy", "moderngl"])
@pytest.mark.parametrize("buffers", [1, 4])
def test_ffmpeg_gets_zero_copy_by_default(
    engine: str,
    ffmpeg_exe: str,
    gl_context,
    kind: str,
    buffers: int,  # type: ignore[no-untyped-def]
) -> None:
    """Every frame arrives whole, though the frames' memory changes after each sync."""
    ffmpeg = ffmpeg_md5(ffmpeg_exe, stdin=subprocess.PIPE)
    assert ffmpeg.stdin is not None
    fd = ffmpeg.stdin.fileno()
    assert turbopipe.stats(fd) is None
    rng = np.random.default_rng(buffers)
    arrays = [np.zeros(FRAME, np.uint8) for _ in range(buffers)]
    gl_buffers = [gl_context.buffer(reserve=FRAME) for _ in range(buffers)]
    piped = []
    for frame in range(8):
        index = frame % buffers
        content = rng.integers(0, 256, FRAME, dtype=np.uint8)
        piped.append(content.tobytes())
        data: object
        if kind == "bytes":
            data = piped[-1]
        elif kind == "numpy":
            turbopipe.sync(arrays[index])
            arrays[index][:] = content
            data = arrays[index]
        else:
            turbopipe.sync(gl_buffers[index])
            gl_buffers[index].write(content)
            data = gl_buffers[index]
        turbopipe.pipe(data, fd)
    turbopipe.sync()
    stats = turbopipe.stats(fd)
    assert stats is not None
    assert stats.path == expected_path(engine)
    assert (stats.items, stats.bytes) == (8, 8 * FRAME)
    assert finish(ffmpeg) == md5(*piped)
    for buffer in gl_buffers:
        buffer.release()


@pytest.mark.skipif(not hasattr(os, "splice"), reason="the reader needs os.splice (3.10)")
@pytest.mark.parametrize("vmsplice", [None, True])
def test_a_reader_that_splices_onward_gets_the_relay(engine: str, vmsplice: bool | None) -> None:
    """Another process moves our pages into its own pipe, and reads them only after sync()
    returned and the memory changed. Under the default it still gets what was piped. Forced
    vmsplice=True shows what it would get otherwise: the change."""
    size = 768 * 1024
    reader = subprocess.Popen(
        [sys.executable, str(PROGRAMS / "splice_onward.py"), str(size)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    # Made after the fork: pages shared with a child at the fork are copied on the next
    # write, which would leave the spliced ones unchanged and hide the forced case.
    frame = np.full(size, 7, np.uint8)
    piped = frame.tobytes()
    assert reader.stdin is not None
    fd = reader.stdin.fileno()
    # A pipe smaller than the frame: vmsplice would splice all but its last pipe-full.
    turbopipe.pipe(frame, fd, pipe_size=256 * 1024, vmsplice=vmsplice)
    turbopipe.sync(frame)
    stats = turbopipe.stats(fd)
    frame[:] = 0  # the memory is ours again
    out, _ = reader.communicate(timeout=60)
    assert stats is not None
    if vmsplice is None:
        assert stats.path == "relay"
        assert out.decode().strip() == md5(piped)
    elif engine == "native":
        assert stats.path == "vmsplice"
        assert out.decode().strip() != md5(piped)


def test_a_reader_in_this_process_gets_the_relay() -> None:
    read_fd, write_fd = os.pipe()
    reader = Reader(read_fd)
    frame = os.urandom(4 * MiB)
    turbopipe.pipe(frame, write_fd)
    turbopipe.sync()
    stats = turbopipe.stats(write_fd)
    os.close(write_fd)
    assert reader.join() == md5(frame)
    assert stats is not None
    assert stats.path == "relay"


def test_a_program_called_ffmpeg_that_is_not_gets_the_relay(tmp_path: Path) -> None:
    """Known by its executable, not by its command line."""
    out = tmp_path / "out"
    with out.open("wb") as sink:
        reader = subprocess.Popen(["ffmpeg"], executable="cat", stdin=subprocess.PIPE, stdout=sink)
    assert reader.stdin is not None
    frame = os.urandom(4 * MiB)
    turbopipe.pipe(frame, reader.stdin.fileno())
    turbopipe.sync()
    stats = turbopipe.stats(reader.stdin.fileno())
    reader.stdin.close()
    assert reader.wait(timeout=60) == 0
    assert md5(out.read_bytes()) == md5(frame)
    assert stats is not None
    assert stats.path == "relay"


def test_ffmpeg_reading_a_fifo_gets_the_relay(ffmpeg_exe: str, tmp_path: Path) -> None:
    """A FIFO can gain another reader at any time."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ffmpeg = ffmpeg_md5(ffmpeg_exe, str(fifo))
    fd = os.open(fifo, os.O_WRONLY)
    frames = [os.urandom(FRAME) for _ in range(3)]
    for frame in frames:
        turbopipe.pipe(frame, fd)
    turbopipe.sync()
    stats = turbopipe.stats(fd)
    os.close(fd)
    assert finish(ffmpeg) == md5(*frames)
    assert stats is not None
    assert stats.path == "relay"


def test_ffmpeg_sharing_its_pipe_with_another_reader_gets_the_relay(ffmpeg_exe: str) -> None:
    """Every process that can read the pipe must be known, not only the first."""
    read_fd, write_fd = os.pipe()
    ffmpeg = ffmpeg_md5(ffmpeg_exe, f"pipe:{read_fd}", pass_fds=(read_fd,))
    other = subprocess.Popen(["sleep", "60"], pass_fds=(read_fd,))
    os.close(read_fd)
    frame = os.urandom(FRAME)
    turbopipe.pipe(frame, write_fd)
    turbopipe.sync()
    stats = turbopipe.stats(write_fd)
    other.kill()
    other.wait()
    os.close(write_fd)
    assert finish(ffmpeg) == md5(frame)
    assert stats is not None
    assert stats.path == "relay"


def test_stats_forget_a_stopped_writer(ffmpeg_exe: str) -> None:
    ffmpeg = ffmpeg_md5(ffmpeg_exe, stdin=subprocess.PIPE)
    assert ffmpeg.stdin is not None
    fd = ffmpeg.stdin.fileno()
    turbopipe.pipe(bytes(FRAME), fd)
    turbopipe.close()
    assert turbopipe.stats(fd) is None
    finish(ffmpeg)


def test_turning_zero_copy_off(engine: str, ffmpeg_exe: str) -> None:
    ffmpeg = ffmpeg_md5(ffmpeg_exe, stdin=subprocess.PIPE)
    assert ffmpeg.stdin is not None
    fd = ffmpeg.stdin.fileno()
    turbopipe.pipe(bytes(FRAME), fd, vmsplice=False)
    turbopipe.sync()
    stats = turbopipe.stats(fd)
    assert stats is not None
    assert stats.path == "relay"
    finish(ffmpeg)


def test_vmsplice_takes_true_false_or_auto() -> None:
    with pytest.raises(ValueError, match='"auto"'):
        turbopipe.pipe(b"x", 1, vmsplice="yes")  # type: ignore[arg-type]
