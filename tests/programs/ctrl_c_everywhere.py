"""Raises KeyboardInterrupt, once per attempt, at the n-th point of a call where a signal
handler can run (a function's entry, the return of a call into C) in the package's and
threading's Python code, for n = 1, 2... until the call runs through; on a new stream
(its thread to start) and on a running one. Then checks that what arrived is whole items
of 256 bytes, in order, including every item whose pipe() returned.

Not at backward jumps: raised there by a trace function, inside the comprehensions that
Python 3.12 inlines, it skips the enclosing with-statement's exit.

Usage: python ctrl_c_everywhere.py pipe|sync|sync_all
Prints "interrupted at N points".
"""

from __future__ import annotations

import dis
import functools
import os
import struct
import sys
import threading
from collections.abc import Callable
from types import FrameType

import turbopipe

WHICH = sys.argv[1]
PACKAGE = os.path.dirname(turbopipe.__file__)
SIZE = 256


def traced(filename: str) -> bool:
    return filename.startswith(PACKAGE) or os.path.basename(filename) == "threading.py"


def interrupted(call: Callable[[], None], n: int) -> bool:
    """Run call, raising KeyboardInterrupt at its n-th point; whether it was raised."""
    count = 0
    callee = False  # a Python function ran since the last CALL: it was not into C
    last: dict[int, str] = {}  # the opcode each frame ran last

    def hit() -> None:
        nonlocal count
        count += 1
        if count == n:
            raise KeyboardInterrupt

    def tracer(frame: FrameType, event: str, arg: object) -> Callable[..., object] | None:
        nonlocal callee
        if not traced(frame.f_code.co_filename):
            return None
        frame.f_trace_opcodes = True
        if event == "call":
            callee = True
            hit()
        elif event == "opcode":
            name = dis.opname[frame.f_code.co_code[frame.f_lasti]]
            after_c_call = last.get(id(frame), "").startswith("CALL") and not callee
            last[id(frame)] = name
            if after_c_call:
                hit()
            if name.startswith("CALL"):
                callee = False
        return tracer

    sys.settrace(tracer)
    try:
        call()
        return False
    except KeyboardInterrupt:
        return True
    except RuntimeError as error:  # threading.Condition, interrupted as it takes its lock back
        assert isinstance(error.__context__, KeyboardInterrupt), error
        return True
    finally:
        sys.settrace(None)


read_end, write_end = os.pipe()
received = bytearray()
reader = threading.Thread(
    target=lambda: received.extend(b"".join(iter(lambda: os.read(read_end, 1 << 16), b"")))
)
reader.start()
frames = [bytearray(SIZE) for _ in range(4)]
piped = []  # the items pipe() returned for, or that were piped before the interrupted call
number = 0


def next_frame() -> bytearray:
    """The next of the rotating frames, filled with the next item's number."""
    global number
    number += 1
    frame = frames[number % 4]
    turbopipe.sync(frame)  # it may still be queued, from an interrupted call
    frame[:] = struct.pack("<I", number) * (SIZE // 4)
    return frame


def pipe_whole(frame: bytearray) -> None:
    turbopipe.pipe(frame, write_end)
    piped.append(number)


def attempt(stream: str, n: int) -> bool:
    """One call interrupted at its n-th point; whether it was."""
    if stream == "new":
        turbopipe.close()
    frame = next_frame()
    if WHICH == "pipe":
        if stream == "running":
            pipe_whole(frame)
            frame = next_frame()
        call = functools.partial(turbopipe.pipe, frame, write_end)
    else:
        pipe_whole(frame)
        call = functools.partial(turbopipe.sync, frame) if WHICH == "sync" else turbopipe.sync
    if interrupted(call, n):
        return True
    if WHICH == "pipe":
        piped.append(number)
    return False


points = 0
for stream in ("new", "running"):  # the call takes other paths when it makes the stream
    n = 1
    while attempt(stream, n):
        n += 1
    points += n - 1
turbopipe.close()
os.close(write_end)
reader.join(30)
assert not reader.is_alive(), "no end of file: the engine kept a duplicate open"
items = [bytes(received[i : i + SIZE]) for i in range(0, len(received), SIZE)]
assert all(len(item) == SIZE and item == item[:4] * (SIZE // 4) for item in items), "cut or mixed"
numbers = [struct.unpack_from("<I", item)[0] for item in items]
assert numbers == sorted(set(numbers)), numbers
assert set(piped) <= set(numbers), sorted(set(piped) - set(numbers))
print("interrupted at", points, "points")
