"""VideoWriter's lifecycle: refused at once for a size its pix_fmt cannot take, written
from several threads, closed by a with block that raised, dropped, left open at exit,
across a fork, by Ctrl-C; FFmpeg in its own session and never left behind, its failures
reported alone."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import run_with_engine
from engine_helpers import in_thread, wait_until
from turbopipe import VideoWriter
from turbopipe.writer._formats import chroma_subsampling
from writer_helpers import H, W, decode, frames_of, process_gone, random_frames


def waits_in(thread: threading.Thread, function: str) -> bool:
    """Whether the thread is in a call of that name (the innermost, or one it came from)."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None and frame.f_code.co_name != function:
        frame = frame.f_back
    return frame is not None


@pytest.mark.parametrize(
    ("pix_fmt", "subsampling"),
    [("yuv420p", (2, 2)), ("yuvj420p", (2, 2)), ("nv12", (2, 2)), ("nv21", (2, 2)),
     ("yuv420p10le", (2, 2)), ("p010le", (2, 2)), ("yuv422p", (2, 1)), ("yuvj422p", (2, 1)),
     ("yuv422p12be", (2, 1)), ("yuv440p", (1, 2)), ("yuv411p", (4, 1)), ("yuv410p", (4, 4)),
     ("yuv444p", (1, 1)), ("yuv444p10le", (1, 1)), ("rgb24", (1, 1)), ("unknown", (1, 1))],
)  # fmt: skip
def test_chroma_subsampling_by_name(pix_fmt: str, subsampling: tuple[int, int]) -> None:
    assert chroma_subsampling(pix_fmt) == subsampling


@pytest.mark.parametrize(
    ("pix_fmt", "width", "height", "needs", "fix"),
    [("yuv420p", 1279, 720, "an even width and height", "an even size"),
     ("yuv420p", 64, 47, "an even width and height", "an even size"),
     ("yuvj420p", 63, 48, "an even width and height", "an even size"),
     ("nv12", 63, 48, "an even width and height", "an even size"),
     ("yuv420p10le", 64, 47, "an even width and height", "an even size"),
     ("yuv422p", 63, 48, "an even width", "an even size"),
     ("yuv410p", 66, 48, "a width and height divisible by 4", "a size divisible by 4")],
)  # fmt: skip
def test_a_size_the_pix_fmt_cannot_take_is_refused_at_once(
    tmp_path: Path, pix_fmt: str, width: int, height: int, needs: str, fix: str
) -> None:
    """Not by FFmpeg after the first frame ("stopped reading (status 187)"), but here, with
    the fix."""
    told = f"{pix_fmt} needs {needs}, not {width}x{height}: pick {fix}, or pix_fmt='yuv444p'"
    with pytest.raises(ValueError, match=f"^{re.escape(told)}$"):
        VideoWriter(tmp_path / "out.mp4", width, height, pix_fmt=pix_fmt)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(("pix_fmt", "width", "height"), [("yuv444p", 63, 47), ("yuv422p", 64, 47)])
def test_a_size_the_pix_fmt_can_take_is_written(
    tmp_path: Path, ffmpeg_exe: str, pix_fmt: str, width: int, height: int
) -> None:
    """libx264, which refuses odd sizes its chroma cannot take, writes these."""
    color = (200, 100, 50)
    with VideoWriter(tmp_path / "out.mp4", width, height, pix_fmt=pix_fmt, crf=0) as video:
        for _ in range(3):
            video.write(np.full((height, width, 3), color, np.uint8))
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mp4"), width, height, 3)
    assert len(decoded) == 3
    assert np.abs(decoded.astype(int) - color).max() <= 3  # the colour conversion's rounding


def test_writes_from_threads_reach_one_ffmpeg_whole_and_once(
    tmp_path: Path, ffmpeg_exe: str
) -> None:
    """Four threads write at once, from the first frame: one FFmpeg, each frame whole (one
    colour: thread and index) and exactly once, each thread's frames in its order."""
    threads, count, width, height = 4, 25, 320, 240
    started = threading.Barrier(threads)
    pids: set[int | None] = set()
    video = VideoWriter(tmp_path / "out.mkv", width, height, codec="ffv1", pix_fmt="rgb24")

    def write_frames(thread: int) -> None:
        started.wait()
        for index in range(count):
            video.write(np.full((height, width, 3), (thread, index, 255), np.uint8))
            pids.add(video.pid)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write_frames, range(threads)))  # raises what a thread raised
    video.close()
    assert pids == {video.pid}
    assert video.frames == threads * count
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), width, height, 3)
    assert len(decoded) == threads * count
    assert (decoded == decoded[:, :1, :1]).all(), "a frame mixes two frames' pixels"
    colors = [tuple(int(value) for value in frame[0, 0]) for frame in decoded]
    for thread in range(threads):
        indices = [index for red, index, _ in colors if red == thread]
        assert indices == list(range(count)), f"thread {thread}'s frames"


def test_close_waits_for_a_write_in_flight(tmp_path: Path, ffmpeg_exe: str) -> None:
    """close() from another thread while a write() waits for room (FFmpeg stopped): that
    frame goes in before the video ends; the writes after it are refused."""
    frames = [np.full((480, 640, 3), value, np.uint8) for value in range(0, 240, 20)]
    video = VideoWriter(tmp_path / "out.mkv", 640, 480, codec="ffv1", pix_fmt="rgb24", ring=3)
    video.write(frames[0])
    assert video.pid is not None
    os.kill(video.pid, signal.SIGSTOP)
    for frame in frames[1:3]:  # the ring is full: the next write waits for FFmpeg
        video.write(frame)
    written: list[int] = []

    def write_the_rest() -> None:
        for index in range(3, len(frames)):
            try:
                video.write(frames[index])
            except ValueError:  # closed
                return
            written.append(index)

    try:
        writer = in_thread(write_the_rest)
        wait_until(lambda: waits_in(writer, "sync"), "waiting for room")
        closer = in_thread(video.close)
        wait_until(lambda: waits_in(closer, "close"), "closing")
    finally:  # even after a failed wait: a stopped FFmpeg would hang the writer's end
        os.kill(video.pid, signal.SIGCONT)
    for thread in (writer, closer):
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert written[:1] == [3], "the write in flight was refused"
    assert written == list(range(3, 3 + len(written)))
    assert video.frames == 3 + len(written)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), 640, 480, 3)
    assert np.array_equal(decoded, np.stack(frames[: video.frames]))


@pytest.mark.parametrize("frames", [200, 2])  # FFmpeg found gone by write(), by close()
def test_a_bad_codec_is_reported_by_ffmpegs_error_alone(tmp_path: Path, frames: int) -> None:
    """FFmpeg refuses the codec and stops reading: the traceback is FFmpegError's, with
    FFmpeg's words, and no BrokenPipeError (what the engine saw) above it."""
    result = run_with_engine(
        f"""
        import numpy as np
        from turbopipe import VideoWriter
        frame = np.zeros((480, 640, 3), np.uint8)  # each more than the pipe holds
        with VideoWriter({str(tmp_path / "out.mkv")!r}, 640, 480, codec="no_such_codec") as video:
            for _ in range({frames}):
                video.write(frame)
        """
    )
    assert result.returncode == 1
    assert "turbopipe.ffmpeg.FFmpegError: FFmpeg" in result.stderr, result.stderr
    assert "Unknown encoder 'no_such_codec'" in result.stderr, result.stderr
    assert "BrokenPipeError" not in result.stderr, result.stderr
    assert result.stderr.count("Traceback") == 1, result.stderr


def test_ffmpeg_runs_in_its_own_session(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to its foreground process group: ours, not FFmpeg's."""
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1") as video:
        video.write(np.zeros((H, W, 3), np.uint8))
        assert video.pid is not None
        assert os.getpgid(video.pid) != os.getpgrp()


def test_an_error_inside_with_still_leaves_a_playable_video(
    tmp_path: Path, ffmpeg_exe: str
) -> None:
    frames = random_frames(3)
    video = VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24")
    with pytest.raises(KeyboardInterrupt), video:  # a recording ended by Ctrl-C
        for frame in frames:
            video.write(frame)
        raise KeyboardInterrupt
    assert video.pid is not None and process_gone(video.pid)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


def test_the_blocks_error_wins_over_a_failing_close(tmp_path: Path) -> None:
    video = VideoWriter(tmp_path / "missing" / "out.mkv", W, H, codec="ffv1")
    # The close failure is a note on the error, or before Python 3.11 a warning.
    told = "closing the VideoWriter failed"
    warned = (
        contextlib.nullcontext()
        if sys.version_info >= (3, 11)
        else pytest.warns(RuntimeWarning, match=told)
    )
    with warned, pytest.raises(KeyError) as raised, video:
        video.write(np.zeros((H, W, 3), np.uint8))
        raise KeyError("the program's own")
    assert sys.version_info < (3, 11) or told in "".join(raised.value.__notes__)


def test_a_dropped_writer_is_closed_even_when_warnings_are_errors(
    tmp_path: Path, ffmpeg_exe: str
) -> None:
    frames = random_frames(2)
    np.save(tmp_path / "frames.npy", np.stack(frames))
    result = run_with_engine(
        f"""
        import gc, warnings
        import numpy as np
        from turbopipe import VideoWriter
        warnings.simplefilter("error")
        video = VideoWriter({str(tmp_path / "out.mkv")!r}, {W}, {H}, codec="ffv1",
                            pix_fmt="rgb24")
        for frame in np.load({str(tmp_path / "frames.npy")!r}):
            video.write(frame)
        pid = video.pid
        del video
        gc.collect()
        print(pid)
        """
    )
    assert "ResourceWarning" in result.stderr
    assert process_gone(int(result.stdout))
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


def test_a_dropped_writer_is_closed_complete(tmp_path: Path, ffmpeg_exe: str) -> None:
    frames = random_frames(3)
    video = VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24")
    for frame in frames:
        video.write(frame)
    pid = video.pid
    assert pid is not None
    with pytest.warns(ResourceWarning, match="was not closed"):
        del video
        gc.collect()
    assert process_gone(pid)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


def test_a_forked_child_does_not_keep_ffmpeg_waiting(tmp_path: Path, ffmpeg_exe: str) -> None:
    """A child still alive when the parent closes the writer (a worker pool, say) holds
    no copy of FFmpeg's stdin: FFmpeg sees the end of its input."""
    frames = random_frames(3)
    np.save(tmp_path / "frames.npy", np.stack(frames))
    result = run_with_engine(
        f"""
        import os, signal, time
        import numpy as np
        from turbopipe import VideoWriter
        video = VideoWriter({str(tmp_path / "out.mkv")!r}, {W}, {H}, codec="ffv1",
                            pix_fmt="rgb24")
        for frame in np.load({str(tmp_path / "frames.npy")!r}):
            video.write(frame)
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        started = time.monotonic()
        video.close()
        print(round(time.monotonic() - started))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 10  # seconds: not until the child exits
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


def test_a_forked_child_leaves_the_parents_writer_alone(tmp_path: Path, ffmpeg_exe: str) -> None:
    """A child that exits normally does not close (nor add to) the writer it inherited."""
    frames = random_frames(5)
    np.save(tmp_path / "frames.npy", np.stack(frames))
    result = run_with_engine(
        f"""
        import os, sys, warnings
        import moderngl, numpy as np
        from turbopipe import VideoWriter
        warnings.simplefilter("default", ResourceWarning)
        frames = np.load({str(tmp_path / "frames.npy")!r})
        ctx = moderngl.create_standalone_context(backend="egl")
        texture = ctx.texture(({W}, {H}), 3)
        video = VideoWriter({str(tmp_path / "out.mkv")!r}, {W}, {H}, codec="ffv1",
                            pix_fmt="rgb24", vflip=False, convert="ffmpeg")
        for index, frame in enumerate(frames):
            texture.write(frame.tobytes())
            video.write(texture)  # piped one frame late: one is held back at the fork
            if index == 2:
                child = os.fork()
                if child == 0:
                    sys.exit(0)  # atexit runs in the child
                assert os.waitpid(child, 0)[1] == 0
        video.close()
        """
    )
    assert result.returncode == 0, result.stderr
    assert "was not closed" not in result.stderr
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


@pytest.mark.parametrize("kind", ["numpy", "texture"])
def test_a_writer_left_open_at_exit_is_closed_complete(
    tmp_path: Path, ffmpeg_exe: str, kind: str
) -> None:
    """Even GL frames, which the writer pipes one frame late, all reach the file."""
    frames = random_frames(4)
    np.save(tmp_path / "frames.npy", np.stack(frames))
    result = run_with_engine(
        f"""
        import warnings
        import numpy as np
        from turbopipe import VideoWriter
        warnings.simplefilter("default", ResourceWarning)
        frames = np.load({str(tmp_path / "frames.npy")!r})
        video = VideoWriter({str(tmp_path / "out.mkv")!r}, {W}, {H}, codec="ffv1",
                            pix_fmt="rgb24", vflip=False, convert="ffmpeg")
        if {kind!r} == "texture":
            import moderngl
            ctx = moderngl.create_standalone_context(backend="egl")
            texture = ctx.texture(({W}, {H}), 3)
        for frame in frames:
            if {kind!r} == "texture":
                texture.write(frame.tobytes())
                video.write(texture)
            else:
                video.write(frame)
        print(video.pid)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ResourceWarning" in result.stderr and "was not closed" in result.stderr
    assert process_gone(int(result.stdout))
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, even where a shell's background job ignores it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_ctrl_c_in_close_stops_ffmpeg(tmp_path: Path) -> None:
    stuck = tmp_path / "ffmpeg"
    stuck.write_text("#!/bin/sh\nexec sleep 60\n")  # an FFmpeg that never reads
    stuck.chmod(0o755)
    video = VideoWriter(tmp_path / "out.mkv", 640, 480, ffmpeg=stuck)
    for _ in range(2):  # more than the pipe holds, less than the ring: close() has to wait
        video.write(np.zeros((480, 640, 3), np.uint8))
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        video.close()
    assert video.pid is not None and process_gone(video.pid)
