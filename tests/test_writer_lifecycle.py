"""VideoWriter's lifecycle: closed by a with block that raised, dropped, left open at exit,
across a fork, by Ctrl-C; FFmpeg in its own session and never left behind."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import run_with_engine
from turbopipe import VideoWriter
from writer_helpers import H, W, decode, frames_of, process_gone, random_frames


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
                            pix_fmt="rgb24", vflip=False, gpu_convert=False)
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
                            pix_fmt="rgb24", vflip=False, gpu_convert=False)
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
