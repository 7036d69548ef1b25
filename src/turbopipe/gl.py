"""GPU side of the video writer: flip and convert frames on the GPU, read them back.

A ``FrameConverter`` renders a moderngl texture into the output's packed layout (yuv420p,
nv12, yuv444p or rgb24) with the vertical flip folded in, then reads the planes into one
moderngl buffer, back to back, as FFmpeg's rawvideo demuxer expects them. YUV uses the
matrix the writer picks (BT.709 for HD, BT.601 below), limited range. Needs moderngl.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import moderngl

# (Kr, Kb) of the luma equation Y = Kr R + (1 - Kr - Kb) G + Kb B.
MATRICES = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}
GPU_FORMATS = ("yuv420p", "nv12", "yuv444p", "rgb24")

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

// Source pixel for output pixel p (in output pixels of `scale` source pixels each): the
// center of its block, mirrored vertically when flipping, as texture coordinates.
vec2 source_uv(vec2 p, float scale) {
    vec2 size = vec2(textureSize(source, 0));
    vec2 center = (floor(p) + 0.5) * scale;
    if (flip) center.y = size.y - center.y;
    return center / size;
}

// Limited range: Y in [16, 235], U and V in [16, 240], as fractions of 255.
float to_y(vec3 rgb) { return (16.0 + 219.0 * dot(rgb, luma)) / 255.0; }
vec2 to_uv(vec3 rgb) { return (128.0 + 224.0 * vec2(dot(rgb, blue), dot(rgb, red))) / 255.0; }
"""

# Each pass: (fragment body, output scale (1 or 2 source pixels per output pixel),
# [(components of each render target)]). One bilinear fetch at the center of a 2x2 block
# averages its four pixels for 4:2:0 chroma.
_PASSES: dict[str, list[tuple[str, int, list[int]]]] = {
    "rgb24": [
        ("out vec4 rgb; void main() { rgb = texture(source, source_uv(gl_FragCoord.xy, 1.0)); }",
         1, [3]),
    ],
    "yuv444p": [
        ("layout(location=0) out float y; layout(location=1) out float u;"
         "layout(location=2) out float v;"
         "void main() { vec3 c = texture(source, source_uv(gl_FragCoord.xy, 1.0)).rgb;"
         " y = to_y(c); vec2 uv = to_uv(c); u = uv.x; v = uv.y; }",
         1, [1, 1, 1]),
    ],
    "yuv420p": [
        ("out float y;"
         "void main() { y = to_y(texture(source, source_uv(gl_FragCoord.xy, 1.0)).rgb); }",
         1, [1]),
        ("layout(location=0) out float u; layout(location=1) out float v;"
         "void main() { vec2 uv = to_uv(texture(source, source_uv(gl_FragCoord.xy, 2.0)).rgb);"
         " u = uv.x; v = uv.y; }",
         2, [1, 1]),
    ],
    "nv12": [
        ("out float y;"
         "void main() { y = to_y(texture(source, source_uv(gl_FragCoord.xy, 1.0)).rgb); }",
         1, [1]),
        ("out vec2 uv;"
         "void main() { uv = to_uv(texture(source, source_uv(gl_FragCoord.xy, 2.0)).rgb); }",
         2, [2]),
    ],
}  # fmt: skip


def frame_size(pix_fmt: str, width: int, height: int) -> int:
    """Bytes of one packed frame of a GPU_FORMATS layout."""
    return sum(
        (width // scale) * (height // scale) * components
        for _, scale, targets in _PASSES[pix_fmt]
        for components in targets
    )


@dataclass
class _Pass:
    program: Any
    vertex_array: Any
    framebuffer: Any
    planes: list[tuple[int, int, int]]  # (attachment, components, byte offset in the frame)


class FrameConverter:
    """Renders textures of one size into packed frames of ``pix_fmt`` in GPU buffers."""

    def __init__(
        self, ctx: Any, width: int, height: int, pix_fmt: str, flip: bool, matrix: str = "bt709"
    ) -> None:
        if pix_fmt not in _PASSES:
            raise ValueError(f"no GPU conversion to {pix_fmt!r}; one of {', '.join(GPU_FORMATS)}")
        if pix_fmt in ("yuv420p", "nv12") and (width % 2 or height % 2):
            raise ValueError(f"{pix_fmt} needs an even width and height, not {width}x{height}")
        self.ctx = ctx
        self.width, self.height = width, height
        self.frame_size = frame_size(pix_fmt, width, height)
        kr, kb = MATRICES[matrix]
        weights = {
            "luma": (kr, 1 - kr - kb, kb),
            "blue": (-0.5 * kr / (1 - kb), -0.5 * (1 - kr - kb) / (1 - kb), 0.5),
            "red": (0.5, -0.5 * (1 - kr - kb) / (1 - kr), -0.5 * kb / (1 - kr)),
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
            self.passes.append(
                _Pass(program, ctx.vertex_array(program, []), ctx.framebuffer(textures), planes)
            )

    def convert(self, texture: Any, buffer: Any) -> None:
        """Render ``texture`` into the packed frame and read it into ``buffer`` (on the GPU)."""
        if texture.size != (self.width, self.height):
            width, height = texture.size
            raise ValueError(f"frame is {width}x{height}, the video {self.width}x{self.height}")
        # The caller's framebuffer is bound again afterwards: moderngl rebinds the last one
        # used when it makes framebuffers, which fails if that was ours and is released.
        framebuffer = self.ctx.fbo or self.ctx.detect_framebuffer()
        viewport = self.ctx.viewport
        texture.use(self.unit)
        self.sampler.use(self.unit)
        for step in self.passes:
            step.framebuffer.use()
            step.vertex_array.render(vertices=3)
            for attachment, components, offset in step.planes:
                step.framebuffer.read_into(
                    buffer, components=components, attachment=attachment, alignment=1,
                    write_offset=offset,
                )  # fmt: skip
        self.sampler.clear(self.unit)
        if not isinstance(framebuffer.mglo, moderngl.InvalidObject):  # unless released
            framebuffer.use()
            self.ctx.viewport = viewport

    def release(self) -> None:
        for step in self.passes:
            for texture in step.framebuffer.color_attachments:
                texture.release()
            step.framebuffer.release()
            step.vertex_array.release()
            step.program.release()
        self.sampler.release()


def source_texture(frame: Any, copy: Any) -> Any:
    """The texture to convert for a moderngl Framebuffer or Texture.

    A framebuffer whose first color attachment is a texture is read from directly; one
    with a renderbuffer is first copied into ``copy()`` (a texture of the same size).
    """
    if isinstance(frame, moderngl.Texture):
        return frame
    attachment = frame.color_attachments[0]
    if isinstance(attachment, moderngl.Texture) and attachment.samples == 0:
        return attachment
    texture = copy()
    frame.ctx.copy_framebuffer(texture, frame)
    return texture
