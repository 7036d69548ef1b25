"""Takes every path of the writer threads with the preloaded no_memory_off_the_main_thread.c
refusing every allocation off the main thread: relay, write, vmsplice, an idle worker
exiting and a new one starting; then on each path a reader dying with items queued.

Usage: LD_PRELOAD=no_memory_off_the_main_thread.so python writer_threads_never_allocate.py
Prints whether md5sum got every byte, then the failure raised for each dying reader.
"""

import hashlib
import os
import subprocess
import time

import turbopipe
from turbopipe import _core

frames = [os.urandom(size) for size in (1 << 20, 3 << 20, 100_000, 5_000)]
paths = [{}, {"relay": False}, {"vmsplice": True}]


def wait_for_the_worker_to_exit() -> None:
    """Until the main thread is the only one: the next pipe() starts another worker."""
    deadline = time.monotonic() + _core.IDLE_EXIT + 10
    while len(os.listdir("/proc/self/task")) > 1:
        assert time.monotonic() < deadline, "the idle worker did not exit"
        time.sleep(0.01)


reader = subprocess.Popen(["md5sum"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
assert reader.stdin is not None and reader.stdout is not None
sent = hashlib.md5()


def pipe_frames(options: dict[str, bool]) -> None:
    for frame in frames * 3:
        turbopipe.pipe(frame, reader.stdin.fileno(), **options)
        sent.update(frame)
    turbopipe.sync()


for options in paths:
    pipe_frames(options)
wait_for_the_worker_to_exit()
pipe_frames({})
reader.stdin.close()
print(reader.stdout.read().split()[0].decode() == sent.hexdigest())
reader.wait()

for options in paths:
    # The reader dies mid-item; with vmsplice, the engine empties the pipe.
    head = subprocess.Popen(
        ["head", "-c", "100000"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert head.stdin is not None
    try:
        for frame in frames * 5:
            turbopipe.pipe(frame, head.stdin.fileno(), **options)
        turbopipe.sync()
    except BrokenPipeError as error:
        print(error)
    head.wait()
turbopipe.close()
