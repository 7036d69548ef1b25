"""RGB to YUV with numpy, in the native converter's fixed point (src/native/yuv.cpp), so
that both give the same bytes: 16-bit pixel values scaled by 2^7 (a 2x2 block's sum by
2^5), weights by 2^15, the high 16 bits of each product kept, levels scaled by 2^6. Needs
numpy, which turbopipe does not: the binding imports this module when it converts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_VALUE_SHIFT = 7
_BLOCK_SHIFT = 5
_WEIGHT_SHIFT = 15
_LEVEL_SHIFT = _VALUE_SHIFT + _WEIGHT_SHIFT - 16
# Each product is rounded down: the offset adds back what 3 lose on average, and a half.
_ROUNDING = (1 << (_LEVEL_SHIFT - 1)) + 1


def frame_size(layout: str, width: int, height: int) -> int:
    pixels = width * height
    return 3 * pixels if layout == "yuv444p" else pixels + pixels // 2


def _fixed(weight: float) -> int:
    # std::lround: halves away from zero.
    scaled = weight * (1 << _WEIGHT_SHIFT)
    return int(math.copysign(math.floor(abs(scaled) + 0.5), scaled))


def _offset(level: int) -> int:
    return (level << _LEVEL_SHIFT) + _ROUNDING


def coefficients(kr: float, kb: float, full_range: bool) -> list[tuple[int, int, int, int]]:
    """(r, g, b, offset) of Y, U and V; each set sums to what white must give."""
    luma = (255.0 if full_range else 219.0) / 255.0
    chroma = (255.0 if full_range else 224.0) / 255.0
    kg = 1.0 - kr - kb
    yr, yb = _fixed(kr * luma), _fixed(kb * luma)
    ur, ug = _fixed(-kr / (2 * (1 - kb)) * chroma), _fixed(-kg / (2 * (1 - kb)) * chroma)
    vg, vb = _fixed(-kg / (2 * (1 - kr)) * chroma), _fixed(-kb / (2 * (1 - kr)) * chroma)
    return [
        (yr, _fixed(luma) - yr - yb, yb, _offset(0 if full_range else 16)),
        (ur, ug, -ur - ug, _offset(128)),
        (-vg - vb, vg, vb, _offset(128)),
    ]


def _level(weights: tuple[int, int, int, int], r: Any, g: Any, b: Any) -> Any:
    wr, wg, wb, offset = weights
    total = (r * wr >> 16) + (g * wg >> 16) + (b * wb >> 16) + offset
    # Full range puts the chroma of pure red and blue at 255.5: kept at 255.
    return np.minimum(total >> _LEVEL_SHIFT, 255).astype(np.uint8)


def rgb_to_yuv(
    pixels: Any, flip: bool, kr: float, kb: float, full_range: bool, layout: str, bgr: bool,
    out: Any,
) -> None:  # fmt: skip
    """Write pixels, a (height, width, 3 or 4) uint8 array, converted into out, a flat
    uint8 array of frame_size(layout, width, height)."""
    height, width = pixels.shape[:2]
    rows = pixels[::-1] if flip else pixels
    red, blue = (2, 0) if bgr else (0, 2)
    r, g, b = (rows[..., c].astype(np.int32) for c in (red, 1, blue))
    y, u, v = coefficients(kr, kb, full_range)
    plane = width * height
    values = (r << _VALUE_SHIFT, g << _VALUE_SHIFT, b << _VALUE_SHIFT)
    out[:plane] = _level(y, *values).ravel()
    if layout == "yuv444p":
        out[plane : 2 * plane] = _level(u, *values).ravel()
        out[2 * plane :] = _level(v, *values).ravel()
        return
    sums = [
        (c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2]) << _BLOCK_SHIFT
        for c in (r, g, b)
    ]
    if layout == "nv12":
        out[plane::2] = _level(u, *sums).ravel()
        out[plane + 1 :: 2] = _level(v, *sums).ravel()
    else:
        out[plane : plane + plane // 4] = _level(u, *sums).ravel()
        out[plane + plane // 4 :] = _level(v, *sums).ravel()
