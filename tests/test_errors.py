"""Bad arguments raise at the call; failed writes raise at the next call touching their fd."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import turbopipe
from conftest import Pipe, Reader, md5, run_with_engine

MiB = 1 << 20


@pytest.mark.parametrize(
    ("data", "file", "error"),
    [
        (42, 1, TypeError),
        ("text", 1, TypeError),
        (np.zeros((64, 64, 3), np.uint8)[:, ::2], 1, ValueError),  # not C-contiguous
        (np.zeros(8, "datetime64[s]"), 1, ValueError),  # no buffer format for it
        (b"x", -1, ValueError),
        (b"x", 1 << 64, ValueError),
        (b"x", "1", TypeError),
        (b"x", 1.0, TypeError),
    ],
)
def test_bad_arguments_raise_at_the_call(data: object, file: object, error: type) -> None:
    read_fd, write_fd = os.pipe()
    for known in (b"", np.zeros(0, np.uint8)):  # pipe() takes a shorter way for known types
        turbopipe.pipe(known, write_fd)
    turbopipe.sync()
    os.close(write_fd)
    os.close(read_fd)
    for _ in range(2):  # the first call of a type may take the longer way
        with pytest.raises(error):
            turbopipe.pipe(data, file)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["chunk", "pipe_size"])
def test_negative_option_raises(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        turbopipe.pipe(b"x", 1, **{option: -1})


def test_closed_descriptor_raises_ebadf_at_the_call() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    os.close(write_fd)
    with pytest.raises(OSError, match="not open for writing") as caught:
        turbopipe.pipe(b"x", write_fd)
    assert caught.value.errno == errno.EBADF


def test_read_only_descriptor_raises_ebadf_at_the_call() -> None:
    read_fd, write_fd = os.pipe()
    with pytest.raises(OSError) as caught:
        turbopipe.pipe(b"x", read_fd)
    assert caught.value.errno == errno.EBADF
    os.close(read_fd)
    os.close(write_fd)


def test_a_number_reopened_with_another_access_mode(tmp_path: Path) -> None:
    """The same number and file, read-only after writable and back: each call sees the
    descriptor as it is then."""
    path = tmp_path / "file"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    turbopipe.pipe(b"first", fd)
    turbopipe.sync()
    os.close(fd)
    assert os.open(path, os.O_RDONLY) == fd
    with pytest.raises(OSError) as caught:
        turbopipe.pipe(b"refused", fd)
    assert caught.value.errno == errno.EBADF
    os.close(fd)
    assert os.open(path, os.O_WRONLY | os.O_APPEND) == fd
    turbopipe.pipe(b"second", fd)
    turbopipe.sync()
    os.close(fd)
    assert path.read_bytes() == b"firstsecond"


def test_dead_reader_raises_broken_pipe_at_sync() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(os.urandom(MiB), write_fd)
    with pytest.raises(BrokenPipeError, match=rf"fd {write_fd}: wrote 0 of {MiB} bytes\)$"):
        turbopipe.sync()
    turbopipe.sync()  # reported once, then forgotten
    os.close(write_fd)


def test_reader_closing_mid_item_counts_written_and_dropped() -> None:
    read_fd, write_fd = os.pipe()
    for _ in range(4):
        turbopipe.pipe(os.urandom(4 * MiB), write_fd)
    time.sleep(0.3)  # the first item fills the pipe and waits; three more are queued
    os.close(read_fd)
    with pytest.raises(BrokenPipeError) as caught:
        turbopipe.sync()
    error = caught.value
    assert (error.errno, error.fd, error.size, error.dropped) == (errno.EPIPE, write_fd, 4 * MiB, 3)
    assert 0 < error.written < 4 * MiB
    assert f"wrote {error.written} of {4 * MiB} bytes, 3 queued items dropped" in str(error)
    os.close(write_fd)


def test_a_reused_number_does_not_inherit_the_failure(tmp_path: Path) -> None:
    """sync(file=n) is about the file n names now; the old pipe's failure waits for sync()."""
    read_fd, fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(b"x" * MiB, fd)  # fails: nobody will read it
    new = os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT)
    os.dup2(new, fd)
    turbopipe.sync(file=fd)
    with pytest.raises(BrokenPipeError, match=f"fd {fd}: wrote 0 of {MiB} bytes"):
        turbopipe.sync()
    for descriptor in (fd, new):
        os.close(descriptor)


def test_a_number_reused_for_a_failed_file_names_it_from_then_on() -> None:
    """pipe(data, n) that raises the failure of the file n names now records n for that
    file: sync(file=n) once n is closed does not wait for the file n named before."""
    stalled_read, fd = os.pipe()
    turbopipe.pipe(bytes(4 * MiB), fd)  # nobody reads yet: its stream stays busy
    dead_read, dead_write = os.pipe()
    os.close(dead_read)
    turbopipe.pipe(b"x" * 10, dead_write)  # fails at once: nobody will read it
    time.sleep(0.5)  # the failure is recorded, not yet reported
    os.dup2(dead_write, fd)  # fd now names the dead pipe
    os.close(dead_write)
    with pytest.raises(BrokenPipeError):
        turbopipe.pipe(b"y", fd)
    os.close(fd)
    waiter = threading.Thread(target=turbopipe.sync, kwargs={"file": fd}, daemon=True)
    waiter.start()
    waiter.join(timeout=5)
    reader = Reader(stalled_read)
    assert not waiter.is_alive(), "sync(file=fd) waited for the pipe fd named before"
    turbopipe.sync()
    assert reader.join() == md5(bytes(4 * MiB))


def test_the_failure_names_the_fd_of_the_failed_item() -> None:
    read_fd, write_fd = os.pipe()
    other_fd = os.dup(write_fd)  # the same pipe under another number
    turbopipe.pipe(bytes(4 * MiB), write_fd, relay=False)  # fills the pipe and waits
    turbopipe.pipe(b"behind", other_fd)
    time.sleep(0.2)
    os.close(read_fd)
    with pytest.raises(
        BrokenPipeError, match=rf"\(fd {write_fd}: wrote \d+ of {4 * MiB} bytes"
    ) as caught:
        turbopipe.sync()
    assert (caught.value.fd, caught.value.size) == (write_fd, 4 * MiB)
    os.close(write_fd)
    os.close(other_fd)


def test_a_file_object_for_a_descriptor_gets_a_hint() -> None:
    with open(os.devnull, "wb") as file, pytest.raises(TypeError, match=r"\.fileno\(\)"):
        turbopipe.pipe(b"x", file)  # type: ignore[arg-type]


def test_sync_of_a_descriptor_number_says_how() -> None:
    with pytest.raises(TypeError, match=r"sync\(file=fd\)"):
        turbopipe.sync(5)  # type: ignore[arg-type]


def test_failure_is_raised_by_the_next_pipe_to_that_fd() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(b"lost", write_fd)
    with pytest.raises(BrokenPipeError):
        for _ in range(500):  # the failure lands when the worker gets to it
            turbopipe.pipe(b"more", write_fd)
            time.sleep(0.01)
    os.close(write_fd)


def test_sync_of_the_failed_object_raises() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    data = bytearray(1000)
    turbopipe.pipe(data, write_fd)
    with pytest.raises(BrokenPipeError):
        turbopipe.sync(data)
    os.close(write_fd)


def test_failure_on_one_fd_leaves_others_alone(make_pipe: type[Pipe]) -> None:
    healthy = make_pipe()
    read_fd, broken_fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(b"lost", broken_fd)
    payloads = [os.urandom(MiB) for _ in range(8)]
    for payload in payloads:
        turbopipe.pipe(payload, healthy.fd)
        turbopipe.sync(payload)
    turbopipe.sync(file=healthy.fd)
    with pytest.raises(BrokenPipeError, match=f"fd {broken_fd}"):
        turbopipe.sync()
    assert healthy.finish() == md5(*payloads)
    os.close(broken_fd)


def test_close_reports_the_failure_and_still_stops() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(b"x" * 100, write_fd)
    with pytest.raises(BrokenPipeError):
        turbopipe.close()
    os.close(write_fd)


def test_an_unreported_failure_holds_no_thread_and_no_descriptors() -> None:
    """The worker of a failed file leaves after idling, closing what it used, and the
    failure waits for the next call that touches the file."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)

    def held() -> tuple[int, int]:
        return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))

    baseline = held()
    turbopipe.pipe(b"x" * MiB, write_fd)  # large enough to take the relay: two more fds
    deadline = time.monotonic() + 10  # workers leave after 2 s without work
    while held() > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    assert held() <= baseline
    with pytest.raises(BrokenPipeError, match=f"fd {write_fd}: wrote 0 of {MiB} bytes"):
        turbopipe.sync(file=write_fd)
    os.close(write_fd)


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


def test_reader_dying_mid_stream_raises_and_the_process_exits_cleanly() -> None:
    """head reads 5 MiB and exits; the writer sees BrokenPipeError and exits 0."""
    result = run_with_engine(
        """
        import os, signal, subprocess
        # SIGPIPE back to its default action: the engine must not let it kill the process.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        reader = subprocess.Popen(["head", "-c", str(5 << 20)], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                turbopipe.pipe(os.urandom(1 << 20), reader.stdin.fileno())
            turbopipe.sync()
        except BrokenPipeError as error:
            print("raised", error)
        reader.wait()
        """
    )
    assert result.returncode == 0, result.stderr
    assert "raised [Errno 32] Broken pipe" in result.stdout


# Preloaded: every allocation fails but on the main thread. glibc's __libc_* entry points
# are the real allocator, without a lookup that could allocate in turn.
_NO_MEMORY_OFF_THE_MAIN_THREAD = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);

static int refused(void) {
    static __thread int known, other;
    if (!known) {
        other = syscall(SYS_gettid) != getpid();
        known = 1;
    }
    if (other) errno = ENOMEM;
    return other;
}

void* malloc(size_t n) { return refused() ? NULL : __libc_malloc(n); }
void* calloc(size_t k, size_t n) { return refused() ? NULL : __libc_calloc(k, n); }
void* realloc(void* p, size_t n) { return refused() ? NULL : __libc_realloc(p, n); }
void* memalign(size_t a, size_t n) { return refused() ? NULL : __libc_memalign(a, n); }
void* aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
int posix_memalign(void** p, size_t a, size_t n) {
    return (*p = memalign(a, n)) ? 0 : ENOMEM;
}
"""


# Preloaded: the n-th operator new from refuse_new_call(n) on fails (only the engine's C++
# allocates through it; Python and the C library do not).
_REFUSED_NEW_CALL = r"""
#include <atomic>
#include <cstdlib>
#include <new>

static std::atomic<int> countdown{0};

extern "C" void refuse_new_call(int n) { countdown = n; }
extern "C" int new_calls_to_refusal() { return countdown; }

static void* allocate(std::size_t n) {
    if (countdown > 0 && --countdown == 0) return nullptr;
    return std::malloc(n ? n : 1);
}

void* operator new(std::size_t n) {
    if (void* p = allocate(n)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
"""


def _preload(tmp_path: Path, name: str, source: str, compilers: tuple[str, ...]) -> Path:
    """Build source into a library to preload; skips the test without a compiler."""
    if os.environ.get("TURBOPIPE_SANITIZER_RUNTIME"):
        pytest.skip("the sanitizer's runtime is preloaded in its place (tools/sanitize.sh)")
    compiler = next(filter(None, map(shutil.which, compilers)), None)
    if compiler is None or not Path("/proc/self").exists():
        pytest.skip("needs a C/C++ compiler and Linux")
    library, code = tmp_path / f"{name}.so", tmp_path / name
    code.write_text(source)
    language = "c++" if compilers[0] == "c++" else "c"
    subprocess.run(
        [compiler, "-x", language, "-shared", "-fPIC", "-O2", "-o", library, code], check=True
    )
    return library


def test_no_memory_at_the_call_raises_and_loses_nothing(engine: str, tmp_path: Path) -> None:
    """Each allocation pipe() makes in turn is refused, on a new stream and on a running
    one: the call raises MemoryError or OSError(ENOMEM), nothing is queued, and the
    engine goes on whole: every later item arrives, in order, and sync() returns."""
    if engine == "python":
        pytest.skip("the Python engine allocates through Python, where any call may raise")
    shim = _preload(tmp_path, "refuse_new.cc", _REFUSED_NEW_CALL, ("c++", "g++"))
    result = run_with_engine(
        """
        import ctypes, errno, hashlib, os, threading
        shim = ctypes.CDLL(None)
        read_fd, write_fd = os.pipe()
        got = hashlib.md5()

        def drain():
            while chunk := os.read(read_fd, 1 << 20):
                got.update(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        sent = hashlib.md5()
        counts = {}
        for new_stream in (True, False):
            refused = 0
            for n in range(1, 100):
                if new_stream:
                    turbopipe.close()  # stops the idle worker: the next pipe() makes a stream
                frame = os.urandom(200_000)
                shim.refuse_new_call(n)
                try:
                    turbopipe.pipe(frame, write_fd)
                    sent.update(frame)
                except MemoryError:
                    refused += 1
                except OSError as error:
                    assert error.errno == errno.ENOMEM, error
                    refused += 1
                left = shim.new_calls_to_refusal()
                shim.refuse_new_call(0)
                after = os.urandom(1000)
                turbopipe.pipe(after, write_fd)
                sent.update(after)
                turbopipe.sync()
                if left:  # the call made fewer than n allocations: all were refused once
                    break
            counts[new_stream] = refused
        os.close(write_fd)
        reader.join()
        print(got.hexdigest() == sent.hexdigest(), counts[True], counts[False])
        """,
        env={"LD_PRELOAD": str(shim)},
    )
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
    if engine == "python":
        pytest.skip("the Python engine's writers are Python threads, which allocate")
    shim = _preload(tmp_path, "no_memory.c", _NO_MEMORY_OFF_THE_MAIN_THREAD, ("cc", "gcc"))
    result = run_with_engine(
        """
        import hashlib, os, subprocess, time
        frames = [os.urandom(size) for size in (1 << 20, 3 << 20, 100_000, 5_000)]
        reader = subprocess.Popen(["md5sum"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        sent = hashlib.md5()
        for options in ({}, {"relay": False}, {"vmsplice": True}, "idle", {}):
            if options == "idle":
                time.sleep(2.5)  # the worker exits; the next pipe() starts another
                continue
            for frame in frames * 3:
                turbopipe.pipe(frame, reader.stdin.fileno(), **options)
                sent.update(frame)
            turbopipe.sync()
        reader.stdin.close()
        print(reader.stdout.read().split()[0].decode() == sent.hexdigest())
        reader.wait()

        for options in ({}, {"relay": False}, {"vmsplice": True}):
            # The reader dies mid-item; with vmsplice, the engine empties the pipe.
            head = subprocess.Popen(["head", "-c", "100000"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL)
            try:
                for frame in frames * 5:
                    turbopipe.pipe(frame, head.stdin.fileno(), **options)
                turbopipe.sync()
            except BrokenPipeError as error:
                print(error)
            head.wait()
        turbopipe.close()
        """,
        env={"LD_PRELOAD": str(shim)},
    )
    assert result.returncode == 0, result.stderr
    arrived, *failures = result.stdout.splitlines()
    assert arrived == "True"
    assert len(failures) == 3 and all("Broken pipe" in failure for failure in failures)


@pytest.mark.parametrize("options", [{}, {"relay": False}, {"vmsplice": True}])
def test_a_mapped_file_that_shrinks_while_queued_raises_efault(
    tmp_path: Path, options: dict[str, bool]
) -> None:
    """Its missing pages fail the write with EFAULT on every path, never SIGBUS."""
    result = run_with_engine(
        f"""
        import mmap, os, threading, time
        size = 4 << 20
        with open({str(tmp_path / "mapped")!r}, "w+b") as file:
            file.truncate(size)
            memory = mmap.mmap(file.fileno(), size)
            read_end, write_end = os.pipe()
            turbopipe.pipe(memory, write_end, **{options!r})  # blocks: nobody reads yet
            time.sleep(0.2)
            file.truncate(size - (256 << 10))
            got = []
            reader = threading.Thread(
                target=lambda: got.extend(iter(lambda: os.read(read_end, 1 << 20), b"")))
            reader.start()
            try:
                turbopipe.sync()
            except OSError as error:
                print("raised", error.errno, error.written, error.size)
            os.close(write_end)
            reader.join()
            print("read", sum(map(len, got)))
        """
    )
    assert result.returncode == 0, result.stderr
    raised = re.search(r"raised (\d+) (\d+) 4194304", result.stdout)
    assert raised, result.stdout
    assert int(raised[1]) == errno.EFAULT
    assert f"read {raised[2]}" in result.stdout


# Raises KeyboardInterrupt, once per attempt, at the n-th point of the call where a signal
# handler can run (a function's entry, the return of a call into C) in the package's and
# threading's Python code, for n = 1, 2... until the call runs through. Not at backward
# jumps: raised there by a trace function, inside the comprehensions that Python 3.12
# inlines, it skips the enclosing with-statement's exit.
_CTRL_C_EVERYWHERE = """
import dis, os, struct, sys, threading

def interrupted(call, n):
    count = 0
    callee = [False]  # a Python function ran since the last CALL: it was not into C

    def hit():
        nonlocal count
        count += 1
        if count == n:
            raise KeyboardInterrupt

    def tracer(frame, event, arg):
        if not any(part in frame.f_code.co_filename for part in ("turbopipe", "threading")):
            return None
        frame.f_trace_opcodes = True
        if event == "call":
            callee[0] = True
            hit()
        elif event == "opcode":
            name = dis.opname[frame.f_code.co_code[frame.f_lasti]]
            after_c_call = last.get(id(frame), "").startswith("CALL") and not callee[0]
            last[id(frame)] = name
            if after_c_call:
                hit()
            if name.startswith("CALL"):
                callee[0] = False
        return tracer

    last = {}  # the opcode each frame ran last
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
    target=lambda: received.extend(b"".join(iter(lambda: os.read(read_end, 1 << 16), b""))))
reader.start()
frames = [bytearray(256) for _ in range(4)]
piped = []  # the items pipe() returned for, or that were piped before the interrupted call
number = 0
points = 0

def next_frame():
    global number
    number += 1
    frame = frames[number % 4]
    turbopipe.sync(frame)  # it may still be queued, from an interrupted call
    frame[:] = struct.pack("<I", number) * 64
    return frame

def pipe_whole(frame):
    turbopipe.pipe(frame, write_end)
    piped.append(number)

# The call takes other paths when it has to make the stream and start its thread.
for stream in ("new", "running"):
    n = 0
    while True:
        n += 1
        if stream == "new":
            turbopipe.close()
        frame = next_frame()
        if WHICH == "pipe":
            if stream == "running":
                pipe_whole(frame)
                frame = next_frame()
            call = lambda: turbopipe.pipe(frame, write_end)
        else:
            pipe_whole(frame)
            call = (lambda: turbopipe.sync(frame)) if WHICH == "sync" else turbopipe.sync
        if not interrupted(call, n):
            if WHICH == "pipe":
                piped.append(number)
            break
    points += n - 1
turbopipe.close()
os.close(write_end)
reader.join(30)
assert not reader.is_alive(), "no end of file: the engine kept a duplicate open"
items = [bytes(received[i:i + 256]) for i in range(0, len(received), 256)]
assert all(len(item) == 256 and item == item[:4] * 64 for item in items), "cut or mixed"
numbers = [struct.unpack_from("<I", item)[0] for item in items]
assert numbers == sorted(set(numbers)), numbers
assert set(piped) <= set(numbers), sorted(set(piped) - set(numbers))
print("interrupted at", points, "points")
"""


@pytest.mark.parametrize("which", ["pipe", "sync", "sync_all"])
def test_a_ctrl_c_anywhere_in_a_call_loses_breaks_and_leaks_nothing(which: str) -> None:
    result = run_with_engine(f"WHICH = {which!r}\n" + _CTRL_C_EVERYWHERE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"interrupted at [1-9]\d* points", result.stdout)


def test_a_failed_object_is_held_until_its_failure_is_reported() -> None:
    """Its address cannot be reused by a new object that would inherit the failure."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    turbopipe.pipe(bytearray(1000), write_fd)  # only the engine refers to it
    time.sleep(0.1)  # the write fails meanwhile
    for _ in range(200):
        turbopipe.sync(bytearray(1000))  # unrelated objects: nothing to report
    with pytest.raises(BrokenPipeError):
        turbopipe.sync()
    os.close(write_fd)


def accepted_bytes(error: OSError, sizes: list[int]) -> int:
    """Bytes the pipe took before the failure: the items before the failing one (found by
    its size; sizes are distinct), then its `written`."""
    failing = sizes.index(error.size)  # type: ignore[attr-defined]
    return sum(sizes[:failing]) + error.written  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["exits", "killed"])
def test_a_dying_reader_got_exactly_a_prefix(tmp_path: Path, how: str) -> None:
    """The reader exits after N bytes (head) or is SIGKILLed mid-item: what it got is a
    prefix of the stream, no longer than what the engine reports the pipe took."""
    got = tmp_path / "got"
    command = ["head", "-c", str(3 * MiB + 123)] if how == "exits" else ["cat"]
    with open(got, "wb") as out:
        reader = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out)
    assert reader.stdin is not None
    items = [os.urandom(MiB + 7 * i) for i in range(40)]
    with pytest.raises(BrokenPipeError) as caught:
        for number, item in enumerate(items):  # dropped or refused after the failure
            turbopipe.pipe(item, reader.stdin.fileno())
            if how == "killed" and number == 5:
                turbopipe.sync(item)
                reader.kill()
        turbopipe.sync()
    reader.stdin.close()
    reader.wait()
    stream = b"".join(items)
    received = got.read_bytes()
    assert stream.startswith(received)
    if how == "exits":
        assert len(received) == 3 * MiB + 123
    assert accepted_bytes(caught.value, [len(item) for item in items]) >= len(received)
