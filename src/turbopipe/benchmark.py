"""The benchmark: moderngl buffers into ``ffmpeg -f rawvideo ... -f null -``, method by method.

Methods, as in the original TurboPipe benchmark plus ours:

- plain: ``ffmpeg.stdin.write(buffer.read())`` on the main thread
- thread: ``buffer.read()`` on the main thread, written by a Python thread through a queue
- twin: turbopipe's pure-Python engine
- direct: turbopipe's native engine writing straight into the pipe (``relay=False``)
- native: turbopipe's native engine (defaults: through the relay)
- vmsplice: the native engine with kernel zero-copy (safe here: FFmpeg read()s its stdin)
- reference: turbopipe as installed for ``--reference-python`` (e.g. PyPI's 2.1.0)

With ``writer=True`` it measures the video writer end to end instead: the demo shader
rendered at 60 fps into H.264 (x264 ultrafast, yuv420p), comparing the plain
``stdin.write(fbo.read())`` loop, VideoWriter reading rgb24 back (FFmpeg flips and
converts, as in the plain loop) and VideoWriter converting on the GPU.

Every case runs in a fresh interpreter; repeats are interleaved so that drift on a shared
machine hits every method alike, and the table reports medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESOLUTIONS = {
    "720p": (1280, 720),
    "1080p": (1920, 1080),
    "1440p": (2560, 1440),
    "2160p": (3840, 2160),
}
METHODS = ("plain", "thread", "twin", "direct", "native", "vmsplice", "reference")
WRITER_METHODS = ("plain", "writer-rgb24", "writer-gpu")
SYMBOLS = {
    "plain": "🐢",
    "thread": "🚀",
    "twin": "🐍",
    "direct": "🌀",
    "native": "🌀",
    "vmsplice": "🌀⚡",
    "reference": "📦",
    "writer-rgb24": "🎬",
    "writer-gpu": "🎬⚡",
}
_CASE_SCRIPT = Path(__file__).with_name("_bench_case.py")


@dataclass
class Plan:
    resolutions: Sequence[str] = ("720p", "1080p")
    encoders: Sequence[str] = ("null",)
    buffers: Sequence[int] = (1, 4)
    methods: Sequence[str] = ("plain", "thread", "twin", "direct", "native", "vmsplice")
    gigabytes: float = 0.5  # piped per case
    repeats: int = 3
    ffmpeg: str = "ffmpeg"
    reference_python: str | None = None
    writer: bool = False
    writer_frames: int = 240

    def expand(self) -> list[dict[str, Any]]:
        if self.writer:
            return [
                {"kind": "writer", "resolution": resolution, "width": RESOLUTIONS[resolution][0],
                 "height": RESOLUTIONS[resolution][1], "method": method,
                 "frames": self.writer_frames, "ffmpeg": self.ffmpeg}
                for resolution in self.resolutions
                for method in self.methods
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


def run_case(case: dict[str, Any], reference_python: str | None) -> dict[str, Any]:
    python = sys.executable
    # numpy's BLAS threads spin for a while after use, which would count as piping CPU.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    case = dict(case)
    if case["method"] == "reference":
        if not reference_python:
            raise ValueError("the reference method needs --reference-python")
        python = reference_python
    elif case["method"] == "twin":
        env["TURBOPIPE_ENGINE"] = "python"
    elif case["method"] == "direct":
        case["options"] = {"relay": False}
    elif case["method"] == "vmsplice":
        case["options"] = {"vmsplice": True}
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


def run(plan: Plan, progress: Any = None) -> list[dict[str, Any]]:
    """Run every case plan.repeats times, interleaved; return one median row per case."""
    cases = plan.expand()
    samples: list[list[dict[str, Any]]] = [[] for _ in cases]
    for repeat in range(plan.repeats):
        for index, case in enumerate(cases):
            if progress:
                progress(f"[{repeat + 1}/{plan.repeats}] {describe(case)}")
            samples[index].append(run_case(case, plan.reference_python))
    return [median_row(rows) for rows in samples]


def describe(case: dict[str, Any]) -> str:
    if case.get("kind") == "writer":
        return f"{case['resolution']} writer {case['method']}"
    return f"{case['resolution']} {case['encoder']} x{case['buffers']} {case['method']}"


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    row = dict(rows[0])
    for key in (
        "fps",
        "gbps",
        "cpu_per_gb",
        "ffmpeg_cpu_per_gb",
        "call_us",
        "python_ms",
        "ffmpeg_ms",
    ):
        values = [r[key] for r in rows if r.get(key) is not None]
        row[key] = statistics.median(values) if values else None
    return row


def format_tables(rows: list[dict[str, Any]]) -> str:
    """Markdown tables, one per resolution, laid out like the original's, gain over plain."""
    if rows and rows[0].get("kind") == "writer":
        return format_writer_tables(rows)
    out = []
    for resolution in dict.fromkeys(r["resolution"] for r in rows):
        out.append(
            f"| {resolution} | Method | x264 | Buffers | Framerate | Bandwidth | CPU s/GB "
            "| FFmpeg CPU s/GB | pipe() µs | Gain |\n|:--:|:--|:--|:--:|--:|--:|--:|--:|--:|--:|"
        )
        for row in (r for r in rows if r["resolution"] == resolution):
            base = next(
                (b for b in rows if b["method"] == "plain" and all(
                    b[k] == row[k] for k in ("resolution", "encoder", "buffers"))),
                None,
            )  # fmt: skip
            gain = "" if base is None or row is base else f"{row['fps'] / base['fps']:.2f}x"
            call = "" if row["call_us"] is None else f"{row['call_us']:.1f}"
            encoder = "Null" if row["encoder"] == "null" else row["encoder"]
            out.append(
                f"| {SYMBOLS[row['method']]} | {row['method']} | {encoder} | {row['buffers']} "
                f"| {row['fps']:.0f} fps | {row['gbps']:.2f} GB/s | {row['cpu_per_gb']:.3f} "
                f"| {row['ffmpeg_cpu_per_gb']:.3f} | {call} | {gain} |"
            )
        out.append("")
    return "\n".join(out)


def format_writer_tables(rows: list[dict[str, Any]]) -> str:
    """One table per resolution: fps and CPU milliseconds per frame, Python and FFmpeg."""
    out = []
    for resolution in dict.fromkeys(r["resolution"] for r in rows):
        out.append(
            f"| {resolution} x264 ultrafast | Method | Framerate | CPU ms/frame: Python "
            "| FFmpeg | Total | Gain |\n|:--:|:--|--:|--:|--:|--:|--:|"
        )
        group = [r for r in rows if r["resolution"] == resolution]
        base = next((r for r in group if r["method"] == "plain"), None)
        for row in group:
            gain = "" if base is None or row is base else f"{row['fps'] / base['fps']:.2f}x"
            total = row["python_ms"] + row["ffmpeg_ms"]
            out.append(
                f"| {SYMBOLS[row['method']]} | {row['method']} | {row['fps']:.1f} fps "
                f"| {row['python_ms']:.1f} | {row['ffmpeg_ms']:.1f} | {total:.1f} | {gain} |"
            )
        out.append("")
    return "\n".join(out)
