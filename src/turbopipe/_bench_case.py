"""One benchmark case, run in a fresh interpreter.

- run(): pipe N frames of moderngl buffers to ``ffmpeg ... -f null -``. Standalone on
  purpose (no imports from this package): ``--reference PYTHON`` runs it with another
  interpreter, where ``import turbopipe`` finds a different turbopipe. The turbopipe cases
  also record ``stats(fd).path`` and, after the timed run, the time of pipe() for a numpy
  array of a frame's size (NUMPY_CALLS calls, not counted in the run's numbers).
- run_writer(): render N frames of the demo shader into an H.264 file, end to end.

Usage: python _bench_case.py '{"method": ..., "width": ..., ...}'; prints one JSON line.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

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


def run_writer(case: dict[str, Any]) -> dict[str, Any]:
    """Methods: plain (``stdin.write(fbo.read())``, FFmpeg flips and converts), writer-rgb24
    (VideoWriter, FFmpeg flips and converts) and writer-gpu (VideoWriter, GPU converts and
    flips)."""
    import moderngl

    from turbopipe import VideoWriter
    from turbopipe.demo import Scene

    width, height, frames, method = case["width"], case["height"], case["frames"], case["method"]
    ctx = moderngl.create_standalone_context(backend="egl")  # type: ignore[arg-type]
    scene = Scene(ctx, width, height)
    folder = tempfile.TemporaryDirectory()
    output = os.path.join(folder.name, "out.mp4")
    encoder = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]

    children = _children_cpu()
    started, cpu_started = time.perf_counter(), time.process_time()
    if method == "plain":
        ffmpeg = subprocess.Popen(
            [case["ffmpeg"], "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
             "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "60", "-i", "-",
             "-vf", "vflip", *encoder, output],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert ffmpeg.stdin is not None
        for frame in range(frames):
            scene.render(frame / 60)
            ffmpeg.stdin.write(scene.fbo.read(components=3))
        ffmpeg.stdin.close()
        returncode = ffmpeg.wait()
    else:
        convert = "gpu" if method == "writer-gpu" else "ffmpeg"
        with VideoWriter(
            output, width, height, 60, preset="ultrafast", convert=convert,
            ffmpeg=case["ffmpeg"],
        ) as video:  # fmt: skip
            for frame in range(frames):
                scene.render(frame / 60)
                video.write(scene.fbo)
        returncode = 0
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    ffmpeg_cpu = _children_cpu() - children
    folder.cleanup()
    return {
        **case,
        "returncode": returncode,
        "fps": frames / elapsed,
        "python_ms": cpu / frames * 1000,
        "ffmpeg_ms": ffmpeg_cpu / frames * 1000,
    }


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    case = json.loads(sys.argv[1])
    print(json.dumps((run_writer if case.get("kind") == "writer" else run)(case)))
