"""TurboPipe: get frames out of Python and into FFmpeg or any file descriptor, fast.

``pipe(data, file)`` queues a buffer for a file descriptor and returns at once; a native
thread per file writes it, in call order, straight from the buffer's memory, without the
GIL. ``sync`` waits for writes, ``close`` waits for all and stops the threads. A failed
write raises the matching OSError (BrokenPipeError...) from the next call that touches its
descriptor. See the README for the guarantees and the tuning knobs.
"""

from __future__ import annotations

import atexit
import operator
import os
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import TYPE_CHECKING, Union

from ._glmap import Mappings, gl_buffer

if TYPE_CHECKING:
    import moderngl
    from typing_extensions import Buffer, TypeAlias

    Pipeable: TypeAlias = Union[Buffer, moderngl.Buffer]

__all__ = ["ENGINE", "FFmpegError", "VideoWriter", "close", "done", "pipe", "sync"]

try:
    __version__ = version("turbopipe")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0"


def _load_engine() -> ModuleType:
    if os.environ.get("TURBOPIPE_ENGINE") == "python":
        from . import _fallback

        return _fallback
    try:
        from . import _core

        return _core
    except ImportError:
        from . import _fallback

        return _fallback


def _env_size(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of bytes, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")
    return value


def _env_flag(name: str, default: bool) -> bool:
    text = os.environ.get(name)
    return default if text is None else text not in ("", "0")


_engine = _load_engine()
ENGINE: str = "native" if _engine.__name__.endswith("_core") else "python"
"""Which engine serves the calls: "native" (the C++ extension) or "python" (its twin)."""

# Measured into FFmpeg on 2 cores: a 1 MiB pipe doubles throughput over the default 64 KiB;
# 64 KiB or 256 KiB chunks cost 1.4x to 2.3x the CPU of one write() per item, for +15%
# throughput at 720p and -12% at 1080p; the relay moves 1.25x to 1.8x what write() does.
_CHUNK = _env_size("TURBOPIPE_CHUNK", 0)
_PIPE_SIZE = _env_size("TURBOPIPE_PIPE_SIZE", 1 << 20)
_VMSPLICE = _env_flag("TURBOPIPE_VMSPLICE", False)
_RELAY = _env_flag("TURBOPIPE_RELAY", True)

_mappings = Mappings()


def _viewed(data: object) -> object:
    """What data views, through memoryviews of memoryviews."""
    while isinstance(data, memoryview):
        data = data.obj
    return data


def _key_of(data: object) -> object:
    """The object whose writes sync(data) waits for."""
    gl = gl_buffer(data)
    return _viewed(data) if gl is None else gl[0]


def _fd_of(file: int) -> int:
    fd = operator.index(file)
    if not 0 <= fd <= 0x7FFFFFFF:
        raise ValueError(f"file must be a file descriptor (a non-negative int), not {fd}")
    return fd


def _size_option(name: str, value: int) -> int:
    value = operator.index(value)
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")
    return min(value, 1 << 62)  # beyond any real size: "no limit"


def pipe(
    data: Pipeable,
    file: int | None = None,
    *,
    chunk: int | None = None,
    pipe_size: int | None = None,
    vmsplice: bool | None = None,
    relay: bool | None = None,
    fileno: int | None = None,
) -> None:
    """Queue ``data`` to be written to the file descriptor ``file``; return at once.

    ``data`` is a ``moderngl.Buffer`` (or its ``.mglo``) or any C-contiguous object with
    the buffer protocol: bytes, bytearray, memoryview, numpy array, mmap. Its memory is
    written in place, so do not change it until ``sync(data)`` returns; piping the same
    object again first waits for its previous write. Writes to one file happen in call
    order (descriptors naming the same file share its queue); each file has its own writer
    thread. When 16 writes are queued for it, this waits for room (without holding the GIL).

    ``chunk`` caps the bytes of one write() (0: no cap), ``pipe_size`` grows a pipe to
    that many bytes (0: leave it), ``relay`` copies into a private pipe and moves its pages
    into ``file`` so that the copy runs while the reader reads (Linux pipes; safe for any
    reader), ``vmsplice`` maps the memory's own pages into a pipe instead of copying them
    (Linux; only for readers that read(), like FFmpeg, not ones that splice onward). Their
    defaults come from TURBOPIPE_CHUNK, TURBOPIPE_PIPE_SIZE, TURBOPIPE_RELAY and
    TURBOPIPE_VMSPLICE.

    ``fileno`` is the 1.x name of ``file``.

    Raises TypeError or ValueError for bad arguments, OSError (EBADF) for a descriptor
    that is not open for writing, and the OSError of an earlier failed write to ``file``
    (BrokenPipeError when the reader is gone).
    """
    if file is None:
        file = fileno
    if file is None:
        raise TypeError("pipe() needs the file descriptor to write to")
    fd = _fd_of(file)
    options = (
        _CHUNK if chunk is None else _size_option("chunk", chunk),
        _PIPE_SIZE if pipe_size is None else _size_option("pipe_size", pipe_size),
        _VMSPLICE if vmsplice is None else bool(vmsplice),
        _RELAY if relay is None else bool(relay),
    )
    gl = gl_buffer(data)
    queued = None
    try:
        if gl is None:
            _engine.submit(data, fd, _viewed(data), *options)
        else:
            mglo, wrapper = gl
            if _mappings.mapped(mglo):  # piped again before sync(mglo): that write first
                _engine.wait_key(mglo)
                _mappings.unmap(mglo)
            _engine.submit(_mappings.map(mglo, wrapper), fd, mglo, *options)
            queued = mglo
    finally:  # a buffer whose submit failed is unmapped here too
        _mappings.unmap_idle(_engine.busy, queued=queued)


def sync(
    data: Pipeable | None = None, *, file: int | None = None, buffer: Pipeable | None = None
) -> None:
    """Wait until queued writes are done.

    ``sync(data)`` waits for the writes of ``data`` (a moderngl.Buffer and its .mglo are
    the same object, and so are a memoryview and the object it views), ``sync(file=fd)``
    for those of one descriptor, ``sync()`` for all. Afterwards the memory may be changed
    again; a moderngl buffer is unmapped, so GL may write it. Raises the OSError of a
    failed write among those waited for. ``buffer`` is the 1.x name of ``data``.
    """
    if data is None:
        data = buffer
    try:
        if data is None and file is None:
            _engine.wait_all()
        if data is not None:
            _engine.wait_key(_key_of(data))
        if file is not None:
            _engine.wait_fd(_fd_of(file))
    finally:
        _mappings.unmap_idle(_engine.busy)


def done(data: Pipeable) -> None:
    """Wait for the writes of ``data`` and let go of it (same as ``sync(data)``)."""
    sync(data)


def close() -> None:
    """Wait for every queued write, then stop the writer threads.

    The module stays usable: a later pipe() starts them again. Called at interpreter exit,
    so queued writes are flushed, never cut. Raises the OSError of a failed write.
    """
    try:
        _engine.stop()
    finally:
        _mappings.unmap_idle(_engine.busy)


atexit.register(close)

# The high-level rooms stand on the functions above.
from .ffmpeg import FFmpegError  # noqa: E402
from .writer import VideoWriter  # noqa: E402
