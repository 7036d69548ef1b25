"""Randomized sequences of pipe / sync / done / close over several fds, objects and threads,
checked against a model of what each reader must receive."""

from __future__ import annotations

import os
import threading

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import turbopipe
from conftest import Reader

FDS = 3
SIZES = st.sampled_from([0, 1, 4096, 65537, 300_000, 1_100_000])


class PipeSequences(RuleBasedStateMachine):
    @initialize(count=st.integers(1, FDS))
    def open_pipes(self, count: int) -> None:
        self.pipes: list[tuple[int, Reader]] = []
        for _ in range(count):
            read_fd, write_fd = os.pipe()
            self.pipes.append((write_fd, Reader(read_fd, keep=True)))
        self.expected = [bytearray() for _ in self.pipes]
        self.objects: list[bytes] = []

    def _pipe(self, index: int, data: bytes) -> None:
        fd, _ = self.pipes[index % len(self.pipes)]
        turbopipe.pipe(data, fd)
        self.expected[index % len(self.pipes)] += data

    @rule(index=st.integers(0, FDS - 1), size=SIZES, seed=st.integers(0, 255))
    def pipe_new_object(self, index: int, size: int, seed: int) -> None:
        data = bytes([seed]) * size
        self.objects.append(data)
        self._pipe(index, data)

    @rule(index=st.integers(0, FDS - 1), which=st.integers(0, 1000))
    def pipe_an_object_again(self, index: int, which: int) -> None:
        if self.objects:
            self._pipe(index, self.objects[which % len(self.objects)])

    @rule(index=st.integers(0, FDS - 1), size=SIZES, seed=st.integers(0, 255))
    def pipe_from_another_thread(self, index: int, size: int, seed: int) -> None:
        data = bytes([seed ^ 0x5A]) * size
        thread = threading.Thread(target=self._pipe, args=(index, data))
        thread.start()
        thread.join()

    @rule(which=st.integers(0, 1000))
    def sync_an_object(self, which: int) -> None:
        if self.objects:
            turbopipe.sync(self.objects[which % len(self.objects)])

    @rule(which=st.integers(0, 1000))
    def done_with_an_object(self, which: int) -> None:
        if self.objects:
            turbopipe.done(self.objects.pop(which % len(self.objects)))

    @rule(index=st.integers(0, FDS - 1))
    def sync_a_file(self, index: int) -> None:
        turbopipe.sync(file=self.pipes[index % len(self.pipes)][0])

    @rule()
    def sync_everything(self) -> None:
        turbopipe.sync()

    @rule()
    def close(self) -> None:
        turbopipe.close()

    @invariant()
    def readers_never_get_ahead_of_the_model(self) -> None:
        for (_, reader), expected in zip(self.pipes, self.expected):
            assert reader.count <= len(expected)

    def teardown(self) -> None:
        turbopipe.close()
        for (fd, reader), expected in zip(self.pipes, self.expected):
            os.close(fd)
            reader.join()
            assert bytes(reader.data or b"") == bytes(expected)


def test_random_sequences() -> None:
    run_state_machine_as_test(
        PipeSequences, settings=settings(max_examples=150, stateful_step_count=50, deadline=None)
    )
