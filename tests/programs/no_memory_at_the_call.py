"""Refuses each allocation that pipe() makes, in turn, on a new stream and on a running
one, through the preloaded refuse_new_call.cc; after each refusal pipes one more item and
syncs, while a thread reads everything.

Usage: LD_PRELOAD=refuse_new_call.so python no_memory_at_the_call.py
Prints whether every item pipe() took arrived, in order, then how many calls were refused
on a new stream and on a running one.
"""

import ctypes
import errno
import hashlib
import os
import threading

import turbopipe

shim = ctypes.CDLL(None)  # the preloaded library's functions
read_fd, write_fd = os.pipe()
got, sent = hashlib.md5(), hashlib.md5()


def drain() -> None:
    while chunk := os.read(read_fd, 1 << 20):
        got.update(chunk)


def pipe_refusing_call(n: int) -> tuple[bool, bool]:
    """Pipe a frame with the n-th allocation refused: (whether it raised, whether the call
    made fewer than n allocations, so that each was refused once)."""
    frame = os.urandom(200_000)
    shim.refuse_new_call(n)
    refused = True
    try:
        turbopipe.pipe(frame, write_fd)
        sent.update(frame)
        refused = False
    except MemoryError:
        pass
    except OSError as error:
        assert error.errno == errno.ENOMEM, error
    left = shim.new_calls_to_refusal()
    shim.refuse_new_call(0)
    return refused, left > 0


def refusals(new_stream: bool) -> int:
    refused = 0
    for n in range(1, 100):
        if new_stream:
            turbopipe.close()  # stops the idle worker: the next pipe() makes a stream
        raised, all_refused = pipe_refusing_call(n)
        refused += raised
        after = os.urandom(1000)  # the engine goes on
        turbopipe.pipe(after, write_fd)
        sent.update(after)
        turbopipe.sync()
        if all_refused:
            break
    return refused


reader = threading.Thread(target=drain, daemon=True)
reader.start()
on_new_stream, on_running_stream = refusals(True), refusals(False)
os.close(write_fd)
reader.join()
print(got.hexdigest() == sent.hexdigest(), on_new_stream, on_running_stream)
