"""The writer's color rules: which pixel formats are YUV, the matrix and range a YUV
output gets, the FFmpeg options that convert to them and tag the stream, and the frame
sizes that formats with subsampled chroma can take.

YUV output uses BT.709 for HD (720 lines and up) and BT.601 below, limited range; the
JPEG encoders get JPEG's BT.601 full range at any size, yuvj formats full range. The GPU
conversion (``_gpu``) takes the same matrix and range.
"""

from __future__ import annotations

import re

_COLOR_TAGS = {"bt709": "bt709", "bt601": "smpte170m"}

# FFmpeg's RGB, gray and palette pixel formats; everything else is some YUV.
_NOT_YUV = ("rgb", "bgr", "argb", "abgr", "0rgb", "0bgr", "x2rgb", "x2bgr", "gbr", "gray",
            "pal", "mono", "ya")  # fmt: skip

# The output formats each way converts to. The GPU pass also flips rgb24; the native
# converter writes the yuvj formats as their yuv layouts, in full range.
GPU_FORMATS = ("yuv420p", "nv12", "yuv444p", "rgb24")
NATIVE_LAYOUTS = {"yuv420p": "yuv420p", "yuvj420p": "yuv420p", "nv12": "nv12",
                  "yuv444p": "yuv444p", "yuvj444p": "yuv444p"}  # fmt: skip

# JPEG is BT.601 full range by definition: its decoders read it so whatever the tags say,
# and FFmpeg's JPEG encoders refuse limited range.
_JPEG_ENCODERS = ("mjpeg", "ljpeg")

# How many pixels (across, down) share a chroma sample, for FFmpeg's subsampled formats by
# name without bit depth and endianness (yuv420p10le is yuv420p's, p010le is p010's).
_CHROMA_SUBSAMPLING = {
    **dict.fromkeys(("yuv420p", "yuvj420p", "yuva420p", "nv12", "nv21", "p010", "p012",
                     "p016"), (2, 2)),
    **dict.fromkeys(("yuv422p", "yuvj422p", "yuva422p", "nv16", "nv20", "p210", "p212", "p216",
                     "yuyv422", "uyvy422", "yvyu422", "y210", "y212", "y216"), (2, 1)),
    **dict.fromkeys(("yuv440p", "yuvj440p"), (1, 2)),
    **dict.fromkeys(("yuv411p", "yuvj411p", "uyyvyy411"), (4, 1)),
    "yuv410p": (4, 4),
}  # fmt: skip


def matrix_for(height: int) -> str:
    """The YUV matrix for a frame height: BT.709 for HD (720 lines and up), BT.601 below."""
    return "bt709" if height >= 720 else "bt601"


def chroma_subsampling(pix_fmt: str) -> tuple[int, int]:
    """How many pixels (across, down) share one chroma sample: (2, 2) for yuv420p; (1, 1)
    for formats with full chroma, and for names not in the table."""
    name = re.sub(r"(le|be)$", "", pix_fmt)
    known = _CHROMA_SUBSAMPLING.get(name)
    return known or _CHROMA_SUBSAMPLING.get(re.sub(r"\d+$", "", name), (1, 1))


def size_refusal(pix_fmt: str, width: int, height: int) -> str | None:
    """Why pix_fmt cannot take width x height frames, naming the fix; None if it can.
    Subsampled chroma needs whole samples: libx264 and others refuse odd sizes."""
    across, down = chroma_subsampling(pix_fmt)
    if width % across == 0 and height % down == 0:
        return None
    sides = " and ".join(
        side for side, factor in (("width", across), ("height", down)) if factor > 1
    )
    factor = max(across, down)
    if factor == 2:
        needs, fix = f"an even {sides}", "an even size"
    else:
        needs, fix = f"a {sides} divisible by {factor}", f"a size divisible by {factor}"
    return f"{pix_fmt} needs {needs}, not {width}x{height}: pick {fix}, or pix_fmt='yuv444p'"


def _is_yuv(pix_fmt: str) -> bool:
    return not pix_fmt.startswith(_NOT_YUV)


def yuv_encoding(codec: str, pix_fmt: str, height: int) -> tuple[str, bool]:
    """The YUV matrix of an output, and whether its range is full (yuvj formats: by name)."""
    if codec in _JPEG_ENCODERS:
        return "bt601", True
    return matrix_for(height), pix_fmt.startswith("yuvj")


def color_options(
    codec: str, pix_fmt: str, input_pix_fmt: str, height: int
) -> tuple[list[str], list[str], list[str]]:
    """FFmpeg's options for the colors of an output: (input options, filters to end the
    chain with, output options). None for RGB, gray or palette output."""
    if not _is_yuv(pix_fmt):
        return [], [], []
    matrix, full_range = yuv_encoding(codec, pix_fmt, height)
    tag, color_range = _COLOR_TAGS[matrix], "pc" if full_range else "tv"
    tags = ["-colorspace", tag, "-color_range", color_range]
    # Tags on the input: FFmpeg carries them from the frames to the stream, and YUV input
    # that is already ours must not be converted again as if untagged.
    inputs = ["-color_primaries", tag, "-color_trc", tag]
    if _is_yuv(input_pix_fmt):
        return [*inputs, *tags], [], tags
    # FFmpeg converts, with the matrix and range we tag.
    return inputs, [f"scale=out_color_matrix={matrix}:out_range={color_range}"], tags
