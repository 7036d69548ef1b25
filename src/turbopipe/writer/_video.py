"""VideoWriter: its options, the FFmpeg it runs, and its lifecycle (close, errors, a
writer dropped or left open at exit).

Every byte goes through ``turbopipe.pipe``. The writer owns its FFmpeg, which read()s its
stdin, so it turns on the engine's kernel zero-copy (vmsplice), with a 512 KiB pipe.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from .._api import ENGINE, sync
from ..ffmpeg import FFmpegError, FFmpegProcess, find_ffmpeg
from ._formats import GPU_FORMATS, NATIVE_LAYOUTS, color_options, size_refusal, yuv_encoding
from ._progress import Progress
from ._sources import (
    Conversion,
    CPUFrames,
    GLBuffers,
    GLFrames,
    GLReadback,
    Source,
    bytes_per_pixel,
    is_moderngl,
)

# The frames go with vmsplice, which copies the last pipe-full of each: see pipe().
_PIPE_SIZE = 1 << 19
_SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software")


class VideoWriter:
    """Write frames to a video file (or any output FFmpeg understands) through FFmpeg.

    ``write(frame)`` takes, all frames of one kind:

    - numpy arrays of shape (height, width, 3 or 4), dtype uint8, or bytes-like objects of
      width*height*3 (RGB) or *4 (RGBA) bytes, rows top to bottom. ``bytes`` are written in
      place; anything else could change later and is copied into a ring first, so it may
      be reused at once.
    - a ``moderngl.Buffer`` holding such bytes, e.g. from ``fbo.read_into``: copied on the
      GPU into a ring, so it too may be written again at once.
    - a ``moderngl.Framebuffer`` or ``Texture``, read back (or converted on the GPU) into a
      ring, so that the readback overlaps the next frame's rendering.

    Frames read from OpenGL are bottom-up: ``vflip`` (default: True for moderngl objects,
    False otherwise) turns them right side up, in the conversion, or in FFmpeg (whose vflip
    only flips row pointers: no copy).

    ``convert`` says what converts the frames to ``pix_fmt``: "native" (turbopipe's
    converter, on the writing thread with the GIL released, into yuv420p, nv12, yuv444p or
    their yuvj forms), "gpu" (a render pass, for Framebuffers and Textures, into yuv420p,
    nv12, yuv444p or rgb24), "ffmpeg" (FFmpeg, from rgb24 or rgba frames), or "auto": the
    GPU for Framebuffers and Textures on a hardware GPU, else native where it can (on the
    native engine), else FFmpeg. Buffers on a hardware GPU are left to FFmpeg (their copy
    stays on the GPU). ``conversion`` tells which it picked, from the first frame on.

    ``codec`` is FFmpeg's encoder, ``pix_fmt`` the output's pixel format; ``preset`` and
    ``crf`` are passed when given; ``extra_args`` go before the output, their ``-vf``
    filters joined to the writer's own (after the flip and after a native or GPU
    conversion, before FFmpeg's). YUV output uses BT.709 for HD (720 lines and up) and
    BT.601 below, limited range, tagged in the stream; the JPEG encoders (mjpeg, ljpeg) get
    JPEG's BT.601 full range at any size, yuvj formats full range.

    FFmpeg starts at the first frame. Its failures (bad codec or arguments, unwritable
    output, dying mid-stream) raise FFmpegError carrying the tail of its stderr; ``close``
    waits for FFmpeg and checks its exit status.
    """

    def __init__(
        self,
        output: str | os.PathLike[str],
        width: int,
        height: int,
        fps: float = 60,
        *,
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
        preset: str | None = None,
        crf: float | None = None,
        vflip: bool | None = None,
        convert: str = "auto",
        extra_args: Sequence[str] = (),
        overwrite: bool = True,
        progress: bool = False,
        total: int | None = None,
        ffmpeg: str | os.PathLike[str] | None = None,
        ring: int = 3,
    ) -> None:
        width, height, ring = operator.index(width), operator.index(height), operator.index(ring)
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, not {width}x{height}")
        # Any real: Fraction(30000, 1001) and numpy scalars too (float, to type checkers).
        if not isinstance(fps, (int, float, numbers.Real)):
            raise TypeError(f"fps must be a number, not {type(fps).__name__}")
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive, not {fps}")
        if ring < 2:
            raise ValueError(f"ring must hold at least 2 frames, not {ring}")
        if isinstance(extra_args, (str, bytes)):
            raise TypeError(f"extra_args must be a list of arguments, not {extra_args!r}")
        # Here, not at FFmpeg's failure after the first frame, which names no fix.
        refusal = size_refusal(pix_fmt, width, height)
        if refusal:
            raise ValueError(refusal)
        _check_conversion(convert, pix_fmt)
        self.output = os.fspath(output)
        if not overwrite and os.path.exists(self.output):
            # Checked here: FFmpeg's -n refuses too, but exits with status 0.
            raise FileExistsError(f"{self.output} exists and overwrite=False")
        self.width, self.height, self.fps = width, height, fps
        self.codec, self.pix_fmt, self.preset, self.crf = codec, pix_fmt, preset, crf
        self.vflip, self.convert = vflip, convert
        self.conversion: str | None = None  # "native", "gpu" or "ffmpeg" from the first frame
        self.extra_args, self.overwrite = list(extra_args), overwrite
        self.ffmpeg = find_ffmpeg(ffmpeg)
        self.frames = 0
        self._ring_size = ring
        self._progress = Progress(total) if progress else None
        self._process: FFmpegProcess | None = None
        self._source: Source | None = None
        self._forgotten: weakref.finalize[Any, Any] | None = None  # closes a dropped writer
        self._thread: threading.Thread | None = None  # that started FFmpeg: GL's, if any
        self._closed = False
        # Held across write() and close(), and by the finalizer: one FFmpeg, frames whole
        # and in order. Reentrant: a signal handler may close() mid-write on its thread.
        self._lock = threading.RLock()

    # The public face

    @property
    def pid(self) -> int | None:
        """FFmpeg's process id once the first frame started it, else None."""
        return self._process.pid if self._process else None

    def write(self, frame: Any) -> None:
        """Queue one frame; returns once it is safe to change or reuse ``frame``.

        Calls from several threads are taken one at a time, in the order they get the writer.
        """
        with self._lock:
            if self._is_closed():
                raise ValueError("write() on a closed VideoWriter")
            if is_moderngl(frame, "Buffer"):
                # Piped by the caller too? GL cannot copy from it while it is mapped for that.
                sync(frame)
            if self._source is None:
                self._start(frame)
            assert self._source is not None and self._process is not None
            if not self._process.running:
                raise self._fail()
            try:
                self._source.write(frame, self._process.stdin_fd)
            except OSError:  # BrokenPipeError: FFmpeg stopped reading, FFmpegError says why
                raise self._fail() from None
            self.frames += 1
            if self._progress:
                self._progress.update(self._source.frame_bytes)

    def close(self) -> None:
        """Write out what is queued, wait for FFmpeg, raise FFmpegError if it failed.

        A writer dropped or still open at interpreter exit is closed then, with a
        ResourceWarning, so that its video is complete; close it (or use ``with``) to see
        its errors. Waits for a write() in flight on another thread. A writer of moderngl
        frames is closed on the thread that wrote its first frame (RuntimeError elsewhere).
        """
        with self._lock:
            if self._is_closed():
                return
            gl = self._source is not None and self._source.gl
            if gl and threading.current_thread() is not self._thread:
                # Its last frame and its GL objects need its context, current there only.
                raise RuntimeError(
                    "close() a VideoWriter of moderngl frames on the thread that wrote its "
                    "first frame: GL calls belong to that thread's context"
                )
            self._closed = True
            if self._forgotten is not None:
                self._forgotten.detach()
            try:
                if self._process is not None and self._source is not None:
                    _finish(self._process, self._source)
            finally:
                if self._progress:
                    self._progress.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            self.close()
            return
        # The block raised (Ctrl-C ending a recording, say): the frames written still make
        # a playable file. The block's error wins; a failure to close is noted on it.
        try:
            self.close()
        except Exception as failure:
            _note(error, f"and closing the VideoWriter failed: {failure}")

    # Starting FFmpeg

    def _start(self, frame: Any) -> None:
        """Pick how frames of this kind reach FFmpeg and start it; all or nothing."""
        gl_frame = is_moderngl(frame, "Framebuffer", "Texture")
        gl_buffer = is_moderngl(frame, "Buffer")
        flip = self.vflip if self.vflip is not None else gl_frame or gl_buffer
        conversion = self._conversion_for(frame, gl_frame, gl_buffer)
        source, input_pix_fmt = self._source_for(frame, conversion, flip)
        try:
            source.check(frame)  # before FFmpeg starts: a bad first frame leaves no file
            argv = self._argv(input_pix_fmt, flip and conversion == "ffmpeg")
            process = FFmpegProcess(argv, _PIPE_SIZE)
        except BaseException:
            source.release()
            raise
        self._source, self._process, self.conversion = source, process, conversion
        self._thread = threading.current_thread()
        self._forgotten = weakref.finalize(
            self, _close_forgotten, self._lock, process, source, self.output, os.getpid(),
            self._thread,
        )  # fmt: skip

    def _source_for(self, frame: Any, conversion: str, flip: bool) -> tuple[Source, str]:
        """The source for frames like ``frame``, and the pixel format FFmpeg reads from it."""
        matrix, full_range = yuv_encoding(self.codec, self.pix_fmt, self.height)
        size, ring = (self.width, self.height), self._ring_size
        native = None
        if conversion == "native":
            layout = NATIVE_LAYOUTS[self.pix_fmt]
            native = Conversion(*size, layout, matrix, full_range, flip)
        if is_moderngl(frame, "Framebuffer", "Texture"):
            from ._gpu import FrameConverter, FrameReader

            if native is not None:  # read as RGBA, llvmpipe's fastest
                reader = FrameReader(frame.ctx, *size, components=4)
                return GLReadback(reader, reader.components, native, ring), self.pix_fmt
            if conversion == "gpu":
                converter = FrameConverter(frame.ctx, *size, self.pix_fmt, flip, matrix, full_range)
                return GLFrames(frame.ctx, converter, ring), self.pix_fmt
            return GLFrames(frame.ctx, FrameReader(frame.ctx, *size), ring), "rgb24"
        if is_moderngl(frame, "Buffer"):
            components = bytes_per_pixel(*size, frame.size)
            if native is not None:
                return GLReadback(None, components, native, ring), self.pix_fmt
            source: Source = GLBuffers(frame.ctx, self.width * self.height * components, ring)
            return source, "rgb24" if components == 3 else "rgba"
        cpu = CPUFrames(*size, ring, frame, native)
        if native is not None:
            return cpu, self.pix_fmt
        return cpu, "rgb24" if cpu.components == 3 else "rgba"

    def _is_closed(self) -> bool:
        # Also closed by its finalizer at exit, while a daemon thread may still write.
        return self._closed or (self._forgotten is not None and not self._forgotten.alive)

    def _conversion_for(self, frame: Any, gl_frame: bool, gl_buffer: bool) -> str:
        """What converts frames like this one: "native", "gpu" or "ffmpeg"."""
        if self.convert == "gpu" and not gl_frame:
            raise ValueError(
                f'convert="gpu" converts moderngl Framebuffers or Textures, not '
                f"{type(frame).__name__} frames"
            )
        if self.convert != "auto":
            return self.convert
        hardware = (gl_frame or gl_buffer) and not _is_software(frame.ctx)
        if gl_frame and hardware and self.pix_fmt in GPU_FORMATS:
            return "gpu"  # nearly free there
        if self.pix_fmt in NATIVE_LAYOUTS and ENGINE == "native" and not (gl_buffer and hardware):
            return "native"
        return "ffmpeg"

    def _argv(self, input_pix_fmt: str, vflip: bool) -> list[str]:
        argv = [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-y" if self.overwrite else "-n"]
        # FFmpeg keeps only the last -vf: the caller's filters join the chain, after the
        # flip (they see frames right side up) and before FFmpeg's conversion, if it does it.
        extra_args, callers_filters = _split_video_filters(self.extra_args)
        inputs, conversion, outputs = color_options(
            self.codec, self.pix_fmt, input_pix_fmt, self.height
        )
        filters = ["vflip"] if vflip else []
        filters += callers_filters + conversion
        argv += [
            *inputs, "-f", "rawvideo", "-pix_fmt", input_pix_fmt,
            "-s", f"{self.width}x{self.height}", "-r", str(self.fps), "-i", "-", *outputs,
        ]  # fmt: skip
        if filters:
            argv += ["-vf", ",".join(filters)]
        argv += ["-c:v", self.codec, "-pix_fmt", self.pix_fmt]
        if self.preset is not None:
            argv += ["-preset", self.preset]
        if self.crf is not None:
            argv += ["-crf", str(self.crf)]
        return [*argv, *extra_args, self.output]

    # Failures

    def _fail(self) -> FFmpegError:
        """FFmpeg stopped reading: the error to raise, with its status and last words."""
        assert self._process is not None
        error = self._process.died()
        self._abort()
        return error

    def _abort(self) -> None:
        """Stop FFmpeg and drop what is queued for it; the writer is closed."""
        self._closed = True
        if self._forgotten is not None:
            self._forgotten.detach()
        if self._process is not None and self._source is not None:
            _stop(self._process, self._source)
        if self._progress:
            self._progress.close()


def _finish(process: FFmpegProcess, source: Source) -> None:
    """Pipe what the source held back, wait for it to be written and for FFmpeg to exit.
    Raises FFmpegError if FFmpeg failed; on any failure, FFmpeg is stopped."""
    try:
        source.flush(process.stdin_fd)
        sync(file=process.stdin_fd)
    except OSError:  # BrokenPipeError: FFmpeg stopped reading, FFmpegError says why
        failure = process.died()
        _stop(process, source)
        raise failure from None
    except BaseException:  # Ctrl-C while waiting: FFmpeg must not outlive the writer
        _stop(process, source)
        raise
    try:
        process.finish()
    except BaseException:
        _stop(process, source)
        raise
    source.release()


def _stop(process: FFmpegProcess, source: Source) -> None:
    """Stop FFmpeg and drop what is queued for it."""
    process.kill()
    with contextlib.suppress(OSError):  # FFmpeg is gone: queued frames fail
        sync(file=process.stdin_fd)
    source.release()


def _close_forgotten(
    lock: threading.RLock,
    process: FFmpegProcess,
    source: Source,
    output: str,
    pid: int,
    thread: threading.Thread,
) -> None:
    """Close a writer that was dropped, or left open at exit, without close(); at exit,
    after the write() a daemon thread may have in flight."""
    # Before the lock, which a forked child may have inherited held by a parent's thread.
    if os.getpid() != pid:  # a forked child's copy: the parent's video is not its to end
        return
    news = ""
    if threading.current_thread() is not thread:
        source, news = source.off_gl_thread()  # GL calls belong to the thread that wrote
    with lock:
        try:
            warnings.warn(
                f"VideoWriter for {output!r} was not closed: closing it now{news}",
                ResourceWarning,
                stacklevel=1,
            )
        finally:  # a warning made an error (-W error) must not leave the video unfinished
            _finish(process, source)


_CONVERSIONS = ("auto", "native", "gpu", "ffmpeg")


def _check_conversion(convert: str, pix_fmt: str) -> None:
    if convert not in _CONVERSIONS:
        raise ValueError(f"convert must be one of {', '.join(_CONVERSIONS)}, not {convert!r}")
    if convert == "native" and pix_fmt not in NATIVE_LAYOUTS:
        raise ValueError(f"no native conversion to {pix_fmt!r}; one of {', '.join(NATIVE_LAYOUTS)}")
    if convert == "gpu" and pix_fmt not in GPU_FORMATS:
        raise ValueError(f"no GPU conversion to {pix_fmt!r}; one of {', '.join(GPU_FORMATS)}")


def _is_software(ctx: Any) -> bool:
    renderer = str(ctx.info.get("GL_RENDERER", "")).lower()
    return any(name in renderer for name in _SOFTWARE_RENDERERS)


def _note(error: BaseException, text: str) -> None:
    if sys.version_info >= (3, 11):
        error.add_note(text)
    else:
        warnings.warn(text, RuntimeWarning, stacklevel=3)


def _split_video_filters(args: list[str]) -> tuple[list[str], list[str]]:
    """(args without their -vf/-filter:v options, the filters those gave, in order)."""
    rest: list[str] = []
    filters: list[str] = []
    values = iter(args)
    for arg in values:
        if arg in ("-vf", "-filter:v"):
            filters.append(next(values, ""))
        else:
            rest.append(arg)
    return rest, [chain for chain in filters if chain]
