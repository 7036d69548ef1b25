"""What the VideoWriter tests share: a frame size, frames, and FFmpeg to decode them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

W, H = 64, 48


def decode(ffmpeg: str, path: Path, pix_fmt: str = "rgb24") -> bytes:
    return subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip


def frames_of(data: bytes, width: int, height: int, components: int) -> np.ndarray:
    return np.frombuffer(data, np.uint8).reshape(-1, height, width, components)


def random_frames(count: int, components: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (H, W, components), np.uint8) for _ in range(count)]


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
