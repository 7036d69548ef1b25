"""The Python engine: the native engine ``turbopipe._core`` in pure Python.

Same functions, same semantics, same errors (see src/native/engine.hpp for the invariants):
one queue and one daemon thread per stream, the items written with ``os.write`` straight
from a memoryview of the caller's buffer, the export released by the next call that
finishes on a caller's thread. It is used when the extension is missing or
``TURBOPIPE_ENGINE=python``. It has no kernel zero-copy: items asked ``vmsplice=True`` are
written directly, without the relay, as the native engine's are when it cannot splice, and
``vmsplice="auto"`` takes the relay, as the native engine does for a reader it does not
know.
The relay needs ``os.splice`` (Python 3.10 on Linux); without it, items are written
directly.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import pickle
import select
import signal
import stat
import termios
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ._errors import descriptor_refused, write_failed

# The native engine's constants (engine.hpp, fdio.hpp; a test checks they are equal).
QUEUE_LIMIT = 16  # items a stream queues before submit() waits for room
IDLE_EXIT = 2.0  # seconds a worker waits for work before it exits on its own
RELAY_MINIMUM = 64 * 1024  # smaller items are write()n
SPLICE_REFUSED = (errno.EINVAL, errno.ENOSYS, errno.EPERM)  # then write() the rest
_INT_MAX = 0x7FFFFFFF
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_PAGE = os.sysconf("SC_PAGESIZE")


class _Target:
    """What capture_descriptor learns of fd (see fdio.hpp's FileId)."""

    __slots__ = ("descriptor", "fd", "file", "packet", "pipe")

    def __init__(
        self, fd: int, descriptor: int, file: tuple[int, int], pipe: bool, packet: bool
    ) -> None:
        self.fd = fd  # the caller's number, for messages
        self.descriptor = descriptor  # a close-on-exec duplicate of fd
        self.file = file  # which file: (st_dev, st_ino)
        self.pipe = pipe  # a pipe or FIFO
        self.packet = packet  # opened O_DIRECT: on a pipe, each write() is one packet


class _Item:
    __slots__ = ("chunk", "key", "order", "pipe_size", "relay", "size", "target", "view")

    def __init__(
        self,
        view: memoryview,
        target: _Target,
        key: object,
        chunk: int,
        pipe_size: int,
        relay: bool,
    ) -> None:
        self.view = view
        self.size = view.nbytes
        self.target = target
        self.key = key
        self.chunk = chunk
        self.pipe_size = pipe_size
        self.relay = relay
        self.order = 0  # set by submit: the items before it have lower ones


class _Failure:
    def __init__(self, fd: int, error: int, written: int, item: _Item) -> None:
        self.fd = fd
        self.error = error
        self.written = written
        self.size = item.size
        self.dropped = 0
        self.items = [item]  # held, with their keys, until reported

    def holds(self, key: object) -> bool:
        return any(item.key is key for item in self.items)

    def exception(self) -> OSError:
        return write_failed(self.error, self.fd, self.written, self.size, self.dropped)


class _Stream:
    def __init__(self, fd: int, file: tuple[int, int]) -> None:
        self.fd = fd  # the last fd number its items came through, for messages
        self.file = file
        self.queue: deque[_Item] = deque()
        self.writing = False
        self.writing_order = 0  # the order of the item being written
        self.stopping = False
        self.exited = False  # its worker returned after idling; join it
        self.failure: _Failure | None = None
        self.stats: tuple[str | None, int, int] = (None, 0, 0)  # see engine.hpp's StreamStats
        self.relay = _Relay()  # opened by submit; the worker uses it if it saw it open
        self.wake = threading.Condition(_lock)
        self.thread = threading.Thread(
            target=_run, args=(self,), name=f"turbopipe-fd{fd}", daemon=True
        )

    def idle(self) -> bool:
        return not self.queue and not self.writing

    def done_before(self, mark: int) -> bool:
        """Whether every item submitted before ``mark`` is done here."""
        if self.writing:
            return self.writing_order >= mark
        return not self.queue or self.queue[0].order >= mark


# All state below is guarded by _lock, never held during I/O. An RLock: if a second signal
# interrupts a wait while it takes the lock back, releasing it raises instead of freeing
# a lock some worker holds.
_lock = threading.RLock()
_progress = threading.Condition(_lock)
_streams: dict[tuple[int, int], _Stream] = {}  # by the file they write to
_next_order = 0  # of the next item submitted
_files: dict[int, tuple[int, int]] = {}  # fd number -> the file it last named
_active_keys: set[int] = set()  # ids of keys of items queued or being written
_finished: list[_Item] = []
# Every descriptor the engine holds open (duplicates, relay ends), for a forked child to
# close and for wait_fd to tell the caller's numbers from ours (see fdio.cpp). Opened and
# closed under _held_lock.
_held: set[int] = set()
_held_lock = threading.Lock()


def _to_fd(fd: Any) -> int:
    if not isinstance(fd, int):
        raise TypeError(f"fd must be an int, not {type(fd).__name__}")
    if fd < 0 or fd > _INT_MAX:
        raise ValueError(f"file must be a file descriptor (a non-negative int), not {fd}")
    return fd


def _capture_descriptor(fd: int) -> _Target:
    """A close-on-exec duplicate of fd, and what it names (see fdio.hpp)."""
    made: list[int] = []
    try:
        # Duplicated first, then asked: what is checked is what will be written to.
        with _held_lock:
            # extend() stores what os.dup returns without a return to Python code in
            # between, where a signal handler's exception (Ctrl-C) would lose it, and with
            # it the reader's end of file.
            made.extend(map(os.dup, (fd,)))  # close-on-exec
            _held.update(made)
        duplicate = made[0]
        flags = fcntl.fcntl(duplicate, fcntl.F_GETFL)
        info = os.fstat(duplicate)
        if flags & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        packet = bool(flags & getattr(os, "O_DIRECT", 0))
        file = (info.st_dev, info.st_ino)
        return _Target(fd, duplicate, file, stat.S_ISFIFO(info.st_mode), packet)
    except BaseException as error:  # a signal handler's too (Ctrl-C): never leak it
        for duplicate in made:
            _close(duplicate)
        if not isinstance(error, OSError):
            raise
        raise descriptor_refused(error.errno or errno.EBADF, fd) from None


def _stream_of_fd(fd: int) -> _Stream | None:
    file = _files.get(fd)
    return None if file is None else _streams.get(file)


def _failed_stream(match: Callable[[_Failure], bool]) -> _Stream | None:
    """The stream with the lowest fd whose failure matches."""
    failed = [s for s in _streams.values() if s.failure is not None and match(s.failure)]
    return min(failed, key=lambda s: s.fd, default=None)


def _raise_failure(stream: _Stream | None) -> None:
    """Raise its failure, if any, whose items join the finished (see engine.cpp's
    take_failure). Holds _lock."""
    if stream is None or stream.failure is None:
        return
    failure = stream.failure
    error = failure.exception()
    try:
        raise error
    finally:
        # Taken only once raised: a signal handler's exception (Ctrl-C) landing before
        # leaves it for the next call.
        stream.failure = None
        _finished.extend(failure.items)


def _remove_streams(remove: Callable[[_Stream], bool]) -> list[_Stream]:
    """Take the matching streams out and tell their workers to stop. Holds _lock."""
    removed = [s for s in _streams.values() if remove(s)]
    for stream in removed:
        del _streams[stream.file]
        stream.stopping = True
        stream.wake.notify()
    for fd in [fd for fd, file in _files.items() if file not in _streams]:
        del _files[fd]
    return removed


def _conclude() -> None:
    """Release what is finished and join the workers that exited."""
    with _lock:
        finished = _finished[:]
        _finished.clear()
        # A stream with a failure to report stays, without its thread.
        exited = [s for s in _streams.values() if s.exited]
        _remove_streams(lambda s: s.exited and s.failure is None)
    for item in finished:
        item.view.release()
    for stream in exited:
        stream.thread.join()


def _wait(ready: Callable[[], bool]) -> None:
    """Wait under _lock until ready(); the caller holds _lock."""
    while not ready():
        _progress.wait()


def submit(
    data: Any,
    fd: int,
    key: object,
    chunk: int,
    pipe_size: int,
    vmsplice: bool | str,
    relay: bool,
) -> None:
    global _next_order
    fd = _to_fd(fd)
    # Exported from data itself, as the native engine does: a memoryview piped is then
    # held too (its release() raises BufferError until the item is written), where
    # memoryview(data) would only share its buffer.
    view = memoryview(pickle.PickleBuffer(data))
    target: _Target | None = None
    queued = False
    try:
        if not view.c_contiguous:
            raise ValueError("data must be C-contiguous")
        if view.ndim != 1 or view.itemsize != 1:
            shaped = view
            view = view.cast("B") if view.nbytes else memoryview(b"")  # cast refuses 0 in shape
            shaped.release()
        target = _capture_descriptor(fd)
        file = target.file
        # vmsplice=True items are write()n: they never take the relay, as in the native
        # engine.
        item = _Item(view, target, key, chunk, pipe_size, relay and vmsplice is not True)
        with _lock:
            _files[fd] = file

            def ready() -> bool:
                stream = _streams.get(file)
                if stream is not None and stream.failure is not None:
                    return True
                if id(key) in _active_keys:
                    return False
                return stream is None or len(stream.queue) < QUEUE_LIMIT

            _wait(ready)
            stream = _streams.get(file)
            _raise_failure(stream)
            if stream is not None and stream.exited:  # returned after idling: replace
                stream.thread.join()
                stream = None
            if stream is None:
                stream = _Stream(fd, file)
                try:
                    stream.thread.start()
                except RuntimeError as error:
                    # Else raised by a wait in start() that a signal interrupted.
                    if str(error) != "can't start new thread":
                        raise
                    # No thread to be had: as the native engine says.
                    raise _Failure(fd, errno.EAGAIN, 0, item).exception() from None
                _streams[file] = stream
            stream.fd = fd
            if item.relay and target.pipe:
                stream.relay.open()
            item.order = _next_order
            _next_order += 1
            key_id = id(key)
            try:
                _active_keys.add(key_id)
                stream.queue.append(item)
            finally:
                # The append is the commit, whatever a signal handler's exception (Ctrl-C)
                # interrupted: once it is done the worker owns the item. This line makes
                # no call, where such an exception could land.
                queued = item in stream.queue
                if not queued:
                    _active_keys.discard(key_id)
            stream.wake.notify()
    finally:
        if not queued:
            if target is not None:
                _close(target.descriptor)
            view.release()
        _conclude()


def wait_key(key: object) -> None:
    try:
        with _lock:
            _wait(lambda: id(key) not in _active_keys)
            _raise_failure(_failed_stream(lambda f: f.holds(key)))
    finally:
        _conclude()


# wait_fd, wait_all and stop wait for the items submitted before the call, not for those
# other threads submit meanwhile (else they could wait for ever).


def _named_file(fd: int) -> tuple[int, int] | None:
    """The file fd names now: once its number is reused, not the one it named before. None
    if it is closed (or one of ours now): look for the file it named at its last pipe()."""
    with _held_lock, contextlib.suppress(OSError):
        if fd not in _held:
            info = os.fstat(fd)
            return (info.st_dev, info.st_ino)
    return None


def wait_fd(fd: int) -> None:
    fd = _to_fd(fd)
    named = _named_file(fd)

    def stream() -> _Stream | None:
        return _stream_of_fd(fd) if named is None else _streams.get(named)

    try:
        with _lock:
            mark = _next_order

            def done() -> bool:
                found = stream()
                return found is None or found.done_before(mark)

            _wait(done)
            _raise_failure(stream())
    finally:
        _conclude()


def _wait_all() -> None:
    """Wait for the items submitted before the call. Holds _lock."""
    mark = _next_order
    _wait(lambda: all(stream.done_before(mark) for stream in _streams.values()))


def wait_all() -> None:
    try:
        with _lock:
            _wait_all()
            _raise_failure(_failed_stream(lambda f: True))
    finally:
        _conclude()


def stop() -> None:
    stopped: list[_Stream] = []
    try:
        with _lock:
            _wait_all()
            try:
                _raise_failure(_failed_stream(lambda f: True))
            finally:
                stopped = _remove_streams(lambda s: s.idle() and s.failure is None)
    finally:
        for stream in stopped:
            stream.thread.join()
        _conclude()


def stats(fd: int) -> tuple[str | None, int, int] | None:
    fd = _to_fd(fd)
    named = _named_file(fd)
    with _lock:
        stream = _stream_of_fd(fd) if named is None else _streams.get(named)
        return None if stream is None else stream.stats


def busy(key: object) -> bool:
    with _lock:
        return (
            id(key) in _active_keys
            or any(item.key is key for item in _finished)
            or _failed_stream(lambda f: f.holds(key)) is not None
        )


def _run(stream: _Stream) -> None:
    # A dead reader must yield EPIPE here, never a SIGPIPE for the process.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    with _lock:
        while _write_next(stream):
            pass
    stream.relay.close()


def _write_next(stream: _Stream) -> bool:
    """Write the next item of stream; False once it stops or exits idle. Holds _lock."""
    while not stream.queue and not stream.stopping:
        if not stream.wake.wait(IDLE_EXIT) and not stream.queue:
            # Idle: leave. The next call joins the thread; a failure stays in the stream
            # for the next call that touches its file, which replaces the stream.
            stream.exited = True
            return False
    if not stream.queue:
        return False
    item = stream.queue.popleft()
    stream.writing = True
    stream.writing_order = item.order
    relay = stream.relay if stream.relay.is_open() else None

    _lock.release()
    try:
        written, error, path = _write_item(item, relay)
        _close(item.target.descriptor)
    finally:
        _lock.acquire()

    stream.writing = False
    _active_keys.discard(id(item.key))
    _, items, total = stream.stats
    stream.stats = (path, items + (not error), total + written)
    if not error:
        _finished.append(item)
    else:
        failure = stream.failure = _Failure(item.target.fd, error, written, item)
        dropped, stream.queue = stream.queue, deque()
        for lost in dropped:
            _active_keys.discard(id(lost.key))
            failure.dropped += 1
            failure.items.append(lost)
        _lock.release()  # closing can block (a file on NFS): not under the lock
        try:
            for lost in dropped:
                _close(lost.target.descriptor)
        finally:
            _lock.acquire()
    _progress.notify_all()
    return True


def _close(descriptor: int) -> None:
    with _held_lock:
        _held.discard(descriptor)
        # A close() error (deferred EIO on NFS) cannot be acted on; the descriptor is gone.
        with contextlib.suppress(OSError):
            os.close(descriptor)


# os.splice came with Python 3.10 (Linux only): without it no relay is opened.
_splice = getattr(os, "splice", None)
_SPLICE_F_MOVE = getattr(os, "SPLICE_F_MOVE", 0)


class _Relay:
    """A pipe private to one stream (see fdio.hpp's Relay for why)."""

    def __init__(self) -> None:
        self.ends: tuple[int, int] | None = None
        # For the writer thread only, once it has seen the relay open:
        self.capacity = 0
        self.wanted = 0  # the largest capacity asked for: grow only when it rises
        self.broken = False  # _discard() could not empty it: never use it again

    def open(self) -> None:
        """Make the pipe, on the caller's thread (see fdio.hpp); needs os.splice."""
        if self.ends is None and _splice is not None:
            # No relay if it fails: the items are write()n.
            with contextlib.suppress(OSError), _held_lock:
                self.ends = os.pipe()  # close-on-exec
                _held.update(self.ends)

    def is_open(self) -> bool:
        return self.ends is not None

    def close(self) -> None:
        if self.ends is not None:
            _close(self.ends[0])
            _close(self.ends[1])
            self.ends = None

    def ready(self, wanted: int) -> bool:
        """Grow it to the destination's capacity; False if it cannot serve."""
        if self.ends is None or self.broken:
            return False
        if wanted > self.wanted:
            self.wanted = wanted
            self.capacity = _pipe_capacity(self.ends[1], wanted)
        return self.capacity > 0

    def send(self, fd: int, view: memoryview, chunk: int) -> tuple[int, OSError | None]:
        """Copy view into the relay, a relay-full (or a chunk, in whole pages) at a time,
        moving each fill into fd; return the bytes that reached fd and the error that
        stopped it, if any."""
        assert self.ends is not None and _splice is not None  # as open() made sure
        read_end, write_end = self.ends
        step = min(-(-chunk // _PAGE) * _PAGE, self.capacity) if chunk else self.capacity
        written = 0
        try:
            while written < view.nbytes:
                # The relay is empty here, so it takes the whole fill in one write().
                filled = os.write(write_end, view[written : written + step])
                while filled:
                    try:
                        moved = _splice(read_end, fd, filled, flags=_SPLICE_F_MOVE)
                    except BlockingIOError:
                        _wait_writable(fd)
                        continue
                    if not moved:
                        raise OSError(errno.EIO, os.strerror(errno.EIO))
                    filled -= moved
                    written += moved
        except OSError as error:
            self._discard()
            return written, error
        return written, None

    def _discard(self) -> None:
        """Read out what a failed move left in it."""
        assert self.ends is not None
        unread = array.array("i", [0])
        with contextlib.suppress(OSError):
            while fcntl.ioctl(self.ends[0], termios.FIONREAD, unread) == 0 and unread[0]:
                os.read(self.ends[0], min(unread[0], 1 << 16))
        try:
            fcntl.ioctl(self.ends[0], termios.FIONREAD, unread)
            self.broken = unread[0] > 0  # stale bytes would go out ahead of the next item's
        except OSError:
            self.broken = True


def _wait_writable(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll()


def _write_item(item: _Item, relay: _Relay | None) -> tuple[int, int, str]:
    """Write item.view to its descriptor; returns (bytes written, errno or 0, the path it
    took: "relay" or "direct")."""
    target, view = item.target, item.view
    fd = target.descriptor
    limit = item.chunk or 1 << 30
    written = 0
    path = "direct"
    try:
        if target.pipe:
            capacity = _pipe_capacity(fd, item.pipe_size)
            # A packet-mode pipe makes a packet of each write(); spliced pages would not be one.
            if (
                item.relay
                and relay is not None
                and view.nbytes >= RELAY_MINIMUM
                and not target.packet
                and capacity > 0
                and relay.ready(capacity)
            ):
                written, error = relay.send(fd, view, item.chunk)
                if error is None or error.errno not in SPLICE_REFUSED:
                    path = "relay"
                if error is not None and error.errno not in SPLICE_REFUSED:
                    raise error  # else write() the rest
        while written < view.nbytes:
            try:
                written += os.write(fd, view[written : written + limit])
            except BlockingIOError:
                _wait_writable(fd)
    except OSError as error:
        if error.errno == errno.EPIPE:
            while signal.SIGPIPE in signal.sigpending():  # blocked here: take it off
                signal.sigwait({signal.SIGPIPE})
        return written, error.errno or errno.EIO, path
    except Exception:  # never let a worker die with its stream marked as writing
        return written, errno.EIO, path
    return written, 0, path


@functools.cache
def _pipe_max_size() -> int:
    """Unprivileged processes are capped by /proc/sys/fs/pipe-max-size: no item need ask
    for more in vain. Below it, the user's pipe quota may refuse growth; settle for less."""
    try:
        with open("/proc/sys/fs/pipe-max-size") as file:
            return min(int(file.read()), _INT_MAX)
    except (OSError, ValueError):
        return _INT_MAX


def _pipe_capacity(fd: int, wanted: int) -> int:
    """The pipe's size in bytes (0 if unknown), after growing it towards ``wanted`` if it
    is smaller (see fdio.cpp)."""
    try:
        current: int = fcntl.fcntl(fd, _F_GETPIPE_SZ)
    except OSError:
        return 0
    size = min(wanted, _pipe_max_size())
    while size > current:
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
            return int(fcntl.fcntl(fd, _F_GETPIPE_SZ))
        except OSError:
            size //= 2
    return current


def _reset_after_fork() -> None:
    # The parent's workers do not exist in the child: start over with fresh state. The
    # parent's items are kept, even through the interpreter's exit: freeing one releases
    # its buffer export, which for a moderngl buffer runs glUnmapBuffer (the native
    # engine leaks its old state likewise).
    global _lock, _progress, _streams, _files, _active_keys, _finished, _held_lock
    ctypes.pythonapi.Py_IncRef(ctypes.py_object((_streams, _finished)))
    _held_lock = threading.Lock()  # a parent's thread may have held it
    for descriptor in _held:  # the parent's: a child outliving them would hold them open
        with contextlib.suppress(OSError):
            os.close(descriptor)
    _held.clear()
    _lock = threading.RLock()
    _progress = threading.Condition(_lock)
    _streams, _files, _active_keys, _finished = {}, {}, set(), []


os.register_at_fork(after_in_child=_reset_after_fork)
