"""What the programs here share about pipes."""

import select
import time


def wait_full(write_fd: int) -> None:
    """Until the pipe of write end `write_fd` has no room: a writer of it waits."""
    poller = select.poll()
    poller.register(write_fd, select.POLLOUT)
    deadline = time.monotonic() + 10
    while poller.poll(0):
        assert time.monotonic() < deadline, "the pipe did not fill"
        time.sleep(0.002)
