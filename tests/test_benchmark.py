"""The benchmark's plan (which cases a set of choices runs), its tables, and a tiny real
run of the writer comparison."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from turbopipe import VideoWriter, benchmark
from turbopipe._bench_case import moving_frames
from turbopipe.benchmark import (
    FRAME_KINDS,
    METHODS,
    SYMBOLS,
    WRITER_METHODS,
    Plan,
    default_methods,
    format_tables,
    median_row,
    writer_choices,
    writer_options,
)
from writer_helpers import decode, frames_of


def test_a_plan_runs_every_combination_of_its_choices() -> None:
    plan = Plan(resolutions=["720p", "1080p"], encoders=["null", "slow"], buffers=[1, 4],
                methods=["plain", "native"], gigabytes=0.1)  # fmt: skip
    cases = plan.expand()
    assert len(cases) == 2 * 2 * 2 * 2
    null_720p = next(case for case in cases if case["resolution"] == "720p")
    slow_720p = next(case for case in cases if case["encoder"] == "slow")
    assert null_720p["frames"] == int(0.1e9 / (1280 * 720 * 3))
    assert slow_720p["frames"] == max(30, null_720p["frames"] // 8)


def test_a_writer_plan_runs_its_methods_for_each_kind_of_frames_and_resolution() -> None:
    plan = Plan(resolutions=["720p", "1080p"], methods=["plain", "writer-ffmpeg", "writer-gpu"],
                writer=True)  # fmt: skip
    cases = [(c["frame_kind"], c["resolution"], c["method"]) for c in plan.expand()]
    # writer-gpu converts GL frames only.
    assert cases == [
        ("numpy", "720p", "plain"),
        ("numpy", "720p", "writer-ffmpeg"),
        ("numpy", "1080p", "plain"),
        ("numpy", "1080p", "writer-ffmpeg"),
        ("gl", "720p", "plain"),
        ("gl", "720p", "writer-ffmpeg"),
        ("gl", "720p", "writer-gpu"),
        ("gl", "1080p", "plain"),
        ("gl", "1080p", "writer-ffmpeg"),
        ("gl", "1080p", "writer-gpu"),
    ]
    first = plan.expand()[0]
    assert (first["frames"], first["width"], first["height"]) == (240, 1280, 720)
    options = {c["method"]: c["options"] for c in plan.expand()}
    assert options == {"plain": {}, "writer-ffmpeg": writer_options("writer-ffmpeg"),
                       "writer-gpu": writer_options("writer-gpu")}  # fmt: skip
    assert Plan(frame_kinds=["numpy"], methods=["writer-gpu"], writer=True).expand() == []


def test_each_writer_method_asks_for_its_conversion() -> None:
    conversions = {"writer": None, "writer-ffmpeg": "ffmpeg", "writer-native": "native",
                   "writer-gpu": "gpu"}  # fmt: skip
    for method, convert in conversions.items():
        options = writer_options(method)
        assert options.get("convert") == convert
        VideoWriter("out.mp4", 64, 48, **options).close()  # the writer takes them


def test_what_cannot_run_here_is_left_out_with_one_line_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hidden = {"av", "imageio_ffmpeg"}
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: None if name in hidden else find_spec(name),
    )
    told: list[str] = []
    methods, kinds = writer_choices(WRITER_METHODS, FRAME_KINDS, told.append)
    assert methods == ["plain", "writer", "writer-ffmpeg", "writer-native", "writer-gpu"]
    assert kinds == ["numpy", "gl"]
    assert told == ["imageio skipped: imageio_ffmpeg not importable",
                    "pyav skipped: av not importable"]  # fmt: skip
    hidden.add("numpy")
    told.clear()
    assert writer_choices(["pyav"], FRAME_KINDS, told.append) == ([], ["gl"])
    assert told == ["pyav skipped: av and numpy not importable",
                    "numpy skipped: numpy not importable"]  # fmt: skip


def test_the_methods_and_the_default_choice() -> None:
    assert METHODS == (
        "plain", "thread", "python", "direct", "relay", "native", "c-vmsplice", "reference"
    )  # fmt: skip
    assert set(METHODS + WRITER_METHODS) <= set(benchmark.SYMBOLS)
    everything = list(METHODS)
    assert default_methods(reference=True, compiler=True) == everything
    assert default_methods(reference=False, compiler=True) == everything[:-1]
    told: list[str] = []
    without_cc = default_methods(reference=True, compiler=False, warn=told.append)
    assert without_cc == [m for m in everything if m != "c-vmsplice"]
    assert len(told) == 1 and "c-vmsplice" in told[0] and "compiler" in told[0]
    # The plan's own default runs neither the C bound nor the reference.
    assert list(Plan().methods) == everything[:-2]
    assert "vmsplice" not in METHODS  # native's default is zero-copy into FFmpeg now


def test_the_compiler_is_cc_then_gcc_unless_cc_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    found = {"cc": "/usr/bin/cc", "gcc": "/usr/bin/gcc", "clang": "/usr/bin/clang"}
    monkeypatch.setattr(benchmark.shutil, "which", found.get)
    monkeypatch.delenv("CC", raising=False)
    assert benchmark.find_compiler() == ["/usr/bin/cc"]
    monkeypatch.setenv("CC", "clang -fno-lto")
    assert benchmark.find_compiler() == ["clang", "-fno-lto"]
    monkeypatch.setattr(benchmark.shutil, "which", {}.get)
    assert benchmark.find_compiler() is None


def test_the_c_bound_without_its_program_is_refused() -> None:
    with pytest.raises(ValueError, match="c-vmsplice"):
        benchmark.run_case({"method": "c-vmsplice"}, None)


def _sample(method: str, fps: float, **more: Any) -> dict[str, Any]:
    """A fabricated result of one case's run, for the formatting tests only."""
    return {"resolution": "720p", "width": 1280, "height": 720, "encoder": "null",
            "buffers": 1, "method": method, "frames": 100, "returncode": 0, "fps": fps,
            "gbps": fps * 1280 * 720 * 3 / 1e9, "cpu_per_gb": 0.5, "ffmpeg_cpu_per_gb": 0.4,
            "call_us": None, "numpy_call_us": None, "path": None, **more}  # fmt: skip


def test_a_row_keeps_the_median_and_the_spread_of_its_repeats() -> None:
    row = median_row([
        _sample("native", 360, call_us=40.0, numpy_call_us=2.0, path="vmsplice"),
        _sample("native", 331, call_us=30.0, numpy_call_us=3.0, path="vmsplice"),
        _sample("native", 347, call_us=35.0, numpy_call_us=2.5, path="vmsplice"),
    ])  # fmt: skip
    assert (row["fps"], row["fps_min"], row["fps_max"]) == (347, 331, 360)
    assert (row["call_us"], row["call_us_min"], row["call_us_max"]) == (35.0, 30.0, 40.0)
    assert (row["numpy_call_us_min"], row["numpy_call_us_max"]) == (2.0, 3.0)
    for key in ("cpu_per_gb", "ffmpeg_cpu_per_gb"):
        assert row[f"{key}_min"] == row[f"{key}_max"] == row[key]
    assert row["samples"] == 3 and row["path"] == "vmsplice"
    plain = median_row([_sample("plain", 100), _sample("plain", 110)])
    assert plain["call_us"] is plain["call_us_min"] is plain["call_us_max"] is None
    assert plain["path"] is None


def test_the_table_shows_the_path_the_spread_and_the_ratios() -> None:
    def row(method: str, *fps: float, **more: Any) -> dict[str, Any]:
        return median_row([_sample(method, f, **more) for f in fps])

    rows = [
        row("plain", 100, 90, 110),
        row("native", 347, 331, 360, cpu_per_gb=0.25, call_us=35.0, numpy_call_us=2.5,
            path="vmsplice"),
        row("c-vmsplice", 400, 390, 410),
        row("reference", 200, 190, 210, version="2.1.0", call_us=12.0),
    ]  # fmt: skip
    table = format_tables(rows)
    assert "(331\u2013360)" in table  # an en dash between min and max; ~ below, for ruff
    table = table.replace("\u2013", "~")
    lines = table.splitlines()
    assert lines[0].startswith("| 720p | Method |") and "| Path |" in lines[0]
    assert "| pipe(numpy) µs | Gain | vs ref |" in lines[0]
    native = next(line for line in lines if "| native |" in line)
    assert native == (
        "| 🌀⚡ | native | Null | 1 | vmsplice | 347 (331~360) | 0.96 GB/s "
        "| 0.250 (0.250~0.250) | 0.400 (0.400~0.400) | 35.0 (35.0~35.0) | 2.5 (2.5~2.5) "
        "| 3.47x | 1.74x |"
    )
    plain = next(line for line in lines if "| plain |" in line)
    assert "| 100 (90~110) |" in plain and plain.endswith("|  | 0.50x |")
    reference = next(line for line in lines if "| reference 2.1.0 |" in line)
    assert reference.endswith("| 2.00x |  |")
    assert "CPU s/GB, native / reference: 0.50x (Null x1)" in table
    assert "framerate, native / c-vmsplice: 0.87x (Null x1)" in table


def test_one_sample_shows_no_spread_and_missing_rows_no_ratio() -> None:
    rows = [median_row([_sample("native", 347.4, path="vmsplice")])]
    table = format_tables(rows)
    assert "| 🌀⚡ | native | Null | 1 | vmsplice | 347 | 0.96 GB/s | 0.500 | 0.400 |" in table
    assert table.splitlines()[-1].endswith("|  |  |  |  |")  # no pipe() times, no ratios
    assert "native /" not in table


def _writer_sample(method: str, fps: float, kind: str = "gl", **more: Any) -> dict[str, Any]:
    """A fabricated result of one writer case's run, for the formatting tests only."""
    return {"kind": "writer", "frame_kind": kind, "resolution": "720p", "width": 1280,
            "height": 720, "method": method, "frames": 240, "returncode": 0, "fps": fps,
            "cpu_ms": 20.0, "ffmpeg_ms": 8.0, "version": "", **more}  # fmt: skip


def test_the_writer_table_rates_each_method_against_the_best_other() -> None:
    def row(method: str, *fps: float, **more: Any) -> dict[str, Any]:
        return median_row([_writer_sample(method, f, **more) for f in fps])

    rows = [
        row("plain", 60, 50, 70),
        row("imageio", 80, 79, 81, version="0.8.1"),
        row("pyav", 70, 60, 75, version="18.1.0", ffmpeg_ms=None),
        row("writer-gpu", 40, 38, 44, version="2.2.0", cpu_ms=25.0),
        row("writer", 100, version="2.2.0", kind="numpy"),
    ]
    table = format_tables(rows).replace("\u2013", "~")
    gl, numpy_table = table.split("\n\n| 720p numpy |")
    assert gl.splitlines()[:2] == [
        "| 720p gl | Method | Framerate (fps) | CPU ms/frame | FFmpeg CPU ms/frame "
        "| vs best other |",
        "|:--:|:--|--:|--:|--:|--:|",
    ]
    assert "| 🐢 | plain | 60.0 (50.0~70.0) | 20.0 (20.0~20.0) | 8.0 (8.0~8.0) | 0.75x |" in gl
    assert "| 🖼️ | imageio 0.8.1 | 80.0 (79.0~81.0) | 20.0 (20.0~20.0) | 8.0 (8.0~8.0) |  |" in gl
    assert "| 🎞️ | pyav 18.1.0 | 70.0 (60.0~75.0) | 20.0 (20.0~20.0) |  | 0.88x |" in gl
    assert "| 🎬⚡ | writer-gpu 2.2.0 | 40.0 (38.0~44.0) | 25.0 (25.0~25.0) |" in gl
    assert gl.rstrip().endswith("| 0.50x |\n\nvs best other: over imageio, 80.0 fps")
    # No other method in the numpy table: no ratio, and no line saying over which.
    assert "| 🎬 | writer 2.2.0 | 100.0 | 20.0 | 8.0 |  |" in numpy_table
    assert "vs best other:" not in numpy_table


def test_each_writer_method_writes_every_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str, ffmpeg_exe: str
) -> None:
    """A real run, tiny: each method that can run here, both kinds of frames, the writer on
    this test's engine. Every video holds every frame, right side up; the table lists each."""
    monkeypatch.setitem(benchmark.RESOLUTIONS, "64p", (64, 64))
    monkeypatch.setenv("TURBOPIPE_ENGINE", engine)
    methods, kinds = writer_choices(WRITER_METHODS, FRAME_KINDS, lambda note: None)
    assert kinds == ["numpy", "gl"] and {"plain", "writer", "writer-ffmpeg"} <= set(methods)
    plan = Plan(resolutions=["64p"], methods=methods, writer=True, writer_frames=5, repeats=1,
                ffmpeg=ffmpeg_exe, video_folder=str(tmp_path / "videos"))  # fmt: skip
    rows = benchmark.run(plan)
    assert [(r["frame_kind"], r["method"]) for r in rows] == [
        (c["frame_kind"], c["method"]) for c in plan.expand()
    ]
    source = moving_frames(64, 64, 1)[0].astype(int)
    for row in rows:
        frames = frames_of(decode(ffmpeg_exe, Path(row["output"])), 64, 64, 3).astype(int)
        assert len(frames) == 5, row["method"]
        if row["frame_kind"] == "numpy":  # nearer the source than to it upside down
            error, flipped = (np.abs(frames[0] - image).mean() for image in (source, source[::-1]))
            assert error < flipped / 4, row["method"]
        else:  # the demo's yellow bar on top: GL's bottom-up rows were flipped
            assert np.abs(frames[0][0] - (255, 217, 51)).mean() < 30, row["method"]
        assert row["fps"] > 0 and row["cpu_ms"] > 0
        assert (row["ffmpeg_ms"] is None) == (row["method"] == "pyav")
    table = format_tables(rows)
    for kind in kinds:
        assert f"| 64p {kind} | Method |" in table
    for method in methods:
        assert f"| {SYMBOLS[method]} | {method}" in table
