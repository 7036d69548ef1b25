"""Command line: ``python -m turbopipe demo`` and ``python -m turbopipe benchmark``."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, benchmark
from ._api import ENGINE
from .ffmpeg import FFmpegError, find_ffmpeg


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
    parser = argparse.ArgumentParser(prog="turbopipe", description="TurboPipe tools.")
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
        f"with --writer, of {', '.join(benchmark.WRITER_METHODS)} (default: all)",
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
        help="measure VideoWriter end to end instead: 240 frames of the demo shader into x264 "
        "ultrafast, at each resolution (--encoders, --buffers, --gigabytes, --full and "
        "--reference do not apply)",
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
        "demo", help="render an animated shader headlessly into a video through VideoWriter"
    )
    demo.add_argument("--output", default="turbopipe-demo.mp4", help="default turbopipe-demo.mp4")
    demo.add_argument("--width", type=_positive(int), default=1280)
    demo.add_argument("--height", type=_positive(int), default=720)
    demo.add_argument("--fps", type=_positive(float), default=60)
    demo.add_argument("--seconds", type=_positive(float), default=5)
    demo.add_argument("--codec", default="libx264", help="FFmpeg encoder (default libx264)")
    demo.add_argument(
        "--convert",
        choices=["auto", "gpu", "ffmpeg"],
        default="auto",
        help="RGB to YUV on the GPU or in FFmpeg (auto: GPU unless software GL)",
    )
    demo.add_argument("--ffmpeg", default=None, help="FFmpeg binary (default: searched)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = {"benchmark": run_benchmark, "demo": run_demo}[args.command]
    if args.command == "benchmark":
        _check_benchmark_args(parser, args)
    try:
        return run(args)
    # FFmpeg missing or failing, an unwritable output, a size the GPU conversion refuses
    except (FFmpegError, OSError, ValueError) as error:
        parser.exit(1, f"turbopipe {args.command}: {error}\n")


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
        allowed = benchmark.METHODS
    unknown = [method for method in methods if method not in allowed]
    if unknown:
        parser.error(f"unknown method {', '.join(unknown)} (choose from {', '.join(allowed)})")
    if "reference" in methods and not args.reference_python:
        parser.error("the reference method needs --reference PYTHON")


def run_benchmark(args: argparse.Namespace) -> int:
    if args.writer:
        methods = args.methods or list(benchmark.WRITER_METHODS)
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
    )
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
        gpu_convert={"auto": None, "gpu": True, "ffmpeg": False}[args.convert],
        progress=not args.no_progress, ffmpeg=args.ffmpeg,
    )  # fmt: skip
    print(f"wrote {Path(result.output).resolve()}")
    print(f"{result.frames} frames in {result.seconds:.2f} s: {result.fps:.1f} fps "
          f"({args.width}x{args.height}, {args.codec}, renderer {result.renderer})")  # fmt: skip
    return 0
