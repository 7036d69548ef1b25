"""FFmpeg: find the binary, run it as a child reading raw frames, report its failures.

FFmpeg's stderr is drained all the time by a thread: a stderr pipe that nobody reads fills
up and stalls FFmpeg forever. The last lines are kept for the exception that reports a
failure.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence

ENV_VAR = "TURBOPIPE_FFMPEG"
_TAIL_LINES = 30


class FFmpegNotFoundError(FileNotFoundError):
    """No FFmpeg binary was found in any of the places searched."""


class FFmpegError(RuntimeError):
    """FFmpeg failed: refused its arguments, could not write its output, or died."""

    def __init__(self, message: str, argv: Sequence[str], returncode: int | None, tail: str):
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = tail

    def __str__(self) -> str:
        said = f"\nFFmpeg said:\n{self.stderr_tail}" if self.stderr_tail else ""
        return f"{self.args[0]}\ncommand: {' '.join(self.argv)}{said}"


def ended(returncode: int | None) -> str:
    """How a process ended, from its return code: "failed with status 1", or "was killed
    by SIGKILL (status -9)" for the negated signal number subprocess reports."""
    if returncode is None:
        return "is still running"
    if returncode >= 0:
        return f"failed with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name} (status {returncode})"


def find_ffmpeg(explicit: str | os.PathLike[str] | None = None) -> str:
    """Path of the FFmpeg binary to run.

    Searched in order: ``explicit``, the TURBOPIPE_FFMPEG environment variable, ``ffmpeg``
    on PATH, then the binary shipped by the ``imageio-ffmpeg`` package
    (``pip install turbopipe[ffmpeg]``).
    """
    for candidate, origin in ((explicit, "argument"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if candidate:
            path = shutil.which(os.fspath(candidate))
            if path is None:
                raise FFmpegNotFoundError(
                    f"FFmpeg from the {origin} is not found or not executable: {candidate}"
                )
            return path
    path = shutil.which("ffmpeg")
    if path:
        return path
    try:
        import imageio_ffmpeg
    except ImportError:
        pass
    else:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    raise FFmpegNotFoundError(
        "FFmpeg not found: pass its path, set TURBOPIPE_FFMPEG, put ffmpeg on PATH, "
        "or install the imageio-ffmpeg package (pip install 'turbopipe[ffmpeg]')"
    )


class FFmpegProcess:
    """An FFmpeg child reading from its stdin, with its stderr drained into a tail.

    A forked child of ours closes its copy of every FFmpeg's stdin at once: a child that
    outlived our close would keep FFmpeg from seeing end of input, and us waiting for it.
    """

    def __init__(self, argv: Sequence[str], pipe_size: int = 0) -> None:
        self.argv = list(argv)
        options = {"pipesize": pipe_size} if pipe_size and sys.version_info >= (3, 10) else {}
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=None,  # ours: an output of "-" (or pipe:1) goes where our stdout goes
            stderr=subprocess.PIPE,
            # Its own session: a terminal's Ctrl-C reaches our program, which then closes
            # the writer, and not FFmpeg, which would exit with status 255 meanwhile.
            start_new_session=True,
            **options,  # type: ignore[call-overload]
        )
        assert self._process.stdin is not None
        # Kept as a number: turbopipe.sync(file=...) may need it after stdin is closed.
        self.stdin_fd = self._process.stdin.fileno()
        _started.add(self)
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._drain = threading.Thread(target=self._read_stderr, name="ffmpeg-stderr", daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        with self._process.stderr as stderr:
            for line in stderr:
                self._tail.append(line.decode(errors="replace").rstrip())

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    def tail(self) -> str:
        return "\n".join(self._tail)

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def finish(self, timeout: float | None = None) -> None:
        """Close FFmpeg's stdin, wait for it to exit, raise FFmpegError unless it succeeded."""
        self._close_stdin()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise self._error(f"FFmpeg did not finish within {timeout} s") from None
        self._drain.join(timeout=5)
        if self._process.returncode != 0:
            raise self._error(f"FFmpeg {ended(self._process.returncode)}")

    def died(self, timeout: float = 5.0) -> FFmpegError:
        """The error to raise after a write to FFmpeg failed: waits briefly for its exit."""
        self._close_stdin()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._drain.join(timeout=5)
        if self._process.returncode == 0:
            return self._error(
                "FFmpeg exited with status 0 before reading every frame, as -frames:v or -t"
                " among its arguments make it"
            )
        return self._error(f"FFmpeg stopped reading: it {ended(self._process.returncode)}")

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._close_stdin()
        self._drain.join(timeout=5)

    def _close_stdin(self) -> None:
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()

    def _error(self, message: str) -> FFmpegError:
        return FFmpegError(message, self.argv, self._process.returncode, self.tail())


_started: weakref.WeakSet[FFmpegProcess] = weakref.WeakSet()


def _close_stdins_in_child() -> None:
    for process in list(_started):
        process._close_stdin()


os.register_at_fork(after_in_child=_close_stdins_in_child)
