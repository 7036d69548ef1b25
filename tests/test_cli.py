"""The command line, through main(argv)."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import turbopipe
from turbopipe import benchmark, cli
from turbopipe.cli import build_parser, main
from turbopipe.ffmpeg import find_ffmpeg


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


def test_demo_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # unwrapped
    for default in ("turbopipe-demo.mp4", "1280", "720", "60", "5", "libx264", "auto"):
        assert f"(default: {default})" in shown, default
    assert "(default: None)" not in shown and "(default: False)" not in shown


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str, ffmpeg: bool = False) -> None:
    """Make modules unimportable, and FFmpeg unfindable when ffmpeg is true."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    if ffmpeg:
        monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
        monkeypatch.setenv("PATH", "")
        monkeypatch.delenv("TURBOPIPE_FFMPEG", raising=False)


@pytest.mark.parametrize(
    ("argv", "hidden", "said"),
    [
        (["demo"], ["moderngl", "ffmpeg"], "turbopipe demo needs moderngl and imageio-ffmpeg "
         "(or an ffmpeg on PATH): pip install 'turbopipe[moderngl,ffmpeg]'"),
        (["demo", "--seconds", "1"], ["moderngl"],
         "turbopipe demo needs moderngl: pip install 'turbopipe[moderngl]'"),
        (["demo"], ["ffmpeg"], "turbopipe demo needs imageio-ffmpeg (or an ffmpeg on PATH): "
         "pip install 'turbopipe[ffmpeg]'"),
        (["benchmark"], ["moderngl", "numpy", "ffmpeg"], "turbopipe benchmark needs moderngl, "
         "numpy and imageio-ffmpeg (or an ffmpeg on PATH): pip install 'turbopipe[moderngl,"
         "ffmpeg]' numpy"),
        (["benchmark"], ["numpy"], "turbopipe benchmark needs numpy: pip install numpy"),
        (["benchmark", "--writer"], ["numpy", "moderngl"],
         "turbopipe benchmark needs moderngl: pip install 'turbopipe[moderngl]'"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_one_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    hidden: list[str],
    said: str,
) -> None:
    hide(monkeypatch, *[name for name in hidden if name != "ffmpeg"], ffmpeg="ffmpeg" in hidden)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    assert capsys.readouterr().err == said + "\n"


def test_no_gl_context_is_told_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import moderngl

    def refuse(**kwargs: object) -> None:
        raise Exception(f"no display for {kwargs.get('backend', 'the default')}\ndetails")

    monkeypatch.setattr(moderngl, "create_standalone_context", refuse)
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--output", str(tmp_path / "demo.mp4"), "--no-progress"])
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "turbopipe demo: no OpenGL 3.3 context: EGL: no display for egl; the default backend: "
        "no display for the default\n"
    )
    assert not (tmp_path / "demo.mp4").exists()


def info_lines(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    parts = dict(line.split(":", 1) for line in lines)
    assert list(parts) == ["turbopipe", "engine", "python", "system", "vmsplice",
                           "pipe-max-size", "ffmpeg", "gl"]  # fmt: skip
    return {name: text.strip() for name, text in parts.items()}


def test_info_reports_each_part(
    capsys: pytest.CaptureFixture[str], ffmpeg_exe: str, gl_context: Any
) -> None:
    info = info_lines(capsys)
    assert info["turbopipe"].startswith(f"{turbopipe.__version__} (")
    assert info["engine"] == f"{turbopipe.ENGINE}: {turbopipe._api.ENGINE_REASON}"
    assert info["python"].startswith(platform.python_version())
    assert info["system"].startswith(platform.system())
    assert info["vmsplice"] == "works (the native engine's zero-copy into FFmpeg)"
    size = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    assert info["pipe-max-size"].startswith(f"{size} bytes")
    assert info["ffmpeg"].startswith(f"{find_ffmpeg()} (ffmpeg version ")
    assert info["gl"].startswith(f"{gl_context.info['GL_RENDERER']}, OpenGL ")
    assert info["gl"].endswith("(EGL, headless)")


def test_info_says_what_is_missing_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hide(monkeypatch, "moderngl", ffmpeg=True)

    def broken() -> str:
        raise OSError("no uname\nmore")

    monkeypatch.setattr(cli, "_system", broken)
    info = info_lines(capsys)
    assert info["system"] == "unknown (OSError: no uname)"
    assert info["ffmpeg"] == "not found: pip install 'turbopipe[ffmpeg]', or put ffmpeg on PATH"
    assert info["gl"] == "unknown (moderngl is not installed: pip install 'turbopipe[moderngl]')"
    assert info["engine"].startswith(turbopipe.ENGINE)


def test_python_m_turbopipe_info() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "turbopipe", "info"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"turbopipe:     {turbopipe.__version__} (")
    assert len(result.stdout.splitlines()) == 8
