"""Short of threads, memory or descriptors: pipe() raises at the call (EAGAIN, ENOMEM or
MemoryError, EMFILE) and nothing queued is lost, or, with no descriptors for the relay, the
item is written another way; once they can be had again, pipe() works again. The native
engine's writer threads never allocate, so memory running out while they write cannot end
the process. Thousands of readers that stall cost a thread each, no more. O_DIRECT's
alignment missing, the write fails with EINVAL, reported by the next call."""

from __future__ import annotations

import errno
import json
import mmap
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import turbopipe
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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to become another user")
def test_once_threads_can_be_had_again_pipe_works_and_nothing_was_lost() -> None:
    """At the thread limit a new file's pipe() raises EAGAIN while the file whose writer
    thread runs goes on; once that thread has exited idle, its file's pipe() raises too.
    With the limit raised, both files take items again; each reader got exactly the items
    pipe() took, in order, and no refusal left a descriptor open."""
    result = run_program("no_thread_then_threads_again.py")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    fds = report["fds"]
    assert report["refused"] == [
        [errno.EAGAIN, fds["new"], 0, 200_000, 0, "new"],
        [errno.EAGAIN, fds["running"], 0, 300_002, 0, "running"],
    ]
    assert report["delivered"] == {"running": True, "new": True}


def test_no_descriptor_to_hold_raises_emfile_at_the_call(tmp_path: Path) -> None:
    """At the descriptor limit pipe() cannot duplicate the caller's descriptor: for a regular
    file (a duplicate per item) and a pipe new to the engine it raises EMFILE, naming the
    fd; a pipe with items queued shares the duplicate it holds and goes on. One descriptor
    freed, both work again. Every item pipe() took arrives, in order; no refusal left a
    descriptor open."""
    result = run_program("no_descriptor_to_hold.py", tmp_path / "file")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    fds = report["fds"]
    assert report["delivered"] == {"file": True, "stalled pipe": True, "new pipe": True}
    assert [[code, name] for code, _, name in report["refused"]] == [
        [errno.EMFILE, "file"],
        [errno.EMFILE, "new pipe"],
    ]
    assert [fd for _, fd, _ in report["refused"]] == [fds["file"], fds["new pipe"]]


def test_two_thousand_stalled_readers_cost_a_thread_each() -> None:
    """2000 pipes filled and not read: at most a writer thread each (the engines have one
    per file), all gone after close(); once read, every byte arrives in order on each."""
    count = 2000
    result = run_program("stalled_readers.py", count)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    if "skip" in report:
        pytest.skip(report["skip"])
    before, peak, after = report["threads"]
    assert report["delivered"] == count
    assert peak <= before + count + 1  # and the program's reader
    assert after == before


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


@pytest.fixture
def direct_path(tmp_path: Path) -> Iterator[Path]:
    """A path in a directory whose filesystem takes O_DIRECT and refuses unaligned writes
    with EINVAL: tmp_path, else /var/tmp (tmpfs refuses O_DIRECT at open, or, since Linux
    6.6, takes any write; btrfs falls back to buffered writes)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as other:
        for directory in (tmp_path, Path(other)):
            path = directory / "direct"
            if refuses_unaligned_direct_writes(path):
                yield path
                return
    pytest.skip("no filesystem here refuses unaligned O_DIRECT writes")


def refuses_unaligned_direct_writes(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except OSError:
        return False
    try:
        os.write(fd, memoryview(aligned(0, 2))[1:4097])  # a block, one byte off
    except OSError as error:
        return error.errno == errno.EINVAL
    finally:
        os.close(fd)
    return False


def aligned(value: int, blocks: int) -> mmap.mmap:
    """Page-aligned memory of `blocks` 4096-byte blocks of `value`: what O_DIRECT takes."""
    memory = mmap.mmap(-1, 4096 * blocks)
    memory.write(bytes([value]) * len(memory))
    return memory


def test_o_direct_takes_aligned_items_and_refuses_the_others(direct_path: Path) -> None:
    """Items of aligned memory and size are written whole; one unaligned in size or address
    fails with EINVAL, reported by the next call on the file, which drops the aligned items
    queued behind it (or refuses them, once failed). The file holds exactly the items
    written."""
    fd = os.open(direct_path, os.O_WRONLY | os.O_TRUNC | os.O_DIRECT)
    expected = bytearray()
    try:
        first = aligned(1, 256)
        turbopipe.pipe(first, fd)
        turbopipe.sync()
        expected += first
        unaligned_items = [
            b"x" * 100,  # neither its address nor its size
            memoryview(aligned(2, 2))[:5000],  # its size
            memoryview(aligned(3, 2))[1:4097],  # its address
        ]
        for unaligned in unaligned_items:
            turbopipe.pipe(unaligned, fd)
            queued = []
            with pytest.raises(OSError) as raised:
                for value in (4, 5):
                    behind = aligned(value, 1)
                    turbopipe.pipe(behind, fd)
                    queued.append(behind)
                turbopipe.sync()
            error = raised.value
            assert (error.errno, error.fd, error.written, error.size, error.dropped) == (  # type: ignore[attr-defined]
                errno.EINVAL,
                fd,
                0,
                len(unaligned),
                len(queued),
            )
            after = aligned(6, 2)
            turbopipe.pipe(after, fd)
            turbopipe.sync()
            expected += after
    finally:
        os.close(fd)
    assert direct_path.read_bytes() == expected
