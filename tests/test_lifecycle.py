"""The writer threads' life: each exits after 2 idle seconds (also with a failure kept for
later), close() stops them and a later pipe() starts them again, also from another thread;
an interpreter exit flushes what is queued, and says what it could not write, exiting
non-zero; a fork leaves the child an engine of its own and no descriptor that would keep
the parent's reader waiting."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import turbopipe
from conftest import Pipe, md5, run_with_engine
from engine_helpers import IDLE_EXIT, MiB, in_thread, make_payloads, run_program, wait_until


def threads_and_descriptors() -> tuple[int, int]:
    return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))


def none_above(counts: tuple[int, ...], baseline: tuple[int, ...]) -> bool:
    """Each count at most its baseline (a tuple's <= would compare the first only)."""
    return all(count <= before for count, before in zip(counts, baseline))


def test_idle_writer_threads_exit_on_their_own() -> None:
    """A program that writes many files does not keep a thread per file until close()."""

    def threads() -> tuple[int, int]:
        return threading.active_count(), len(os.listdir("/proc/self/task"))

    baseline = threads()
    for _ in range(20):
        pipe = Pipe()
        turbopipe.pipe(b"x" * 1000, pipe.fd)
        turbopipe.sync(file=pipe.fd)
        pipe.finish()
    wait_until(lambda: none_above(threads(), baseline), "idle workers gone", timeout=IDLE_EXIT + 10)
    turbopipe.sync()  # joins them
    assert none_above(threads(), baseline)


def test_an_unreported_failure_holds_no_thread_and_no_descriptors() -> None:
    """The worker of a failed file leaves after idling, closing what it used, and the
    failure waits for the next call that touches the file."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    baseline = threads_and_descriptors()
    turbopipe.pipe(b"x" * MiB, write_fd)  # large enough to take the relay: two more fds
    wait_until(
        lambda: none_above(threads_and_descriptors(), baseline),
        "the failed file's worker and descriptors gone",
        timeout=IDLE_EXIT + 10,
    )
    with pytest.raises(BrokenPipeError, match=f"fd {write_fd}: wrote 0 of {MiB} bytes"):
        turbopipe.sync(file=write_fd)
    os.close(write_fd)


def test_close_then_pipe_again(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    turbopipe.pipe(b"one", pipe.fd)
    turbopipe.close()
    turbopipe.pipe(b"two", pipe.fd)
    turbopipe.done(b"two")
    turbopipe.close()
    assert pipe.finish() == md5(b"onetwo")


def test_close_from_one_thread_while_another_pipes(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    payloads = make_payloads(200, 64 * 1024)

    def produce() -> None:
        for payload in payloads:
            turbopipe.pipe(payload, pipe.fd)

    producer = in_thread(produce)
    while producer.is_alive():
        turbopipe.close()
    turbopipe.sync()
    assert pipe.finish() == md5(*payloads)


def test_interpreter_exit_flushes_queued_writes(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    result = run_with_engine(
        f"""
        import os
        fd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)
        for i in range(20):
            turbopipe.pipe(bytes([i]) * (1 << 20), fd)
        """
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"".join(bytes([i]) * (1 << 20) for i in range(20))


# A program whose flush at exit waits: nobody reads its pipe. A SIGTERM handler exits 143.
_STALLED_AT_EXIT = """
import os, signal, sys, turbopipe
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
read_fd, write_fd = os.pipe()
for _ in range(3):
    turbopipe.pipe(bytes(4 << 20), write_fd)
"""


@pytest.mark.parametrize(("sent", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_flush_at_exit_says_what_it_lost(
    engine: str, sent: signal.Signals, status: int
) -> None:
    """The flush at exit says what it waits for; interrupted, it says what was not written
    and the process ends with a non-zero status, never 0 as if nothing were lost."""
    with subprocess.Popen(
        [sys.executable, "-c", _STALLED_AT_EXIT], stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TURBOPIPE_ENGINE": engine},
    ) as process:  # fmt: skip
        assert process.stderr is not None
        stuck = threading.Timer(30, process.kill)  # a flush that says nothing waits for ever
        stuck.start()
        said = [process.stderr.readline() for _ in range(2)]  # the notice, after 2 s
        process.send_signal(sent)
        said += process.stderr.readlines()
        stuck.cancel()
        assert process.wait(timeout=30) == status, said
    assert said[0].startswith("turbopipe: at exit, waiting to write: fd ")
    assert said[0].endswith(", 3 items (12582912 bytes)\n")
    assert said[1] == "turbopipe: Ctrl-C abandons them, and exits with status 130\n"
    lost = [line for line in said if "exit interrupted" in line]
    assert len(lost) == 1 and lost[0].endswith(", 3 items (12582912 bytes)\n"), said


@pytest.mark.parametrize(("ending", "status"), [("", 1), ("raise KeyboardInterrupt", 130)])
def test_a_write_failing_in_the_flush_at_exit_says_what_it_lost(ending: str, status: int) -> None:
    """A reader exits, and /dev/full fills, while the flush at exit writes to them: the
    process says what was not written to each, and exits 1 (130 when it was ending on an
    uncaught Ctrl-C), never 0 as if nothing were lost."""
    result = run_with_engine(
        f"""
        import os, subprocess
        reader = subprocess.Popen(["head", "-c", "1000"], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL)
        full = os.open("/dev/full", os.O_WRONLY)
        print(reader.stdin.fileno(), full, flush=True)
        for _ in range(4):
            turbopipe.pipe(bytes(1 << 20), reader.stdin.fileno())
        turbopipe.pipe(bytes(1000), full)
        {ending}
        """
    )
    assert result.returncode == status, result.stderr
    reader_fd, full_fd = result.stdout.split()
    said = [line for line in result.stderr.splitlines() if line.startswith("turbopipe: ")]
    assert len(said) == 2, result.stderr
    broken, full = sorted(said)  # said in the order of their fds
    assert re.fullmatch(
        r"turbopipe: at exit, not written whole: BrokenPipeError: \[Errno 32\] Broken pipe "
        rf"\(fd {reader_fd}: wrote \d+ of 1048576 bytes(, [1-3] queued items dropped)?\)",
        broken,
    ), said
    assert full == (
        "turbopipe: at exit, not written whole: OSError: [Errno 28] No space left on device "
        f"(fd {full_fd}: wrote 0 of 1000 bytes)"
    )


def test_fork_with_writes_queued(tmp_path: Path) -> None:
    result = run_with_engine(
        f"""
        import os
        parent_fd = os.open({str(tmp_path / "parent")!r}, os.O_WRONLY | os.O_CREAT)
        for i in range(8):
            turbopipe.pipe(bytes([i]) * (1 << 20), parent_fd)
        pid = os.fork()
        if pid == 0:  # the child pipes on its own engine
            child_fd = os.open({str(tmp_path / "child")!r}, os.O_WRONLY | os.O_CREAT)
            turbopipe.pipe(b"child", child_fd)
            turbopipe.sync()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        turbopipe.pipe(b"after", parent_fd)
        turbopipe.sync()
        print("child", status)
        """
    )
    assert "child 0" in result.stdout, result.stderr
    expected = b"".join(bytes([i]) * (1 << 20) for i in range(8)) + b"after"
    assert (tmp_path / "parent").read_bytes() == expected
    assert (tmp_path / "child").read_bytes() == b"child"


def test_a_child_forked_while_writing_keeps_no_reader_waiting() -> None:
    """A child that outlives the parent's writes has closed its copies of the engine's
    descriptors: the reader sees end of file once the parent is done."""
    result = run_program("child_outlives_the_writes.py")
    assert result.stdout.strip() == str(4 << 20), result.stderr
