"""The writer's GPU passes: read frames back, or convert them on the GPU first.

A ``FrameReader`` reads a moderngl Framebuffer or Texture as rgb24 into a GPU buffer. A
``FrameConverter`` renders a moderngl texture into the output's packed layout (yuv420p,
nv12, yuv444p or rgb24) with the vertical flip folded in, then reads the planes into one
moderngl buffer, back to back, as FFmpeg's rawvideo demuxer expects them. YUV uses the
matrix and range that ``_formats`` picks (BT.709 for HD, BT.601 below; limited range but
for JPEG encoders). Needs moderngl: the writer imports this module at its first GL frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import moderngl

from .._api import YUV_MATRICES
from ._formats import GPU_FORMATS

_VERTEX = """
#version 330
void main() {
    // One triangle covering the viewport: (-1,-1), (3,-1), (-1,3).
    vec2 corner = vec2((gl_VertexID << 1) & 2, gl_VertexID & 2);
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
"""

_COMMON = """
#version 330
uniform sampler2D source;
uniform bool flip;
uniform vec3 luma;      // Y weights of R, G, B
uniform vec3 blue;      // U weights
uniform vec3 red;       // V weights
uniform vec3 range;     // Y offset, Y scale, U and V scale, in levels of 255

// The source pixel for output pixel p, mirrored vertically when flipping.
vec3 pixel(vec2 p) {
    ivec2 at = ivec2(p);
    if (flip) at.y = textureSize(source, 0).y - 1 - at.y;
    return texelFetch(source, at, 0).rgb;
}

// The average of the 2x2 source block for output pixel p: one bilinear fetch at the
// block's center.
vec3 block(vec2 p) {
    vec2 size = vec2(textureSize(source, 0));
    vec2 center = floor(p) * 2.0 + 1.0;
    if (flip) center.y = size.y - center.y;
    return texture(source, center / size).rgb;
}

// Limited range puts Y in [16, 235] and U, V in [16, 240]; full range uses [0, 255].
float to_y(vec3 rgb) { return (range.x + range.y * dot(rgb, luma)) / 255.0; }
vec2 to_uv(vec3 rgb) { return (128.0 + range.z * vec2(dot(rgb, blue), dot(rgb, red))) / 255.0; }
"""

# Each pass: (fragment body, output scale (source pixels per output pixel, each way),
# [components of each render target]).
_PASSES: dict[str, list[tuple[str, int, list[int]]]] = {
    "rgb24": [
        ("out vec4 rgb; void main() { rgb = vec4(pixel(gl_FragCoord.xy), 1.0); }", 1, [3]),
    ],
    "yuv444p": [
        ("layout(location=0) out float y; layout(location=1) out float u;"
         "layout(location=2) out float v;"
         "void main() { vec3 c = pixel(gl_FragCoord.xy); y = to_y(c);"
         " vec2 uv = to_uv(c); u = uv.x; v = uv.y; }",
         1, [1, 1, 1]),
    ],
    "yuv420p": [
        ("out float y; void main() { y = to_y(pixel(gl_FragCoord.xy)); }", 1, [1]),
        ("layout(location=0) out float u; layout(location=1) out float v;"
         "void main() { vec2 uv = to_uv(block(gl_FragCoord.xy)); u = uv.x; v = uv.y; }",
         2, [1, 1]),
    ],
    "nv12": [
        ("out float y; void main() { y = to_y(pixel(gl_FragCoord.xy)); }", 1, [1]),
        ("out vec2 uv; void main() { uv = to_uv(block(gl_FragCoord.xy)); }", 2, [2]),
    ],
}  # fmt: skip


def frame_size(pix_fmt: str, width: int, height: int) -> int:
    """Bytes of one packed frame of a GPU_FORMATS layout."""
    return sum(
        (width // scale) * (height // scale) * components
        for _, scale, targets in _PASSES[pix_fmt]
        for components in targets
    )


class _Scratch:
    """A texture with a framebuffer around it, made on first use, to copy frames into; and a
    framebuffer around the caller's last texture frame, to read or copy it from."""

    def __init__(self, ctx: Any, size: tuple[int, int]) -> None:
        self.ctx, self.size = ctx, size
        self.framebuffer: Any = None
        self.wrapped: tuple[Any, Any] | None = None  # (texture, framebuffer around it)

    def framebuffer_of(self, frame: Any) -> Any:
        """``frame`` if a Framebuffer, else one around the texture (kept for the next)."""
        if isinstance(frame, moderngl.Framebuffer):
            return frame
        if self.wrapped is None or self.wrapped[0] is not frame:
            self._release_wrapped()
            self.wrapped = (frame, self.ctx.framebuffer([frame]))
        return self.wrapped[1]

    def copy_of(self, frame: Any) -> Any:
        """A single-sampled framebuffer holding a copy of ``frame`` (Framebuffer or Texture)."""
        if self.framebuffer is None:
            self.framebuffer = self.ctx.framebuffer([self.ctx.texture(self.size, 4)])
        self.ctx.copy_framebuffer(self.framebuffer, self.framebuffer_of(frame))
        return self.framebuffer

    def _release_wrapped(self) -> None:
        if self.wrapped is not None:
            self.wrapped[1].release()
            self.wrapped = None

    def release(self) -> None:
        self._release_wrapped()
        if self.framebuffer is not None:
            for texture in self.framebuffer.color_attachments:
                texture.release()
            self.framebuffer.release()


def check_frame(frame: Any, size: tuple[int, int]) -> None:
    """Raise TypeError unless frame is a Framebuffer or Texture, ValueError unless it has
    colors (a depth texture, a depth-only framebuffer) of that size."""
    if not isinstance(frame, (moderngl.Framebuffer, moderngl.Texture)):
        raise TypeError(
            f"frames must be moderngl Framebuffers or Textures, not {type(frame).__name__}"
        )
    if isinstance(frame, moderngl.Framebuffer) and not frame.color_attachments:
        raise ValueError("the framebuffer has no color attachment to read frames from")
    if isinstance(frame, moderngl.Texture) and frame.depth:
        raise ValueError("a depth texture holds no colors to read frames from")
    if tuple(frame.size) != size:
        raise ValueError(f"frame is {frame.size[0]}x{frame.size[1]}, the video {size[0]}x{size[1]}")


class _KeepsCallerFramebuffer:
    """Binds the caller's framebuffer and viewport again after GL work: moderngl rebinds the
    last framebuffer used whenever it makes one, which fails if that was ours, released."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def __enter__(self) -> None:
        self.framebuffer = self.ctx.fbo or self.ctx.detect_framebuffer()
        self.viewport = self.ctx.viewport

    def __exit__(self, *_: object) -> None:
        if not isinstance(self.framebuffer.mglo, moderngl.InvalidObject):  # unless released
            self.framebuffer.use()
            self.ctx.viewport = self.viewport


class FrameReader:
    """Reads frames as RGB (or RGBA), bottom-up, into GPU buffers or memory: no render pass.

    Where a pass costs CPU (software rasterizers), the native converter or FFmpeg converts
    what it reads. llvmpipe reads RGBA about 3x faster than RGB.
    """

    def __init__(self, ctx: Any, width: int, height: int, components: int = 3) -> None:
        self.ctx = ctx
        self.size = (width, height)
        self.components = components
        self.frame_size = width * height * components
        self.scratch = _Scratch(ctx, self.size)

    def read_into(self, frame: Any, buffer: Any) -> None:
        check_frame(frame, self.size)
        with _KeepsCallerFramebuffer(self.ctx):
            self._readable(frame).read_into(buffer, components=self.components, alignment=1)

    def _readable(self, frame: Any) -> Any:
        framebuffer = self.scratch.framebuffer_of(frame)
        if any(getattr(a, "samples", 0) for a in framebuffer.color_attachments):
            return self.scratch.copy_of(framebuffer)  # multisampled: resolve first
        return framebuffer

    def release(self) -> None:
        self.scratch.release()


@dataclass
class _Pass:
    program: Any
    vertex_array: Any
    framebuffer: Any
    scope: Any  # binds framebuffer with every capability (blending, culling...) disabled
    planes: list[tuple[int, int, int]]  # (attachment, components, byte offset in the frame)


class FrameConverter:
    """Renders frames of one size into packed frames of ``pix_fmt`` in GPU buffers."""

    def __init__(
        self,
        ctx: Any,
        width: int,
        height: int,
        pix_fmt: str,
        flip: bool,
        matrix: str = "bt709",
        full_range: bool = False,
    ) -> None:
        if pix_fmt not in _PASSES:
            raise ValueError(f"no GPU conversion to {pix_fmt!r}; one of {', '.join(GPU_FORMATS)}")
        if pix_fmt in ("yuv420p", "nv12") and (width % 2 or height % 2):
            raise ValueError(f"{pix_fmt} needs an even width and height, not {width}x{height}")
        self.ctx = ctx
        self.size = (width, height)
        self.frame_size = frame_size(pix_fmt, width, height)
        self.scratch = _Scratch(ctx, self.size)
        kr, kb = YUV_MATRICES[matrix]
        weights = {
            "luma": (kr, 1 - kr - kb, kb),
            "blue": (-0.5 * kr / (1 - kb), -0.5 * (1 - kr - kb) / (1 - kb), 0.5),
            "red": (0.5, -0.5 * (1 - kr - kb) / (1 - kr), -0.5 * kb / (1 - kr)),
            "range": (0.0, 255.0, 255.0) if full_range else (16.0, 219.0, 224.0),
        }
        # The last texture unit, where the caller's own textures are least likely to be bound;
        # linear filtering for the 2x2 averages, whatever the source texture's own setting.
        self.unit = ctx.max_texture_units - 1
        self.sampler = ctx.sampler(repeat_x=False, repeat_y=False)
        self.passes: list[_Pass] = []
        offset = 0
        for body, scale, targets in _PASSES[pix_fmt]:
            program = ctx.program(vertex_shader=_VERTEX, fragment_shader=_COMMON + body)
            for name, value in weights.items():
                if name in program:
                    program[name].value = value
            program["flip"].value = flip
            program["source"].value = self.unit
            size = (width // scale, height // scale)
            textures = [ctx.texture(size, 4 if c == 3 else c) for c in targets]
            planes = []
            for attachment, components in enumerate(targets):
                planes.append((attachment, components, offset))
                offset += size[0] * size[1] * components
            framebuffer = ctx.framebuffer(textures)
            scope = ctx.scope(framebuffer=framebuffer, enable_only=moderngl.NOTHING)
            vertex_array = ctx.vertex_array(program, [])
            self.passes.append(_Pass(program, vertex_array, framebuffer, scope, planes))

    def read_into(self, frame: Any, buffer: Any) -> None:
        """Render ``frame`` (Framebuffer or Texture) into the packed frame in ``buffer``."""
        check_frame(frame, self.size)
        with _KeepsCallerFramebuffer(self.ctx):
            self._texture_of(frame).use(self.unit)
            self.sampler.use(self.unit)
            for step in self.passes:
                with step.scope:  # the caller's blending or culling would spoil the pass
                    step.vertex_array.render(vertices=3)
                for attachment, components, offset in step.planes:
                    step.framebuffer.read_into(
                        buffer, components=components, attachment=attachment, alignment=1,
                        write_offset=offset,
                    )  # fmt: skip
            self.sampler.clear(self.unit)

    def _texture_of(self, frame: Any) -> Any:
        """The texture to sample: the frame's own, else a copy (renderbuffers, multisampling)."""
        texture = frame if isinstance(frame, moderngl.Texture) else frame.color_attachments[0]
        if isinstance(texture, moderngl.Texture) and texture.samples == 0:
            return texture
        return self.scratch.copy_of(frame).color_attachments[0]

    def release(self) -> None:
        for step in self.passes:
            step.scope.release()
            for texture in step.framebuffer.color_attachments:
                texture.release()
            step.framebuffer.release()
            step.vertex_array.release()
            step.program.release()
        self.sampler.release()
        self.scratch.release()
