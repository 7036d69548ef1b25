"""The benchmark: moderngl buffers into ``ffmpeg -f rawvideo ... -f null -``, method by method.

Methods, as in the original TurboPipe benchmark plus ours:

- plain: ``ffmpeg.stdin.write(buffer.read())`` on the main thread
- thread: ``buffer.read()`` on the main thread, written by a Python thread through a queue
- python: turbopipe's Python engine (``TURBOPIPE_ENGINE=python``)
- direct: turbopipe's native engine writing straight into the pipe
  (``relay=False, vmsplice=False``)
- relay: the native engine with ``vmsplice=False``, what a reader other than FFmpeg gets
- native: the native engine with its defaults, zero-copy here (the reader is FFmpeg)
- c-vmsplice: the bound, a C program vmsplicing the frames (needs a C compiler)
- reference: turbopipe as installed for ``--reference PYTHON`` (e.g. PyPI's 2.1.0)

The Path column tells how the engine wrote (``turbopipe.stats(fd).path``: vmsplice, relay
or direct). Each number is the median of the repeats, with (min-max) beside it. The
pipe() µs column times pipe() of the moderngl buffer (ours maps it inside); pipe(numpy) µs
times 64 more calls with a numpy array of the same size, after the timed run. Gain is the
framerate over plain's, "vs ref" over the reference's.

With ``writer=True`` it compares instead the ways of writing video from Python, end to
end: ``writer_frames`` frames into an H.264 file (x264 ultrafast, yuv420p, 60 fps), of two
kinds: numpy (RGB arrays in memory, a few precomputed ones cycled) and gl (the demo shader
rendered per frame on moderngl, read back bottom-up). The methods:

- plain: an FFmpeg subprocess fed ``stdin.write(frame)`` (gl: ``fbo.read()``, FFmpeg flips)
- imageio: imageio-ffmpeg's ``write_frames`` generator (its own FFmpeg, the same binary)
- pyav: PyAV, libx264 in process (``av.VideoFrame.from_ndarray``; for gl, of the rows
  reversed: its copy flips them)
- writer: turbopipe's VideoWriter with its defaults
- writer-ffmpeg, writer-native, writer-gpu: VideoWriter converting RGB to YUV in FFmpeg,
  in turbopipe's C++ converter, or on the GPU, gl frames only (see ``writer_options``)

imageio and pyav are left out when not importable. The table, one per kind of frames and resolution:
framerate, CPU ms per frame of the whole process tree (Python and FFmpeg) and FFmpeg's
alone, and the framerate over the best of plain, imageio and pyav ("vs best other").

Every case runs in a fresh interpreter; repeats are interleaved so that drift on a shared
machine hits every method alike, and the table reports medians with (min-max).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESOLUTIONS = {
    "720p": (1280, 720),
    "1080p": (1920, 1080),
    "1440p": (2560, 1440),
    "2160p": (3840, 2160),
}
METHODS = ("plain", "thread", "python", "direct", "relay", "native", "c-vmsplice", "reference")
WRITER_METHODS = (
    "plain", "imageio", "pyav", "writer", "writer-ffmpeg", "writer-native", "writer-gpu"
)  # fmt: skip
FRAME_KINDS = ("numpy", "gl")
# The writer methods not turbopipe's: "vs best other" is over the fastest of them.
OTHER_METHODS = ("plain", "imageio", "pyav")
SYMBOLS = {
    "plain": "🐢",
    "thread": "🚀",
    "python": "🐍",
    "direct": "🌀",
    "relay": "🌀",
    "native": "🌀⚡",
    "c-vmsplice": "⚙️",
    "reference": "📦",
    "imageio": "🖼️",
    "pyav": "🎞️",
    "writer": "🎬",
    "writer-ffmpeg": "🎬",
    "writer-native": "🎬🌀",
    "writer-gpu": "🎬⚡",
}
_CASE_SCRIPT = Path(__file__).with_name("_bench_case.py")
_C_SOURCE = Path(__file__).with_name("_bench_vmsplice.c")
# The turbopipe cases, run by _bench_case with these pipe() options.
_OPTIONS: dict[str, dict[str, bool]] = {
    "python": {},
    "direct": {"relay": False, "vmsplice": False},
    "relay": {"vmsplice": False},
    "native": {},
    "reference": {},
}
# The conversion each writer method asks VideoWriter for (None: its default).
_CONVERSIONS = {"writer": None, "writer-ffmpeg": "ffmpeg", "writer-native": "native",
                "writer-gpu": "gpu"}  # fmt: skip
# The modules a writer method or a kind of frames needs, beyond the benchmark's own.
_MODULES = {"imageio": ("imageio_ffmpeg",), "pyav": ("av", "numpy"), "numpy": ("numpy",)}
# Numbers kept with their spread over the repeats: median, plus KEY_min and KEY_max.
SPREAD_KEYS = (
    "fps", "cpu_per_gb", "ffmpeg_cpu_per_gb", "call_us", "numpy_call_us", "cpu_ms", "ffmpeg_ms"
)  # fmt: skip


def find_compiler() -> list[str] | None:
    """The C compiler's command: $CC, else cc or gcc on PATH; None if there is none."""
    command = shlex.split(os.environ.get("CC", ""))
    if command and shutil.which(command[0]):
        return command
    for name in ("cc", "gcc"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def default_methods(
    reference: bool, compiler: bool, warn: Callable[[str], object] | None = None
) -> list[str]:
    """Every method but reference, plus reference when a reference interpreter is given;
    c-vmsplice only when a C compiler was found (else ``warn`` is told why it is left out)."""
    methods = [m for m in METHODS if m != "reference" or reference]
    if not compiler:
        methods.remove("c-vmsplice")
        if warn:
            warn("c-vmsplice skipped: no C compiler (cc or gcc on PATH, or $CC) to build its bound")
    return methods


def writer_options(method: str) -> dict[str, Any]:
    """VideoWriter's keyword arguments for a writer method ("writer", "writer-ffmpeg",
    "writer-native", "writer-gpu")."""
    convert = _CONVERSIONS[method]
    return {} if convert is None else {"convert": convert}


def writer_choices(
    methods: Sequence[str], frame_kinds: Sequence[str], warn: Callable[[str], object]
) -> tuple[list[str], list[str]]:
    """The writer methods and kinds of frames that can run here; ``warn`` is told, one line
    each, why any other is left out (a module not importable)."""

    def usable(name: str) -> bool:
        missing = [m for m in _MODULES.get(name, ()) if importlib.util.find_spec(m) is None]
        if missing:
            warn(f"{name} skipped: {' and '.join(missing)} not importable")
        return not missing

    return [m for m in methods if usable(m)], [k for k in frame_kinds if usable(k)]


@dataclass
class Plan:
    resolutions: Sequence[str] = ("720p", "1080p")
    encoders: Sequence[str] = ("null",)
    buffers: Sequence[int] = (1, 4)
    methods: Sequence[str] = ("plain", "thread", "python", "direct", "relay", "native")
    gigabytes: float = 0.5  # piped per case
    repeats: int = 3
    ffmpeg: str = "ffmpeg"
    reference_python: str | None = None
    writer: bool = False
    writer_frames: int = 240
    frame_kinds: Sequence[str] = FRAME_KINDS  # with writer
    # Where the writer cases' videos are kept (None: a temporary folder, removed after)
    video_folder: str | None = None

    def expand(self) -> list[dict[str, Any]]:
        if self.writer:
            return [
                {"kind": "writer", "frame_kind": kind, "resolution": resolution,
                 "width": RESOLUTIONS[resolution][0], "height": RESOLUTIONS[resolution][1],
                 "method": method, "frames": self.writer_frames, "ffmpeg": self.ffmpeg,
                 "options": _case_options(method)}
                for kind in self.frame_kinds
                for resolution in self.resolutions
                for method in self.methods
                if method != "writer-gpu" or kind == "gl"  # it converts GL frames only
            ]  # fmt: skip
        cases = []
        for resolution in self.resolutions:
            width, height = RESOLUTIONS[resolution]
            frames = max(30, int(self.gigabytes * 1e9 / (width * height * 3)))
            for encoder in self.encoders:
                # Encoding is slow: pipe fewer frames so a case still takes seconds.
                count = frames if encoder == "null" else max(30, frames // 8)
                for buffers in self.buffers:
                    for method in self.methods:
                        cases.append(
                            {"resolution": resolution, "width": width, "height": height,
                             "encoder": encoder, "buffers": buffers, "method": method,
                             "frames": count, "ffmpeg": self.ffmpeg}
                        )  # fmt: skip
        return cases


def _case_options(method: str) -> dict[str, Any]:
    """A writer case's VideoWriter options: none but for VideoWriter's own methods."""
    return writer_options(method) if method in _CONVERSIONS else {}


def run_case(case: dict[str, Any], reference_python: str | None) -> dict[str, Any]:
    python = sys.executable
    # numpy's BLAS threads spin for a while after use, which would count as piping CPU.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    case = dict(case)
    method = case["method"]
    if method == "reference":
        if not reference_python:
            raise ValueError("the reference method needs --reference PYTHON")
        python = reference_python
    elif method == "python":
        env["TURBOPIPE_ENGINE"] = "python"
    elif method == "c-vmsplice" and not case.get("program"):
        raise ValueError("the c-vmsplice case needs its compiled program")
    if method in _OPTIONS:
        case["options"] = _OPTIONS[method]
    result = subprocess.run(
        [python, "-I", str(_CASE_SCRIPT), json.dumps(case)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"benchmark case {case} failed:\n{result.stderr[-2000:]}")
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if outcome["returncode"] != 0:
        raise RuntimeError(f"ffmpeg failed in case {case}")
    return outcome


def compile_program(folder: str) -> str:
    """Build _bench_vmsplice.c with -O2 into folder; return the program's path."""
    compiler = find_compiler()
    if compiler is None:
        raise ValueError("c-vmsplice needs a C compiler: cc or gcc on PATH, or $CC")
    if not _C_SOURCE.exists():
        raise ValueError(f"c-vmsplice: its source {_C_SOURCE} is missing")
    program = os.path.join(folder, "bench_vmsplice")
    built = subprocess.run(
        [*compiler, "-O2", "-o", program, str(_C_SOURCE)], capture_output=True, text=True
    )
    if built.returncode != 0:
        raise RuntimeError(f"compiling {_C_SOURCE} failed:\n{built.stderr[-2000:]}")
    return program


def run(plan: Plan, progress: Any = None) -> list[dict[str, Any]]:
    """Run every case plan.repeats times, interleaved; return one median row per case."""
    cases = plan.expand()
    with tempfile.TemporaryDirectory(prefix="turbopipe-bench-") as folder:
        videos = plan.video_folder or folder
        os.makedirs(videos, exist_ok=True)
        for case in cases:
            if case.get("kind") == "writer":  # the repeats of a case write the same file
                name = f"{case['frame_kind']}-{case['resolution']}-{case['method']}.mp4"
                case["output"] = os.path.join(videos, name)
        if any(case["method"] == "c-vmsplice" for case in cases):
            program = compile_program(folder)  # once, kept for the whole run
            for case in cases:
                if case["method"] == "c-vmsplice":
                    case["program"] = program
        samples: list[list[dict[str, Any]]] = [[] for _ in cases]
        for repeat in range(plan.repeats):
            for index, case in enumerate(cases):
                if progress:
                    progress(f"[{repeat + 1}/{plan.repeats}] {describe(case)}")
                samples[index].append(run_case(case, plan.reference_python))
    return [median_row(rows) for rows in samples]


def describe(case: dict[str, Any]) -> str:
    if case.get("kind") == "writer":
        return f"{case['resolution']} {case['frame_kind']} {case['method']}"
    return f"{case['resolution']} {case['encoder']} x{case['buffers']} {case['method']}"


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The repeats of one case as one row: medians, with KEY_min and KEY_max for the
    SPREAD_KEYS, "samples" (how many repeats) and the distinct paths joined by "/"."""
    row = dict(rows[0])
    row["samples"] = len(rows)
    for key in (
        "fps",
        "gbps",
        "cpu_per_gb",
        "ffmpeg_cpu_per_gb",
        "call_us",
        "numpy_call_us",
        "cpu_ms",
        "ffmpeg_ms",
    ):
        values = [r[key] for r in rows if r.get(key) is not None]
        row[key] = statistics.median(values) if values else None
        if key in SPREAD_KEYS:
            row[f"{key}_min"] = min(values) if values else None
            row[f"{key}_max"] = max(values) if values else None
    paths = [r["path"] for r in rows if r.get("path")]
    row["path"] = "/".join(dict.fromkeys(paths)) or None
    return row


def spread(row: dict[str, Any], key: str, digits: int) -> str:
    """``median (min-max)`` (an en dash between), or the median alone from one sample; ""
    if there is none."""
    value = row.get(key)
    if value is None:
        return ""
    text = f"{value:.{digits}f}"
    low, high = row.get(f"{key}_min"), row.get(f"{key}_max")
    if row.get("samples", 1) > 1 and low is not None and high is not None:
        text += f" ({low:.{digits}f}\u2013{high:.{digits}f})"
    return text


def _same_case(row: dict[str, Any], other: dict[str, Any]) -> bool:
    return all(other[k] == row[k] for k in ("resolution", "encoder", "buffers"))


def _find(rows: list[dict[str, Any]], method: str, like: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"] == method and _same_case(r, like)), None)


def _ratio(row: dict[str, Any], base: dict[str, Any] | None, key: str = "fps") -> str:
    if base is None or row is base or not row.get(key) or not base.get(key):
        return ""
    return f"{row[key] / base[key]:.2f}x"


def _encoder(row: dict[str, Any]) -> str:
    return "Null" if row["encoder"] == "null" else str(row["encoder"])


def _comparisons(group: list[dict[str, Any]]) -> list[str]:
    """The lines below a table: native's CPU per GB over the reference's, and native's
    framerate over the C bound's, for each encoder and ring size that has both rows."""
    lines = []
    for other, key, what in (
        ("reference", "cpu_per_gb", "CPU s/GB, native / reference"),
        ("c-vmsplice", "fps", "framerate, native / c-vmsplice"),
    ):
        found = []
        for row in (r for r in group if r["method"] == "native"):
            ratio = _ratio(row, _find(group, other, row), key)
            if ratio:
                found.append(f"{ratio} ({_encoder(row)} x{row['buffers']})")
        if found:
            lines.append(f"{what}: {', '.join(found)}  ")
    return lines


def format_tables(rows: list[dict[str, Any]]) -> str:
    """Markdown tables, one per resolution, laid out like the original's, gain over plain."""
    if rows and rows[0].get("kind") == "writer":
        return format_writer_tables(rows)
    out = []
    for resolution in dict.fromkeys(r["resolution"] for r in rows):
        out.append(
            f"| {resolution} | Method | x264 | Buffers | Path | Framerate (fps) | Bandwidth "
            "| CPU s/GB | FFmpeg CPU s/GB | pipe() µs | pipe(numpy) µs | Gain | vs ref |\n"
            "|:--:|:--|:--|:--:|:--|--:|--:|--:|--:|--:|--:|--:|--:|"
        )
        group = [r for r in rows if r["resolution"] == resolution]
        for row in group:
            method = row["method"]
            if method == "reference" and row.get("version"):
                method = f"reference {row['version']}"
            out.append(
                f"| {SYMBOLS[row['method']]} | {method} | {_encoder(row)} | {row['buffers']} "
                f"| {row.get('path') or ''} | {spread(row, 'fps', 0)} "
                f"| {row['gbps']:.2f} GB/s | {spread(row, 'cpu_per_gb', 3)} "
                f"| {spread(row, 'ffmpeg_cpu_per_gb', 3)} | {spread(row, 'call_us', 1)} "
                f"| {spread(row, 'numpy_call_us', 1)} | {_ratio(row, _find(group, 'plain', row))} "
                f"| {_ratio(row, _find(group, 'reference', row))} |"
            )
        comparisons = _comparisons(group)
        if comparisons:
            out += ["", *comparisons]
        out.append("")
    return "\n".join(out)


def format_writer_tables(rows: list[dict[str, Any]]) -> str:
    """One table per kind of frames and resolution: framerate, CPU ms per frame of the whole
    process tree and of FFmpeg alone, and the framerate over the best of OTHER_METHODS."""
    out = []
    for kind, resolution in dict.fromkeys((r["frame_kind"], r["resolution"]) for r in rows):
        group = [r for r in rows if (r["frame_kind"], r["resolution"]) == (kind, resolution)]
        others = [r for r in group if r["method"] in OTHER_METHODS]
        best = max(others, key=lambda r: r["fps"], default=None)
        out.append(
            f"| {resolution} {kind} | Method | Framerate (fps) | CPU ms/frame "
            "| FFmpeg CPU ms/frame | vs best other |\n|:--:|:--|--:|--:|--:|--:|"
        )
        for row in group:
            method = f"{row['method']} {row['version']}" if row.get("version") else row["method"]
            out.append(
                f"| {SYMBOLS[row['method']]} | {method} | {spread(row, 'fps', 1)} "
                f"| {spread(row, 'cpu_ms', 1)} | {spread(row, 'ffmpeg_ms', 1)} "
                f"| {_ratio(row, best)} |"
            )
        if best is not None:
            out += ["", f"vs best other: over {best['method']}, {best['fps']:.1f} fps"]
        out.append("")
    return "\n".join(out)
