"""The benchmark's plan (which cases a set of choices runs) and its tables."""

from __future__ import annotations

from typing import Any

import pytest

from turbopipe import benchmark
from turbopipe.benchmark import (
    METHODS,
    WRITER_METHODS,
    Plan,
    default_methods,
    format_tables,
    median_row,
)


def test_a_plan_runs_every_combination_of_its_choices() -> None:
    plan = Plan(resolutions=["720p", "1080p"], encoders=["null", "slow"], buffers=[1, 4],
                methods=["plain", "native"], gigabytes=0.1)  # fmt: skip
    cases = plan.expand()
    assert len(cases) == 2 * 2 * 2 * 2
    null_720p = next(case for case in cases if case["resolution"] == "720p")
    slow_720p = next(case for case in cases if case["encoder"] == "slow")
    assert null_720p["frames"] == int(0.1e9 / (1280 * 720 * 3))
    assert slow_720p["frames"] == max(30, null_720p["frames"] // 8)


def test_a_writer_plan_runs_its_methods_at_each_resolution() -> None:
    plan = Plan(resolutions=["720p", "1080p"], methods=["writer-gpu"], writer=True)
    assert [(case["resolution"], case["method"]) for case in plan.expand()] == [
        ("720p", "writer-gpu"),
        ("1080p", "writer-gpu"),
    ]
    assert len(Plan(resolutions=["720p"], methods=WRITER_METHODS, writer=True).expand()) == 3


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
