"""Forks while a 4 MiB item waits in a pipe nobody reads yet; the child closes its copy of
the write end and lives on; the parent closes its own, then reads: it must see end of file
while the child lives, so the child holds none of the engine's descriptors.

Usage: python child_outlives_the_writes.py
Prints the bytes read before end of file, or -1 if none came within 20 s.
"""

import os
import select
import signal
import time

import turbopipe


def read_to_end(read_fd: int, timeout: float) -> int:
    """The bytes read_fd gives before end of file, or -1 if it does not come in time."""
    os.set_blocking(read_fd, False)
    received, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([read_fd], [], [], 0.5)
        try:
            chunk = os.read(read_fd, 1 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            return received
        received += len(chunk)
    return -1


read_fd, write_fd = os.pipe()
turbopipe.pipe(b"x" * (4 << 20), write_fd)  # stalls: nobody reads yet
child = os.fork()
if child == 0:
    os.close(write_fd)  # all the child knows of
    time.sleep(60)  # outlives the parent's writes; killed before
    os._exit(0)
os.close(write_fd)
received = read_to_end(read_fd, 20)
turbopipe.sync()
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
print(received)
