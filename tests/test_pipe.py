"""pipe / sync / close / done on real pipes, files and sockets, with every byte checked."""

from __future__ import annotations

import errno
import fcntl
import gc
import mmap
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import turbopipe
from conftest import Pipe, Reader, md5, run_with_engine

MiB = 1 << 20
F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032


def make_payloads(count: int, size: int) -> list[bytes]:
    return [os.urandom(size) for _ in range(count)]


def in_thread(target, *args) -> threading.Thread:  # type: ignore[no-untyped-def]
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def test_bytes_arrive_whole_and_in_order(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    payloads = make_payloads(40, 3 * MiB // 2)
    for payload in payloads:
        turbopipe.pipe(payload, pipe.fd)
    turbopipe.sync()
    assert pipe.finish() == md5(*payloads)


def test_many_small_items_keep_their_order(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe(keep=True)
    items = [f"{i:06d};".encode() for i in range(5000)]
    for item in items:
        turbopipe.pipe(item, pipe.fd)
    turbopipe.sync()
    pipe.finish()
    assert bytes(pipe.reader.data or b"") == b"".join(items)


@pytest.mark.parametrize(
    "kind",
    ["bytes", "bytearray", "memoryview", "numpy_rgb", "numpy_float", "mmap", "empty", "empty_2d"],
)
def test_buffer_kinds(make_pipe: type[Pipe], kind: str) -> None:
    raw = os.urandom(1920 * 1080 * 3)
    if kind == "bytes":
        data: object = raw
    elif kind == "bytearray":
        data = bytearray(raw)
    elif kind == "memoryview":
        data = memoryview(bytearray(raw))[100:-100]
    elif kind == "numpy_rgb":
        data = np.frombuffer(raw, np.uint8).reshape(1080, 1920, 3).copy()
    elif kind == "numpy_float":
        data = np.frombuffer(raw, np.float32).reshape(1080, -1).copy()
    elif kind == "empty_2d":
        data = np.zeros((2, 0), np.uint8)
    elif kind == "mmap":
        data = mmap.mmap(-1, len(raw))
        data.write(raw)
    else:
        data = b""
    expected = md5(bytes(memoryview(data)))  # type: ignore[arg-type]
    pipe = make_pipe()
    turbopipe.pipe(data, pipe.fd)
    turbopipe.sync(data)
    assert pipe.finish() == expected


def test_pipe_returns_before_the_bytes_are_written() -> None:
    read_fd, write_fd = os.pipe()
    payload = os.urandom(16 * MiB)  # far more than any pipe holds
    turbopipe.pipe(payload, write_fd)  # nobody reads yet: a blocking pipe() would hang here
    reader = Reader(read_fd)
    turbopipe.sync(payload)
    os.close(write_fd)
    assert reader.join() == md5(payload)


def test_piping_the_same_object_again_waits_for_its_write() -> None:
    read_fd, write_fd = os.pipe()
    frame = bytearray(os.urandom(8 * MiB))
    first = bytes(frame)
    turbopipe.pipe(frame, write_fd)
    second = in_thread(turbopipe.pipe, frame, write_fd)
    time.sleep(0.3)
    assert second.is_alive(), "second pipe() of a busy object must wait"
    reader = Reader(read_fd)
    second.join(timeout=30)
    assert not second.is_alive()
    turbopipe.sync()
    os.close(write_fd)
    assert reader.join() == md5(first, first)


def test_sync_of_an_object_waits_for_writes_of_its_memoryviews() -> None:
    read_fd, write_fd = os.pipe()
    frame = bytearray(os.urandom(8 * MiB))
    turbopipe.pipe(memoryview(frame), write_fd)
    waiter = in_thread(turbopipe.sync, frame)
    time.sleep(0.3)
    assert waiter.is_alive(), "sync(frame) returned while its memoryview was being written"
    reader = Reader(read_fd)
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    os.close(write_fd)
    assert reader.join() == md5(frame)


def test_a_piped_memoryview_cannot_be_released_until_written() -> None:
    """The engine holds the view itself, not only the memory it shares: releasing it while
    queued would let its owner resize or free that memory under the writer."""
    read_fd, write_fd = os.pipe()
    frame = bytearray(os.urandom(8 * MiB))
    view = memoryview(frame)
    turbopipe.pipe(view, write_fd)
    try:
        with pytest.raises(BufferError):
            view.release()
    finally:
        reader = Reader(read_fd)
    turbopipe.sync(frame)
    view.release()
    os.close(write_fd)
    assert reader.join() == md5(frame)


def test_sync_of_one_file_waits_only_for_it(make_pipe: type[Pipe]) -> None:
    stalled_read, stalled_write = os.pipe()
    flowing = make_pipe()
    turbopipe.pipe(os.urandom(8 * MiB), stalled_write)
    payload = os.urandom(4 * MiB)
    turbopipe.pipe(payload, flowing.fd)
    turbopipe.sync(file=flowing.fd)  # must not wait for the stalled pipe
    assert flowing.finish() == md5(payload)
    reader = Reader(stalled_read)
    turbopipe.sync(file=stalled_write)
    os.close(stalled_write)
    assert reader.join(), "stalled pipe delivered"


def test_queue_is_bounded_and_pipe_waits_for_room() -> None:
    read_fd, write_fd = os.pipe()
    items = make_payloads(40, 256 * 1024)

    def pipe_all() -> None:
        for item in items:
            turbopipe.pipe(item, write_fd)

    producer = in_thread(pipe_all)
    time.sleep(0.3)
    assert producer.is_alive(), "40 items into a stalled pipe must hit the queue bound"
    reader = Reader(read_fd)
    producer.join(timeout=30)
    assert not producer.is_alive()
    turbopipe.sync()
    os.close(write_fd)
    assert reader.join() == md5(*items)


def test_objects_deleted_after_pipe_still_arrive_intact(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    expected = []
    for _ in range(8):
        frame = np.random.randint(0, 255, (720, 1280, 3), dtype=np.uint8)
        expected.append(frame.tobytes())
        turbopipe.pipe(frame, pipe.fd)
        del frame
        gc.collect()
    turbopipe.sync()
    assert pipe.finish() == md5(*expected)


def test_references_are_dropped_after_sync(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    frame = bytearray(os.urandom(MiB))
    view = memoryview(frame)
    before = sys.getrefcount(frame), sys.getrefcount(view)
    for _ in range(20):
        turbopipe.pipe(view, pipe.fd)
    turbopipe.sync(frame)
    assert (sys.getrefcount(frame), sys.getrefcount(view)) == before
    view.release()  # refused while the engine still holds an export of it
    frame += b"x"  # refused while any export of frame is alive
    pipe.finish()


def test_several_files_from_several_threads(make_pipe: type[Pipe]) -> None:
    pipes = [make_pipe() for _ in range(4)]
    payloads = [make_payloads(12, MiB) for _ in pipes]

    def produce(pipe: Pipe, items: list[bytes]) -> None:
        for item in items:
            turbopipe.pipe(item, pipe.fd)
        turbopipe.sync(file=pipe.fd)

    threads = [in_thread(produce, pipe, items) for pipe, items in zip(pipes, payloads)]
    for thread in threads:
        thread.join(timeout=60)
    for pipe, items in zip(pipes, payloads):
        assert pipe.finish() == md5(*items)


def test_non_blocking_descriptor_with_a_slow_reader() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    payloads = make_payloads(6, 2 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, write_fd)
    time.sleep(0.2)  # the engine meets EAGAIN before anyone reads
    reader = Reader(read_fd)
    turbopipe.sync()
    os.close(write_fd)
    assert reader.join() == md5(*payloads)


def test_regular_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    payloads = make_payloads(5, 3 * MiB)
    with open(tmp_path / "out.bin", "wb") as file:
        for payload in payloads:
            turbopipe.pipe(payload, file.fileno())
        turbopipe.sync()
    assert md5((tmp_path / "out.bin").read_bytes()) == md5(*payloads)


def test_fifo(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    opened: list[Reader] = []
    opener = in_thread(lambda: opened.append(Reader(os.open(path, os.O_RDONLY))))
    fd = os.open(path, os.O_WRONLY)  # waits for the reader to open its end
    opener.join()
    payloads = make_payloads(5, 3 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, fd)
    turbopipe.sync()
    os.close(fd)
    assert opened[0].join() == md5(*payloads)


def test_socket() -> None:
    ours, theirs = socket.socketpair()
    reader = Reader(os.dup(theirs.fileno()))
    theirs.close()
    payloads = make_payloads(5, 3 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, ours.fileno())
    turbopipe.sync()
    ours.close()
    assert reader.join() == md5(*payloads)


@pytest.mark.parametrize(
    "options",
    [
        {"chunk": 4096},
        {"chunk": 65536, "pipe_size": 0},
        {"relay": False},
        {"relay": True, "chunk": 100_000, "pipe_size": 0},
    ],
)
def test_write_options(make_pipe: type[Pipe], options: dict[str, int]) -> None:
    pipe = make_pipe()
    payloads = make_payloads(4, 3 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, pipe.fd, **options)
    turbopipe.sync()
    assert pipe.finish() == md5(*payloads)


@pytest.mark.parametrize("size", [MiB, 1 << 40])
def test_pipe_is_grown(make_pipe: type[Pipe], size: int) -> None:
    pipe = make_pipe()
    turbopipe.pipe(b"x", pipe.fd, pipe_size=size)
    turbopipe.sync()
    # As far as allowed: unprivileged processes stop at /proc/sys/fs/pipe-max-size.
    limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    assert fcntl.fcntl(pipe.fd, F_GETPIPE_SZ) >= min(MiB, limit)
    pipe.finish()


def test_pipe_is_grown_when_a_later_item_asks(make_pipe: type[Pipe]) -> None:
    # The writer learns a pipe's size once; a larger pipe_size later must still apply.
    pipe = make_pipe()
    before = fcntl.fcntl(pipe.fd, F_GETPIPE_SZ)
    turbopipe.pipe(b"x", pipe.fd, pipe_size=0)
    turbopipe.sync()
    assert fcntl.fcntl(pipe.fd, F_GETPIPE_SZ) == before
    turbopipe.pipe(b"y", pipe.fd, pipe_size=MiB)
    turbopipe.sync()
    assert fcntl.fcntl(pipe.fd, F_GETPIPE_SZ) > before
    pipe.finish()


def test_a_fifo_reopened_is_grown_again(tmp_path: Path) -> None:
    # Closed on both sides, a FIFO starts over as a new pipe of the default size.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    for _ in range(2):
        reader = in_thread(lambda: Path(fifo).read_bytes())
        write_fd = os.open(fifo, os.O_WRONLY)
        turbopipe.pipe(bytes(100_000), write_fd, pipe_size=MiB)
        turbopipe.sync(file=write_fd)
        assert fcntl.fcntl(write_fd, F_GETPIPE_SZ) >= min(MiB, limit)
        os.close(write_fd)
        reader.join(timeout=60)


def test_vmsplice_failure_leaves_no_page_for_a_later_reader(tmp_path: Path) -> None:
    """The reader of a FIFO dies with the caller's pages spliced in the pipe. Once the
    failure is raised the memory is the caller's again: a later reader of the FIFO must
    not read it through those pages."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    read_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    write_fd = os.open(fifo, os.O_WRONLY)
    frame = bytearray(b"a" * (4 * MiB))
    turbopipe.pipe(frame, write_fd, vmsplice=True, pipe_size=0)
    time.sleep(0.3)  # the pipe is full, the rest of the frame waits
    os.close(read_fd)
    with pytest.raises(BrokenPipeError):
        turbopipe.sync(frame)
    frame[:] = b"b" * len(frame)
    later_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        seen = os.read(later_fd, MiB)
    except BlockingIOError:
        seen = b""
    os.close(later_fd)
    os.close(write_fd)
    assert b"b" not in seen


def test_vmsplice_tails_are_not_overwritten_before_they_are_read() -> None:
    """Items just over the pipe's size: their last pipe-full goes through the engine's own
    buffers, reused in turn while a slow reader still has earlier items to read."""
    read_fd, write_fd = os.pipe()  # 64 KiB
    items = [bytes([i]) * (64 * 1024 + 4096) for i in range(1, 41)]
    reader = Reader(read_fd, chunk=16 * 1024, pause=0.0005)
    for item in items:
        turbopipe.pipe(item, write_fd, pipe_size=0, vmsplice=True)
    turbopipe.sync()
    os.close(write_fd)
    assert reader.join() == md5(*items)


def test_vmsplice_when_the_pipe_grows_during_an_item() -> None:
    """The engine splices an item against the pipe's size at its start; somebody grows
    the pipe meanwhile. Its last pipe-full of the old size no longer proves the reader
    took the spliced pages, so sync() must wait until the pipe is empty."""
    read_fd, write_fd = os.pipe()  # 64 KiB
    reader = Reader(read_fd, keep=True, chunk=64 * 1024, pause=0.001)
    frame = np.full(8 * MiB, 2, np.uint8)
    turbopipe.pipe(frame, write_fd, pipe_size=0, vmsplice=True)
    time.sleep(0.03)  # the engine is splicing the first megabytes
    try:
        fcntl.fcntl(write_fd, F_SETPIPE_SZ, MiB)
    except PermissionError:
        pytest.skip("needs a 1 MiB pipe (/proc/sys/fs/pipe-max-size)")
    turbopipe.sync(frame)
    frame[:] = 0  # the memory is ours again
    os.close(write_fd)
    reader.join()
    assert reader.data == np.full(8 * MiB, 2, np.uint8).tobytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="becomes another user to be denied reading")
def test_vmsplice_needs_a_way_to_empty_the_pipe() -> None:
    """A FIFO its writer may not read: if its reader died, the engine could not empty it of
    spliced pages, and a later reader would read the caller's memory as it is then. So
    the engine copies instead."""
    folder = tempfile.TemporaryDirectory()  # in /tmp: the other user can reach it
    Path(folder.name).chmod(0o755)
    fifo = Path(folder.name) / "fifo"
    os.mkfifo(fifo)
    fifo.chmod(0o622)  # others may write, not read
    result = run_with_engine(
        f"""
        import os, time
        reader = os.open({str(fifo)!r}, os.O_RDONLY | os.O_NONBLOCK)
        pid = os.fork()
        if pid == 0:
            os.close(reader)  # else the pipe never lacks a reader
            os.setgid(65534)
            os.setuid(65534)
            write_fd = os.open({str(fifo)!r}, os.O_WRONLY)
            frame = bytearray(b"a" * (4 << 20))
            turbopipe.pipe(frame, write_fd, vmsplice=True, pipe_size=0)
            time.sleep(0.6)  # the reader dies meanwhile
            try:
                turbopipe.sync(frame)
            except BrokenPipeError:
                pass
            frame[:] = b"b" * len(frame)
            time.sleep(1.0)  # a later reader comes meanwhile
            os._exit(0)
        time.sleep(0.3)
        os.close(reader)
        time.sleep(0.8)
        later = os.open({str(fifo)!r}, os.O_RDONLY | os.O_NONBLOCK)
        try:
            seen = os.read(later, 1 << 20)
        except BlockingIOError:
            seen = b""
        os.waitpid(pid, 0)
        print("saw", sorted(set(seen)))
        """
    )
    folder.cleanup()
    assert "saw" in result.stdout, result.stderr
    assert "98" not in result.stdout  # no b"b": nothing of the changed memory


def test_vmsplice_when_the_pipe_grew_behind_the_engines_back() -> None:
    """The engine learned the pipe's size on the first item; then somebody grows it. The
    last pipe-capacity bytes of an item no longer prove that the reader took the spliced
    pages, so sync() must wait until the pipe is empty before the memory is changed."""
    read_fd, write_fd = os.pipe()
    reader = Reader(read_fd, keep=True, chunk=64 * 1024, pause=0.001)
    first = np.full(MiB, 1, np.uint8)
    turbopipe.pipe(first, write_fd, pipe_size=0, vmsplice=True)
    turbopipe.sync(first)
    try:
        fcntl.fcntl(write_fd, F_SETPIPE_SZ, MiB)
    except PermissionError:
        pytest.skip("needs a 1 MiB pipe (/proc/sys/fs/pipe-max-size)")
    frame = np.full(4 * MiB, 2, np.uint8)
    turbopipe.pipe(frame, write_fd, pipe_size=0, vmsplice=True)
    turbopipe.sync(frame)
    frame[:] = 0  # the memory is ours again
    os.close(write_fd)
    reader.join()
    assert reader.data == first.tobytes() + np.full(4 * MiB, 2, np.uint8).tobytes()


def test_vmsplice_never_lets_the_reader_see_later_changes() -> None:
    read_fd, write_fd = os.pipe()
    reader = Reader(read_fd)
    frame = np.zeros(8 * MiB, np.uint8)
    expected = []
    for value in range(1, 9):
        frame[:] = value
        expected.append(frame.tobytes())
        turbopipe.pipe(frame, write_fd, vmsplice=True)
        turbopipe.sync(frame)  # after this the memory is ours again
    frame[:] = 0
    os.close(write_fd)
    assert reader.join() == md5(*expected)


@pytest.mark.skipif(not hasattr(os, "splice"), reason="the reader needs os.splice (3.10)")
@pytest.mark.parametrize("vmsplice", [False, True])
def test_a_reader_that_splices_onward(engine: str, vmsplice: bool) -> None:
    """The reader moves our pages into another pipe and reads them only after sync()
    returned and the memory was changed. With the relay (the default) it still sees what
    was piped. With vmsplice=True the native engine splices the memory's own pages, so
    this reader sees the change: why vmsplice is off by default."""
    ours_read, ours_write = os.pipe()
    onward_read, onward_write = os.pipe()
    frame = np.full(MiB // 2, 7, np.uint8)
    piped = frame.tobytes()
    try:
        fcntl.fcntl(onward_write, F_SETPIPE_SZ, MiB)  # holds the whole frame, in any pages
    except PermissionError:
        pytest.skip("needs a 1 MiB pipe (/proc/sys/fs/pipe-max-size)")

    def splice_onward() -> None:
        moved = 0
        while moved < frame.nbytes:
            moved += os.splice(ours_read, onward_write, frame.nbytes - moved)

    splicer = threading.Thread(target=splice_onward)
    splicer.start()
    turbopipe.pipe(frame, ours_write, pipe_size=128 * 1024, vmsplice=vmsplice)
    turbopipe.sync(frame)
    splicer.join()
    frame[:] = 0  # the memory is ours again
    os.close(onward_write)
    arrived = Reader(onward_read).join()
    for fd in (ours_read, ours_write):
        os.close(fd)
    if vmsplice and engine == "native":
        assert arrived != md5(piped)
    else:
        assert arrived == md5(piped)


@pytest.mark.parametrize("vmsplice", [False, True])
def test_a_packet_mode_pipe_keeps_its_packets(vmsplice: bool) -> None:
    """An O_DIRECT pipe makes a packet of each write() (at most PIPE_BUF bytes), and a
    read() returns one packet: spliced pages would not be packets."""
    read_fd, write_fd = os.pipe2(os.O_DIRECT)
    reads: list[int] = []

    def read_all() -> None:
        while chunk := os.read(read_fd, MiB):
            reads.append(len(chunk))

    reader = in_thread(read_all)
    turbopipe.pipe(os.urandom(256 * 1024), write_fd, vmsplice=vmsplice)
    turbopipe.sync()
    os.close(write_fd)
    reader.join(timeout=60)
    os.close(read_fd)
    assert sum(reads) == 256 * 1024
    assert max(reads) <= select.PIPE_BUF


def test_small_items_fill_a_pipe_as_write_would() -> None:
    """A 64 KiB pipe nobody reads yet holds 60 items of 1000 bytes: sync() returns."""
    result = run_with_engine(
        """
        import os
        read_fd, write_fd = os.pipe()
        items = [bytes([i]) * 1000 for i in range(60)]
        for item in items:
            turbopipe.pipe(item, write_fd, pipe_size=0)
        turbopipe.sync()
        os.close(write_fd)
        assert os.read(read_fd, 1 << 20) == b"".join(items)
        """
    )
    assert result.returncode == 0, result.stderr


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


def test_caller_closing_its_descriptor_does_not_cut_queued_writes() -> None:
    read_fd, write_fd = os.pipe()
    payloads = make_payloads(4, 4 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, write_fd)
    os.close(write_fd)  # the engine holds its own descriptor until the bytes are out
    reader = Reader(read_fd)
    turbopipe.sync()
    assert reader.join() == md5(*payloads)


def descriptors_of(fd: int) -> list[int]:
    """This process's descriptors naming the same file (pipe) as fd, fd included."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    numbers = [int(name) for name in os.listdir("/proc/self/fd")]
    return [
        n
        for n in numbers
        if os.path.exists(f"/proc/self/fd/{n}") and os.readlink(f"/proc/self/fd/{n}") == target
    ]


def test_once_written_the_engine_holds_no_descriptor_of_the_pipe() -> None:
    """The engine's duplicates are closed before sync() returns: the reader sees end of
    file as soon as the caller closes its own descriptor."""
    read_fd, write_fd = os.pipe()
    reader = Reader(read_fd)
    payloads = make_payloads(8, 1 * MiB)
    for payload in payloads:
        turbopipe.pipe(payload, write_fd)
    turbopipe.sync()
    assert sorted(descriptors_of(write_fd)) == sorted([write_fd, read_fd])
    os.close(write_fd)
    assert reader.join() == md5(*payloads)


def test_the_read_end_of_a_pipe_being_written_is_refused() -> None:
    read_fd, write_fd = os.pipe()
    stalled = os.urandom(4 * MiB)  # nobody reads yet: its stream stays open
    turbopipe.pipe(stalled, write_fd)
    with pytest.raises(OSError) as raised:
        turbopipe.pipe(b"to the read end", read_fd)
    assert raised.value.errno == errno.EBADF
    reader = Reader(read_fd)
    turbopipe.sync(stalled)
    os.close(write_fd)
    assert reader.join() == md5(stalled)


def test_a_reused_fd_number_is_a_new_file(tmp_path: Path) -> None:
    """Closed and reused by an open(): old bytes go to the old pipe, new ones to the new
    file, which does not wait behind (or share the failure of) the old pipe."""
    old_read, fd = os.pipe()
    old = os.urandom(4 * MiB)
    turbopipe.pipe(old, fd)  # stalls: nobody reads the old pipe yet
    os.close(fd)
    assert os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT) == fd  # the lowest free
    turbopipe.pipe(b"new bytes", fd)
    turbopipe.sync(file=fd)  # would hang behind the stalled old pipe
    os.close(fd)
    assert (tmp_path / "new").read_bytes() == b"new bytes"
    old_reader = Reader(old_read)
    turbopipe.sync(old)
    assert old_reader.join() == md5(old)


def test_sync_of_a_reused_number_waits_for_the_file_it_names_now(tmp_path: Path) -> None:
    """Even with nothing piped to the new file yet, sync(file=n) does not wait behind the
    old pipe."""
    old_read, fd = os.pipe()
    old = os.urandom(4 * MiB)
    turbopipe.pipe(old, fd)  # stalls: nobody reads the old pipe yet
    new = os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT)
    os.dup2(new, fd)
    turbopipe.sync(file=fd)  # would hang behind the stalled old pipe
    for descriptor in (fd, new):
        os.close(descriptor)
    old_reader = Reader(old_read)
    turbopipe.sync(old)
    assert old_reader.join() == md5(old)


def test_sync_of_a_closed_number_that_the_engine_took() -> None:
    """Once the caller closed n, the engine's own duplicate of another file may take
    number n: sync(file=n) still waits for the file n named, not for that one."""
    read1, write1 = os.pipe()
    read2, write2 = os.pipe()
    first, second = os.urandom(4 * MiB), os.urandom(4 * MiB)
    turbopipe.pipe(first, write1)  # stalls: nobody reads yet
    os.close(write1)
    turbopipe.pipe(second, write2)  # stalls too; its duplicate takes the lowest free number
    assert os.readlink(f"/proc/self/fd/{write1}") == os.readlink(f"/proc/self/fd/{write2}")
    reader1 = Reader(read1)
    turbopipe.sync(file=write1)  # would wait behind the second, stalled pipe
    assert reader1.join() == md5(first)
    reader2 = Reader(read2)
    turbopipe.sync()
    os.close(write2)
    assert reader2.join() == md5(second)


def test_the_same_file_again_through_a_reused_number_keeps_its_order() -> None:
    """fd n names pipe X, then Y, then X again: X's bytes stay in order, never interleaved."""
    x_read, x_write = os.pipe()
    y_read, y_write = os.pipe()
    y_reader = Reader(y_read)
    n = os.dup(x_write)
    first, second = b"A" * (4 * MiB), b"C" * (4 * MiB)
    turbopipe.pipe(first, n)  # X stalls: nobody reads it yet
    os.dup2(y_write, n)
    turbopipe.pipe(b"y", n)
    os.dup2(x_write, n)
    turbopipe.pipe(second, n)
    x_reader = Reader(x_read, keep=True)
    turbopipe.sync()
    for fd in (n, x_write, y_write):
        os.close(fd)
    x_reader.join()
    assert bytes(x_reader.data or b"") == first + second
    assert y_reader.join() == md5(b"y")


def test_idle_writer_threads_exit_on_their_own() -> None:
    """A program that writes many files does not keep a thread per file until close()."""
    baseline = threading.active_count(), len(os.listdir("/proc/self/task"))
    for _ in range(20):
        pipe = Pipe()
        turbopipe.pipe(b"x" * 1000, pipe.fd)
        turbopipe.sync(file=pipe.fd)
        pipe.finish()
    time.sleep(2.5)  # workers leave after 2 s without work
    turbopipe.sync()  # joins them
    assert (threading.active_count(), len(os.listdir("/proc/self/task"))) <= baseline


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


@pytest.mark.parametrize("wait", ["sync", "sync_file", "close"])
def test_waits_end_while_another_thread_keeps_piping(wait: str) -> None:
    """sync() and close() wait for what was queued before they were called: another
    thread that keeps the queue full cannot keep them waiting."""
    read_fd, write_fd = os.pipe()
    reader = Reader(read_fd, chunk=64 * 1024, pause=0.001)
    payloads = make_payloads(8, 256 * 1024)
    piped: list[bytes] = []
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            payload = payloads[len(piped) % len(payloads)]
            turbopipe.pipe(payload, write_fd)
            piped.append(payload)

    producer = in_thread(produce)
    time.sleep(0.2)
    waits = {"sync": turbopipe.sync, "sync_file": lambda: turbopipe.sync(file=write_fd)}
    waited = in_thread(waits.get(wait, turbopipe.close))
    waited.join(timeout=10)
    returned = not waited.is_alive()
    stop.set()
    producer.join(timeout=60)
    turbopipe.sync()
    os.close(write_fd)
    assert returned, f"{wait} waited for the other thread's later writes"
    assert reader.join() == md5(*piped)


def test_interpreter_exit_flushes_queued_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
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


def test_numpy_frames_through_ffmpeg(ffmpeg_exe: str) -> None:
    width, height = 320, 240
    frames = [np.random.randint(0, 255, (height, width, 3), np.uint8) for _ in range(30)]
    ffmpeg = subprocess.Popen(
        [ffmpeg_exe, "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
         f"{width}x{height}", "-i", "-", "-f", "rawvideo", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert ffmpeg.stdin is not None and ffmpeg.stdout is not None
    reader = Reader(os.dup(ffmpeg.stdout.fileno()))
    for frame in frames:
        turbopipe.pipe(frame, ffmpeg.stdin.fileno())
    turbopipe.sync()
    ffmpeg.stdin.close()
    assert ffmpeg.wait(timeout=60) == 0
    ffmpeg.stdout.close()
    assert reader.join() == md5(*frames)


def test_keyword_spellings_of_both_published_generations(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    turbopipe.pipe(data=b"2.x ", file=pipe.fd)
    turbopipe.pipe(buffer=b"1.x", fileno=pipe.fd)
    turbopipe.sync(data=b"")
    turbopipe.sync(buffer=b"")
    turbopipe.sync()
    turbopipe.close(pipe.fd)  # 2.0's close(file)
    assert pipe.finish() == md5(b"2.x 1.x")
    with pytest.raises(TypeError):
        turbopipe.pipe(b"x")
    with pytest.raises(TypeError):
        turbopipe.pipe(file=pipe.fd)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("yes", True), ("On", True), ("0", False), ("false", False), ("Auto", "auto"),
     (None, "auto")],
)  # fmt: skip
def test_flag_variables_read_as_written(text: str | None, expected: bool | str) -> None:
    env = {key: value for key, value in os.environ.items() if key != "TURBOPIPE_VMSPLICE"}
    if text is not None:
        env["TURBOPIPE_VMSPLICE"] = text
    result = subprocess.run(
        [sys.executable, "-c", "import turbopipe._api; print(turbopipe._api._VMSPLICE)"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.stdout.strip() == str(expected), result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TURBOPIPE_CHUNK_SIZE": "8192"}, 8192),
        ({"TURBOPIPE_CHUNK": "4096", "TURBOPIPE_CHUNK_SIZE": "8192"}, 4096),
    ],
)
def test_the_chunk_variable_of_2x_is_read_too(env: dict[str, str], expected: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import turbopipe._api; print(turbopipe._api._DEFAULT_OPTIONS[0])"],
        env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.stdout.strip() == str(expected), result.stderr


def test_a_flag_variable_of_another_kind_raises() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import turbopipe"],
        env={**os.environ, "TURBOPIPE_RELAY": "maybe"}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "TURBOPIPE_RELAY must be" in result.stderr


def test_waits_can_be_interrupted() -> None:
    result = run_with_engine(
        """
        import os, signal, threading
        # A shell's background job inherits SIGINT ignored: have Python's handler anyway.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        read_fd, write_fd = os.pipe()
        turbopipe.pipe(bytes(8 << 20), write_fd)  # nobody reads: sync() would wait forever
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            turbopipe.sync()
        except KeyboardInterrupt:
            print("interrupted")
        os.close(read_fd)  # the write now fails: close() at exit reports it
        """
    )
    assert "interrupted" in result.stdout, result.stderr
    assert "BrokenPipeError" in result.stderr
    assert result.returncode == 0


def test_fork_with_writes_queued(tmp_path) -> None:  # type: ignore[no-untyped-def]
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
    result = run_with_engine(
        """
        import os, select, signal, time
        read_fd, write_fd = os.pipe()
        turbopipe.pipe(b"x" * (4 << 20), write_fd)  # stalls: nobody reads yet
        child = os.fork()
        if child == 0:
            os.close(write_fd)  # all the child knows of
            time.sleep(60)
            os._exit(0)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        received, deadline = 0, time.monotonic() + 20
        while time.monotonic() < deadline:
            select.select([read_fd], [], [], 0.5)
            try:
                chunk = os.read(read_fd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                break
            received += len(chunk)
        else:
            received = -1  # no end of file while the child lives
        turbopipe.sync()
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        print(received)
        """
    )
    assert result.stdout.strip() == str(4 << 20), result.stderr


def test_a_signal_storm_interrupts_nothing(make_pipe: type[Pipe]) -> None:
    """Signals land on the writer threads too; their write()s see EINTR and go on."""
    pipe = make_pipe()
    payloads = make_payloads(24, 2 * MiB)
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.0002)

    storming = in_thread(storm)
    try:
        for payload in payloads:
            turbopipe.pipe(payload, pipe.fd)
        turbopipe.sync()
    finally:
        stop.set()
        storming.join()
        signal.signal(signal.SIGUSR1, previous)
    assert pipe.finish() == md5(*payloads)


def test_items_larger_than_2_gib() -> None:
    """More than one write() can take: untouched anonymous pages into /dev/null."""
    huge = mmap.mmap(-1, (2 << 30) + 12345)
    fd = os.open(os.devnull, os.O_WRONLY)
    turbopipe.pipe(huge, fd)
    turbopipe.sync(huge)
    os.close(fd)
    huge.close()  # refused while an export is alive


def test_a_long_run_holds_no_memory_or_references() -> None:
    small = [os.urandom(64) for _ in range(8)]
    large = bytearray(MiB)
    fd = os.open(os.devnull, os.O_WRONLY)
    before_refs = [sys.getrefcount(item) for item in [*small, large]]

    def run(small_items: int, large_items: int) -> None:
        for i in range(small_items):
            turbopipe.pipe(small[i % len(small)], fd)
        for _ in range(large_items):
            turbopipe.pipe(large, fd)
        turbopipe.sync()

    run(10_000, 200)  # warm up allocators
    rss = resident_bytes()
    run(100_000, 2_000)
    assert resident_bytes() - rss < 16 * MiB
    assert [sys.getrefcount(item) for item in [*small, large]] == before_refs
    os.close(fd)


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
