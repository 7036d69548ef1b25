"""The video writer: frames from numpy, bytes or moderngl into a video file through FFmpeg.

``_video`` holds VideoWriter, its options and lifecycle; ``_sources`` how each kind of
frame reaches FFmpeg; ``_formats`` the color rules; ``_gpu`` the GPU passes (moderngl,
imported at the first GL frame); ``_progress`` the progress bar.
"""

from ._video import VideoWriter

__all__ = ["VideoWriter"]
