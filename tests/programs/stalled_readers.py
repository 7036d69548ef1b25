"""COUNT pipes whose readers do not read yet, each sent an item that fills it (the pipes
left at 64 KiB) and a tail of its own; once every pipe is full, one thread reads them all.
Each reader must get its item and its tail, in order, and sync() must return; a thread
samples the process's thread count throughout.

Usage: python stalled_readers.py COUNT
Prints a JSON object: "threads", the count once the sampler runs, at its peak and after
close(); "delivered", how many readers got exactly their bytes. Or "skip" and why, when the
descriptors needed cannot be had.
"""

import hashlib
import json
import os
import resource
import select
import sys
import threading
import time

from pipe_waits import wait_full

import turbopipe

count = int(sys.argv[1])
# Each pipe's two ends, and the engine's duplicate and relay (two ends) for each.
needed = 5 * count + 100
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), max(hard, needed)))
except (ValueError, OSError):
    print(json.dumps({"skip": f"needs {needed} descriptors, has at most {hard}"}))
    sys.exit()
ITEM = os.urandom(96 << 10)  # fills a 64 KiB pipe; bytes: sent to every pipe, copied never


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def read_all() -> None:
    """Read every pipe to its end, in turn as each has bytes."""
    poller = select.poll()
    for fd in digests:
        poller.register(fd, select.POLLIN)
    left = len(digests)
    while left:
        for fd, _ in poller.poll():
            chunk = os.read(fd, 1 << 16)
            digests[fd].update(chunk)
            if not chunk:
                poller.unregister(fd)
                os.close(fd)
                left -= 1


peak = 0
sampling = True


def sample() -> None:
    global peak
    while sampling:
        peak = max(peak, threads())
        time.sleep(0.005)


sampler = threading.Thread(target=sample)
sampler.start()
before = threads()  # with the sampler, and a sanitizer's thread that starts with the first
pipes = [os.pipe() for _ in range(count)]
tails = [b"tail of pipe %d" % number for number in range(count)]
for (_, write_fd), tail in zip(pipes, tails):
    # With "auto", each new pipe's readers are looked for, through this process's
    # thousands of descriptors too.
    turbopipe.pipe(ITEM, write_fd, pipe_size=0)
    turbopipe.pipe(tail, write_fd, pipe_size=0)
for _, write_fd in pipes:
    wait_full(write_fd)
digests = {read_fd: hashlib.md5() for read_fd, _ in pipes}
reader = threading.Thread(target=read_all)
reader.start()
turbopipe.sync()
for _, write_fd in pipes:
    os.close(write_fd)
reader.join()
turbopipe.close()
after = threads()
sampling = False
sampler.join()
delivered = sum(
    digests[read_fd].hexdigest() == hashlib.md5(ITEM + tail).hexdigest()
    for (read_fd, _), tail in zip(pipes, tails)
)
print(json.dumps({"threads": [before, peak, after], "delivered": delivered}))
