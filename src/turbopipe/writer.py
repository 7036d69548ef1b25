"""VideoWriter: frames from numpy, bytes or moderngl into a video file through FFmpeg.

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
import time
import warnings
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from ._api import pipe, sync
from .ffmpeg import FFmpegError, FFmpegProcess, find_ffmpeg

# The frames go with vmsplice, which copies the last pipe-full of each: see pipe().
_PIPE_SIZE = 1 << 19
_COLOR_TAGS = {"bt709": "bt709", "bt601": "smpte170m"}
_SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software")


def matrix_for(height: int) -> str:
    """The YUV matrix for a frame height: BT.709 for HD (720 lines and up), BT.601 below."""
    return "bt709" if height >= 720 else "bt601"


# FFmpeg's RGB, gray and palette pixel formats; everything else is some YUV.
_NOT_YUV = ("rgb", "bgr", "argb", "abgr", "0rgb", "0bgr", "x2rgb", "x2bgr", "gbr", "gray",
            "pal", "mono", "ya")  # fmt: skip


def _is_yuv(pix_fmt: str) -> bool:
    return not pix_fmt.startswith(_NOT_YUV)


# JPEG is BT.601 full range by definition: its decoders read it so whatever the tags say,
# and FFmpeg's JPEG encoders refuse limited range.
_JPEG_ENCODERS = ("mjpeg", "ljpeg")


def _yuv_encoding(codec: str, pix_fmt: str, height: int) -> tuple[str, bool]:
    """The YUV matrix of an output, and whether its range is full (yuvj formats: by name)."""
    if codec in _JPEG_ENCODERS:
        return "bt601", True
    return matrix_for(height), pix_fmt.startswith("yuvj")


class VideoWriter:
    """Write frames to a video file (or any output FFmpeg understands) through FFmpeg.

    ``write(frame)`` takes, all frames of one kind:

    - numpy arrays of shape (height, width, 3 or 4), dtype uint8, or bytes-like objects of
      width*height*3 (RGB) or *4 (RGBA) bytes, rows top to bottom. ``bytes`` are written in
      place; anything else could change later and is copied into a ring first, so it may
      be reused at once.
    - a ``moderngl.Buffer`` holding such bytes, e.g. from ``fbo.read_into``: copied on the
      GPU into a ring, so it too may be written again at once.
    - a ``moderngl.Framebuffer`` or ``Texture``: with ``gpu_convert``, converted on the GPU
      to ``pix_fmt`` (yuv420p, nv12, yuv444p or rgb24) with the flip folded in; without,
      read back as rgb24 for FFmpeg to flip and convert. Either way read into a ring of GPU
      buffers piped one frame late, so the readback overlaps the next frame's rendering.

    Frames read from OpenGL are bottom-up: ``vflip`` (default: True for moderngl objects,
    False otherwise) turns them right side up: in the GPU pass when converting there,
    else in FFmpeg (whose vflip only flips row pointers: no copy).

    ``codec`` is FFmpeg's encoder, ``pix_fmt`` the output's pixel format; ``preset`` and
    ``crf`` are passed when given; ``extra_args`` go before the output, their ``-vf``
    filters joined to the writer's own (after the flip, before the YUV conversion). ``gpu_convert``
    defaults to True on a hardware GPU, where the pass is nearly free, and to False on a
    software rasterizer (llvmpipe), where it costs about the CPU that FFmpeg's conversion
    would (see the README's writer benchmark). YUV output uses BT.709 for HD (720 lines
    and up) and BT.601 below, limited range, tagged in the stream; the JPEG encoders
    (mjpeg, ljpeg) get JPEG's BT.601 full range at any size, yuvj formats full range.

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
        gpu_convert: bool | None = None,
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
        self.output = os.fspath(output)
        if not overwrite and os.path.exists(self.output):
            # Checked here: FFmpeg's -n refuses too, but exits with status 0.
            raise FileExistsError(f"{self.output} exists and overwrite=False")
        self.width, self.height, self.fps = width, height, fps
        self.codec, self.pix_fmt, self.preset, self.crf = codec, pix_fmt, preset, crf
        self.vflip, self.gpu_convert = vflip, gpu_convert
        self.extra_args, self.overwrite = list(extra_args), overwrite
        self.ffmpeg = find_ffmpeg(ffmpeg)
        self.frames = 0
        self._ring_size = ring
        self._progress = _Progress(total) if progress else None
        self._process: FFmpegProcess | None = None
        self._source: _Source | None = None
        self._forgotten: weakref.finalize[Any, Any] | None = None  # closes a dropped writer
        self._closed = False

    # The public face

    @property
    def pid(self) -> int | None:
        """FFmpeg's process id once the first frame started it, else None."""
        return self._process.pid if self._process else None

    def write(self, frame: Any) -> None:
        """Queue one frame; returns once it is safe to change or reuse ``frame``."""
        if self._closed:
            raise ValueError("write() on a closed VideoWriter")
        if _is_moderngl(frame, "Buffer"):
            # Piped by the caller too? GL cannot copy from it while it is mapped for that.
            sync(frame)
        if self._source is None:
            self._start(frame)
        assert self._source is not None and self._process is not None
        if not self._process.running:
            raise self._fail()
        try:
            self._source.write(frame, self._process.stdin_fd)
        except OSError as error:  # BrokenPipeError: FFmpeg stopped reading
            raise self._fail() from error
        self.frames += 1
        if self._progress:
            self._progress.update(self._source.frame_bytes)

    def close(self) -> None:
        """Write out what is queued, wait for FFmpeg, raise FFmpegError if it failed.

        A writer dropped or still open at interpreter exit is closed then, with a
        ResourceWarning, so that its video is complete; close it (or use ``with``) to see
        its errors.
        """
        if self._closed:
            return
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
        source: _Source
        vflip = self.vflip
        if _is_moderngl(frame, "Framebuffer", "Texture"):
            # Converted on the GPU, flip included; or read as is, FFmpeg flips and converts.
            convert = self._converts_on_gpu(frame.ctx)
            source = _GLFrames(frame.ctx, self, convert, flip=vflip is not False)
            input_pix_fmt = self.pix_fmt if convert else "rgb24"
            vflip = False if convert else vflip is not False
        elif self.gpu_convert:
            raise ValueError(
                "gpu_convert=True converts moderngl Framebuffers or Textures, not "
                f"{type(frame).__name__} frames"
            )
        elif _is_moderngl(frame, "Buffer"):
            components = _bytes_per_pixel(self.width, self.height, frame.size)
            source = _GLBuffers(frame.ctx, self, components)
            input_pix_fmt, vflip = "rgb24" if components == 3 else "rgba", vflip is not False
        else:
            source = _CPUFrames(self, frame)
            input_pix_fmt = "rgb24" if source.components == 3 else "rgba"
        try:
            source.check(frame)  # before FFmpeg starts: a bad first frame leaves no file
            process = FFmpegProcess(self._argv(input_pix_fmt, bool(vflip)), _PIPE_SIZE)
        except BaseException:
            source.release()
            raise
        self._source, self._process = source, process
        self._forgotten = weakref.finalize(
            self, _close_forgotten, process, source, self.output, os.getpid(),
            threading.current_thread(),
        )  # fmt: skip

    def _converts_on_gpu(self, ctx: Any) -> bool:
        from .gl import GPU_FORMATS

        if self.pix_fmt not in GPU_FORMATS:
            if self.gpu_convert:
                raise ValueError(
                    f"no GPU conversion to {self.pix_fmt!r}; one of {', '.join(GPU_FORMATS)}"
                )
            return False
        if self.gpu_convert is not None:
            return self.gpu_convert
        renderer = str(ctx.info.get("GL_RENDERER", "")).lower()
        return not any(name in renderer for name in _SOFTWARE_RENDERERS)

    def _argv(self, input_pix_fmt: str, vflip: bool) -> list[str]:
        argv = [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-y" if self.overwrite else "-n"]
        # FFmpeg keeps only the last -vf: the caller's filters join the chain, after the
        # flip (they see frames right side up) and before the conversion that is tagged.
        extra_args, callers_filters = _split_video_filters(self.extra_args)
        filters = ["vflip"] if vflip else []
        filters += callers_filters
        output_tags = []
        if _is_yuv(self.pix_fmt):
            matrix, full_range = _yuv_encoding(self.codec, self.pix_fmt, self.height)
            tag = _COLOR_TAGS[matrix]
            color_range = "pc" if full_range else "tv"
            # Tags on the input: FFmpeg carries them from the frames to the stream, and
            # YUV input that is already ours must not be converted again as if untagged.
            argv += ["-color_primaries", tag, "-color_trc", tag]
            if _is_yuv(input_pix_fmt):
                argv += ["-colorspace", tag, "-color_range", color_range]
            else:  # FFmpeg converts, with the matrix and range we tag
                filters.append(f"scale=out_color_matrix={matrix}:out_range={color_range}")
            output_tags = ["-colorspace", tag, "-color_range", color_range]
        argv += [
            "-f", "rawvideo", "-pix_fmt", input_pix_fmt, "-s", f"{self.width}x{self.height}",
            "-r", str(self.fps), "-i", "-", *output_tags,
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


def _finish(process: FFmpegProcess, source: _Source) -> None:
    """Pipe what the source held back, wait for it to be written and for FFmpeg to exit.
    Raises FFmpegError if FFmpeg failed; on any failure, FFmpeg is stopped."""
    try:
        source.flush(process.stdin_fd)
        sync(file=process.stdin_fd)
    except OSError as error:  # BrokenPipeError: FFmpeg stopped reading
        failure = process.died()
        _stop(process, source)
        raise failure from error
    except BaseException:  # Ctrl-C while waiting: FFmpeg must not outlive the writer
        _stop(process, source)
        raise
    try:
        process.finish()
    except BaseException:
        _stop(process, source)
        raise
    source.release()


def _stop(process: FFmpegProcess, source: _Source) -> None:
    """Stop FFmpeg and drop what is queued for it."""
    process.kill()
    with contextlib.suppress(OSError):  # FFmpeg is gone: queued frames fail
        sync(file=process.stdin_fd)
    source.release()


def _close_forgotten(
    process: FFmpegProcess, source: _Source, output: str, pid: int, thread: threading.Thread
) -> None:
    """Close a writer that was dropped, or left open at exit, without close()."""
    if os.getpid() != pid:  # a forked child's copy: the parent's video is not its to end
        return
    news = ""
    if isinstance(source, _GLRing) and threading.current_thread() is not thread:
        # GL calls belong to the thread that wrote: end the video without the frame held
        # back, and leave the GPU ring to its context.
        source, news = _Source(), " (off its GL thread: without its last frame)"
    try:
        warnings.warn(
            f"VideoWriter for {output!r} was not closed: closing it now{news}",
            ResourceWarning,
            stacklevel=1,
        )
    finally:  # a warning made an error (-W error) must not leave the video unfinished
        _finish(process, source)


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


def _is_moderngl(frame: Any, *names: str) -> bool:
    moderngl = sys.modules.get("moderngl")
    return moderngl is not None and isinstance(frame, tuple(getattr(moderngl, n) for n in names))


def _bytes_per_pixel(width: int, height: int, size: int) -> int:
    pixels = width * height
    if size not in (pixels * 3, pixels * 4):
        raise ValueError(
            f"a {width}x{height} frame is {pixels * 3} bytes (RGB) or {pixels * 4} (RGBA), "
            f"not {size}"
        )
    return size // pixels


class _Source:
    """How frames of one kind reach FFmpeg."""

    frame_bytes: int

    def check(self, frame: Any) -> None:
        """Raise TypeError or ValueError for a frame this source cannot take."""
        raise NotImplementedError

    def write(self, frame: Any, fd: int) -> None:
        """Queue a frame that passed check()."""
        raise NotImplementedError

    def flush(self, fd: int) -> None:
        """Pipe what write() held back."""

    def release(self) -> None:
        """Free the ring (after a sync of FFmpeg's fd or after FFmpeg is gone)."""


class _CPUFrames(_Source):
    """numpy arrays and bytes-like frames: piped in place when immutable, else via a ring."""

    # Holds no reference to the writer: the writer's finalizer holds this source.
    def __init__(self, writer: VideoWriter, first: Any) -> None:
        self.width, self.height = writer.width, writer.height
        self.frame_bytes = 0  # _view() takes the first frame's size, then only that one
        with self._view(first) as view:
            self.frame_bytes = view.nbytes
        self.components = self.frame_bytes // (self.width * self.height)
        self.ring = [bytearray(self.frame_bytes) for _ in range(writer._ring_size)]
        self.next = 0

    def _view(self, frame: Any) -> memoryview:
        if _is_moderngl(frame, "Buffer", "Framebuffer", "Texture"):
            raise TypeError(
                "this writer takes numpy arrays or bytes-like frames, as its first frame "
                f"was, not a moderngl {type(frame).__name__}"
            )
        shape = getattr(frame, "shape", None)
        if shape is not None and getattr(frame, "dtype", None) is not None:
            expected = f"({self.height}, {self.width}, 3 or 4) uint8"
            if str(frame.dtype) != "uint8":
                raise TypeError(f"frame dtype must be uint8, not {frame.dtype}")
            if len(shape) != 3 or shape[:2] != (self.height, self.width) or shape[2] not in (3, 4):
                raise ValueError(f"frame shape must be {expected}, not {tuple(shape)}")
        try:
            view = memoryview(frame)
        except TypeError:
            raise TypeError(
                "frame must be a numpy array, a bytes-like object, or a moderngl Buffer, "
                f"Framebuffer or Texture, not {type(frame).__name__}"
            ) from None
        _bytes_per_pixel(self.width, self.height, view.nbytes)
        if self.frame_bytes and view.nbytes != self.frame_bytes:
            raise ValueError(f"frame is {view.nbytes} bytes, earlier frames {self.frame_bytes}")
        return view

    def check(self, frame: Any) -> None:
        self._view(frame).release()

    def write(self, frame: Any, fd: int) -> None:
        view = self._view(frame)
        if type(frame) is bytes:  # immutable: written in place
            pipe(frame, fd, vmsplice=True)
            return
        slot = self.ring[self.next]
        self.next = (self.next + 1) % len(self.ring)
        sync(slot)
        memoryview(slot)[:] = view.cast("B") if view.c_contiguous else view.tobytes()
        pipe(slot, fd, vmsplice=True)


class _GLRing(_Source):
    """A ring of GPU buffers piped one frame late, so that mapping one for the engine never
    waits for the GPU: frame i's readback overlaps frame i+1's rendering."""

    def __init__(self, ctx: Any, frame_bytes: int, size: int) -> None:
        self.ctx = ctx
        self.frame_bytes = frame_bytes
        self.ring = [ctx.buffer(reserve=frame_bytes) for _ in range(size)]
        self.next = 0
        self.pending: Any = None

    def write(self, frame: Any, fd: int) -> None:
        # Checked first: a rejected frame must not move the ring on to the pending slot.
        self.check(frame)
        slot = self.ring[self.next]
        sync(slot)  # its write is done and it is unmapped: the GPU may fill it
        self.fill(frame, slot)
        self.next = (self.next + 1) % len(self.ring)
        self.flush(fd)
        self.pending = slot

    def fill(self, frame: Any, slot: Any) -> None:
        raise NotImplementedError

    def flush(self, fd: int) -> None:
        if self.pending is not None:
            # Kept until queued: a Ctrl-C while pipe() waits for room loses no frame.
            pipe(self.pending, fd, vmsplice=True)
            self.pending = None

    def release(self) -> None:
        for slot in self.ring:
            sync(slot)
            slot.release()
        self.ring = []


class _GLBuffers(_GLRing):
    def __init__(self, ctx: Any, writer: VideoWriter, components: int) -> None:
        super().__init__(ctx, writer.width * writer.height * components, writer._ring_size)

    def check(self, frame: Any) -> None:
        if not _is_moderngl(frame, "Buffer"):
            raise TypeError(f"this writer takes moderngl Buffers, not {type(frame).__name__}")
        if frame.size != self.frame_bytes:
            raise ValueError(f"buffer is {frame.size} bytes, the frames {self.frame_bytes}")

    def fill(self, frame: Any, slot: Any) -> None:
        self.ctx.copy_buffer(slot, frame)


class _GLFrames(_GLRing):
    def __init__(self, ctx: Any, writer: VideoWriter, convert: bool, flip: bool) -> None:
        from .gl import FrameConverter, FrameReader

        width, height = writer.width, writer.height
        self.reader: FrameConverter | FrameReader
        if convert:
            matrix, full_range = _yuv_encoding(writer.codec, writer.pix_fmt, height)
            self.reader = FrameConverter(
                ctx, width, height, writer.pix_fmt, flip, matrix, full_range
            )
        else:
            self.reader = FrameReader(ctx, width, height)
        super().__init__(ctx, self.reader.frame_size, writer._ring_size)

    def check(self, frame: Any) -> None:
        from .gl import check_frame

        check_frame(frame, self.reader.size)

    def fill(self, frame: Any, slot: Any) -> None:
        self.reader.read_into(frame, slot)

    def release(self) -> None:
        super().release()
        self.reader.release()


class _Progress:
    """A progress bar (tqdm when installed, else a line on stderr): frames, fps, MB/s."""

    def __init__(self, total: int | None) -> None:
        self.started = time.perf_counter()
        self.frames = 0
        self.bytes = 0
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar: Any = None
            self.shown = 0.0
        else:
            self.bar = tqdm(total=total, unit="frame", dynamic_ncols=True)

    def update(self, frame_bytes: int) -> None:
        self.frames += 1
        self.bytes += frame_bytes
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(self._rate(elapsed), refresh=False)
        elif elapsed - self.shown >= 0.5:
            self.shown = elapsed
            self._show_line(elapsed)

    def _rate(self, elapsed: float) -> str:
        return f"{self.bytes / elapsed / 1e6:.0f} MB/s"

    def _show_line(self, elapsed: float) -> None:
        print(f"\r{self.frames} frames, {self.frames / elapsed:.1f} fps, {self._rate(elapsed)}",
              end="", file=sys.stderr, flush=True)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.frames:  # the final count, then the line ends
            self._show_line(max(time.perf_counter() - self.started, 1e-9))
            print(file=sys.stderr)
