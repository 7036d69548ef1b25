"""rgb_to_yuv: the same bytes on both engines, FFmpeg's levels, the layouts FFmpeg reads,
and a clear error for what it cannot convert."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import turbopipe
from turbopipe import _core, _python

LAYOUTS = ("yuv420p", "nv12", "yuv444p")
ENCODINGS = [("bt709", False), ("bt601", False), ("bt709", True), ("bt601", True)]


def convert(frame: np.ndarray, pix_fmt: str, size: tuple[int, int] | None = None,
            **options: object) -> np.ndarray:  # fmt: skip
    height, width = size or frame.shape[:2]
    out = bytearray(width * height * 3 if pix_fmt == "yuv444p" else width * height * 3 // 2)
    turbopipe.rgb_to_yuv(frame, out, width, height, pix_fmt=pix_fmt, **options)  # type: ignore[arg-type]
    return np.frombuffer(out, np.uint8)


def ffmpeg_convert(
    ffmpeg: str, frame: np.ndarray, pix_fmt: str, matrix: str, full_range: bool
) -> np.ndarray:
    """FFmpeg's own conversion, rounding accurately, with the same matrix and range."""
    height, width, components = frame.shape
    color_range = "pc" if full_range else "tv"
    argv = [
        ffmpeg, "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24" if components == 3 else "rgba",
        "-s", f"{width}x{height}", "-i", "-", "-sws_flags", "accurate_rnd",
        "-vf", f"scale=out_color_matrix={matrix}:out_range={color_range}",
        "-pix_fmt", pix_fmt, "-f", "rawvideo", "-",
    ]  # fmt: skip
    result = subprocess.run(argv, input=frame.tobytes(), capture_output=True, check=True)
    return np.frombuffer(result.stdout, np.uint8)


def differences(ours: np.ndarray, theirs: np.ndarray, pixels: int) -> tuple[int, int]:
    """The largest difference in luma, and in chroma."""
    gap = np.abs(ours.astype(int) - theirs.astype(int))
    return int(gap[:pixels].max()), int(gap[pixels:].max())


def gradient(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    channels = [
        x * 255 // (width - 1),
        y * 255 // (height - 1),
        (x + y) * 255 // (width + height - 2),
    ]
    return np.stack(channels, -1).astype(np.uint8)


def every_color(step: int) -> np.ndarray:
    """Every step-th level of each channel, and 255: a square frame of them."""
    levels = np.unique(np.r_[np.arange(0, 256, step), 255])
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    colors = np.stack([r, g, b], -1).reshape(-1, 3)
    side = int(np.ceil(np.sqrt(len(colors)) / 2) * 2)
    padded = np.zeros((side * side, 3), np.uint8)
    padded[: len(colors)] = colors
    return padded.reshape(side, side, 3)


@pytest.mark.parametrize("pix_fmt", LAYOUTS)
@pytest.mark.parametrize("matrix, full_range", ENCODINGS)
def test_luma_within_one_level_of_ffmpeg_everywhere(
    ffmpeg_exe: str, pix_fmt: str, matrix: str, full_range: bool
) -> None:
    rng = np.random.default_rng(3)
    for frame in (every_color(8), rng.integers(0, 256, (64, 96, 3), np.uint8)):
        height, width = frame.shape[:2]
        ours = convert(frame, pix_fmt, matrix=matrix, full_range=full_range)
        theirs = ffmpeg_convert(ffmpeg_exe, frame, pix_fmt, matrix, full_range)
        luma, chroma = differences(ours, theirs, width * height)
        assert luma <= 1
        if pix_fmt == "yuv444p":  # no chroma filter to differ by
            assert chroma <= 1


@pytest.mark.parametrize("pix_fmt", LAYOUTS)
@pytest.mark.parametrize("matrix, full_range", ENCODINGS)
def test_chroma_within_one_level_of_ffmpeg_on_smooth_content(
    ffmpeg_exe: str, pix_fmt: str, matrix: str, full_range: bool
) -> None:
    flat = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0), (255, 255, 255), (200, 120, 30)]
    frames = [gradient(72, 128)] + [np.full((16, 16, 3), color, np.uint8) for color in flat]
    for frame in frames:
        height, width = frame.shape[:2]
        ours = convert(frame, pix_fmt, matrix=matrix, full_range=full_range)
        theirs = ffmpeg_convert(ffmpeg_exe, frame, pix_fmt, matrix, full_range)
        assert differences(ours, theirs, width * height) <= (1, 1)


def test_engines_give_the_same_bytes(engine: str) -> None:
    if engine == "python":
        pytest.skip("compares the engines once")
    rng = np.random.default_rng(5)
    for components in (3, 4):
        frame = rng.integers(0, 256, (34, 50, components), np.uint8)
        for pix_fmt in LAYOUTS:
            for matrix, full_range in ENCODINGS:
                for flip in (False, True):
                    for bgr in (False, True):
                        options = (pix_fmt, *turbopipe._api.YUV_MATRICES[matrix], full_range,
                                   flip, bgr)  # fmt: skip
                        native, python = bytearray(50 * 34 * 3), bytearray(50 * 34 * 3)
                        if pix_fmt != "yuv444p":
                            native, python = native[: 50 * 34 * 3 // 2], python[: 50 * 34 * 3 // 2]
                        _core.rgb_to_yuv(frame, native, 50, 34, *options)
                        _python.rgb_to_yuv(frame, python, 50, 34, *options)
                        assert native == python, options


def test_layouts_are_what_ffmpeg_reads(ffmpeg_exe: str) -> None:
    # nv12 interleaves yuv420p's U and V; yuv444p keeps every pixel's.
    frame = gradient(48, 64)
    planar, nv12 = convert(frame, "yuv420p"), convert(frame, "nv12")
    luma, quarter = 64 * 48, 64 * 48 // 4
    assert bytes(nv12[:luma]) == bytes(planar[:luma])
    assert bytes(nv12[luma::2]) == bytes(planar[luma : luma + quarter])
    assert bytes(nv12[luma + 1 :: 2]) == bytes(planar[luma + quarter :])
    theirs = ffmpeg_convert(ffmpeg_exe, frame, "nv12", "bt709", False)
    assert differences(nv12, theirs, luma) <= (1, 1)


def test_layout_of_pixels_does_not_change_the_result() -> None:
    rng = np.random.default_rng(9)
    frame = rng.integers(0, 256, (24, 32, 3), np.uint8)
    expected = convert(frame, "yuv420p")
    rgba = np.concatenate([frame, np.full((24, 32, 1), 77, np.uint8)], -1)
    larger = np.zeros((30, 45, 4), np.uint8)
    larger[3:27, 5:37] = rgba
    assert bytes(convert(rgba, "yuv420p")) == bytes(expected)  # the 4th byte is ignored
    assert bytes(convert(larger[3:27, 5:37], "yuv420p")) == bytes(expected)  # rows apart
    assert bytes(convert(frame[:, :, ::-1].copy(), "yuv420p", bgr=True)) == bytes(expected)
    assert bytes(convert(frame.tobytes(), "yuv420p", (24, 32))) == bytes(expected)  # type: ignore[arg-type]
    # Upside down: flip, or rows at a negative stride.
    flipped = convert(frame[::-1].copy(), "yuv420p", flip=True)
    assert bytes(flipped) == bytes(expected)
    assert bytes(convert(frame[::-1], "yuv420p", flip=True)) == bytes(expected)


def test_white_black_and_gray_keep_their_levels() -> None:
    for full_range, black, white in ((False, 16, 235), (True, 0, 255)):
        for level, expected in ((0, black), (255, white)):
            out = convert(np.full((2, 2, 3), level, np.uint8), "yuv444p", full_range=full_range)
            assert list(out) == [expected] * 4 + [128] * 8
    gray = convert(np.full((4, 4, 3), 100, np.uint8), "yuv420p")
    assert set(gray[16:]) == {128}


@pytest.mark.parametrize(
    "frame, out, size, error, message",
    [
        (np.zeros((4, 6, 3), np.float32), 36, (6, 4), TypeError, "uint8"),
        (np.zeros((4, 5, 3), np.uint8), 36, (6, 4), ValueError, r"\(4, 6, 3 or 4\)"),
        (np.zeros((4, 12, 3), np.uint8)[:, ::2], 36, (6, 4), ValueError, "contiguous pixels"),
        (np.zeros((4, 6, 3), np.uint8), 35, (6, 4), ValueError, "36 bytes"),
        (np.zeros((5, 6, 3), np.uint8), 45, (6, 5), ValueError, "even width and height"),
        (np.zeros((4, 6, 3), np.uint8), b"x" * 36, (6, 4), TypeError, "writable"),
        (np.zeros((4, 6, 3), np.uint8), 36, (0, 4), ValueError, "positive"),
        (np.zeros(72, np.uint8), np.zeros((6, 12), np.uint8)[:, ::2], (6, 4), ValueError,
         "C-contiguous"),
    ],
)  # fmt: skip
def test_refused_with_a_clear_error(
    frame: object, out: object, size: tuple[int, int], error: type, message: str
) -> None:
    target = bytearray(out) if isinstance(out, int) else out
    with pytest.raises(error, match=message):
        turbopipe.rgb_to_yuv(frame, target, *size)  # type: ignore[arg-type]


def test_refuses_unknown_formats_and_matrices() -> None:
    frame, out = np.zeros((2, 2, 3), np.uint8), bytearray(12)
    with pytest.raises(ValueError, match="pix_fmt"):
        turbopipe.rgb_to_yuv(frame, out, 2, 2, pix_fmt="yuv422p")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="matrix"):
        turbopipe.rgb_to_yuv(frame, out, 2, 2, matrix="bt2020")  # type: ignore[arg-type]
    assert out == bytearray(12)
