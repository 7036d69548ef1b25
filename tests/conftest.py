from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import pytest

import turbopipe
import turbopipe._api
from turbopipe import _core, _python

ENGINES: dict[str, ModuleType] = {"native": _core, "python": _python}


@pytest.fixture(autouse=True, params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run every test against the native engine and the Python engine.

    Teardown closes the engine: a test that leaves a failure unreported fails here.
    """
    monkeypatch.setattr(turbopipe._api, "_engine", ENGINES[request.param])
    yield request.param
    turbopipe.close()


class Reader:
    """Drains the read end of a pipe on a thread, keeping a digest and a byte count; a
    slow reader reads `chunk` bytes at a time and sleeps `pause` seconds after each."""

    def __init__(self, fd: int, keep: bool = False, chunk: int = 1 << 20, pause: float = 0) -> None:
        self.fd = fd
        self.digest = hashlib.md5()
        self.count = 0
        self.data = bytearray() if keep else None
        self.chunk = chunk
        self.pause = pause
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self.fd, self.chunk):
            self.digest.update(chunk)
            self.count += len(chunk)
            if self.data is not None:
                self.data += chunk
            if self.pause:
                time.sleep(self.pause)

    def join(self) -> str:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "reader did not see end of file"
        os.close(self.fd)
        return self.digest.hexdigest()


class Pipe:
    """A real pipe: write end `fd` for turbopipe, drained by a Reader."""

    def __init__(self, keep: bool = False) -> None:
        read_fd, self.fd = os.pipe()
        self.reader = Reader(read_fd, keep)

    def finish(self) -> str:
        """Close the write end and return the md5 of everything read."""
        os.close(self.fd)
        return self.reader.join()


@pytest.fixture
def make_pipe() -> Iterator[type[Pipe]]:
    yield Pipe


class FFmpegPassthrough:
    """A real FFmpeg reading rgb24 frames on stdin (`fd`, for turbopipe) and writing them
    back out as read, drained by a Reader: finish() gives the md5 of what it received."""

    def __init__(self, ffmpeg: str, width: int, height: int) -> None:
        self.process = subprocess.Popen(
            [ffmpeg, "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
             "-s", f"{width}x{height}", "-i", "-", "-f", "rawvideo", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        self.fd = self.process.stdin.fileno()
        self.reader = Reader(os.dup(self.process.stdout.fileno()))

    def finish(self) -> str:
        """Close FFmpeg's input, check it exited cleanly; the md5 of everything it read."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0
        self.process.stdout.close()
        return self.reader.join()


def md5(*parts: bytes | memoryview) -> str:
    digest = hashlib.md5()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


@pytest.fixture(scope="session")
def _gl_session():  # type: ignore[no-untyped-def]
    import moderngl

    context = moderngl.create_standalone_context(backend="egl")
    yield context
    context.release()


@pytest.fixture
def gl_context(_gl_session):  # type: ignore[no-untyped-def]
    """A real OpenGL context: Mesa llvmpipe through EGL, no display needed.

    Shared by the session; each test must leave it without a GL error.
    """
    yield _gl_session
    assert _gl_session.error == "GL_NO_ERROR"


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def run_with_engine(
    script: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run script in a fresh interpreter, on the engine under test (TURBOPIPE_ENGINE), with
    `env` added to the environment."""
    engine = "native" if turbopipe._api._engine is _core else "python"
    return subprocess.run(
        [sys.executable, "-c", "import sys, turbopipe\n" + textwrap.dedent(script)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "TURBOPIPE_ENGINE": engine, **(env or {})},
    )  # fmt: skip
