"""The demo: an animated shader rendered headlessly, written to a video by VideoWriter."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .writer import VideoWriter

_VERTEX = """
#version 330
out vec2 uv;
void main() {
    vec2 corner = vec2((gl_VertexID << 1) & 2, gl_VertexID & 2);
    uv = corner;
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
"""

# A plasma with a bright bar at the top, so a flipped video shows at a glance.
_FRAGMENT = """
#version 330
uniform float time;
uniform vec2 resolution;
in vec2 uv;
out vec4 color;
void main() {
    vec2 p = (uv - 0.5) * vec2(resolution.x / resolution.y, 1.0) * 6.0;
    float v = sin(p.x + time) + sin(p.y * 1.3 - time * 0.7)
            + sin(length(p + vec2(sin(time * 0.5), cos(time * 0.3)) * 3.0) * 1.5 - time * 2.0);
    vec3 rgb = 0.5 + 0.5 * cos(vec3(0.0, 2.1, 4.2) + v * 1.7 + time * 0.3);
    if (uv.y > 0.94) rgb = vec3(1.0, 0.85, 0.2);
    color = vec4(rgb, 1.0);
}
"""


class Scene:
    """The demo shader, rendered into its own framebuffer."""

    def __init__(self, ctx: Any, width: int, height: int) -> None:
        limit = min(ctx.info["GL_MAX_RENDERBUFFER_SIZE"], *ctx.info["GL_MAX_VIEWPORT_DIMS"])
        if max(width, height) > limit:
            raise ValueError(
                f"{width}x{height} is more than this GL renderer draws ({limit} a side)"
            )
        self.program = ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self.program["resolution"].value = (width, height)
        self.vertex_array = ctx.vertex_array(self.program, [])
        self.fbo = ctx.simple_framebuffer((width, height), components=4)

    def render(self, seconds: float) -> None:
        self.program["time"].value = seconds
        self.fbo.use()
        self.vertex_array.render(vertices=3)


@dataclass
class DemoResult:
    output: str
    frames: int
    seconds: float
    renderer: str
    conversion: str  # what converted RGB to YUV: VideoWriter.conversion

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def render_demo(
    output: str,
    width: int = 1280,
    height: int = 720,
    fps: float = 60,
    seconds: float = 5,
    codec: str = "libx264",
    convert: str = "auto",
    progress: bool = True,
    ffmpeg: str | None = None,
) -> DemoResult:
    """Render ``seconds`` of the demo shader into ``output``; returns what was achieved."""
    import moderngl

    ctx, _ = standalone_context(moderngl)
    try:
        scene = Scene(ctx, width, height)
        frames = max(1, round(seconds * fps))
        started = time.perf_counter()
        with VideoWriter(
            output, width, height, fps, codec=codec, preset="veryfast",
            convert=convert, progress=progress, total=frames, ffmpeg=ffmpeg,
        ) as video:  # fmt: skip
            for frame in range(frames):
                scene.render(frame / fps)
                video.write(scene.fbo)
        seconds = time.perf_counter() - started
        assert video.conversion is not None
        return DemoResult(output, frames, seconds, ctx.info["GL_RENDERER"], video.conversion)
    finally:
        ctx.release()


def standalone_context(moderngl: Any) -> tuple[Any, str]:
    """A headless context, and how it was made: EGL where available (no display needed),
    else moderngl's default. Raises RuntimeError saying why neither works."""
    try:
        return moderngl.create_standalone_context(backend="egl"), "EGL, headless"
    except Exception as error:
        egl = _first_line(error)
    try:
        return moderngl.create_standalone_context(), "the default backend"
    except Exception as error:
        raise RuntimeError(
            f"no OpenGL 3.3 context: EGL: {egl}; the default backend: {_first_line(error)}"
        ) from error


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
