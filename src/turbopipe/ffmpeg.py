"""Locating FFmpeg."""

from __future__ import annotations

import os
import shutil

ENV_VAR = "TURBOPIPE_FFMPEG"


class FFmpegNotFoundError(FileNotFoundError):
    """No FFmpeg binary was found in any of the places searched."""


def find_ffmpeg(explicit: str | os.PathLike[str] | None = None) -> str:
    """Path of the FFmpeg binary to run.

    Searched in order: ``explicit``, the TURBOPIPE_FFMPEG environment variable, ``ffmpeg``
    on PATH, then the binary shipped by the ``imageio-ffmpeg`` package
    (``pip install turbopipe[ffmpeg]``).
    """
    for candidate, origin in ((explicit, "argument"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if candidate:
            path = shutil.which(os.fspath(candidate))
            if path is None:
                raise FFmpegNotFoundError(
                    f"FFmpeg from the {origin} is not executable: {candidate}"
                )
            return path
    path = shutil.which("ffmpeg")
    if path:
        return path
    try:
        import imageio_ffmpeg
    except ImportError:
        pass
    else:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    raise FFmpegNotFoundError(
        "FFmpeg not found: pass its path, set TURBOPIPE_FFMPEG, put ffmpeg on PATH, "
        "or install the imageio-ffmpeg package (pip install 'turbopipe[ffmpeg]')"
    )
