"""The public API's implementation: pipe, sync, done, close, stats, rgb_to_yuv, on one engine.

The engine is the native extension (``_core``) or the Python engine (``_python``), chosen once at
import (TURBOPIPE_ENGINE). This module turns the public calls into engine calls: it checks
arguments, fills in the defaults (read once from the environment), maps moderngl buffers
for the engine to write from, and unmaps them once their writes are done.
"""

from __future__ import annotations

import atexit
import importlib
import operator
import os
import signal
import sys
import threading
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, NoReturn, Union

from ._glmap import PLAIN_TYPES, Mappings, gl_buffer

if TYPE_CHECKING:
    import moderngl
    import numpy
    from typing_extensions import Buffer, TypeAlias

    # numpy arrays are Buffers to type checkers only from Python 3.12 (__buffer__).
    Pipeable: TypeAlias = Union[Buffer, moderngl.Buffer, numpy.ndarray[Any, Any]]

_ENGINE_CHOICES = ("auto", "native", "python")


def _load_engine() -> tuple[ModuleType, str]:
    """The engine TURBOPIPE_ENGINE names, and why: native, python, or auto (the default):
    native where its extension loads, else python, with a warning if the extension is there
    but does not load."""
    text = os.environ.get("TURBOPIPE_ENGINE", "auto")
    choice = text.strip().lower() or "auto"
    if choice not in _ENGINE_CHOICES:
        raise ValueError(f"TURBOPIPE_ENGINE must be auto, native or python, not {text!r}")
    if choice == "python":
        reason = "TURBOPIPE_ENGINE=python"
    else:
        try:
            core = importlib.import_module(".._core", __name__)
            return core, f"TURBOPIPE_ENGINE={choice}, and the extension loads"
        except ImportError as error:
            if choice == "native":
                raise ImportError(
                    f"TURBOPIPE_ENGINE=native, but the native engine does not load: {error}"
                ) from error
            if isinstance(error, ModuleNotFoundError):
                reason = "the native engine is not installed (built without a C++ compiler?)"
            else:
                reason = f"the native engine does not load ({error})"
                warnings.warn(
                    f"turbopipe's {reason}; the Python engine serves instead",
                    RuntimeWarning,
                    stacklevel=2,
                )
    from . import _python

    return _python, reason


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


_FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True}
_FLAG_WORDS.update(dict.fromkeys(("", "0", "false", "no", "off"), False))


def _env_flag(name: str, default: bool) -> bool:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return _FLAG_WORDS[text.strip().lower()]
    except KeyError:
        words = "1/0, true/false, yes/no or on/off"
        raise ValueError(f"{name} must be {words}, not {text!r}") from None


def _env_vmsplice() -> bool | Literal["auto"]:
    text = os.environ.get("TURBOPIPE_VMSPLICE", "auto")
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return _FLAG_WORDS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"TURBOPIPE_VMSPLICE must be auto, 1 or 0, not {text!r}") from None


_engine, _reason = _load_engine()
ENGINE: str = "native" if _engine.__name__.endswith("_core") else "python"
"""Which engine serves the calls: "native" (the C++ extension) or "python" (the Python engine)."""
ENGINE_REASON: str = _reason
"""Why ENGINE is what it is, for bug reports (``python -m turbopipe info``)."""

# Measured into FFmpeg on 2 cores: a 1 MiB pipe doubles throughput over the default 64 KiB;
# 64 KiB or 256 KiB chunks cost 1.4x to 2.3x the CPU of one write() per item, for +15%
# throughput at 720p and -12% at 1080p; the relay moves 1.15x to 1.8x what write() does.
# vmsplice copies the last pipe-full of each item: 512 KiB there cost 25-30% less CPU than
# 1 MiB for 10-13% less throughput; 256 KiB lost a third of it at 1080p.
_CHUNK = _env_size("TURBOPIPE_CHUNK", _env_size("TURBOPIPE_CHUNK_SIZE", 0))  # 2.x's name
_PIPE_SIZE = _env_size("TURBOPIPE_PIPE_SIZE", 1 << 20)
_VMSPLICE_PIPE_SIZE = _env_size("TURBOPIPE_PIPE_SIZE", 1 << 19)
_VMSPLICE = _env_vmsplice()
_RELAY = _env_flag("TURBOPIPE_RELAY", True)

_FD_MAX = 0x7FFFFFFF

_mappings = Mappings()
# A forked child has a fresh engine but not the parent's GL context: forget, never unmap.
os.register_at_fork(after_in_child=_mappings.forget)


def _identities(data: object) -> tuple[object, object]:
    """(key, root) of data for the engine. root is the object whose memory data is, found
    through memoryviews' .obj and numpy arrays' .base: sync(root) waits for data's writes.
    key is what piping again waits on, so that an object is exported once at a time: data,
    or the object a memoryview views; None for bytes, whose memory never changes."""
    key = data
    while type(key) is memoryview:
        key = key.obj
    root = key
    numpy = sys.modules.get("numpy")
    while numpy is not None and isinstance(root, numpy.ndarray) and root.base is not None:
        root = root.base
        while type(root) is memoryview:
            root = root.obj
    return (None if type(root) is bytes else key), root


def _root_of(data: object) -> object:
    """The object whose writes sync(data) waits for: a moderngl buffer's .mglo."""
    gl = gl_buffer(data)
    return _identities(data)[1] if gl is None else gl[0]


def _fd_of(file: int) -> int:
    try:
        fd = operator.index(file)
    except TypeError:
        hint = ": pass its .fileno()" if hasattr(file, "fileno") else ""
        raise TypeError(
            f"file must be a file descriptor (an int), not {type(file).__name__}{hint}"
        ) from None
    if not 0 <= fd <= _FD_MAX:
        raise ValueError(f"file must be a file descriptor (a non-negative int), not {fd}")
    return fd


def _size_option(name: str, value: int) -> int:
    value = operator.index(value)
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")
    return min(value, 1 << 62)  # beyond any real size: "no limit"


def _vmsplice_option(value: bool | Literal["auto"]) -> bool | Literal["auto"]:
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f'vmsplice must be True, False or "auto", not {value!r}')
        return value
    return bool(value)


def _options(
    chunk: int | None,
    pipe_size: int | None,
    vmsplice: bool | Literal["auto"] | None,
    relay: bool | None,
) -> tuple[int, int, bool | Literal["auto"], bool]:
    """The engine's (chunk, pipe_size, vmsplice, relay), the defaults filling in."""
    vmsplice = _VMSPLICE if vmsplice is None else _vmsplice_option(vmsplice)
    return (
        _CHUNK if chunk is None else _size_option("chunk", chunk),
        (_VMSPLICE_PIPE_SIZE if vmsplice is True else _PIPE_SIZE)
        if pipe_size is None
        else _size_option("pipe_size", pipe_size),
        vmsplice,
        _RELAY if relay is None else bool(relay),
    )


_DEFAULT_OPTIONS = _options(None, None, None, None)  # pipe() takes them for every frame


def pipe(
    data: Pipeable | None = None,
    file: int | None = None,
    *,
    chunk: int | None = None,
    pipe_size: int | None = None,
    vmsplice: bool | Literal["auto"] | None = None,
    relay: bool | None = None,
    buffer: Pipeable | None = None,
    fileno: int | None = None,
) -> None:
    """Queue ``data`` to be written to the file descriptor ``file``; return at once.

    ``data`` is a ``moderngl.Buffer`` (or its ``.mglo``) or any C-contiguous object with
    the buffer protocol: bytes, bytearray, memoryview, numpy array, mmap. Its memory is
    written in place, so do not change it until ``sync(data)`` returns; piping the same
    object again first waits for its previous write (but for ``bytes``, which cannot
    change: it may go to several files at once). Writes to one file happen in call
    order (descriptors naming the same file share its queue); each file has its own writer
    thread. When 16 writes are queued for it, this waits for room (without holding the GIL).

    ``chunk`` caps the bytes of one write() (0: no cap), ``pipe_size`` grows a pipe to
    that many bytes (0: leave it; 1 MiB, or 512 KiB with ``vmsplice=True``), ``relay``
    copies into a private pipe and moves its pages into ``file`` so that the copy runs
    while the reader reads (Linux pipes; safe for any reader), ``vmsplice`` maps the
    memory's own pages into a pipe instead of copying them (Linux; only for readers that
    read(), like FFmpeg, not ones that splice onward). ``vmsplice="auto"``, the default,
    does so only for an anonymous pipe whose every reader runs FFmpeg or ffprobe, and
    takes the relay elsewhere; ``stats(file)`` tells which. Their defaults come from
    TURBOPIPE_CHUNK, TURBOPIPE_PIPE_SIZE, TURBOPIPE_RELAY and TURBOPIPE_VMSPLICE.

    ``buffer`` and ``fileno`` are the 1.x names of ``data`` and ``file``.

    Raises TypeError or ValueError for bad arguments, OSError (EBADF) for a descriptor
    that is not open for writing, BufferError for a buffer that cannot be exported (a
    moderngl buffer mapped elsewhere), and the OSError of an earlier failed write to
    ``file`` (BrokenPipeError when the reader is gone).
    """
    if (
        type(file) is int
        and type(data) in PLAIN_TYPES
        and chunk is None
        and pipe_size is None
        and vmsplice is None
        and relay is None
    ):  # a frame as the render loop pipes it: the engine checks the rest
        _engine.submit(data, file, *_identities(data), *_DEFAULT_OPTIONS)
        return
    if data is None:
        data = buffer
    if file is None:
        file = fileno
    if data is None or file is None:
        raise TypeError("pipe() needs the data and the file descriptor to write it to")
    fd = _fd_of(file)
    if chunk is None and pipe_size is None and vmsplice is None and relay is None:
        options = _DEFAULT_OPTIONS
    else:
        options = _options(chunk, pipe_size, vmsplice, relay)
    gl = gl_buffer(data)
    if gl is None:
        _engine.submit(data, fd, *_identities(data), *options)
        return
    mglo, wrapper = gl
    view = _mappings.view(mglo)
    if view is None:
        view = _mappings.map(mglo, wrapper)
    else:  # still mapped since its last pipe(): GL cannot have written it since
        warnings.warn(
            "moderngl buffer piped again without sync(buffer) in between: GL cannot write "
            "a buffer while it is mapped for piping, so call turbopipe.sync(buffer) before "
            "writing it (fbo.read_into...)",
            RuntimeWarning,
            stacklevel=2,
        )
    try:
        _engine.submit(view, fd, mglo, mglo, *options)  # after its previous write
    except BaseException:
        _mappings.unmap_idle(_engine.busy)  # including this one, which is not queued
        raise
    _mappings.unmap_idle(_engine.busy, queued=mglo, all=False)


def sync(
    data: Pipeable | None = None, *, file: int | None = None, buffer: Pipeable | None = None
) -> None:
    """Wait until queued writes are done.

    ``sync(data)`` waits for the writes of ``data`` and of every view of it (a
    moderngl.Buffer and its .mglo are one object; a memoryview or a numpy view stands for
    the object whose memory it is, so ``sync(array)`` waits for ``pipe(array[:n])``),
    ``sync(file=fd)``
    for those of one descriptor, ``sync()`` for all; the last two wait for what was queued
    before the call, not for what other threads queue meanwhile. Afterwards the memory may
    be changed again; a moderngl buffer is unmapped, so GL may write it. Raises the OSError
    of a failed write among those waited for. ``buffer`` is the 1.x name of ``data``.
    """
    if data is None:
        data = buffer
    if isinstance(data, int):
        raise TypeError("sync(data) takes what was piped; for a descriptor: sync(file=fd)")
    try:
        if data is None and file is None:
            _engine.wait_all()
        if data is not None:
            _engine.wait_root(_root_of(data))
        if file is not None:
            _engine.wait_fd(_fd_of(file))
    finally:
        _mappings.unmap_idle(_engine.busy)


def done(data: Pipeable) -> None:
    """Wait for the writes of ``data`` and let go of it (same as ``sync(data)``)."""
    sync(data)


def close(file: int | None = None) -> None:
    """Wait for every write queued before the call, then stop the idle writer threads.

    The module stays usable: a later pipe() starts them again. Called at interpreter exit,
    so queued writes are flushed, never cut. Raises the OSError of a failed write.
    ``file`` (2.0's spelling) first waits for that descriptor's writes, raising their error.
    """
    try:
        if file is not None:
            _engine.wait_fd(_fd_of(file))
        _engine.stop()
    finally:
        _mappings.unmap_idle(_engine.busy)


class Stats(NamedTuple):
    """What the writer of one file has written since it started (see stats())."""

    path: Literal["vmsplice", "relay", "direct"] | None
    """How its last item went: "vmsplice" (the memory's own pages mapped into the pipe,
    all but the last pipe-full, which is copied), "relay" (copied into a private pipe whose
    pages are moved on), "direct" (write()); None before the first item is written."""
    items: int
    """Items written whole."""
    bytes: int
    """Bytes written, including those of a failed item."""


def stats(file: int) -> Stats | None:
    """What the writer thread serving ``file``'s file has written, and how, or None if none
    serves it: before the first pipe(), and after close() or 2 idle seconds stopped it.

    ``stats(fd).path == "vmsplice"`` tells that zero-copy is on for that file.
    """
    found = _engine.stats(_fd_of(file))
    return None if found is None else Stats(*found)


# The flush at exit says what it waits for after this many seconds, then at this interval.
_EXIT_NOTICE = (2.0, 10.0)


def _say_pending(what: str) -> None:
    for fd, items, size in _engine.pending():
        print(f"turbopipe: {what}: fd {fd}, {items} items ({size} bytes)", file=sys.stderr)


def _notice_waiting(signum: int, frame: object) -> None:
    _say_pending("at exit, waiting to write")
    print("turbopipe: Ctrl-C abandons them, and exits with status 130", file=sys.stderr)


def _say_failed(failures: list[OSError]) -> None:
    for failure in failures:
        print(
            f"turbopipe: at exit, not written whole: {type(failure).__name__}: {failure}",
            file=sys.stderr,
        )


def _exit_now(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _flush_at_exit() -> None:
    """close() at interpreter exit: queued writes are flushed, never cut. A flush that waits
    says on stderr what for; one interrupted (Ctrl-C, or a signal handler's sys.exit) says
    what it did not write and ends the process with a non-zero status (130 for Ctrl-C, else
    the handler's). A write that fails says what it did not write and ends the process with
    status 1 (130 if it was ending on an uncaught Ctrl-C; an atexit function cannot see the
    status of a sys.exit(n)). Python would exit as if nothing were lost."""
    # A timer's signal, where the program has not claimed it: the waits run its handler.
    timed = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    )
    if timed:
        signal.signal(signal.SIGALRM, _notice_waiting)
        signal.setitimer(signal.ITIMER_REAL, *_EXIT_NOTICE)
    failures: list[OSError] = []
    failed_fds: set[int] = set()
    try:
        # Each close() raises the error of one failed file; the others' wait for the next.
        # A file failing again has a daemon thread piping on to it: stop there.
        while True:
            try:
                close()
                break
            except OSError as failure:
                failures.append(failure)
                if failure.fd in failed_fds:  # type: ignore[attr-defined]
                    break
                failed_fds.add(failure.fd)  # type: ignore[attr-defined]
    except (KeyboardInterrupt, SystemExit) as stop:
        code = stop.code if isinstance(stop, SystemExit) else 130
        _say_failed(failures)
        _say_pending("exit interrupted, not written whole")
        _exit_now(code if isinstance(code, int) and code else 1)
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
    if failures:
        _say_failed(failures)
        uncaught = getattr(sys, "last_value", None)  # the program's end: Python's status 1
        _exit_now(130 if isinstance(uncaught, KeyboardInterrupt) else 1)


atexit.register(_flush_at_exit)


YUV_MATRICES = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}
"""(Kr, Kb) of each matrix: Y = Kr R + (1 - Kr - Kb) G + Kb B."""


def rgb_to_yuv(
    frame: Pipeable,
    out: Buffer,
    width: int,
    height: int,
    *,
    pix_fmt: Literal["yuv420p", "nv12", "yuv444p"] = "yuv420p",
    matrix: Literal["bt709", "bt601"] = "bt709",
    full_range: bool = False,
    flip: bool = False,
    bgr: bool = False,
) -> None:
    """Convert an RGB or RGBA frame into ``out``, as FFmpeg's rawvideo ``pix_fmt`` lays
    it out (planes back to back), with the GIL released.

    ``frame`` is a (height, width, 3 or 4) uint8 array whose pixels are contiguous (rows
    may be apart: a crop of a larger array), or a C-contiguous buffer of width*height*3 or
    *4 bytes, rows top to bottom (bottom to top with ``flip``), red first (blue with
    ``bgr``); a 4th byte is ignored. ``out`` is a writable buffer of exactly the frame's
    size: width*height*3/2 bytes for yuv420p and nv12, *3 for yuv444p. Limited range puts Y
    in 16..235 and U, V in 16..240; full range uses 0..255. The chroma of yuv420p and nv12
    is the mean of each 2x2 block; they need an even width and height. The native engine
    converts; the Python engine needs numpy.
    """
    try:
        kr, kb = YUV_MATRICES[matrix]
    except KeyError:
        raise ValueError(f"matrix must be bt709 or bt601, not {matrix!r}") from None
    _engine.rgb_to_yuv(
        frame, out, operator.index(width), operator.index(height), pix_fmt, kr, kb,
        bool(full_range), bool(flip), bool(bgr),
    )  # fmt: skip
