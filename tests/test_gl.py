"""GPU conversion: layouts, sizes and the YUV values of known colors."""

from __future__ import annotations

import moderngl
import numpy as np
import pytest

from turbopipe.gl import FrameConverter, frame_size


@pytest.mark.parametrize(
    ("pix_fmt", "size"),
    [("yuv420p", 96 * 64 * 3 // 2), ("nv12", 96 * 64 * 3 // 2), ("yuv444p", 96 * 64 * 3),
     ("rgb24", 96 * 64 * 3)],
)  # fmt: skip
def test_frame_size(pix_fmt: str, size: int) -> None:
    assert frame_size(pix_fmt, 96, 64) == size


def test_odd_sizes_and_unknown_formats_are_refused(gl_context: moderngl.Context) -> None:
    with pytest.raises(ValueError, match="even"):
        FrameConverter(gl_context, 65, 64, "yuv420p", flip=False)
    with pytest.raises(ValueError, match="yuv420p"):
        FrameConverter(gl_context, 64, 64, "p010le", flip=False)


@pytest.mark.parametrize(
    ("rgb", "matrix", "yuv"),
    [
        ((255, 255, 255), "bt709", (235, 128, 128)),
        ((0, 0, 0), "bt709", (16, 128, 128)),
        ((255, 0, 0), "bt709", (63, 102, 240)),
        ((255, 0, 0), "bt601", (81, 90, 240)),
    ],
)
def test_known_colors(
    gl_context: moderngl.Context, rgb: tuple[int, int, int], matrix: str, yuv: tuple[int, ...]
) -> None:
    width, height = 64, 48
    converter = FrameConverter(gl_context, width, height, "yuv420p", flip=True, matrix=matrix)
    texture = gl_context.texture((width, height), 3, bytes(rgb) * (width * height))
    buffer = gl_context.buffer(reserve=converter.frame_size)
    converter.read_into(texture, buffer)
    frame = np.frombuffer(buffer.read(), np.uint8)
    luma, chroma = frame[: width * height], frame[width * height :]
    assert set(luma) == {yuv[0]}
    assert set(chroma[: len(chroma) // 2]) == {yuv[1]}
    assert set(chroma[len(chroma) // 2 :]) == {yuv[2]}
    for item in (converter, texture, buffer):
        item.release()
