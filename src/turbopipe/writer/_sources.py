"""How frames of each kind reach FFmpeg: a writer picks one source at its first frame.

numpy arrays and bytes-like frames are converted to YUV into a ring of bytearrays
(``Conversion``), or go as they are: in place when immutable, else copied into the ring.
moderngl frames converted to YUV in memory are read back first (``GLReadback``). Else
moderngl Buffers are copied on the GPU into a ring of GPU buffers; Framebuffers and
Textures are read (or converted, ``_gpu``) into one. Every GPU ring is piped one frame
late, so that mapping a buffer for the engine never waits for the GPU.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._api import pipe, rgb_to_yuv, sync

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


@dataclass(frozen=True)
class Conversion:
    """The native conversion of the writer's frames to a YUV layout (rgb_to_yuv's)."""

    width: int
    height: int
    layout: str
    matrix: str
    full_range: bool
    flip: bool

    @property
    def frame_bytes(self) -> int:
        pixels = self.width * self.height
        return 3 * pixels if self.layout == "yuv444p" else pixels * 3 // 2

    def __call__(self, pixels: Any, out: bytearray) -> None:
        rgb_to_yuv(
            pixels, out, self.width, self.height, pix_fmt=self.layout,  # type: ignore[arg-type]
            matrix=self.matrix, full_range=self.full_range, flip=self.flip,  # type: ignore[arg-type]
        )  # fmt: skip


class Slots:
    """A ring of bytearrays piped in turn, each synced before it is filled again."""

    def __init__(self, size: int, count: int) -> None:
        self.slots = [bytearray(size) for _ in range(count)]
        self.next = 0

    def take(self) -> bytearray:
        slot = self.slots[self.next]
        self.next = (self.next + 1) % len(self.slots)
        sync(slot)
        return slot


class Source:
    """How frames of one kind reach FFmpeg. Holds no reference to its writer: the writer's
    finalizer holds the source."""

    frame_bytes: int  # piped for each frame
    gl = False  # makes GL calls: on the thread whose context it was made in, only

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

    def off_gl_thread(self) -> tuple[Source, str]:
        """What finishes the video from a thread that must make no GL call, and what
        that loses, said in a few words."""
        return self, ""


class CPUFrames(Source):
    """numpy arrays and bytes-like frames: converted into a ring, or piped as they are, in
    place when immutable, else via the ring."""

    def __init__(
        self, width: int, height: int, ring: int, first: Any, conversion: Conversion | None
    ) -> None:
        self.width, self.height = width, height
        self.input_bytes = 0  # _view() takes the first frame's size, then only that one
        with self._view(first) as view:
            self.input_bytes = view.nbytes
        self.components = self.input_bytes // (self.width * self.height)
        self.conversion = conversion
        self.frame_bytes = conversion.frame_bytes if conversion else self.input_bytes
        self.slots = Slots(self.frame_bytes, ring)

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
        if self.input_bytes and view.nbytes != self.input_bytes:
            raise ValueError(f"frame is {view.nbytes} bytes, earlier frames {self.input_bytes}")
        return view

    def check(self, frame: Any) -> None:
        self._view(frame).release()

    def write(self, frame: Any, fd: int) -> None:
        view = self._view(frame)
        if self.conversion is None and type(frame) is bytes:  # immutable: written in place
            pipe(frame, fd, vmsplice=True)
            return
        slot = self.slots.take()
        if self.conversion is not None:
            # Straight from the frame's memory, rows apart or not, when its pixels are packed.
            packed = view.c_contiguous or (view.strides or ())[1:] == (self.components, 1)
            self.conversion(frame if packed else view.tobytes(), slot)
        else:
            memoryview(slot)[:] = view.cast("B") if view.c_contiguous else view.tobytes()
        pipe(slot, fd, vmsplice=True)


class GLReadback(Source):
    """moderngl frames read into memory and converted there: on a software renderer, whose
    GPU memory is the CPU's, the cheapest way to YUV. Framebuffers and Textures are read
    by a ``FrameReader`` (as RGBA: llvmpipe's fastest), Buffers as they are."""

    gl = True

    def __init__(self, reader: FrameReader | None, components: int, conversion: Conversion,
                 ring: int) -> None:  # fmt: skip
        self.reader = reader
        self.conversion = conversion
        self.staging = bytearray(conversion.width * conversion.height * components)
        self.frame_bytes = conversion.frame_bytes
        self.slots = Slots(self.frame_bytes, ring)

    def check(self, frame: Any) -> None:
        if self.reader is not None:
            from ._gpu import check_frame

            check_frame(frame, self.reader.size)
        else:
            GLBuffers.check_buffer(frame, len(self.staging))

    def write(self, frame: Any, fd: int) -> None:
        self.check(frame)
        if self.reader is not None:
            self.reader.read_into(frame, self.staging)
        else:
            frame.read_into(self.staging)
        slot = self.slots.take()
        self.conversion(self.staging, slot)
        pipe(slot, fd, vmsplice=True)

    def release(self) -> None:
        if self.reader is not None:
            self.reader.release()

    def off_gl_thread(self) -> tuple[Source, str]:
        return Source(), ""  # nothing held back: only the reader's GL objects are left


class GLRing(Source):
    """A ring of GPU buffers piped one frame late, so that mapping one for the engine never
    waits for the GPU: frame i's readback overlaps frame i+1's rendering."""

    gl = True

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

    def off_gl_thread(self) -> tuple[Source, str]:
        # Without the frame held back, and leaving the GPU ring to its context.
        return Source(), " (off its GL thread: without its last frame)"


class GLBuffers(GLRing):
    """moderngl Buffers of ``frame_bytes``, copied on the GPU into the ring."""

    @staticmethod
    def check_buffer(frame: Any, size: int) -> None:
        if not is_moderngl(frame, "Buffer"):
            raise TypeError(f"this writer takes moderngl Buffers, not {type(frame).__name__}")
        if frame.size != size:
            raise ValueError(f"buffer is {frame.size} bytes, the frames {size}")

    def check(self, frame: Any) -> None:
        self.check_buffer(frame, self.frame_bytes)

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
