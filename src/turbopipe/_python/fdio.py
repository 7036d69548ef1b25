"""Platform I/O on file descriptors: every system call the Python engine makes lives here.

The native engine's src/native/fdio.hpp in Python (held.cpp, fdio.cpp and splice.cpp in one
file), but for what the Python engine does not do: vmsplice (it has no kernel zero-copy)
and the scan of /proc that decides it (readers.cpp). Errors are raised as OSError.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import functools
import os
import select
import signal
import stat
import termios
import threading
from typing import NamedTuple

# Smaller items go through write(): the relay gains nothing there, and each fill takes
# whole pipe pages, where successive write()s share a page.
RELAY_MINIMUM = 64 * 1024
# The errors of a destination or system that refuses splicing: write() does the rest.
SPLICE_REFUSED = (errno.EINVAL, errno.ENOSYS, errno.EPERM)

_INT_MAX = 0x7FFFFFFF
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_PAGE = os.sysconf("SC_PAGESIZE")
# os.splice came with Python 3.10 (Linux only): without it no relay is opened.
_splice = getattr(os, "splice", None)
_SPLICE_F_MOVE = getattr(os, "SPLICE_F_MOVE", 0)


class FileId(NamedTuple):
    """Which file a descriptor names: two descriptors with one FileId write to one file."""

    device: int
    inode: int


class Descriptor(NamedTuple):
    """What a descriptor is, beyond the file it names."""

    file: FileId
    pipe: bool  # a pipe or FIFO
    packet: bool  # opened O_DIRECT: on a pipe, each write() is one packet


class WriteOptions(NamedTuple):
    chunk: int  # most bytes handed to one write(); 0 means no limit
    pipe_size: int  # grow a pipe to this many bytes before writing; 0 leaves it alone
    relay: bool  # copy into a private pipe, then move its pages (see Relay)


# Code that holds a lock never returns a call's value from inside its with-block: a signal
# handler's exception (Ctrl-C) landing between that call and the return would skip the
# block's exit and leave the lock held.

# Every descriptor the engine holds open (duplicates, relay ends), for a forked child to
# close, and for the caller's calls to tell the caller's numbers from ours. Opened and
# closed under held_lock.
_held: set[int] = set()
_held_lock = threading.Lock()


def _file_of(fd: int, flags: int) -> Descriptor:
    info = os.fstat(fd)
    packet = bool(flags & getattr(os, "O_DIRECT", 0))
    return Descriptor(FileId(info.st_dev, info.st_ino), stat.S_ISFIFO(info.st_mode), packet)


def _writable_file_of(fd: int) -> Descriptor:
    """The file a descriptor writes to; EBADF if it is read-only."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    return _file_of(fd, flags)


def _refuse_ours(fd: int) -> None:
    # A number the caller closed may be one of ours now: for the caller, it is closed.
    if fd in _held:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


def identify_descriptor(fd: int) -> FileId | None:
    """Which file the caller's fd names now; None if it is closed, or one of ours."""
    named = None
    with _held_lock, contextlib.suppress(OSError):
        _refuse_ours(fd)
        info = os.fstat(fd)
        named = FileId(info.st_dev, info.st_ino)
    return named


def check_descriptor(fd: int) -> Descriptor:
    """What capture_descriptor tells and checks, without duplicating: EBADF for a closed or
    read-only descriptor, or one of the engine's own."""
    with _held_lock:
        _refuse_ours(fd)
        descriptor = _writable_file_of(fd)
    return descriptor


def capture_descriptor(fd: int, made: list[int]) -> Descriptor:
    """Duplicates fd (close-on-exec) into ``made`` and tells what the duplicate names, so
    that queued bytes keep going to the file the caller meant even if it closes fd or
    reuses the number. The duplicate is the caller's to keep or release from the moment it
    is in ``made``: a signal handler's exception (Ctrl-C) cannot lose it."""
    with _held_lock:
        # extend() stores what os.dup returns without a return to Python code in between.
        made.extend(map(os.dup, (fd,)))
        _held.update(made)
    # Duplicated first, then asked: what is checked is what will be written to.
    return _writable_file_of(made[-1])


def release_descriptor(fd: int) -> None:
    with _held_lock:
        _held.discard(fd)
        # A close() error (deferred EIO on NFS) cannot be acted on; the descriptor is gone.
        with contextlib.suppress(OSError):
            os.close(fd)


def after_fork_in_child() -> None:
    """The child closes its copies of every descriptor the engine holds, so that a child
    outliving the parent's writes never keeps their reader from seeing end of file."""
    global _held_lock
    _held_lock = threading.Lock()  # a parent's thread may have held it
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


def block_sigpipe() -> None:
    """A dead reader then yields EPIPE on this thread, never a SIGPIPE for the process."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})


class Relay:
    """A pipe private to one stream (see fdio.hpp's Relay for why)."""

    def __init__(self) -> None:
        self.ends: tuple[int, int] | None = None
        # For the writer thread only, once it has seen the relay open:
        self.capacity = 0
        self.wanted = 0  # the largest capacity asked for: grow only when it rises
        self.broken = False  # discard() could not empty it: never use it again

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
            release_descriptor(self.ends[0])
            release_descriptor(self.ends[1])
            self.ends = None

    def ready(self, wanted: int) -> bool:
        """Grow it to the destination's capacity; False if it cannot serve."""
        if self.ends is None or self.broken:
            return False
        if wanted > self.wanted:
            self.wanted = wanted
            self.capacity = pipe_capacity(self.ends[1], wanted)
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


def write_item(
    fd: int, descriptor: Descriptor, view: memoryview, options: WriteOptions, relay: Relay | None
) -> tuple[int, int, str]:
    """Write view to fd, which names `descriptor`: for a pipe, grows it if asked and goes
    through the relay (if not None) when asked; else, or for what the relay refuses,
    write(). Returns (bytes written, errno or 0, the path: "relay" or "direct")."""
    limit = options.chunk or 1 << 30
    written = 0
    path = "direct"
    try:
        if descriptor.pipe:
            capacity = pipe_capacity(fd, options.pipe_size)
            # A packet-mode pipe makes a packet of each write(); spliced pages would not be one.
            if (
                options.relay
                and relay is not None
                and view.nbytes >= RELAY_MINIMUM
                and not descriptor.packet
                and capacity > 0
                and relay.ready(capacity)
            ):
                written, error = relay.send(fd, view, options.chunk)
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


def pipe_capacity(fd: int, wanted: int) -> int:
    """The pipe's size in bytes (0 if unknown), after growing it towards ``wanted`` if it
    is smaller."""
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
