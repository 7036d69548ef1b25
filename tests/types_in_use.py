"""Not a test module: mypy (strict, in the test command) checks that the public API's
types accept what it documents and refuse what it refuses. A refusal that stops being
one leaves its ignore unused, which strict mypy reports."""

from __future__ import annotations

import mmap

import moderngl
import numpy as np

import turbopipe


def documented_calls(ctx: moderngl.Context, fd: int) -> None:
    buffer = ctx.buffer(reserve=16)
    array = np.zeros(16, np.uint8)
    for data in (b"x", bytearray(16), memoryview(b"x"), mmap.mmap(-1, 16), array, buffer):
        turbopipe.pipe(data, fd)
        turbopipe.sync(data)
    turbopipe.pipe(buffer.mglo, fd, chunk=1 << 16, pipe_size=1 << 20, relay=False)
    turbopipe.pipe(array, fd, vmsplice="auto")
    turbopipe.pipe(array, fd, vmsplice=False)
    stats = turbopipe.stats(fd)
    if stats is not None and stats.path == "vmsplice":
        print(stats.items, stats.bytes)
    turbopipe.pipe(buffer=array, fileno=fd)  # the 1.x names
    turbopipe.sync(file=fd)
    turbopipe.done(array)
    turbopipe.close(fd)
    with turbopipe.VideoWriter("out.mp4", 16, 16, fps=30, crf=18) as video:
        video.write(array)


def refused_calls(fd: int) -> None:
    turbopipe.pipe("text", fd)  # type: ignore[arg-type]
    turbopipe.pipe(b"x", "1")  # type: ignore[arg-type]
    turbopipe.sync(fd, file=fd)  # type: ignore[arg-type]
    turbopipe.pipe(b"x", fd, vmsplice="on")  # type: ignore[arg-type]
