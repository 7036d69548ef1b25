"""The writer's progress bar: tqdm when installed, else a line on stderr."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """A progress bar (tqdm when installed, else a line on stderr): frames, fps, MB/s."""

    def __init__(self, total: int | None) -> None:
        self.started = time.perf_counter()
        self.frames = 0
        self.bytes = 0
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar: Any = None
            self.shown = 0.0
        else:
            self.bar = tqdm(total=total, unit="frame", dynamic_ncols=True)

    def update(self, frame_bytes: int) -> None:
        self.frames += 1
        self.bytes += frame_bytes
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(self._rate(elapsed), refresh=False)
        elif elapsed - self.shown >= 0.5:
            self.shown = elapsed
            self._show_line(elapsed)

    def _rate(self, elapsed: float) -> str:
        return f"{self.bytes / elapsed / 1e6:.0f} MB/s"

    def _show_line(self, elapsed: float) -> None:
        print(f"\r{self.frames} frames, {self.frames / elapsed:.1f} fps, {self._rate(elapsed)}",
              end="", file=sys.stderr, flush=True)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.frames:  # the final count, then the line ends
            self._show_line(max(time.perf_counter() - self.started, 1e-9))
            print(file=sys.stderr)
