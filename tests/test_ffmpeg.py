"""Locating FFmpeg and running it as a child."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from turbopipe.ffmpeg import FFmpegError, FFmpegNotFoundError, FFmpegProcess, ended, find_ffmpeg


def test_explicit_path_wins(ffmpeg_exe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURBOPIPE_FFMPEG", "/no/such/ffmpeg")
    assert find_ffmpeg(ffmpeg_exe) == ffmpeg_exe


def test_environment_variable_beats_path(
    ffmpeg_exe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "ffmpeg"
    decoy.write_text("#!/bin/sh\n")
    decoy.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("TURBOPIPE_FFMPEG", ffmpeg_exe)
    assert find_ffmpeg() == ffmpeg_exe
    monkeypatch.delenv("TURBOPIPE_FFMPEG")
    assert find_ffmpeg() == str(decoy)


def test_imageio_ffmpeg_is_the_last_resort(
    ffmpeg_exe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("TURBOPIPE_FFMPEG", raising=False)
    assert find_ffmpeg() == ffmpeg_exe
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # not installed
    with pytest.raises(FFmpegNotFoundError, match=r"TURBOPIPE_FFMPEG.*PATH.*imageio-ffmpeg"):
        find_ffmpeg()


def test_a_bad_explicit_path_is_an_error() -> None:
    with pytest.raises(FFmpegNotFoundError, match="/no/such/ffmpeg"):
        find_ffmpeg("/no/such/ffmpeg")


def test_stderr_is_drained_so_a_chatty_ffmpeg_never_stalls(ffmpeg_exe: str) -> None:
    """Megabytes of log output: with nobody reading stderr FFmpeg would block forever."""
    process = FFmpegProcess(
        [ffmpeg_exe, "-hide_banner", "-loglevel", "debug", "-f", "lavfi", "-i",
         "testsrc=size=64x48:rate=100", "-frames:v", "2000", "-f", "null", "-"]
    )  # fmt: skip
    process.finish(timeout=60)
    assert process.tail()  # the last lines are kept


def test_failure_carries_the_stderr_tail(ffmpeg_exe: str) -> None:
    process = FFmpegProcess([ffmpeg_exe, "-hide_banner", "-i", "/no/such/input.mp4"])
    with pytest.raises(FFmpegError, match="No such file or directory") as caught:
        process.finish(timeout=60)
    assert caught.value.returncode != 0
    assert "/no/such/input.mp4" in str(caught.value)
    assert not os.path.exists("/no/such/input.mp4")


@pytest.mark.parametrize(
    ("returncode", "said"),
    [(1, "failed with status 1"), (255, "failed with status 255"),
     (-9, "was killed by SIGKILL (status -9)"), (-15, "was killed by SIGTERM (status -15)"),
     (-200, "was killed by signal 200 (status -200)"), (None, "is still running")],
)  # fmt: skip
def test_how_a_process_ended_is_told(returncode: int | None, said: str) -> None:
    assert ended(returncode) == said


def reading_forever(ffmpeg_exe: str) -> FFmpegProcess:
    """An FFmpeg reading raw frames from its stdin until it ends."""
    return FFmpegProcess(
        [ffmpeg_exe, "-hide_banner", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "16x16",
         "-i", "-", "-f", "null", "-"]
    )  # fmt: skip


# SIGKILL only: FFmpeg catches SIGTERM once started (then exits with status 255), so
# whether SIGTERM kills it depends on how far its start-up got.
@pytest.mark.parametrize(
    ("sent", "method", "said"),
    [(signal.SIGKILL, "finish", "FFmpeg was killed by SIGKILL (status -9)"),
     (signal.SIGKILL, "died", "FFmpeg stopped reading: it was killed by SIGKILL (status -9)")],
)  # fmt: skip
def test_a_killed_ffmpeg_is_named_by_its_signal(
    ffmpeg_exe: str, sent: signal.Signals, method: str, said: str
) -> None:
    process = reading_forever(ffmpeg_exe)
    os.kill(process.pid, sent)
    if method == "finish":
        with pytest.raises(FFmpegError) as caught:
            process.finish(timeout=60)
        error = caught.value
    else:
        error = process.died(timeout=60)
    assert str(error).startswith(said + "\n")
    assert error.returncode == -sent


def test_the_writer_names_the_signal_that_killed_ffmpeg(tmp_path: Path) -> None:
    import numpy as np

    from turbopipe import VideoWriter

    frame = np.zeros((64, 64, 3), np.uint8)
    video = VideoWriter(tmp_path / "out.mkv", 64, 64, codec="ffv1")
    video.write(frame)
    assert video.pid is not None
    os.kill(video.pid, signal.SIGKILL)
    with pytest.raises(FFmpegError, match=r"^FFmpeg (stopped reading: it )?was killed by SIGKILL"):
        for _ in range(1000):  # more than the pipe holds
            video.write(frame)
        video.close()
