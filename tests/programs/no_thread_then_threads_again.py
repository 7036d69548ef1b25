"""Become user nobody and reach the thread limit (RLIMIT_NPROC) with one file's writer
thread running: a new file's pipe() raises, the running file goes on; once that writer
has exited idle its file's pipe() raises too; with the limit raised again both files take
items. Readers drain both pipes on threads started before the limit.

Usage: python no_thread_then_threads_again.py   (as root)
Prints a JSON object: "refused", [errno, fd, written, size, dropped, name] of each refusal
("new" or "running" file); "delivered", whether each reader got exactly the items whose
pipe() returned, in order; "fds", the write end of each. Fails if a refusal left a descriptor open.
"""

import json
import os
import resource
import threading
import time

import turbopipe
from turbopipe import _core

os.setgid(65534)  # a user with no processes: the limit counts only this one's threads
os.setuid(65534)


def read_all(read_fd: int, into: bytearray) -> None:
    while chunk := os.read(read_fd, 1 << 20):
        into += chunk


def tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


pipes = {name: os.pipe() for name in ("running", "new")}
got = {name: bytearray() for name in pipes}
sent = {name: bytearray() for name in pipes}
readers = [threading.Thread(target=read_all, args=(pipes[n][0], got[n])) for n in pipes]
for reader in readers:
    reader.start()
refused = []


def pipe(name: str, size: int) -> None:
    """Pipe `size` random bytes to the file `name`, recording them or the refusal."""
    item = os.urandom(size)
    before = descriptors()
    try:
        turbopipe.pipe(item, pipes[name][1])
        sent[name] += item
    except OSError as error:
        numbers = [getattr(error, key) for key in ("fd", "written", "size", "dropped")]
        refused.append([error.errno, *numbers, name])
        assert descriptors() == before, "a refused pipe() left a descriptor open"


pipe("running", 300_000)  # its writer thread starts, and idles until IDLE_EXIT
turbopipe.sync(file=pipes["running"][1])  # no descriptor closing meanwhile
idle_tasks = tasks() - 1
limits = resource.getrlimit(resource.RLIMIT_NPROC)
resource.setrlimit(resource.RLIMIT_NPROC, (1, limits[1]))  # no thread more to be had
pipe("new", 200_000)
pipe("running", 300_001)
turbopipe.sync(file=pipes["running"][1])
deadline = time.monotonic() + _core.IDLE_EXIT + 10
while tasks() > idle_tasks and time.monotonic() < deadline:  # the writer exits idle
    time.sleep(0.01)
pipe("running", 300_002)  # needs a new writer thread
resource.setrlimit(resource.RLIMIT_NPROC, limits)
pipe("new", 200_001)
pipe("running", 300_003)
turbopipe.sync()
for _, write_fd in pipes.values():
    os.close(write_fd)
for reader in readers:
    reader.join()
delivered = {name: got[name] == sent[name] for name in pipes}
fds = {name: write_fd for name, (_, write_fd) in pipes.items()}
print(json.dumps({"refused": refused, "delivered": delivered, "fds": fds}))
