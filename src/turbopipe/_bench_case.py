"""One benchmark case, run in a fresh interpreter.

- run(): pipe N frames of moderngl buffers to ``ffmpeg ... -f null -``. Standalone on
  purpose (no imports from this package): ``--reference PYTHON`` runs it with another
  interpreter, where ``import turbopipe`` finds a different turbopipe. The turbopipe cases
  also record ``stats(fd).path`` and, after the timed run, the time of pipe() for a numpy
  array of a frame's size (NUMPY_CALLS calls, not counted in the run's numbers).
- run_writer(): write N frames (numpy arrays, or the demo shader rendered on moderngl) into
  an H.264 file by one way of writing video from Python (plain, imageio, pyav, or
  turbopipe's VideoWriter), end to end.

Usage: python _bench_case.py '{"method": ..., "width": ..., ...}'; prints one JSON line.
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

NUMPY_CALLS = 64  # timed pipe() calls of numpy arrays, after the run
NUMPY_ROUND = 8  # arrays piped between two syncs: the queue (16 deep) always has room

ENCODERS = {
    "null": [],
    "ultrafast": ["-c:v", "libx264", "-preset", "ultrafast"],
    "slow": ["-c:v", "libx264", "-preset", "slow"],
}


def run(case: dict[str, Any]) -> dict[str, Any]:
    import moderngl
    import numpy as np

    width, height, frames, nbuffers = case["width"], case["height"], case["frames"], case["buffers"]
    method = case["method"]
    ctx = moderngl.create_standalone_context(backend="egl")  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    frame_bytes = width * height * 3
    # As in the original benchmark: noise between 128 and 135, one pattern per buffer.
    buffers = [
        ctx.buffer(rng.integers(128, 136, frame_bytes, dtype=np.uint8).tobytes())
        for _ in range(nbuffers)
    ]
    ffmpeg = subprocess.Popen(
        [case["ffmpeg"], "-hide_banner", "-loglevel", "error", "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "60", "-i", "-",
         *ENCODERS[case["encoder"]], "-f", "null", "-"],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    assert ffmpeg.stdin is not None
    fd = ffmpeg.stdin.fileno()
    call_times: list[int] = []
    if method == "c-vmsplice":
        return _run_program(case, ffmpeg, frame_bytes)

    if method in ("plain", "thread"):
        stdin = ffmpeg.stdin
        write: Callable[[bytes], object]
        if method == "plain":
            write = stdin.write
        else:
            pending: queue.Queue[bytes | None] = queue.Queue(maxsize=16)

            failed: list[OSError] = []

            def writer() -> None:
                while (data := pending.get()) is not None:
                    if not failed:  # after a failure, drain: put() must never block
                        try:
                            stdin.write(data)
                        except OSError as error:
                            failed.append(error)

            thread = threading.Thread(target=writer)
            thread.start()
            write = pending.put

        def send(buffer: Any) -> None:
            write(buffer.read())

        def finish() -> None:
            if method == "thread":
                pending.put(None)
                thread.join()
                if failed:
                    raise failed[0]

    else:
        import turbopipe

        options = case.get("options", {})

        # 2.x takes only buffer.mglo; 1.x and ours take the buffer, as documented.
        version = _version_of(turbopipe)
        mglo = method == "reference" and version.startswith("2.1")

        def send(buffer: Any) -> None:
            # The documented loop: sync(buffer), (render into it), pipe(buffer).
            target = buffer.mglo if mglo else buffer
            turbopipe.sync(target)
            start = time.perf_counter_ns()
            turbopipe.pipe(target, fd, **options)
            call_times.append(time.perf_counter_ns() - start)

        def finish() -> None:
            for buffer in buffers:
                turbopipe.sync(buffer.mglo if mglo else buffer)

    started, cpu_started = time.perf_counter(), time.process_time()
    for frame in range(frames):
        send(buffers[frame % nbuffers])
    finish()
    extra: dict[str, Any] = {}
    # The numpy calls' wall, own and FFmpeg CPU time, taken out of the run's.
    spent = (0.0, 0.0, 0.0)
    if method not in ("plain", "thread"):
        stats = getattr(turbopipe, "stats", None)
        found = stats(fd) if stats is not None else None
        extra["path"] = None if found is None else found[0]
        extra["version"] = version
        spent_started = (time.perf_counter(), time.process_time(), _process_cpu(ffmpeg.pid))
        extra["numpy_call_us"] = _numpy_calls(turbopipe, fd, frame_bytes, version, options)
        spent = (
            time.perf_counter() - spent_started[0],
            time.process_time() - spent_started[1],
            _process_cpu(ffmpeg.pid) - spent_started[2],
        )
    ffmpeg.stdin.close()
    ffmpeg.wait()
    elapsed = time.perf_counter() - started - spent[0]
    cpu = time.process_time() - cpu_started - spent[1]
    return {
        **case,
        "returncode": ffmpeg.returncode,
        # FFmpeg is the only child; its start-up, about 0.02 s, is counted too.
        **_rates(frames, frame_bytes, elapsed, cpu, _children_cpu() - spent[2]),
        "call_us": statistics.median(call_times) / 1000 if call_times else None,
        "numpy_call_us": None,
        "path": None,
        **extra,
    }


def _numpy_calls(
    turbopipe: Any, fd: int, frame_bytes: int, version: str, options: dict[str, Any]
) -> float:
    """The median µs of NUMPY_CALLS pipe() calls of numpy arrays of frame_bytes into fd
    (with the case's options), NUMPY_ROUND distinct arrays at a time (piping an array
    again would wait for its last write), synced after each round outside the timed calls."""
    import numpy as np

    arrays = [np.full(frame_bytes, 128 + index, dtype=np.uint8) for index in range(NUMPY_ROUND)]
    # 1.x takes moderngl buffers and memoryviews only; 2.x and ours take the array itself.
    items: list[Any] = [a.data for a in arrays] if version.startswith("1.") else arrays
    times: list[int] = []
    while len(times) < NUMPY_CALLS:
        for item in items[: NUMPY_CALLS - len(times)]:
            start = time.perf_counter_ns()
            turbopipe.pipe(item, fd, **options)
            times.append(time.perf_counter_ns() - start)
        for item in items:
            turbopipe.sync(item)
    return statistics.median(times) / 1000


def _version_of(turbopipe: Any) -> str:
    """turbopipe.__version__, or as installed (1.x has no __version__)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return str(getattr(turbopipe, "__version__", None) or version("turbopipe"))
    except PackageNotFoundError:
        return ""


def _process_cpu(pid: int) -> float:
    """CPU seconds a running child has used so far, all its threads (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are the 14th and 15th fields; the split starts at the 3rd.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_program(
    case: dict[str, Any], ffmpeg: subprocess.Popen[bytes], frame_bytes: int
) -> dict[str, Any]:
    """The bound: the C program _bench_vmsplice.c, given as case["program"], writes the
    frames into FFmpeg's stdin; it times its own loop."""
    assert ffmpeg.stdin is not None
    program = subprocess.run(
        [case["program"], str(frame_bytes), str(case["frames"]), str(case["buffers"])],
        stdout=ffmpeg.stdin, stderr=subprocess.PIPE, text=True, check=True,
    )  # fmt: skip
    ffmpeg.stdin.close()
    ffmpeg.wait()
    elapsed, cpu, program_cpu = map(float, program.stderr.split())
    return {
        **case,
        "returncode": ffmpeg.returncode,
        **_rates(case["frames"], frame_bytes, elapsed, cpu, _children_cpu() - program_cpu),
        "call_us": None,
    }


def _rates(
    frames: int, frame_bytes: int, elapsed: float, cpu: float, ffmpeg_cpu: float
) -> dict[str, float]:
    """A run's framerate, bandwidth, and CPU seconds per GB of the writer and of FFmpeg."""
    gigabytes = frames * frame_bytes / 1e9
    return {
        "fps": frames / elapsed,
        "gbps": gigabytes / elapsed,
        "cpu_per_gb": cpu / gigabytes,
        "ffmpeg_cpu_per_gb": ffmpeg_cpu / gigabytes,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


FPS = 60  # the writer cases' frame rate
NUMPY_FRAMES = 8  # distinct numpy frames, cycled through
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def moving_frames(width: int, height: int, count: int) -> list[Any]:
    """``count`` RGB frames, (height, width, 3) uint8: a smooth pattern that moves from one
    frame to the next, as rendered content does."""
    import numpy as np

    rows, columns = np.ogrid[0:height, 0:width]
    x = columns.astype(np.float32) * (12 / width)
    y = rows.astype(np.float32) * (8 / height)
    phases = np.array([0.0, 2.1, 4.2], np.float32)
    frames = []
    for index in range(count):
        t = np.float32(index / 8)
        wave = np.sin(x + t) + np.sin(y * 1.3 - t * 0.7) + np.sin((x + y) * 0.6 + t * 2)
        frames.append((127.5 + 127.5 * np.cos(wave[..., None] * 1.7 + phases)).astype(np.uint8))
    return frames


class _Frames(Protocol):
    """One kind of frames: frame(index) as VideoWriter takes it, pixels(frame) its rgb24
    rows for the other methods, bottom to top if bottom_up."""

    bottom_up: bool

    def frame(self, index: int) -> Any: ...

    def pixels(self, frame: Any) -> Any: ...


class _NumpyFrames:
    """Precomputed numpy arrays, cycled: making a frame costs nothing in the timed loop."""

    bottom_up = False

    def __init__(self, width: int, height: int) -> None:
        self.arrays = moving_frames(width, height, NUMPY_FRAMES)

    def frame(self, index: int) -> Any:
        return self.arrays[index % len(self.arrays)]

    def pixels(self, frame: Any) -> Any:
        return frame


class _GLFrames:
    """The demo shader, rendered per frame; read back, its rows are bottom-up (GL's order)."""

    bottom_up = True

    def __init__(self, width: int, height: int) -> None:
        import moderngl

        from turbopipe.demo import Scene

        ctx = moderngl.create_standalone_context(backend="egl")  # type: ignore[arg-type]
        self.scene = Scene(ctx, width, height)
        self.scene.render(0)  # llvmpipe compiles the shader at its first draw: not timed

    def frame(self, index: int) -> Any:
        self.scene.render(index / FPS)
        return self.scene.fbo

    def pixels(self, frame: Any) -> Any:
        return frame.read(components=3)


class _Sink(Protocol):
    """A way of writing video: opened, written frame by frame, closed (raising if it
    failed). child_ffmpeg: whether FFmpeg runs as a child, its CPU counted apart."""

    child_ffmpeg: bool
    version: str

    def write(self, frame: Any) -> None: ...

    def close(self) -> None: ...


class _Plain:
    """``stdin.write(pixels)`` into an FFmpeg of our own, which flips GL's rows."""

    child_ffmpeg = True
    version = ""

    def __init__(self, case: dict[str, Any], frames: _Frames) -> None:
        self.frames = frames
        flip = ["-vf", "vflip"] if frames.bottom_up else []
        self.ffmpeg = subprocess.Popen(
            [case["ffmpeg"], "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
             "-pix_fmt", "rgb24", "-s", f"{case['width']}x{case['height']}", "-r", str(FPS),
             "-i", "-", *flip, *X264, case["output"]],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert self.ffmpeg.stdin is not None
        self.stdin = self.ffmpeg.stdin

    def write(self, frame: Any) -> None:
        self.stdin.write(self.frames.pixels(frame))

    def close(self) -> None:
        self.stdin.close()
        if self.ffmpeg.wait() != 0:
            raise RuntimeError(f"ffmpeg exited with status {self.ffmpeg.returncode}")


class _ImageIO:
    """imageio-ffmpeg's write_frames generator: an FFmpeg of its own, fed stdin.write."""

    child_ffmpeg = True

    def __init__(self, case: dict[str, Any], frames: _Frames) -> None:
        import imageio_ffmpeg

        os.environ["IMAGEIO_FFMPEG_EXE"] = case["ffmpeg"]  # the FFmpeg of every other method
        self.frames, self.version = frames, imageio_ffmpeg.__version__
        flip = ["-vf", "vflip"] if frames.bottom_up else []
        # quality=None: no -crf of its own, x264's default as for the others;
        # macro_block_size=1: no scaling up to a multiple of 16 (1080 is not one).
        self.writer = imageio_ffmpeg.write_frames(
            case["output"], (case["width"], case["height"]), fps=FPS, codec="libx264",
            quality=None, macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-preset", "ultrafast", *flip],
        )  # fmt: skip
        self.writer.send(None)  # starts FFmpeg

    def write(self, frame: Any) -> None:
        self.writer.send(self.frames.pixels(frame))

    def close(self) -> None:
        self.writer.close()


class _PyAV:
    """PyAV: libx264 in this process, through PyAV's own FFmpeg libraries; frames made by
    ``av.VideoFrame.from_ndarray``, which copies (and so flips GL's rows for free)."""

    child_ffmpeg = False

    def __init__(self, case: dict[str, Any], frames: _Frames) -> None:
        import numpy

        # By name: an optional comparison, which mypy need not find installed.
        av: Any = importlib.import_module("av")
        self.av, self.numpy, self.frames, self.version = av, numpy, frames, av.__version__
        self.shape = (case["height"], case["width"], 3)
        self.container = av.open(case["output"], "w")
        self.stream = self.container.add_stream("libx264", rate=FPS)
        self.stream.width, self.stream.height = case["width"], case["height"]
        self.stream.pix_fmt, self.stream.options = "yuv420p", {"preset": "ultrafast"}
        # Frame threads, as FFmpeg's command line uses: PyAV's default, slice threads,
        # ran at 0.6-0.8x of their framerate here.
        self.stream.thread_type = "AUTO"

    def write(self, frame: Any) -> None:
        pixels = self.numpy.frombuffer(self.frames.pixels(frame), self.numpy.uint8)
        rows = pixels.reshape(self.shape)
        array = rows[::-1] if self.frames.bottom_up else rows
        picture = self.av.VideoFrame.from_ndarray(array, format="rgb24")
        self.container.mux(self.stream.encode(picture))

    def close(self) -> None:
        self.container.mux(self.stream.encode())  # what the encoder still holds
        self.container.close()


class _Writer:
    """turbopipe's VideoWriter, with the case's options (its conversion)."""

    child_ffmpeg = True

    def __init__(self, case: dict[str, Any], frames: _Frames) -> None:
        import turbopipe

        self.version = turbopipe.__version__
        self.video = turbopipe.VideoWriter(
            case["output"], case["width"], case["height"], FPS, preset="ultrafast",
            ffmpeg=case["ffmpeg"], **case["options"],
        )  # fmt: skip

    def write(self, frame: Any) -> None:
        self.video.write(frame)

    def close(self) -> None:
        self.video.close()


_SINKS: dict[str, Callable[[dict[str, Any], _Frames], _Sink]] = {
    "plain": _Plain,
    "imageio": _ImageIO,
    "pyav": _PyAV,
}


def run_writer(case: dict[str, Any]) -> dict[str, Any]:
    """Write case["frames"] frames of case["frame_kind"] (numpy or gl) into case["output"]
    (H.264, x264 ultrafast, yuv420p) by case["method"]; times it from opening the sink to
    its close, and CPU of the whole process tree (FFmpeg's apart when it is a child)."""
    width, height, count = case["width"], case["height"], case["frames"]
    frames: _Frames = (_GLFrames if case["frame_kind"] == "gl" else _NumpyFrames)(width, height)
    open_sink = _SINKS.get(case["method"], _Writer)
    children = _children_cpu()
    started, cpu_started = time.perf_counter(), time.process_time()
    sink = open_sink(case, frames)
    for index in range(count):
        sink.write(frames.frame(index))
    sink.close()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    ffmpeg_cpu = _children_cpu() - children
    return {
        **case,
        "returncode": 0,  # a sink that failed raised
        "version": sink.version,
        "fps": count / elapsed,
        "cpu_ms": (cpu + ffmpeg_cpu) / count * 1000,
        "ffmpeg_ms": ffmpeg_cpu / count * 1000 if sink.child_ffmpeg else None,
    }


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    case = json.loads(sys.argv[1])
    print(json.dumps((run_writer if case.get("kind") == "writer" else run)(case)))
