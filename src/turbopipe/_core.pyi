"""The native engine of turbopipe, bound by src/native/binding.cpp; turbopipe/_python.py
is the Python engine, with the same calls."""

from typing import Literal

from typing_extensions import Buffer

QUEUE_LIMIT: int
"""Items a stream queues before submit() waits for room."""
IDLE_EXIT: float
"""Seconds a worker waits for work before it exits on its own."""
RELAY_MINIMUM: int
"""Items smaller than this many bytes are write()n, never relayed."""
SPLICE_REFUSED: tuple[int, ...]
"""The errno values of a destination or system that refuses splicing: write() does the rest."""

def submit(
    data: Buffer,
    fd: int,
    key: object | None,
    root: object,
    chunk: int,
    pipe_size: int,
    vmsplice: bool | Literal["auto"],
    relay: bool,
    /,
) -> None:
    """Queue data, root's memory, for fd, waiting while key (None: no key) has an item
    queued or the queue is full."""

def wait_root(root: object, /) -> None:
    """Wait until the writes of root's items are done."""

def wait_fd(fd: int, /) -> None:
    """Wait until what was queued for fd before the call is written."""

def wait_all() -> None:
    """Wait until everything queued before the call is written."""

def stop() -> None:
    """wait_all(), then stop idle workers."""

def pending() -> list[tuple[int, int, int]]:
    """(fd, items, bytes) of each stream with items queued or being written."""

def busy(root: object, /) -> bool:
    """Whether the engine holds an export of root's: its write queued, in progress, done but
    not released yet (the next call releases it), or failed unreported."""

def stats(fd: int, /) -> tuple[str | None, int, int] | None:
    """(path, items, bytes) of the stream writing to fd's file, or None."""

def rgb_to_yuv(
    frame: Buffer,
    out: Buffer,
    width: int,
    height: int,
    pix_fmt: str,
    kr: float,
    kb: float,
    full_range: bool,
    flip: bool,
    bgr: bool,
    /,
) -> None:
    """Convert an RGB(A) frame into out, planes back to back, with the GIL released."""
