"""Command line: ``turbopipe demo``, ``turbopipe benchmark`` and ``turbopipe info`` (also as
``python -m turbopipe ...``)."""

from __future__ import annotations

import argparse
import ctypes
import errno
import importlib.util
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, _api, benchmark
from ._api import ENGINE
from .ffmpeg import ENV_VAR, FFmpegNotFoundError, find_ffmpeg

# The extra that brings each package a subcommand imports (None: a plain package).
_EXTRAS = {"moderngl": "moderngl", "imageio-ffmpeg": "ffmpeg", "numpy": None}


class _Defaults(argparse.HelpFormatter):
    """Help that shows each option's default, when it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _list_of(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """A parser of comma lists whose items are all in ``allowed``."""

    def parse(text: str) -> list[str]:
        items = [item for item in text.split(",") if item]
        unknown = [item for item in items if item not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown)} (choose from {', '.join(allowed)})"
            )
        return items

    return parse


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
        return value

    return parse


def _numbers(text: str) -> list[str]:
    items = [item for item in text.split(",") if item]
    if not all(item.isdigit() and int(item) > 0 for item in items):
        raise argparse.ArgumentTypeError(f"not a list of positive numbers: {text!r}")
    return items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="turbopipe",
        description="TurboPipe tools. demo needs the moderngl and ffmpeg extras, benchmark those "
        "and numpy, info nothing.",
    )
    parser.add_argument("--version", action="version", version=f"turbopipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser(
        "benchmark",
        help="pipe moderngl buffers into FFmpeg with each method and print the tables",
        description=benchmark.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "--resolutions",
        type=_list_of(list(benchmark.RESOLUTIONS)),
        default=["720p", "1080p"],
        help=f"comma list of {', '.join(benchmark.RESOLUTIONS)} (default 720p,1080p)",
    )
    bench.add_argument(
        "--encoders",
        type=_list_of(["null", "ultrafast", "slow"]),
        default=None,
        help="comma list of null, ultrafast, slow (default null)",
    )
    bench.add_argument(
        "--buffers",
        type=_numbers,
        default=None,
        help="comma list of ring sizes (default 1,4)",
    )
    bench.add_argument(
        "--methods",
        type=_list_of(list(dict.fromkeys(benchmark.METHODS + benchmark.WRITER_METHODS))),
        default=None,
        help=f"comma list of {', '.join(benchmark.METHODS)} (default: all but reference, "
        "plus reference when --reference is given; c-vmsplice only with a C compiler); "
        f"with --writer, of {', '.join(benchmark.WRITER_METHODS)} (default: all that can "
        "run here)",
    )
    bench.add_argument(
        "--frames",
        dest="frame_kinds",
        type=_list_of(benchmark.FRAME_KINDS),
        default=None,
        help=f"with --writer: comma list of {', '.join(benchmark.FRAME_KINDS)}, the kinds of "
        "frames written (default: both)",
    )
    bench.add_argument(
        "--gigabytes", type=_positive(float), default=None, help="data piped per case (default 0.5)"
    )
    bench.add_argument(
        "--repeats",
        type=_positive(int),
        default=3,
        help="runs per case, median reported (default 3)",
    )
    bench.add_argument(
        "--full", action="store_true", help="all resolutions, null/ultrafast/slow, 2 GB per case"
    )
    bench.add_argument("--ffmpeg", default=None, help="FFmpeg binary (default: searched)")
    bench.add_argument(
        "--writer",
        action="store_true",
        help="compare the ways of writing video from Python instead, VideoWriter's among them: "
        "240 frames of numpy arrays and of the demo shader into x264 ultrafast, at each "
        "resolution (--encoders, --buffers, --gigabytes, --full and --reference do not apply)",
    )
    bench.add_argument(
        "--reference",
        "--reference-python",
        dest="reference_python",
        metavar="PYTHON",
        default=None,
        help="interpreter of a venv holding another turbopipe, e.g. PyPI's 2.1.0 "
        "(--reference-python: the former name)",
    )

    demo = commands.add_parser(
        "demo",
        help="render an animated shader headlessly into a video through VideoWriter",
        description="Render an animated plasma shader headlessly (EGL: Mesa's llvmpipe without "
        "a GPU) and encode it through VideoWriter: each frame converted to YUV on the GPU, by "
        "turbopipe's converter or in FFmpeg, piped by turbopipe into FFmpeg. The yellow bar "
        "at the top of the video shows that it is the right way up. Needs moderngl and "
        "FFmpeg (the moderngl and ffmpeg extras).",
        formatter_class=_Defaults,
    )
    demo.add_argument("--output", default="turbopipe-demo.mp4", help="the video to write")
    demo.add_argument("--width", type=_positive(int), default=1280, help="pixels")
    demo.add_argument("--height", type=_positive(int), default=720, help="pixels")
    demo.add_argument("--fps", type=_positive(float), default=60, help="frames per second")
    demo.add_argument("--seconds", type=_positive(float), default=5, help="the video's length")
    demo.add_argument("--codec", default="libx264", help="FFmpeg encoder")
    demo.add_argument(
        "--convert",
        choices=["auto", "native", "gpu", "ffmpeg"],
        default="auto",
        help="what converts RGB to YUV (auto: the GPU unless GL is software, then native)",
    )
    demo.add_argument(
        "--ffmpeg", help="FFmpeg binary (default: TURBOPIPE_FFMPEG, PATH, then imageio-ffmpeg)"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")

    commands.add_parser(
        "info",
        help="print the version, engine, platform features, FFmpeg and GL renderer",
        description="What turbopipe finds on this machine, for bug reports: its version, the "
        "engine and why, the platform's features, the FFmpeg it would run and the GL renderer "
        "of a headless context. Needs no extra.",
    )
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return run_info()
    if args.command == "benchmark":
        _check_benchmark_args(parser, args)
    run = {"benchmark": run_benchmark, "demo": run_demo}[args.command]
    try:
        missing = _missing(args)
        if missing:
            parser.exit(1, f"{missing}\n")
        return run(args)
    # FFmpeg missing or failing, no GL context, an unwritable output, a size the GPU
    # conversion refuses
    except (RuntimeError, OSError, ValueError) as error:
        parser.exit(1, f"turbopipe {args.command}: {error}\n")


def _missing(args: argparse.Namespace) -> str | None:
    """One line saying what the command needs and how to install it, or None if nothing
    is missing. An FFmpeg given by --ffmpeg or TURBOPIPE_FFMPEG is checked by the run."""
    needs = ["moderngl"] if args.command == "demo" or args.writer else ["moderngl", "numpy"]
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    without_ffmpeg = False
    try:
        find_ffmpeg(args.ffmpeg)
    except FFmpegNotFoundError:
        without_ffmpeg = not (args.ffmpeg or os.environ.get(ENV_VAR))
    if without_ffmpeg:
        missing.append("imageio-ffmpeg")
    if not missing:
        return None
    extras = [extra for extra in map(_EXTRAS.get, missing) if extra]
    command = ["pip", "install"]
    if extras:
        command.append(f"'turbopipe[{','.join(extras)}]'")
    command += [name for name in missing if not _EXTRAS[name]]
    names = " and ".join([", ".join(missing[:-1]), missing[-1]] if missing[1:] else missing)
    if without_ffmpeg:
        names += " (or an ffmpeg on PATH)"
    return f"turbopipe {args.command} needs {names}: {' '.join(command)}"


def _check_benchmark_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    methods = args.methods or []
    if args.writer:
        given = [
            option
            for option, value in (("--encoders", args.encoders), ("--buffers", args.buffers),
                                  ("--gigabytes", args.gigabytes), ("--full", args.full),
                                  ("--reference", args.reference_python))
            if value
        ]  # fmt: skip
        if given:
            parser.error(f"{', '.join(given)} do not apply to --writer")
        allowed: Sequence[str] = benchmark.WRITER_METHODS
    else:
        if args.frame_kinds:
            parser.error("--frames applies to --writer only")
        allowed = benchmark.METHODS
    unknown = [method for method in methods if method not in allowed]
    if unknown:
        parser.error(f"unknown method {', '.join(unknown)} (choose from {', '.join(allowed)})")
    if "reference" in methods and not args.reference_python:
        parser.error("the reference method needs --reference PYTHON")


def run_benchmark(args: argparse.Namespace) -> int:
    frame_kinds = args.frame_kinds or list(benchmark.FRAME_KINDS)
    if args.writer:
        # On stdout, with the tables: a note tells why their rows are missing.
        methods, frame_kinds = benchmark.writer_choices(
            args.methods or benchmark.WRITER_METHODS, frame_kinds, print
        )
    else:
        methods = args.methods or benchmark.default_methods(
            reference=bool(args.reference_python),
            compiler=benchmark.find_compiler() is not None,
            warn=lambda text: print(text, file=sys.stderr, flush=True),
        )
    plan = benchmark.Plan(
        resolutions=list(benchmark.RESOLUTIONS) if args.full else args.resolutions,
        encoders=["null", "ultrafast", "slow"] if args.full else args.encoders or ["null"],
        buffers=[int(b) for b in args.buffers or ["1", "4"]],
        methods=methods,
        gigabytes=2.0 if args.full else args.gigabytes or 0.5,
        repeats=args.repeats,
        ffmpeg=find_ffmpeg(args.ffmpeg),
        reference_python=args.reference_python,
        writer=args.writer,
        frame_kinds=frame_kinds,
    )
    if not plan.expand():
        print("turbopipe benchmark: none of the methods and frames chosen can run here "
              "(writer-gpu takes gl frames only)", file=sys.stderr)  # fmt: skip
        return 1
    print(f"turbopipe {__version__} ({ENGINE} engine), ffmpeg: {plan.ffmpeg}", flush=True)
    try:
        rows = benchmark.run(
            plan, progress=lambda text: print(f"  {text}", file=sys.stderr, flush=True)
        )
    except RuntimeError as error:  # a case or the C bound's build failed: say so, briefly
        print(f"turbopipe benchmark: {error}", file=sys.stderr)
        return 1
    print(benchmark.format_tables(rows))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .demo import render_demo

    result = render_demo(
        args.output, args.width, args.height, args.fps, args.seconds, args.codec,
        convert=args.convert, progress=not args.no_progress, ffmpeg=args.ffmpeg,
    )  # fmt: skip
    print(f"wrote {Path(result.output).resolve()}")
    print(f"{result.frames} frames in {result.seconds:.2f} s: {result.fps:.1f} fps "
          f"({args.width}x{args.height}, {args.codec}, renderer {result.renderer}, "
          f"converted by {result.conversion})")  # fmt: skip
    return 0


def run_info() -> int:
    """Print one line per part; a part missing or failing says so on its line."""
    parts: list[tuple[str, Callable[[], str]]] = [
        ("turbopipe", lambda: f"{__version__} ({Path(__file__).parent})"),
        ("engine", lambda: f"{ENGINE}: {_api.ENGINE_REASON}"),
        ("python", lambda: f"{platform.python_version()} {platform.python_implementation()} "
                           f"({sys.executable})"),
        ("system", _system),
        ("vmsplice", _vmsplice),
        ("pipe-max-size", _pipe_max_size),
        ("ffmpeg", _ffmpeg),
        ("gl", _gl),
    ]  # fmt: skip
    for name, describe in parts:
        try:
            text = describe()
        except Exception as error:
            text = f"unknown ({type(error).__name__}: {_first_line(error)})"
        print(f"{name + ':':<15}{text}", flush=True)
    return 0


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _system() -> str:
    text = f"{platform.system()} {platform.release()} {platform.machine()}"
    libc, version = platform.libc_ver()
    return f"{text}, {libc} {version}" if libc else text


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


def _vmsplice() -> str:
    """Whether the kernel takes a vmsplice: tried on a pipe of our own."""
    if not sys.platform.startswith("linux"):
        return "no (Linux only)"
    try:
        call = ctypes.CDLL(None, use_errno=True).vmsplice
    except AttributeError:
        return "no (not in the C library)"
    data = ctypes.create_string_buffer(b"turbopipe", 9)
    span = _Iovec(ctypes.addressof(data), 9)
    read_end, write_end = os.pipe()
    try:
        moved = call(write_end, ctypes.byref(span), 1, 0)
        if moved < 0:
            code = ctypes.get_errno()
            return f"no (refused: {errno.errorcode.get(code, code)})"
        if os.read(read_end, 9) != data.raw[:moved]:
            return "no (the pipe returned other bytes)"
    finally:
        os.close(read_end)
        os.close(write_end)
    use = "the native engine's zero-copy into FFmpeg" if ENGINE == "native" else (
        "but the Python engine does not use it"
    )  # fmt: skip
    return f"works ({use})"


def _pipe_max_size() -> str:
    try:
        size = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except FileNotFoundError:
        return "unknown (no /proc/sys/fs/pipe-max-size: pipes keep their size)"
    return f"{size} bytes ({size >> 10} KiB): pipe_size above it is capped"


def _ffmpeg() -> str:
    try:
        path = find_ffmpeg()
    except FFmpegNotFoundError:
        return "not found: pip install 'turbopipe[ffmpeg]', or put ffmpeg on PATH"
    try:
        said = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{path} (does not run: {_first_line(error)})"
    version = said.stdout.splitlines()[0] if said.stdout.strip() else f"status {said.returncode}"
    return f"{path} ({version})"


def _gl() -> str:
    if importlib.util.find_spec("moderngl") is None:
        return "unknown (moderngl is not installed: pip install 'turbopipe[moderngl]')"
    import moderngl

    from .demo import standalone_context

    try:
        ctx, backend = standalone_context(moderngl)
    except RuntimeError as error:
        return f"none ({error})"
    try:
        return f"{ctx.info['GL_RENDERER']}, OpenGL {ctx.info['GL_VERSION']} ({backend})"
    finally:
        ctx.release()
