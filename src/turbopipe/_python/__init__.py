"""The Python engine: the native engine ``turbopipe._core`` in pure Python.

Its files mirror the native ones: this module is the binding (src/native/binding.cpp),
turning Python objects into items and failures into OSErrors, with the same calls (see
turbopipe/_core.pyi); ``engine`` is engine.hpp/.cpp, ``fdio`` is fdio.hpp and its files,
``yuv`` is yuv.hpp/.cpp (with numpy, imported when a frame is converted).
One queue and one daemon thread per file, the items written with ``os.write`` straight from
a memoryview of the caller's buffer, the export released by the next call that finishes on
a caller's thread. It serves when the extension is missing or ``TURBOPIPE_ENGINE=python``.
It has no kernel zero-copy: items asked ``vmsplice=True`` are written directly, without the
relay, as the native engine's are when it cannot splice, and ``vmsplice="auto"`` takes the
relay, as the native engine does for a reader it does not know. The relay needs
``os.splice`` (Python 3.10 on Linux); without it, items are written directly.
"""

from __future__ import annotations

import errno
import os
import pickle
from typing import Any

from .._errors import descriptor_refused
from . import fdio
from .engine import IDLE_EXIT, QUEUE_LIMIT, Engine, Item
from .fdio import RELAY_MINIMUM, SPLICE_REFUSED, WriteOptions

__all__ = ["IDLE_EXIT", "QUEUE_LIMIT", "RELAY_MINIMUM", "SPLICE_REFUSED"]

_INT_MAX = 0x7FFFFFFF
_YUV_LAYOUTS = ("yuv420p", "nv12", "yuv444p")

engine = Engine()


def _reset_after_fork() -> None:
    # In a forked child the parent's workers do not exist: start over, keeping the parent's
    # state rather than touching it (but closing the descriptors it held).
    global engine
    fdio.after_fork_in_child()
    engine.forget()
    engine = Engine()


os.register_at_fork(after_in_child=_reset_after_fork)


def _conclude() -> None:
    """Release what is finished (on this thread: releasing an export may run the
    exporter's code) and join the workers that exited."""
    for item in engine.take_finished():
        item.view.release()
        if item.holding:  # a failed item's own descriptor, held until reported
            fdio.release_descriptor(item.descriptor)
    engine.join_exited_workers()


def _to_fd(fd: Any) -> int:
    if not isinstance(fd, int):
        raise TypeError(f"fd must be an int, not {type(fd).__name__}")
    if fd < 0 or fd > _INT_MAX:
        raise ValueError(f"file must be a file descriptor (a non-negative int), not {fd}")
    return fd


def _holds_pointers(format: str) -> bool:
    """Whether a struct format holds Python object pointers ('O'), which are no data. Field
    names, between colons ("T{i:Offset:}"), are not codes."""
    return "O" in "".join(format.split(":")[::2])


def submit(
    data: Any,
    fd: int,
    key: object | None,
    root: object,
    chunk: int,
    pipe_size: int,
    vmsplice: bool | str,
    relay: bool,
) -> None:
    fd = _to_fd(fd)
    # Exported from data itself, as the native engine does. A memoryview through a
    # PickleBuffer: it is then held too (its release() raises BufferError until the item
    # is written), where memoryview(data) would only share its buffer. Anything else
    # directly: a PickleBuffer refuses classes with __buffer__ (PEP 688) on Python 3.12+.
    view = memoryview(pickle.PickleBuffer(data) if type(data) is memoryview else data)
    made: list[int] = []  # the duplicate captured for the item, if any
    item: Item | None = None
    try:
        if not view.c_contiguous:
            raise ValueError("data must be C-contiguous")
        if _holds_pointers(view.format):
            raise TypeError("data holds Python object pointers (format 'O'), not bytes")
        if view.ndim != 1 or view.itemsize != 1:
            shaped = view
            view = view.cast("B") if view.nbytes else memoryview(b"")  # cast refuses 0 in shape
            shaped.release()
        try:
            file = fdio.check_descriptor(fd)
        except OSError as error:
            raise descriptor_refused(error.errno or errno.EBADF, fd) from None
        # vmsplice=True items are write()n: they never take the relay, as in the native
        # engine.
        options = WriteOptions(chunk, pipe_size, relay and vmsplice is not True)
        item = Item(view, fd, file, key, root, options)
        if not engine.submit(fd, item):  # its stream has no descriptor to share
            try:
                item.file = fdio.capture_descriptor(fd, made)
            except OSError as error:
                raise descriptor_refused(error.errno or errno.EBADF, fd) from None
            item.descriptor = made[0]
            engine.submit(fd, item)
    finally:
        if item is None or not item.queued:
            for descriptor in made:
                fdio.release_descriptor(descriptor)
            view.release()
        _conclude()


def wait_root(root: object) -> None:
    try:
        engine.wait_root(root)
    finally:
        _conclude()


def wait_fd(fd: int) -> None:
    fd = _to_fd(fd)
    # The file fd names now: once its number is reused, not the one it named before. None
    # if it is closed: the engine then looks for the file it named at its last submit.
    named = fdio.identify_descriptor(fd)
    try:
        engine.wait_fd(fd, named, engine.mark())
    finally:
        _conclude()


def wait_all() -> None:
    try:
        engine.wait_all(engine.mark())
    finally:
        _conclude()


def stop() -> None:
    try:
        try:
            engine.wait_all(engine.mark())
        except OSError:  # a failure reported: the workers stop all the same
            engine.stop_idle_workers()
            raise
        engine.stop_idle_workers()
    finally:
        _conclude()


def stats(fd: int) -> tuple[str | None, int, int] | None:
    fd = _to_fd(fd)
    return engine.stats(fd, fdio.identify_descriptor(fd))


def pending() -> list[tuple[int, int, int]]:
    return engine.pending()


def busy(root: object) -> bool:
    return engine.busy(root)


def _rgb_pixels(view: memoryview, width: int, height: int) -> Any:
    """The frame's pixels as a (height, width, 3 or 4) uint8 array, as rgb_to_yuv takes
    them: pixels contiguous (any row stride), or a C-contiguous buffer of the frame's size."""
    import numpy as np

    if view.itemsize != 1 or _holds_pointers(view.format):
        raise TypeError(f"frame must hold bytes (uint8), not format '{view.format}'")
    pixels = width * height
    shape, strides = view.shape or (), view.strides or ()
    if (
        view.ndim == 3
        and shape[:2] == (height, width)
        and shape[2] in (3, 4)
        and strides[1:] == (shape[2], 1)
    ):
        return np.asarray(view).view(np.uint8)
    if view.c_contiguous and view.nbytes in (3 * pixels, 4 * pixels):
        flat = np.frombuffer(view.cast("B") if view.nbytes else view, np.uint8)
        return flat.reshape(height, width, view.nbytes // pixels)
    raise ValueError(
        f"frame must be ({height}, {width}, 3 or 4) with contiguous pixels, or {3 * pixels} "
        f"or {4 * pixels} bytes"
    )


def rgb_to_yuv(
    frame: Any, out: Any, width: int, height: int, pix_fmt: str, kr: float, kb: float,
    full_range: bool, flip: bool, bgr: bool,
) -> None:  # fmt: skip
    if pix_fmt not in _YUV_LAYOUTS:
        raise ValueError(f"pix_fmt must be yuv420p, nv12 or yuv444p, not {pix_fmt!r}")
    if width <= 0 or height <= 0 or width > _INT_MAX // 4 or height > _INT_MAX // 4:
        raise ValueError(f"width and height must be positive, not {width}x{height}")
    if pix_fmt != "yuv444p" and (width % 2 or height % 2):
        raise ValueError(f"{pix_fmt} needs an even width and height, not {width}x{height}")
    import numpy as np

    from . import yuv

    source, target = memoryview(frame), memoryview(out)
    pixels = _rgb_pixels(source, width, height)
    if target.readonly:
        raise TypeError("out must be writable")
    if not target.c_contiguous:
        raise ValueError("out must be C-contiguous")
    size = yuv.frame_size(pix_fmt, width, height)
    if target.nbytes != size:
        raise ValueError(f"out must be {size} bytes for {pix_fmt}, not {target.nbytes}")
    planes = np.frombuffer(target.cast("B"), np.uint8)
    yuv.rgb_to_yuv(pixels, flip, kr, kb, full_range, pix_fmt, bgr, planes)
