"""The command line, through main(argv)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from turbopipe import benchmark
from turbopipe.cli import build_parser, main


def test_demo_writes_a_playable_video(
    tmp_path: Path, ffmpeg_exe: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "demo.mp4"
    argv = ["demo", "--output", str(output), "--width", "320", "--height", "240",
            "--fps", "30", "--seconds", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(output) in printed and re.search(r"30 frames in .* fps", printed)
    probe = subprocess.run(
        [ffmpeg_exe, "-hide_banner", "-i", str(output), "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert re.search(r"Video: h264 .*yuv420p.* 320x240", probe.stderr)
    assert re.search(r"frame=\s*30\b", probe.stderr)


def test_benchmark_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["benchmark", "--resolutions", "720p", "--buffers", "1", "--methods",
            "plain,native", "--gigabytes", "0.02", "--repeats", "1"]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert re.search(r"\| 🐢 \| plain \| Null \| 1 \|  \| \d+ \|", table)
    # Zero-copy into FFmpeg by default; pipe() times for the buffer and for a numpy array.
    native = (
        r"\| 🌀⚡ \| native \| Null \| 1 \| vmsplice \| \d+ \| .* "
        r"\| [\d.]+ \| [\d.]+ \| [\d.]+x \|  \|"
    )
    assert re.search(native, table)


def test_reference_names_the_reference_interpreter() -> None:
    parser = build_parser()
    for option in ("--reference", "--reference-python"):  # the second: its former name
        args = parser.parse_args(["benchmark", option, "/ref/bin/python"])
        assert args.reference_python == "/ref/bin/python"
    assert parser.parse_args(["benchmark"]).reference_python is None


def test_the_quick_benchmark_is_720p_and_1080p_with_1_and_4_buffers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plans: list[benchmark.Plan] = []

    def run(plan: benchmark.Plan, progress: object = None) -> list[dict[str, object]]:
        plans.append(plan)
        return []

    monkeypatch.setattr(benchmark, "run", run)
    monkeypatch.setattr(benchmark, "find_compiler", lambda: None)
    assert main(["benchmark"]) == 0
    (plan,) = plans
    assert (list(plan.resolutions), list(plan.buffers), list(plan.encoders)) == (
        ["720p", "1080p"], [1, 4], ["null"]
    )  # fmt: skip
    assert (plan.gigabytes, plan.repeats, plan.reference_python) == (0.5, 3, None)
    assert list(plan.methods) == ["plain", "thread", "python", "direct", "relay", "native"]
    assert "c-vmsplice skipped" in capsys.readouterr().err
    monkeypatch.setattr(benchmark, "find_compiler", lambda: ["cc"])
    assert main(["benchmark", "--reference", "/ref/bin/python"]) == 0
    assert list(plans[1].methods)[-2:] == ["c-vmsplice", "reference"]
    assert plans[1].reference_python == "/ref/bin/python"


@pytest.mark.parametrize(
    "option",
    [["--methods", "magic"], ["--resolutions", "480p"], ["--encoders", "x265"], ["--buffers", "0"]],
)
def test_unknown_choices_are_refused(capsys: pytest.CaptureFixture[str], option: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["benchmark", *option])
    assert exited.value.code == 2
    assert option[1] in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["benchmark", "--repeats", "0"],
        ["benchmark", "--gigabytes", "-1"],
        ["benchmark", "--methods", "reference"],
        ["benchmark", "--methods", "writer-gpu"],
        ["benchmark", "--writer", "--methods", "native"],
        ["benchmark", "--writer", "--buffers", "1"],
        ["benchmark", "--writer", "--encoders", "slow"],
        ["benchmark", "--writer", "--gigabytes", "1"],
        ["benchmark", "--writer", "--full"],
        ["benchmark", "--writer", "--reference-python", "python3"],
        ["benchmark", "--writer", "--reference", "python3"],
        ["benchmark", "--methods", "vmsplice"],
        ["demo", "--width", "0"],
        ["demo", "--fps", "nan"],
        ["demo", "--seconds", "inf"],
    ],
)
def test_bad_values_are_refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "said"),
    [(["--ffmpeg", "/no/such/ffmpeg"], "/no/such/ffmpeg"), (["--codec", "bogus"], "bogus"),
     (["--width", "321", "--height", "241", "--convert", "gpu"], "even width"),
     (["--width", "100000", "--height", "100"], "100000x100 is more than")],
)  # fmt: skip
def test_ffmpeg_failures_are_told_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], said: str
) -> None:
    argv = ["demo", "--output", str(tmp_path / "demo.mp4"), "--seconds", "0.1", "--no-progress"]
    with pytest.raises(SystemExit) as exited:
        main([*argv, *option])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("turbopipe demo: ") and said in err and "Traceback" not in err
