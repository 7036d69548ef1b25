"""The OSErrors both engines raise, made in one place.

``OSError(errno, message)`` picks the subclass: BrokenPipeError for EPIPE, and so on. A
failed write also carries its numbers as attributes: ``fd`` (the caller's descriptor),
``written`` (bytes of the failing item that were written), ``size`` (the failing item's
size) and ``dropped`` (items queued behind it that were never written).
"""

from __future__ import annotations

import errno
import os


def write_failed(error: int, fd: int, written: int, size: int, dropped: int) -> OSError:
    """The error of a write that failed, reported by the next call touching its file."""
    detail = f"fd {fd}: wrote {written} of {size} bytes"
    if dropped:
        detail += f", {dropped} queued items dropped"
    exception = OSError(error, f"{os.strerror(error)} ({detail})")
    vars(exception).update(fd=fd, written=written, size=size, dropped=dropped)
    return exception


def descriptor_refused(error: int, fd: int) -> OSError:
    """The error of a descriptor pipe() cannot write to: closed, read-only, or one it cannot
    duplicate (out of descriptors)."""
    detail = " is not open for writing" if error == errno.EBADF else ": cannot hold on to it"
    exception = OSError(error, f"{os.strerror(error)} (fd {fd}{detail})")
    vars(exception).update(fd=fd)
    return exception
