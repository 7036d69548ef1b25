"""VideoWriter's numpy, bytes and moderngl Buffer frames: each arrives identical and in
order, may be reused at once, and a bad one is refused without harm to the others."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import moderngl
import numpy as np
import pytest

import turbopipe
from conftest import Reader, md5
from turbopipe import VideoWriter
from writer_helpers import H, W, decode, frames_of, random_frames


@pytest.mark.parametrize("components", [3, 4])
def test_numpy_frames_arrive_identical_and_in_order(
    tmp_path: Path, ffmpeg_exe: str, components: int
) -> None:
    frames = random_frames(12, components)
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24") as video:
        for frame in frames:
            video.write(frame)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert video.frames == len(decoded) == 12
    assert np.array_equal(decoded, np.stack(frames)[..., :3])


def test_a_reused_array_may_change_right_after_write(tmp_path: Path, ffmpeg_exe: str) -> None:
    frame = np.zeros((H, W, 3), np.uint8)
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24") as video:
        for value in range(20):
            frame[:] = value
            video.write(frame)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert [int(f.mean()) for f in decoded] == list(range(20))


def test_a_read_only_view_of_a_reused_array(tmp_path: Path, ffmpeg_exe: str) -> None:
    """Read-only is not immutable: the array behind the view changes after write()."""
    base = np.zeros((H, W, 3), np.uint8)
    view = base.view()
    view.flags.writeable = False
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24") as video:
        for value in range(10):
            base[:] = value
            video.write(view)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert [int(f.mean()) for f in decoded] == list(range(10))


def test_bytes_frames(tmp_path: Path, ffmpeg_exe: str) -> None:
    frames = [f.tobytes() for f in random_frames(5)]
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24") as video:
        for frame in frames:
            video.write(frame)
    assert decode(ffmpeg_exe, tmp_path / "out.mkv") == b"".join(frames)


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (np.zeros((H, W, 3), np.float32), TypeError),
        (np.zeros((H, W + 1, 3), np.uint8), ValueError),
        (np.zeros((H, W), np.uint8), ValueError),
        (b"short", ValueError),
        (12, TypeError),
    ],
)
def test_bad_frames_raise_at_write(tmp_path: Path, frame: object, error: type) -> None:
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1") as video:
        video.write(np.zeros((H, W, 3), np.uint8))
        with pytest.raises(error):
            video.write(frame)
        video.write(np.zeros((H, W, 3), np.uint8))
    assert video.frames == 2


@pytest.mark.parametrize("vflip", [None, False])
def test_moderngl_buffers(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context, vflip: bool | None
) -> None:
    frames = random_frames(6)
    buffer = gl_context.buffer(reserve=W * H * 3)
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24", vflip=vflip
    ) as video:
        for frame in frames:
            buffer.write(frame.tobytes())  # the writer copied the last one: GL may write it
            video.write(buffer)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    expected = np.stack(frames)
    # Bytes read from OpenGL are bottom-up: by default the writer turns them over.
    assert np.array_equal(decoded, expected if vflip is False else expected[:, ::-1])
    buffer.release()


def test_rejected_frames_neither_drop_nor_repeat_the_others(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context
) -> None:
    """A program that catches the error of a bad frame and goes on: 1 to 4 bad frames in
    a row (the ring holds 3) leave the good ones around them as they were."""
    frames = random_frames(5)
    buffer = gl_context.buffer(reserve=W * H * 3)
    wrong = gl_context.buffer(reserve=W * H * 3 + 3)
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24", vflip=False, ring=3
    ) as video:
        for index, frame in enumerate(frames):
            buffer.write(frame.tobytes())
            video.write(buffer)
            for _ in range(index + 1 if index < 4 else 0):
                with pytest.raises(ValueError, match="buffer is"):
                    video.write(wrong)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))
    for released in (buffer, wrong):
        released.release()


def test_a_buffer_the_program_pipes_too(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context
) -> None:
    """The documented loop (sync, write the buffer, pipe it) plus the writer on the same
    buffer: the writer waits for the program's write, GL copies the buffer unmapped."""
    frames = random_frames(5)
    buffer = gl_context.buffer(reserve=W * H * 3)
    # A one-page pipe and a slow reader: each frame is still being piped at video.write.
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    reader = Reader(read_fd, chunk=1024, pause=0.005)
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24", vflip=False
    ) as video:
        for frame in frames:
            turbopipe.sync(buffer)
            buffer.write(frame.tobytes())
            turbopipe.pipe(buffer, write_fd, pipe_size=0)
            video.write(buffer)
    turbopipe.sync()
    os.close(write_fd)
    assert reader.join() == md5(*(frame.tobytes() for frame in frames))
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))
    buffer.release()
