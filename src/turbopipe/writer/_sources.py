"""How frames of each kind reach FFmpeg: a writer picks one source at its first frame.

numpy arrays and bytes-like frames go in place when immutable, else through a ring of
bytearrays. moderngl Buffers are copied on the GPU into a ring of GPU buffers; Framebuffers
and Textures are read (or converted, ``_gpu``) into one. Every GPU ring is piped one frame
late, so that mapping a buffer for the engine never waits for the GPU.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .._api import pipe, sync

if TYPE_CHECKING:
    from ._gpu import FrameConverter, FrameReader


def is_moderngl(frame: Any, *names: str) -> bool:
    """Whether frame is one of moderngl's classes ``names``; never imports moderngl."""
    moderngl = sys.modules.get("moderngl")
    return moderngl is not None and isinstance(frame, tuple(getattr(moderngl, n) for n in names))


def bytes_per_pixel(width: int, height: int, size: int) -> int:
    """3 or 4: a frame of ``size`` bytes is RGB or RGBA; else ValueError."""
    pixels = width * height
    if size not in (pixels * 3, pixels * 4):
        raise ValueError(
            f"a {width}x{height} frame is {pixels * 3} bytes (RGB) or {pixels * 4} (RGBA), "
            f"not {size}"
        )
    return size // pixels


class Source:
    """How frames of one kind reach FFmpeg. Holds no reference to its writer: the writer's
    finalizer holds the source."""

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


class CPUFrames(Source):
    """numpy arrays and bytes-like frames: piped in place when immutable, else via a ring."""

    def __init__(self, width: int, height: int, ring: int, first: Any) -> None:
        self.width, self.height = width, height
        self.frame_bytes = 0  # _view() takes the first frame's size, then only that one
        with self._view(first) as view:
            self.frame_bytes = view.nbytes
        self.components = self.frame_bytes // (self.width * self.height)
        self.ring = [bytearray(self.frame_bytes) for _ in range(ring)]
        self.next = 0

    def _view(self, frame: Any) -> memoryview:
        if is_moderngl(frame, "Buffer", "Framebuffer", "Texture"):
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
        bytes_per_pixel(self.width, self.height, view.nbytes)
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


class GLRing(Source):
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


class GLBuffers(GLRing):
    """moderngl Buffers of ``frame_bytes``, copied on the GPU into the ring."""

    def check(self, frame: Any) -> None:
        if not is_moderngl(frame, "Buffer"):
            raise TypeError(f"this writer takes moderngl Buffers, not {type(frame).__name__}")
        if frame.size != self.frame_bytes:
            raise ValueError(f"buffer is {frame.size} bytes, the frames {self.frame_bytes}")

    def fill(self, frame: Any, slot: Any) -> None:
        self.ctx.copy_buffer(slot, frame)


class GLFrames(GLRing):
    """moderngl Framebuffers and Textures, read or converted by a GPU pass into the ring;
    the source owns the pass."""

    def __init__(self, ctx: Any, reader: FrameConverter | FrameReader, size: int) -> None:
        self.reader = reader
        super().__init__(ctx, reader.frame_size, size)

    def check(self, frame: Any) -> None:
        from ._gpu import check_frame

        check_frame(frame, self.reader.size)

    def fill(self, frame: Any, slot: Any) -> None:
        self.reader.read_into(frame, slot)

    def release(self) -> None:
        super().release()
        self.reader.release()
