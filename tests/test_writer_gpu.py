"""VideoWriter's Framebuffer and Texture frames: the GPU passes (layouts, sizes, the YUV
values of known colors), read back or converted on the GPU, and the colors of YUV output
on both paths."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import moderngl
import numpy as np
import pytest

from turbopipe import VideoWriter
from turbopipe.writer._formats import matrix_for
from turbopipe.writer._gpu import FrameConverter, frame_size
from writer_helpers import H, W, decode, frames_of, random_frames

CONVERSIONS = ["ffmpeg", "gpu", "native"]


@pytest.mark.parametrize(
    ("pix_fmt", "size"),
    [("yuv420p", 96 * 64 * 3 // 2), ("nv12", 96 * 64 * 3 // 2), ("yuv444p", 96 * 64 * 3),
     ("rgb24", 96 * 64 * 3)],
)  # fmt: skip
def test_frame_size(pix_fmt: str, size: int) -> None:
    assert frame_size(pix_fmt, 96, 64) == size


def test_odd_sizes_and_unknown_formats_are_refused(gl_context: moderngl.Context) -> None:
    with pytest.raises(ValueError, match="even"):
        FrameConverter(gl_context, 65, 64, "yuv420p", flip=False)
    with pytest.raises(ValueError, match="yuv420p"):
        FrameConverter(gl_context, 64, 64, "p010le", flip=False)


@pytest.mark.parametrize(
    ("rgb", "matrix", "yuv"),
    [
        ((255, 255, 255), "bt709", (235, 128, 128)),
        ((0, 0, 0), "bt709", (16, 128, 128)),
        ((255, 0, 0), "bt709", (63, 102, 240)),
        ((255, 0, 0), "bt601", (81, 90, 240)),
    ],
)
def test_known_colors(
    gl_context: moderngl.Context, rgb: tuple[int, int, int], matrix: str, yuv: tuple[int, ...]
) -> None:
    width, height = 64, 48
    converter = FrameConverter(gl_context, width, height, "yuv420p", flip=True, matrix=matrix)
    texture = gl_context.texture((width, height), 3, bytes(rgb) * (width * height))
    buffer = gl_context.buffer(reserve=converter.frame_size)
    converter.read_into(texture, buffer)
    frame = np.frombuffer(buffer.read(), np.uint8)
    luma, chroma = frame[: width * height], frame[width * height :]
    assert set(luma) == {yuv[0]}
    assert set(chroma[: len(chroma) // 2]) == {yuv[1]}
    assert set(chroma[len(chroma) // 2 :]) == {yuv[2]}
    for item in (converter, texture, buffer):
        item.release()


def render_quadrants(ctx: moderngl.Context, fbo: moderngl.Framebuffer, frame: int) -> None:
    """Top half red-ish, bottom half blue-ish (GL's y points up), changing per frame."""
    fbo.use()
    width, height = fbo.size
    ctx.scissor = (0, height // 2, width, height - height // 2)
    fbo.clear(0.9, 0.1 + 0.02 * frame, 0.2, 1.0)
    ctx.scissor = (0, 0, width, height // 2)
    fbo.clear(0.1, 0.3, 0.8 - 0.02 * frame, 1.0)
    ctx.scissor = None


# Framebuffers are kept for the module: moderngl reports GL_INVALID_OPERATION for the next
# framebuffer made after releasing the one in use.
@pytest.fixture(scope="module")
def fbo(_gl_session: moderngl.Context) -> moderngl.Framebuffer:
    return _gl_session.simple_framebuffer((128, 96), components=4)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p", "nv12"])
def test_gpu_conversion_matches_ffmpegs_own(
    tmp_path: Path,
    ffmpeg_exe: str,
    gl_context: moderngl.Context,
    fbo: moderngl.Framebuffer,
    pix_fmt: str,
) -> None:
    outputs = {}
    for convert in ("gpu", "native", "ffmpeg"):
        path = tmp_path / f"{convert}.mkv"
        with VideoWriter(path, 128, 96, codec="ffv1", pix_fmt=pix_fmt, convert=convert) as video:
            for frame in range(8):
                render_quadrants(gl_context, fbo, frame)
                video.write(fbo)
        assert video.conversion == convert
        outputs[convert] = np.frombuffer(decode(ffmpeg_exe, path, pix_fmt), np.uint8).astype(int)
        rgb = frames_of(decode(ffmpeg_exe, path), 128, 96, 3)
        assert len(rgb) == 8
        assert rgb[0, 0, 0, 0] > 200 > rgb[0, -1, 0, 0], "not right side up"
    for ours in ("gpu", "native"):
        difference = np.abs(outputs[ours] - outputs["ffmpeg"])
        # At most 2 levels apart, but for chroma along the color edge, where FFmpeg's
        # subsampling filter reaches further than the 2x2 average.
        assert np.mean(difference <= 2) > 0.97, np.mean(difference <= 2)
        assert difference.max() <= 12, difference.max()
    assert np.abs(outputs["gpu"] - outputs["native"]).max() <= 1


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p", "nv12"])
@pytest.mark.parametrize("matrix_height", [96, 720])
def test_gpu_and_native_conversions_agree_on_every_input(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context, pix_fmt: str, matrix_height: int
) -> None:
    """Noise, both matrices (by height): within 1 level, chroma filter included."""
    width, height = 64, matrix_height
    noise = np.random.default_rng(11).integers(0, 256, (height, width, 4), np.uint8)
    texture = gl_context.texture((width, height), 4, noise.tobytes())
    outputs = {}
    for convert in ("gpu", "native"):
        path = tmp_path / f"{convert}.nut"
        with VideoWriter(
            path, width, height, codec="rawvideo", pix_fmt=pix_fmt, convert=convert
        ) as video:
            video.write(texture)
        outputs[convert] = np.frombuffer(decode(ffmpeg_exe, path, pix_fmt), np.uint8).astype(int)
    assert len(outputs["gpu"]) == len(outputs["native"]) > 0
    assert np.abs(outputs["gpu"] - outputs["native"]).max() <= 1
    texture.release()


@pytest.mark.parametrize("convert", ["ffmpeg", "gpu"])
def test_texture_frames_as_rgb24(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context, convert: str
) -> None:
    """Read as is and flipped by FFmpeg, or flipped by a GPU pass: the same frames."""
    frames = random_frames(4)
    texture = gl_context.texture((W, H), 3)
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24", convert=convert
    ) as video:
        for frame in frames:
            texture.write(frame.tobytes())  # row 0 of the array is GL's bottom row
            video.write(texture)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames)[:, ::-1])
    texture.release()


@pytest.fixture(scope="module")
def multisampled_fbo(_gl_session: moderngl.Context) -> moderngl.Framebuffer:
    return _gl_session.framebuffer([_gl_session.renderbuffer((W, H), 4, samples=4)])


@pytest.fixture(scope="module")
def multisampled_texture_fbo(_gl_session: moderngl.Context) -> moderngl.Framebuffer:
    return _gl_session.framebuffer([_gl_session.texture((W, H), 4, samples=4)])


@pytest.mark.parametrize("convert", CONVERSIONS)
@pytest.mark.parametrize("written", ["framebuffer", "texture"])
def test_multisampled_frames(
    tmp_path: Path,
    ffmpeg_exe: str,
    gl_context: moderngl.Context,
    multisampled_fbo: moderngl.Framebuffer,
    multisampled_texture_fbo: moderngl.Framebuffer,
    convert: str,
    written: str,
) -> None:
    """A renderbuffer framebuffer, or a texture written as is, resolved before reading."""
    fbo = multisampled_fbo if written == "framebuffer" else multisampled_texture_fbo
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="yuv444p", convert=convert
    ) as video:
        for frame in range(3):
            render_quadrants(gl_context, fbo, frame)
            video.write(fbo if written == "framebuffer" else fbo.color_attachments[0])
    rgb = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert len(rgb) == 3
    assert rgb[0, 0, 0, 0] > 200 > rgb[0, -1, 0, 0], "not right side up"


def test_the_callers_gl_state_cannot_spoil_the_conversion(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context
) -> None:
    grey = gl_context.texture((W, H), 3, b"\x80" * (W * H * 3))
    gl_context.enable(moderngl.BLEND | moderngl.CULL_FACE)
    gl_context.blend_func = moderngl.ONE, moderngl.ONE
    gl_context.cull_face = "front_and_back"
    try:
        with VideoWriter(
            tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="yuv444p", convert="gpu"
        ) as video:
            for _ in range(3):
                video.write(grey)
    finally:
        gl_context.disable(moderngl.BLEND | moderngl.CULL_FACE)
        gl_context.cull_face = "back"
    planes = np.frombuffer(decode(ffmpeg_exe, tmp_path / "out.mkv", "yuv444p"), np.uint8)
    assert set(planes[: W * H]) == {126}  # 16 + 219 * 128 / 255, every frame
    assert len(planes) == 3 * W * H * 3
    grey.release()


def test_matrix_by_height() -> None:
    assert matrix_for(1080) == matrix_for(720) == "bt709"
    assert matrix_for(480) == "bt601"


@pytest.mark.parametrize("convert", CONVERSIONS)
def test_hd_colors_and_tags(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context, convert: str
) -> None:
    """HD is BT.709, limited range, on every path, and the stream says so."""
    width, height = 1280, 720
    red = gl_context.texture((width, height), 3, b"\xff\x00\x00" * (width * height))
    path = tmp_path / "out.mkv"
    with VideoWriter(path, width, height, codec="ffv1", convert=convert) as video:
        video.write(red)
    planes = np.frombuffer(decode(ffmpeg_exe, path, "yuv420p"), np.uint8).astype(int)
    y, u, v = planes[0], planes[width * height], planes[-1]
    assert abs(y - 63) <= 1 and abs(u - 102) <= 1 and abs(v - 240) <= 1, (y, u, v)
    probe = subprocess.run([ffmpeg_exe, "-hide_banner", "-i", str(path)], capture_output=True)
    assert b"yuv420p(tv, bt709" in probe.stderr, probe.stderr
    red.release()


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "convert", "size"),
    [("mjpeg", "yuv420p", "ffmpeg", (W, H)), ("mjpeg", "yuv420p", "gpu", (W, H)),
     ("mjpeg", "yuv420p", "native", (W, H)), ("mjpeg", "yuv444p", "gpu", (W, H)),
     ("ljpeg", "yuv444p", "ffmpeg", (W, H)), ("ljpeg", "yuv444p", "native", (W, H)),
     ("ffv1", "yuvj420p", "ffmpeg", (W, H)), ("ffv1", "yuvj420p", "native", (W, H)),
     ("mjpeg", "yuv420p", "ffmpeg", (1280, 720)), ("mjpeg", "yuv420p", "gpu", (1280, 720)),
     ("mjpeg", "yuv420p", "native", (1280, 720))],
)  # fmt: skip
def test_jpeg_encoders_and_yuvj_formats_get_full_range(
    tmp_path: Path,
    ffmpeg_exe: str,
    gl_context: moderngl.Context,
    codec: str,
    pix_fmt: str,
    convert: str,
    size: tuple[int, int],
) -> None:
    """FFmpeg's JPEG encoders refuse limited range, and JPEG is BT.601 whatever the size:
    the colors come back as they went in."""
    color = (200, 100, 50)
    width, height = size
    texture = gl_context.texture(size, 3, bytes(color) * (width * height))
    path = tmp_path / "out.mkv"
    with VideoWriter(path, width, height, codec=codec, pix_fmt=pix_fmt, convert=convert) as video:
        video.write(texture)
    rgb = frames_of(decode(ffmpeg_exe, path), width, height, 3).astype(int)
    assert len(rgb) == 1
    # A range or a matrix mixed up on the way moves 200 by 10 levels or more.
    assert np.abs(rgb - color).max() <= 3, rgb.reshape(-1, 3)[0]
    probe = subprocess.run([ffmpeg_exe, "-hide_banner", "-i", str(path)], capture_output=True)
    assert b"(pc, " in probe.stderr, probe.stderr
    texture.release()


def test_frames_without_colors_are_refused(tmp_path: Path, gl_context: moderngl.Context) -> None:
    depth = gl_context.depth_texture((W, H))
    depth_only = gl_context.framebuffer(depth_attachment=gl_context.depth_renderbuffer((W, H)))
    video = VideoWriter(tmp_path / "out.mkv", W, H)
    with pytest.raises(ValueError, match="depth texture"):
        video.write(depth)
    with pytest.raises(ValueError, match="no color attachment"):
        video.write(depth_only)
    assert video.pid is None
    video.close()
    depth_only.release()
    depth.release()


@pytest.mark.parametrize("convert", CONVERSIONS)
def test_a_gl_writer_is_closed_on_its_gl_thread(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context, convert: str
) -> None:
    """close() from another thread raises and leaves the writer open: its last frame and
    its GL objects need the GL context, current on the thread that wrote. Closed there,
    every frame arrives."""
    frames = random_frames(3)
    texture = gl_context.texture((W, H), 3)
    path = tmp_path / "out.mkv"
    video = VideoWriter(path, W, H, codec="ffv1", pix_fmt="rgb24" if convert != "native"
                        else "yuv444p", convert=convert)  # fmt: skip
    for frame in frames:
        texture.write(frame.tobytes())
        video.write(texture)
    failures: list[BaseException] = []

    def close_elsewhere() -> None:
        try:
            video.close()
        except BaseException as failure:
            failures.append(failure)

    other = threading.Thread(target=close_elsewhere)
    other.start()
    other.join()
    assert [type(f) for f in failures] == [RuntimeError]
    assert "on the thread that wrote" in str(failures[0])
    video.close()
    decoded = frames_of(decode(ffmpeg_exe, path), W, H, 3).astype(int)
    assert len(decoded) == 3
    assert np.abs(decoded - np.stack(frames)[:, ::-1]).max() <= (0 if convert != "native" else 3)
    assert gl_context.error == "GL_NO_ERROR"
    texture.release()


def test_gpu_conversion_refuses_frames_it_cannot_convert(
    tmp_path: Path, gl_context: moderngl.Context
) -> None:
    buffer = gl_context.buffer(reserve=W * H * 3)
    for frame in (np.zeros((H, W, 3), np.uint8), buffer):
        video = VideoWriter(tmp_path / "out.mkv", W, H, convert="gpu")
        with pytest.raises(ValueError, match=f'convert="gpu".*not {type(frame).__name__}'):
            video.write(frame)
        assert video.pid is None
        video.close()
    buffer.release()


def test_a_wrong_first_frame_starts_no_ffmpeg(
    tmp_path: Path, gl_context: moderngl.Context, fbo: moderngl.Framebuffer
) -> None:
    video = VideoWriter(tmp_path / "out.mkv", W, H)
    with pytest.raises(ValueError, match=f"the video {W}x{H}"):
        video.write(fbo)
    assert video.pid is None
    video.close()
    assert not (tmp_path / "out.mkv").exists()


def test_a_numpy_writer_given_gl_frames_says_so(tmp_path: Path, fbo: moderngl.Framebuffer) -> None:
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1") as video:
        video.write(np.zeros((H, W, 3), np.uint8))
        with pytest.raises(TypeError, match=r"numpy arrays or bytes-like frames.*Framebuffer"):
            video.write(fbo)
