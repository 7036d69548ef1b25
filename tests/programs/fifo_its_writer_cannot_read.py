"""A FIFO its writer may not read. A child, become user nobody, pipes a 4 MiB frame of "a"
into it with vmsplice=True; once the pipe is full the parent, its only reader, closes it;
the child's sync() raises, and it changes the frame to "b"; then a later reader opens the
FIFO, while the child still holds it open, and reads what the pipe holds.

Usage: python fifo_its_writer_cannot_read.py FIFO   (as root; the FIFO mode 0622)
Prints "saw", the sorted byte values the later reader got, "child" and its exit status.
"""

import contextlib
import os
import sys

from pipe_waits import wait_full

import turbopipe

fifo = sys.argv[1]
child_hears, parent_tells = os.pipe()  # the steps each has taken, told to the other
parent_hears, child_tells = os.pipe()


def tell(fd: int, step: bytes) -> None:
    os.write(fd, step)


def hear(fd: int, step: bytes) -> None:
    heard = os.read(fd, 16)
    assert heard == step, f"heard {heard!r}, not {step!r}: the other died"


def child() -> None:
    os.setgid(65534)
    os.setuid(65534)
    write_fd = os.open(fifo, os.O_WRONLY)
    frame = bytearray(b"a" * (4 << 20))
    turbopipe.pipe(frame, write_fd, vmsplice=True, pipe_size=0)
    wait_full(write_fd)
    tell(child_tells, b"full")
    hear(child_hears, b"closed")
    with contextlib.suppress(BrokenPipeError):  # the reader is gone
        turbopipe.sync(frame)
    frame[:] = b"b" * len(frame)
    tell(child_tells, b"changed")
    hear(child_hears, b"read")  # the later reader came while this end was open


reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
pid = os.fork()
if pid == 0:
    for fd in (reader, parent_hears, parent_tells):  # the reader: else it never lacks one
        os.close(fd)
    status = 1
    try:
        child()
        status = 0
    finally:
        os._exit(status)
for fd in (child_hears, child_tells):
    os.close(fd)
hear(parent_hears, b"full")
os.close(reader)
tell(parent_tells, b"closed")
hear(parent_hears, b"changed")
later = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
try:
    seen = os.read(later, 1 << 20)
except BlockingIOError:
    seen = b""
tell(parent_tells, b"read")
_, status = os.waitpid(pid, 0)
print("saw", sorted(set(seen)), "child", status)
