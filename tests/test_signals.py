"""Signals: a storm of them interrupts no write (the writer threads see EINTR and go on);
Ctrl-C interrupts a wait, and raised anywhere inside a call it loses no item that pipe()
took, breaks none and leaks no descriptor."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

import turbopipe
from conftest import Pipe, md5
from engine_helpers import MiB, in_thread, make_payloads, run_program


def test_a_signal_storm_interrupts_nothing(make_pipe: type[Pipe]) -> None:
    """Signals land on the writer threads too; their write()s see EINTR and go on."""
    pipe = make_pipe()
    payloads = make_payloads(24, 2 * MiB)
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.0002)  # the storm's pace

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


def test_waits_can_be_interrupted() -> None:
    result = run_program("interrupted_wait.py")
    assert "interrupted" in result.stdout, result.stderr
    # close() at exit reports the write the closed reader failed, and the exit status says so
    assert "turbopipe: at exit, not written whole: BrokenPipeError" in result.stderr
    assert result.returncode == 1


@pytest.mark.parametrize("which", ["pipe", "sync", "sync_all"])
def test_a_ctrl_c_anywhere_in_a_call_loses_breaks_and_leaks_nothing(which: str) -> None:
    result = run_program("ctrl_c_everywhere.py", which)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"interrupted at [1-9]\d* points", result.stdout)
