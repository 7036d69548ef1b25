"""Native engine of turbopipe (src/native/module.cpp); _fallback.py is its pure-Python twin."""

from typing import Literal

from typing_extensions import Buffer

def submit(
    data: Buffer,
    fd: int,
    key: object,
    chunk: int,
    pipe_size: int,
    vmsplice: bool | Literal["auto"],
    relay: bool,
    /,
) -> None:
    """Queue data for fd, waiting while key is busy or the queue is full."""

def wait_key(key: object, /) -> None:
    """Wait until key's write is done."""

def wait_fd(fd: int, /) -> None:
    """Wait until what was queued for fd before the call is written."""

def wait_all() -> None:
    """Wait until everything queued before the call is written."""

def stop() -> None:
    """wait_all(), then stop idle workers."""

def busy(key: object, /) -> bool:
    """Whether key has a write queued, in progress or failed unreported; if not, its export
    is released."""

def stats(fd: int, /) -> tuple[str | None, int, int] | None:
    """(path, items, bytes) of the stream writing to fd's file, or None."""
