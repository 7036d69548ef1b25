"""VideoWriter's conversions of numpy, bytes and moderngl Buffer frames: what ``auto``
picks, and the native conversion giving what FFmpeg's would, tagged alike."""

from __future__ import annotations

import subprocess
from pathlib import Path

import moderngl
import numpy as np
import pytest

import turbopipe
from turbopipe import VideoWriter
from writer_helpers import H, W, decode, frames_of


def gradients(count: int, components: int = 3) -> list[np.ndarray]:
    """Smooth frames, each different: chroma filters agree on them."""
    y, x = np.mgrid[0:H, 0:W]
    return [
        np.stack([(x * 4 + i) % 256, y * 5, (x + y + 3 * i) * 2, x][:components], -1).astype(
            np.uint8
        )
        for i in range(count)
    ]


def probe(ffmpeg: str, path: Path) -> str:
    """The video stream's description, from FFmpeg: pixel format, range and matrix."""
    stderr = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True).stderr
    return next(line for line in stderr.decode().splitlines() if "Video:" in line)


def write(path: Path, frames: list[object], **options: object) -> VideoWriter:
    with VideoWriter(path, W, H, codec="ffv1", **options) as video:  # type: ignore[arg-type]
        for frame in frames:
            video.write(frame)
    return video


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "nv12", "yuv444p", "yuvj420p", "yuvj444p"])
@pytest.mark.parametrize("components", [3, 4])
def test_native_conversion_gives_what_ffmpegs_does(
    tmp_path: Path, ffmpeg_exe: str, pix_fmt: str, components: int
) -> None:
    frames = gradients(3, components)
    decoded, streams = {}, {}
    for convert in ("native", "ffmpeg"):
        path = tmp_path / f"{convert}.mkv"
        video = write(path, frames, pix_fmt=pix_fmt, convert=convert)  # type: ignore[list-item]
        assert video.conversion == convert and video.frames == 3
        decoded[convert] = np.frombuffer(decode(ffmpeg_exe, path, pix_fmt), np.uint8).astype(int)
        streams[convert] = probe(ffmpeg_exe, path).split("ffv1")[1]
    assert len(decoded["native"]) == len(decoded["ffmpeg"]) > 0
    assert np.abs(decoded["native"] - decoded["ffmpeg"]).max() <= 1
    assert streams["native"] == streams["ffmpeg"]  # the same tags: "yuv420p(tv, bt470bg..."


def test_native_conversion_flips_and_takes_any_layout_of_pixels(
    tmp_path: Path, ffmpeg_exe: str
) -> None:
    frames = gradients(4)
    wider = np.zeros((H, W + 6, 3), np.uint8)
    wider[:, 3 : W + 3] = frames[1]
    inputs = [
        frames[0].tobytes(),  # bytes
        wider[:, 3 : W + 3],  # rows apart
        np.ascontiguousarray(frames[2][:, ::-1])[:, ::-1],  # pixels at a negative stride
        bytearray(frames[3].tobytes()),
    ]
    for vflip in (False, True):
        path = tmp_path / f"{vflip}.mkv"
        write(path, inputs, pix_fmt="yuv444p", convert="native", vflip=vflip)
        ffmpeg_path = tmp_path / f"{vflip}-ffmpeg.mkv"
        write(ffmpeg_path, frames, pix_fmt="yuv444p", convert="ffmpeg", vflip=vflip)  # type: ignore[arg-type]
        ours = np.frombuffer(decode(ffmpeg_exe, path, "yuv444p"), np.uint8).astype(int)
        theirs = np.frombuffer(decode(ffmpeg_exe, ffmpeg_path, "yuv444p"), np.uint8).astype(int)
        assert len(ours) == len(theirs) == 4 * W * H * 3
        assert np.abs(ours - theirs).max() <= 1


def test_auto_converts_natively_on_the_native_engine(tmp_path: Path) -> None:
    expected = "native" if turbopipe.ENGINE == "native" else "ffmpeg"
    assert write(tmp_path / "a.mkv", gradients(1)).conversion == expected  # type: ignore[arg-type]
    # Formats the converter does not write are FFmpeg's to convert.
    rgb = write(tmp_path / "b.mkv", gradients(1), pix_fmt="rgb24")  # type: ignore[arg-type]
    assert rgb.conversion == "ffmpeg"
    assert VideoWriter(tmp_path / "c.mkv", W, H).conversion is None  # until the first frame


def test_moderngl_buffers_converted_natively_right_side_up(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context
) -> None:
    frames = gradients(3)
    buffer = gl_context.buffer(reserve=W * H * 3)
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="yuv444p") as video:
        for frame in frames:
            buffer.write(frame.tobytes())  # converted from it at once: GL may write it again
            video.write(buffer)
    assert video.conversion == ("native" if turbopipe.ENGINE == "native" else "ffmpeg")
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3).astype(int)
    expected = np.stack(frames)[:, ::-1].astype(int)  # OpenGL's rows go bottom-up
    assert np.abs(decoded - expected).max() <= 3  # YUV there and back
    buffer.release()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"convert": "cpu"}, "convert must be one of auto, native, gpu, ffmpeg"),
        ({"convert": "native", "pix_fmt": "rgb24"}, "no native conversion to 'rgb24'"),
        ({"convert": "gpu", "pix_fmt": "yuv422p"}, "no GPU conversion to 'yuv422p'"),
    ],
)
def test_conversions_that_cannot_be_are_refused_at_once(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        VideoWriter(tmp_path / "out.mkv", W, H, **options)  # type: ignore[arg-type]
    assert not (tmp_path / "out.mkv").exists()
