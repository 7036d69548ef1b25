"""Pure-Python twin of the native engine ``turbopipe._core``.

Same functions, same semantics, same errors: one queue and one daemon thread per fd, the
items written with ``os.write`` straight from a memoryview of the caller's buffer, the
export released by the next call that finishes on a caller's thread. It is used when the
extension is missing or ``TURBOPIPE_ENGINE=python``. It has no kernel zero-copy: the
``vmsplice`` argument is accepted and ignored.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import stat
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

QUEUE_LIMIT = 16
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


class _Item:
    __slots__ = ("chunk", "descriptor", "key", "pipe_size", "view")

    def __init__(
        self, view: memoryview, descriptor: int, key: object, chunk: int, pipe_size: int
    ) -> None:
        self.view = view
        self.descriptor = descriptor
        self.key = key
        self.chunk = chunk
        self.pipe_size = pipe_size


class _Failure:
    def __init__(self, fd: int, error: int, written: int, size: int) -> None:
        self.fd = fd
        self.error = error
        self.written = written
        self.size = size
        self.dropped = 0
        self.keys: list[int] = []

    def exception(self) -> OSError:
        detail = f"fd {self.fd}: wrote {self.written} of {self.size} bytes"
        if self.dropped:
            detail += f", {self.dropped} queued items dropped"
        return _os_error(self.error, detail)


class _Stream:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.queue: deque[_Item] = deque()
        self.writing = False
        self.stopping = False
        self.wake = threading.Condition(_lock)
        self.thread = threading.Thread(
            target=_run, args=(self,), name=f"turbopipe-fd{fd}", daemon=True
        )


# All state below is guarded by _lock, never held during I/O (see src/native/engine.hpp).
_lock = threading.Lock()
_progress = threading.Condition(_lock)
_streams: dict[int, _Stream] = {}
_busy_keys: set[int] = set()
_failures: dict[int, _Failure] = {}
_finished: list[_Item] = []


def _os_error(error: int, detail: str) -> OSError:
    # OSError(errno, message) picks the subclass: BrokenPipeError for EPIPE and so on.
    return OSError(error, f"{os.strerror(error)} ({detail})")


def _to_fd(fd: Any) -> int:
    if not isinstance(fd, int):
        raise TypeError(f"fd must be an int, not {type(fd).__name__}")
    if fd < 0 or fd > 0x7FFFFFFF:
        raise ValueError(f"fd must be a non-negative int, not {fd}")
    return fd


def _capture_descriptor(fd: int) -> int:
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if flags & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)
    except OSError as error:
        code = error.errno or errno.EBADF
        raise _os_error(code, f"fd {fd} is not open for writing") from None


def _release_finished() -> None:
    with _lock:
        finished = _finished[:]
        _finished.clear()
    for item in finished:
        item.view.release()


def _take_failure(fd: int) -> _Failure | None:
    return _failures.pop(fd, None)


def _idle(fd: int) -> bool:
    stream = _streams.get(fd)
    return stream is None or (not stream.queue and not stream.writing)


def _conclude(failure: _Failure | None) -> None:
    _release_finished()
    if failure is not None:
        raise failure.exception()


def _wait(ready: Callable[[], bool]) -> None:
    """Wait under _lock until ready(); the caller holds _lock."""
    while not ready():
        _progress.wait()


def submit(data: Any, fd: int, key: object, chunk: int, pipe_size: int, vmsplice: bool) -> None:
    fd = _to_fd(fd)
    view = memoryview(data)
    if not view.c_contiguous:
        view.release()
        raise ValueError("data must be C-contiguous")
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    try:
        descriptor = _capture_descriptor(fd)
    except OSError:
        view.release()
        raise
    item = _Item(view, descriptor, key, chunk, pipe_size)
    queued = False
    failure = None
    try:
        with _lock:

            def ready() -> bool:
                if fd in _failures:
                    return True
                if id(key) in _busy_keys:
                    return False
                stream = _streams.get(fd)
                return stream is None or len(stream.queue) < QUEUE_LIMIT

            _wait(ready)
            failure = _take_failure(fd)
            if failure is None:
                stream = _streams.get(fd)
                if stream is None:
                    stream = _streams[fd] = _Stream(fd)
                    stream.thread.start()
                stream.queue.append(item)
                _busy_keys.add(id(key))
                stream.wake.notify()
                queued = True
    finally:
        if not queued:
            os.close(descriptor)
            view.release()
    _conclude(failure)


def wait_key(key: object) -> None:
    with _lock:
        _wait(lambda: id(key) not in _busy_keys)
        fd = next((fd for fd, f in _failures.items() if id(key) in f.keys), None)
        failure = None if fd is None else _take_failure(fd)
    _conclude(failure)


def wait_fd(fd: int) -> None:
    fd = _to_fd(fd)
    with _lock:
        _wait(lambda: _idle(fd))
        failure = _take_failure(fd)
    _conclude(failure)


def wait_all() -> None:
    with _lock:
        _wait(lambda: not _busy_keys)
        failure = _take_failure(min(_failures)) if _failures else None
    _conclude(failure)


def stop() -> None:
    with _lock:
        _wait(lambda: not _busy_keys)
        failure = _take_failure(min(_failures)) if _failures else None
        stopped = [stream for fd, stream in _streams.items() if _idle(fd)]
        for stream in stopped:
            del _streams[stream.fd]
            stream.stopping = True
            stream.wake.notify()
    for stream in stopped:
        stream.thread.join()
    _conclude(failure)


def busy(key: object) -> bool:
    # Checked before releasing: on False the export for key is released too.
    with _lock:
        is_busy = id(key) in _busy_keys
    _release_finished()
    return is_busy


def _run(stream: _Stream) -> None:
    # A dead reader must yield EPIPE here, never a SIGPIPE for the process.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    with _lock:
        while _write_next(stream):
            pass


def _write_next(stream: _Stream) -> bool:
    """Write the next item of stream; False once it is stopping and empty. Holds _lock."""
    while not stream.queue and not stream.stopping:
        stream.wake.wait()
    if not stream.queue:
        return False
    item = stream.queue.popleft()
    stream.writing = True

    _lock.release()
    try:
        written, error = _write_item(item)
        os.close(item.descriptor)
    finally:
        _lock.acquire()

    stream.writing = False
    _finish(item)
    if error:
        failure = _failures[stream.fd] = _Failure(stream.fd, error, written, item.view.nbytes)
        failure.keys.append(id(item.key))
        for dropped in stream.queue:
            os.close(dropped.descriptor)
            failure.dropped += 1
            failure.keys.append(id(dropped.key))
            _finish(dropped)
        stream.queue.clear()
    _progress.notify_all()
    return True


def _finish(item: _Item) -> None:
    _busy_keys.discard(id(item.key))
    _finished.append(item)


def _write_item(item: _Item) -> tuple[int, int]:
    """Write item.view to its descriptor; returns (bytes written, errno or 0)."""
    fd, view = item.descriptor, item.view
    if item.pipe_size and stat.S_ISFIFO(os.fstat(fd).st_mode):
        _grow_pipe(fd, item.pipe_size)
    limit = item.chunk or 1 << 30
    written = 0
    while written < view.nbytes:
        try:
            written += os.write(fd, view[written : written + limit])
        except BlockingIOError:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.poll()
        except OSError as error:
            if error.errno == errno.EPIPE:
                signal.sigtimedwait({signal.SIGPIPE}, 0)
            return written, error.errno or errno.EIO
    return written, 0


def _grow_pipe(fd: int, wanted: int) -> None:
    try:
        current = fcntl.fcntl(fd, _F_GETPIPE_SZ)
    except OSError:
        return
    # Unprivileged processes are capped by /proc/sys/fs/pipe-max-size; settle for less.
    size = wanted
    while size > current:
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
            return
        except OSError:
            size //= 2


def _reset_after_fork() -> None:
    # The parent's workers do not exist in the child: start over with fresh state.
    global _lock, _progress
    _lock = threading.Lock()
    _progress = threading.Condition(_lock)
    _streams.clear()
    _busy_keys.clear()
    _failures.clear()
    _finished.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
