"""What the engine's tests share: payloads, threads, waits on a condition with a deadline,
the state of a pipe, and the helper programs of tests/programs."""

from __future__ import annotations

import mmap
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import turbopipe
from conftest import run_with_engine
from turbopipe import _core

MiB = 1 << 20
F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032
PROGRAMS = Path(__file__).with_name("programs")
QUEUE_LIMIT = _core.QUEUE_LIMIT  # items a file queues before pipe() waits (both engines)
IDLE_EXIT = _core.IDLE_EXIT  # seconds an idle writer thread waits before it exits
PACKAGE = os.path.dirname(turbopipe.__file__)


def make_payloads(count: int, size: int) -> list[bytes]:
    return [os.urandom(size) for _ in range(count)]


def in_thread(target: Callable[..., object], *args: object, **kwargs: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def native_only(engine: str, reason: str) -> None:
    """Skip the test on the Python engine, where what it checks does not exist."""
    __tracebackhide__ = True  # the skip is reported at the test's line
    if engine != "native":
        pytest.skip(f"native engine only: {reason}")


def wait_until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll `condition` until it holds; fail the test, naming `what`, after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after {timeout} s")
        time.sleep(0.002)


def pipe_is_full(write_fd: int) -> bool:
    """Whether the pipe of write end `write_fd` has no room left: a writer of it waits."""
    poller = select.poll()
    poller.register(write_fd, select.POLLOUT)
    return not poller.poll(0)


def wait_full(write_fd: int) -> None:
    wait_until(lambda: pipe_is_full(write_fd), f"pipe of fd {write_fd} full")


def wait_failed(fd: int) -> None:
    """Wait until the writer of fd's file has failed its first item: stats() shows it taken
    up but not written whole. The failure is kept for the next call; stats() raises none."""

    def failed() -> bool:
        stats = turbopipe.stats(fd)
        return stats is not None and stats.path is not None and stats.items == 0

    wait_until(failed, f"first item to fd {fd} failed")


def blocks(thread: threading.Thread, samples: int = 5) -> bool:
    """Whether `thread` waits inside a turbopipe call: true once its stack is in the package
    and it sleeps in the kernel at `samples` polls in a row; false if it ends first."""
    stat = Path(f"/proc/self/task/{thread.native_id}/stat")
    asleep = 0

    def waiting() -> bool:
        nonlocal asleep
        frame = sys._current_frames().get(thread.ident or 0)
        inside = False
        while frame is not None and not inside:
            inside = frame.f_code.co_filename.startswith(PACKAGE)
            frame = frame.f_back
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            state = "gone"
        asleep = asleep + 1 if inside and state in ("S", "D") else 0
        return asleep >= samples or not thread.is_alive()

    wait_until(waiting, f"{thread.name} waiting in turbopipe or ended")
    return thread.is_alive()


def descriptors_of(fd: int) -> list[int]:
    """This process's descriptors naming the same file (pipe) as fd, fd included."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    numbers = [int(name) for name in os.listdir("/proc/self/fd")]
    return [
        n
        for n in numbers
        if os.path.exists(f"/proc/self/fd/{n}") and os.readlink(f"/proc/self/fd/{n}") == target
    ]


def run_program(
    name: str, *args: object, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run tests/programs/<name> with `args` in a fresh interpreter, on the engine under test
    (conftest.run_with_engine); returns the CompletedProcess, its output as text."""
    path = str(PROGRAMS / name)
    argv = [path, *map(str, args)]
    # With tests/programs/ on sys.path, as for a script run from there: they share modules.
    return run_with_engine(
        f"import runpy\nsys.argv = {argv!r}\nsys.path.insert(0, {str(PROGRAMS)!r})\n"
        f"runpy.run_path({path!r}, run_name='__main__')\n",
        env,
    )


def build_preload(tmp_path: Path, name: str) -> Path:
    """Build tests/programs/<name> (C or C++) into a library to preload; skips the test
    without a compiler, or under tools/sanitize.sh, whose runtime is preloaded instead."""
    if os.environ.get("TURBOPIPE_SANITIZER_RUNTIME"):
        pytest.skip("the sanitizer's runtime is preloaded in its place (tools/sanitize.sh)")
    source = PROGRAMS / name
    cplusplus = source.suffix == ".cc"
    compilers = ("c++", "g++") if cplusplus else ("cc", "gcc")
    compiler = next(filter(None, map(shutil.which, compilers)), None)
    if compiler is None or not Path("/proc/self").exists():
        pytest.skip("needs a C/C++ compiler and Linux")
    library = tmp_path / f"{source.stem}.so"
    subprocess.run(
        [compiler, "-x", "c++" if cplusplus else "c", "-shared", "-fPIC", "-O2", "-o", library,
         source],
        check=True,
    )  # fmt: skip
    return library


class MarkedZeros:
    """A stream of `size` bytes, zeros but for a mark in every MiB: a byte at an offset that
    moves from MiB to MiB, its value the MiB's number mod 251, plus 1. Bytes lost, repeated
    or moved shift the marks after them. Cheap to make (untouched anonymous memory, one
    page touched per MiB) and to check byte for byte (a memcmp per read)."""

    def __init__(self, size: int) -> None:
        self.size = size
        spots = ((i * MiB + i * 4099 % MiB, i % 251 + 1) for i in range(size // MiB + 1))
        self.marks = [(position, value) for position, value in spots if position < size]

    def mark(self, memory: mmap.mmap | bytearray) -> None:
        for position, value in self.marks:
            memory[position] = value

    def check(self, read_fd: int) -> str:
        """Read read_fd to end of file, closing it; return "" if it held exactly the
        expected bytes, else where it first differed."""
        buffer = bytearray(MiB)
        view = memoryview(buffer)
        zeros = bytes(MiB)
        marks = iter([*self.marks, (self.size, 0)])
        mark, value = next(marks)
        position, differs = 0, ""
        with open(read_fd, "rb", buffering=0) as file:
            while count := file.readinto(view):  # to the end, whatever it holds
                end = position + count
                if differs or end > self.size:
                    differs = differs or f"more than {self.size} bytes"
                    continue
                while mark < end:
                    if buffer[mark - position] != value and not differs:
                        differs = f"{buffer[mark - position]} at {mark}, not the mark {value}"
                    buffer[mark - position] = 0
                    mark, value = next(marks)
                if not zeros.startswith(view[:count]):
                    differs = differs or f"a byte other than a mark in [{position}, {end})"
                position = end
        return differs or ("" if position == self.size else f"{position} bytes, not {self.size}")
