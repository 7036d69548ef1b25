"""Locating FFmpeg and running it as a child."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from turbopipe.ffmpeg import FFmpegError, FFmpegNotFoundError, FFmpegProcess, find_ffmpeg


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
