"""pipe() returns at once; sync(data), sync(file=), sync() and close() wait for the writes
they name, queued before the call, and for no others; pipe() waits for a busy object and
for room in a full queue. A reader starts only once the wait is seen, so a call that did
not wait fails the test instead of passing by luck."""

from __future__ import annotations

import os
import threading

import pytest

import turbopipe
from conftest import Pipe, Reader, md5
from engine_helpers import QUEUE_LIMIT, MiB, blocks, in_thread, make_payloads, wait_until


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
    assert blocks(second), "second pipe() of a busy object must wait"
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
    assert blocks(waiter), "sync(frame) returned while its memoryview was being written"
    reader = Reader(read_fd)
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    os.close(write_fd)
    assert reader.join() == md5(frame)


def test_sync_of_one_file_waits_only_for_it(make_pipe: type[Pipe]) -> None:
    stalled_read, stalled_write = os.pipe()
    flowing = make_pipe()
    stalled = os.urandom(8 * MiB)
    turbopipe.pipe(stalled, stalled_write)
    payload = os.urandom(4 * MiB)
    turbopipe.pipe(payload, flowing.fd)
    turbopipe.sync(file=flowing.fd)  # must not wait for the stalled pipe
    assert flowing.finish() == md5(payload)
    reader = Reader(stalled_read)
    turbopipe.sync(file=stalled_write)
    os.close(stalled_write)
    assert reader.join() == md5(stalled), "the stalled pipe got its bytes once read"


def test_queue_is_bounded_and_pipe_waits_for_room() -> None:
    read_fd, write_fd = os.pipe()
    items = make_payloads(40, 256 * 1024)

    def pipe_all() -> None:
        for item in items:
            turbopipe.pipe(item, write_fd)

    producer = in_thread(pipe_all)
    assert blocks(producer), "40 items into a stalled pipe must hit the queue bound"
    reader = Reader(read_fd)
    producer.join(timeout=30)
    assert not producer.is_alive()
    turbopipe.sync()
    os.close(write_fd)
    assert reader.join() == md5(*items)


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
    wait_until(lambda: len(piped) > QUEUE_LIMIT, "the other thread keeping the queue full")
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
