"""VideoWriter's options and FFmpeg's failures, end to end: real FFmpeg encodes, real
FFmpeg decodes back."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from turbopipe import FFmpegError, VideoWriter
from writer_helpers import H, W, decode, frames_of, process_gone, random_frames


def test_output_to_stdout(tmp_path: Path, ffmpeg_exe: str) -> None:
    """FFmpeg writes "-" to the writer's own stdout, as it would on the command line."""
    frames = [f.tobytes() for f in random_frames(3)]
    script = f"""
import sys
from turbopipe import VideoWriter
with VideoWriter("-", {W}, {H}, codec="ffv1", pix_fmt="rgb24", extra_args=["-f", "matroska"],
                 ffmpeg={ffmpeg_exe!r}) as video:
    for frame in {frames!r}:
        video.write(frame)
"""
    video = tmp_path / "out.mkv"
    with video.open("wb") as stdout:
        subprocess.run([sys.executable, "-c", script], stdout=stdout, check=True, timeout=60)
    assert decode(ffmpeg_exe, video) == b"".join(frames)


def test_existing_output_is_kept_without_overwrite(tmp_path: Path) -> None:
    (tmp_path / "out.mp4").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match=r"out\.mp4"):
        VideoWriter(tmp_path / "out.mp4", W, H, overwrite=False)
    assert (tmp_path / "out.mp4").read_bytes() == b"keep me"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"width": 0}, ValueError),
        ({"width": 64.0}, TypeError),
        ({"fps": 0}, ValueError),
        ({"fps": float("nan")}, ValueError),
        ({"fps": "60"}, TypeError),
        ({"ring": 1}, ValueError),
        ({"ring": 2.5}, TypeError),
        ({"extra_args": "-an"}, TypeError),
    ],
)
def test_bad_writer_arguments(arguments: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        VideoWriter("out.mp4", **{"width": W, "height": H, **arguments})


def test_video_filters_of_extra_args_join_the_writers_own(tmp_path: Path, ffmpeg_exe: str) -> None:
    """FFmpeg keeps only the last -vf: the caller's must not replace the flip."""
    frames = random_frames(2)
    extra_args = ["-vf", "hflip"]
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24", vflip=True, extra_args=extra_args
    ) as video:
        for frame in frames:
            video.write(frame)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames)[:, ::-1, ::-1])


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), np.float32(30000 / 1001)])
def test_any_real_frame_rate(tmp_path: Path, ffmpeg_exe: str, fps: Real) -> None:
    with VideoWriter(tmp_path / "out.mkv", W, H, fps, codec="ffv1") as video:
        video.write(random_frames(1)[0])
    probe = subprocess.run(
        [ffmpeg_exe, "-i", str(tmp_path / "out.mkv")], capture_output=True, text=True
    )
    assert "29.97 fps" in probe.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"codec": "no-such-encoder"}, "Unknown encoder"),
        ({"extra_args": ["-no-such-option", "1"]}, "no-such-option"),
    ],
)
def test_ffmpeg_refusing_its_arguments_raises_with_its_message(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    video = VideoWriter(tmp_path / "out.mp4", W, H, **options)  # type: ignore[arg-type]
    with pytest.raises(FFmpegError, match=message) as caught, video:
        for frame in random_frames(30):
            video.write(frame)
    assert caught.value.returncode not in (0, None)
    assert video.pid is not None and process_gone(video.pid)


def test_unwritable_output_raises(tmp_path: Path) -> None:
    video = VideoWriter(tmp_path / "missing" / "out.mp4", W, H)
    with pytest.raises(FFmpegError, match=r"missing/out\.mp4"):
        for frame in random_frames(30):
            video.write(frame)
        video.close()
    assert video.pid is not None and process_gone(video.pid)


def test_ffmpeg_dying_mid_stream_raises_and_leaves_no_process(tmp_path: Path) -> None:
    video = VideoWriter(tmp_path / "out.mkv", 640, 480, codec="ffv1")
    frame = np.zeros((480, 640, 3), np.uint8)
    video.write(frame)
    assert video.pid is not None
    os.kill(video.pid, 9)
    with pytest.raises(FFmpegError, match="status -9"):
        for _ in range(200):
            video.write(frame)
        video.close()
    assert process_gone(video.pid)


def test_ffmpeg_told_to_stop_early_says_so(tmp_path: Path) -> None:
    video = VideoWriter(tmp_path / "out.mkv", 640, 480, codec="ffv1", extra_args=["-frames:v", "2"])
    frame = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(FFmpegError, match="status 0 before reading every frame"):
        for _ in range(200):  # more than the pipe holds
            video.write(frame)
        video.close()
    assert video.pid is not None and process_gone(video.pid)


def test_an_ffmpeg_that_cannot_start_leaves_the_writer_consistent(tmp_path: Path) -> None:
    not_ffmpeg = tmp_path / "ffmpeg"
    not_ffmpeg.write_text("not a program")
    not_ffmpeg.chmod(0o755)
    video = VideoWriter(tmp_path / "out.mkv", W, H, ffmpeg=not_ffmpeg)
    for _ in range(2):  # the same clear error each time, never an inconsistent writer
        with pytest.raises(OSError, match="Exec format error"):
            video.write(np.zeros((H, W, 3), np.uint8))
    video.close()
