"""A reader that splices onward: moves N bytes of its stdin into a pipe of its own, waits
for end of file on stdin, then reads that pipe and prints the md5 of what it holds.

Usage: python splice_onward.py N
"""

import fcntl
import hashlib
import os
import sys

size = int(sys.argv[1])
onward_read, onward_write = os.pipe()
fcntl.fcntl(onward_write, fcntl.F_SETPIPE_SZ, size)  # holds it all, in any pages
moved = 0
while moved < size:
    moved += os.splice(0, onward_write, size - moved)
while os.read(0, 1 << 16):  # the writer is done, and has changed its memory since
    pass
os.close(onward_write)
digest = hashlib.md5()
while chunk := os.read(onward_read, 1 << 20):
    digest.update(chunk)
print(digest.hexdigest())
