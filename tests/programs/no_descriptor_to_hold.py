"""Reach the descriptor limit (RLIMIT_NOFILE) while a pipe nobody reads yet holds queued
items. pipe() must duplicate the caller's descriptor for a regular file's item (one each)
and for a pipe it holds none of: both raise; the stalled pipe, whose queued items share the
engine's duplicate, takes more. One descriptor closed, both work again, with the limit
still low. Then readers drain the pipes.

Usage: python no_descriptor_to_hold.py FILE
Prints a JSON object: "refused", [errno, fd, name] of each refusal ("file", "stalled pipe"
or "new pipe"); "delivered", whether each destination got exactly the items whose pipe()
returned, in order; "fds", the descriptor of each. Fails if a refusal left a descriptor
open.
"""

import json
import os
import resource
import sys
import threading

from pipe_waits import wait_full

import turbopipe

stalled_read, stalled = os.pipe()
new_read, new = os.pipe()
file_fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
fds = {"file": file_fd, "stalled pipe": stalled, "new pipe": new}
sent = {name: bytearray() for name in fds}
refused = []


# Open descriptors are probed, not listed: listing /proc/self/fd takes one.
top = max(map(int, os.listdir("/proc/self/fd"))) + 64


def descriptors() -> set[int]:
    """The open descriptors below `top`."""
    found = set()
    for fd in range(top):
        try:
            os.fstat(fd)
            found.add(fd)
        except OSError:
            pass
    return found


def pipe(name: str, size: int) -> None:
    """Pipe `size` random bytes to `name`, recording them or the refusal; pipe_size=0: the
    pipes stay at 64 KiB, so that 256 KiB fill one."""
    item = os.urandom(size)
    before = descriptors()
    try:
        turbopipe.pipe(item, fds[name], pipe_size=0)
        sent[name] += item
    except OSError as error:
        refused.append([error.errno, getattr(error, "fd", None), name])
        assert descriptors() == before, "a refused pipe() left a descriptor open"


pipe("stalled pipe", 256 << 10)
pipe("stalled pipe", 256 << 10)
wait_full(stalled)  # the first item waits for the reader; the engine holds a duplicate
pipe("file", 1000)
turbopipe.sync(file=fds["file"])  # its duplicate closed: no descriptor closing meanwhile
spare = os.dup(0)
lowest = os.dup(0)
os.close(lowest)
limits = resource.getrlimit(resource.RLIMIT_NOFILE)
# Every number below the limit taken: the lowest free one is what open() would give.
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, limits[1]))
pipe("file", 1001)
pipe("new pipe", 1002)
pipe("stalled pipe", 1003)
os.close(spare)  # one descriptor free: each item, written in turn, takes it
pipe("file", 1004)
turbopipe.sync(file=fds["file"])
pipe("new pipe", 1005)
resource.setrlimit(resource.RLIMIT_NOFILE, limits)
got = {name: bytearray() for name in ("stalled pipe", "new pipe")}


def read_all(read_fd: int, into: bytearray) -> None:
    while chunk := os.read(read_fd, 1 << 20):
        into += chunk


readers = [
    threading.Thread(target=read_all, args=(read_fd, got[name]))
    for read_fd, name in ((stalled_read, "stalled pipe"), (new_read, "new pipe"))
]
for reader in readers:
    reader.start()
turbopipe.sync()
for fd in fds.values():
    os.close(fd)
for reader in readers:
    reader.join()
with open(sys.argv[1], "rb") as file:
    got["file"] = bytearray(file.read())
delivered = {name: got[name] == sent[name] for name in fds}
print(json.dumps({"refused": refused, "delivered": delivered, "fds": fds}))
