"""Short of threads, memory or descriptors: pipe() raises at the call (EAGAIN, ENOMEM or
MemoryError) and nothing queued is lost, or, with no descriptors for the relay, the item
is written another way. The native engine's writer threads never allocate, so memory
running out while they write cannot end the process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_with_engine
from engine_helpers import build_preload, native_only, run_program


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to become another user")
@pytest.mark.parametrize("handling", [False, True])
def test_no_thread_to_be_had_raises_at_the_call(handling: bool) -> None:
    """With the thread limit reached, pipe() raises EAGAIN and the program goes on; also
    when called while the caller handles an exception of its own."""
    result = run_with_engine(
        f"""
        import os, resource
        os.setgid(65534)  # a user with no processes: the limit below counts only ours
        os.setuid(65534)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
        read_fd, write_fd = os.pipe()
        try:
            try:
                if {handling}:
                    raise ValueError("the caller's own")
            finally:
                turbopipe.pipe(b"x" * 10, write_fd)
        except BlockingIOError as error:
            print(write_fd, error)
        turbopipe.close()
        """
    )
    assert result.returncode == 0, result.stderr
    fd, message = result.stdout.split(" ", 1)
    assert message.strip().endswith(f"(fd {fd}: wrote 0 of 10 bytes)")


def test_no_memory_at_the_call_raises_and_loses_nothing(engine: str, tmp_path: Path) -> None:
    """Each allocation pipe() makes in turn is refused, on a new stream and on a running
    one: the call raises MemoryError or OSError(ENOMEM), nothing is queued, and the
    engine goes on whole: every later item arrives, in order, and sync() returns."""
    native_only(engine, "the Python engine allocates through Python, where any call may raise")
    shim = build_preload(tmp_path, "refuse_new_call.cc")
    result = run_program("no_memory_at_the_call.py", env={"LD_PRELOAD": str(shim)})
    assert result.returncode == 0, result.stderr
    arrived, on_new_stream, on_running_stream = result.stdout.split()
    assert arrived == "True"
    # Each refusal raised: a new stream takes more allocations than a running one.
    assert int(on_new_stream) > int(on_running_stream) >= 1


def test_the_writer_threads_never_allocate(engine: str, tmp_path: Path) -> None:
    """Memory may be short when a worker finishes an item: it must not need any, or the
    process dies (an exception escaping a thread). Every path is taken with no memory to
    be had off the main thread: relay, write, vmsplice, an idle worker exiting and a new
    one starting, and on each path a reader dying with items queued."""
    native_only(engine, "the Python engine's writers are Python threads, which allocate")
    shim = build_preload(tmp_path, "no_memory_off_the_main_thread.c")
    result = run_program("writer_threads_never_allocate.py", env={"LD_PRELOAD": str(shim)})
    assert result.returncode == 0, result.stderr
    arrived, *failures = result.stdout.splitlines()
    assert arrived == "True"
    assert len(failures) == 3 and all("Broken pipe" in failure for failure in failures)


def test_no_descriptors_left_for_the_relay_means_write() -> None:
    """The relay cannot be made (EMFILE): the item is written directly, whole."""
    result = run_with_engine(
        """
        import os, resource
        read_fd, write_fd = os.pipe()
        item = os.urandom(256 * 1024)
        lowest = os.dup(0)
        os.close(lowest)
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Room for the engine's duplicate of write_fd, not for the relay's two ends.
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest + 1, limits[1]))
        turbopipe.pipe(item, write_fd)
        turbopipe.sync()
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        os.close(write_fd)
        assert os.read(read_fd, 1 << 20) == item
        """
    )
    assert result.returncode == 0, result.stderr
