"""Pipes a 4 MiB mapped file into a pipe nobody reads yet, with the options given as JSON;
once the pipe is full, truncates the file by 256 KiB, then reads the pipe to its end.

Usage: python mapped_file_shrinks.py FILE OPTIONS_JSON
Prints "raised ERRNO WRITTEN SIZE" for the OSError sync() raised, then "read N" for the
bytes the reader got.
"""

import json
import mmap
import os
import sys
import threading

from pipe_waits import wait_full

import turbopipe

path, options = sys.argv[1], json.loads(sys.argv[2])
size = 4 << 20


with open(path, "w+b") as file:
    file.truncate(size)
    memory = mmap.mmap(file.fileno(), size)
    read_end, write_end = os.pipe()
    turbopipe.pipe(memory, write_end, **options)
    wait_full(write_end)
    file.truncate(size - (256 << 10))
    got: list[bytes] = []
    reader = threading.Thread(
        target=lambda: got.extend(iter(lambda: os.read(read_end, 1 << 20), b""))
    )
    reader.start()
    try:
        turbopipe.sync()
    except OSError as error:
        print("raised", error.errno, error.written, error.size)  # type: ignore[attr-defined]
    os.close(write_end)
    reader.join()
    print("read", sum(map(len, got)))
