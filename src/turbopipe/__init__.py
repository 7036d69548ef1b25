"""TurboPipe: get frames out of Python and into FFmpeg or any file descriptor, fast.

``pipe(data, file)`` queues a buffer for a file descriptor and returns at once; a native
thread per file writes it, in call order, straight from the buffer's memory, without the
GIL. ``sync`` waits for writes, ``close`` waits for all and stops the threads. A failed
write raises the matching OSError (BrokenPipeError...) from the next call that touches its
descriptor. ``rgb_to_yuv`` converts RGB frames to the YUV layouts encoders take.
``VideoWriter`` encodes frames through an FFmpeg it runs. See the README for the
guarantees and the tuning knobs.
"""

from ._api import ENGINE, Stats, close, done, pipe, rgb_to_yuv, stats, sync
from .ffmpeg import FFmpegError, FFmpegNotFoundError
from .writer import VideoWriter

__version__ = "2.2.0"

__all__ = [
    "ENGINE",
    "FFmpegError",
    "FFmpegNotFoundError",
    "Stats",
    "VideoWriter",
    "__version__",
    "close",
    "done",
    "pipe",
    "rgb_to_yuv",
    "stats",
    "sync",
]
