"""Waits in sync() for a pipe nobody reads; another thread sends SIGINT once the main
thread sleeps inside the call, then the read end is closed, so the write fails and
close() at exit reports it.

Usage: python interrupted_wait.py
Prints "interrupted" if sync() raised KeyboardInterrupt.
"""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import turbopipe

PACKAGE = os.path.dirname(turbopipe.__file__)


def waiting_in_turbopipe(thread: threading.Thread) -> bool:
    """Whether thread's stack is in the package, and it sleeps in the kernel."""
    frame = sys._current_frames().get(thread.ident or 0)
    inside = False
    while frame is not None and not inside:
        inside = frame.f_code.co_filename.startswith(PACKAGE)
        frame = frame.f_back
    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    return inside and stat.rsplit(")", 1)[1].split()[0] in "SD"


def interrupt_once_waiting(thread: threading.Thread) -> None:
    """SIGINT once thread was seen waiting at 5 polls in a row: were it only waiting for
    the GIL, it would have taken it while this one slept."""
    seen, deadline = 0, time.monotonic() + 10
    while seen < 5 and time.monotonic() < deadline:
        seen = seen + 1 if waiting_in_turbopipe(thread) else 0
        time.sleep(0.002)
    os.kill(os.getpid(), signal.SIGINT)


# A shell's background job inherits SIGINT ignored: have Python's handler anyway.
signal.signal(signal.SIGINT, signal.default_int_handler)
read_fd, write_fd = os.pipe()
turbopipe.pipe(bytes(8 << 20), write_fd)  # nobody reads: sync() would wait forever
threading.Thread(target=interrupt_once_waiting, args=(threading.main_thread(),)).start()
try:
    turbopipe.sync()
except KeyboardInterrupt:
    print("interrupted")
os.close(read_fd)  # the write now fails: close() at exit reports it
