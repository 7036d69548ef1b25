"""VideoWriter end to end: real FFmpeg encodes, real FFmpeg decodes back."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from fractions import Fraction
from numbers import Real
from pathlib import Path
from typing import Any

import moderngl
import numpy as np
import pytest

import turbopipe
from conftest import Reader, md5, run_with_engine
from turbopipe import FFmpegError, VideoWriter
from turbopipe.writer import matrix_for

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


@pytest.mark.parametrize("components", [3, 4])
def test_numpy_frames_arrive_identical_and_in_order(
    tmp_path: Path, ffmpeg_exe: str, components: int
) -> None:
    frames = random_frames(12, components)
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24") as video:
        for frame in frames:
            video.write(frame)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert video.frames == len(decoded) == 12
    assert np.array_equal(decoded, np.stack(frames)[..., :3])


def test_a_reused_array_may_change_right_after_write(tmp_path: Path, ffmpeg_exe: str) -> None:
    frame = np.zeros((H, W, 3), np.uint8)
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24") as video:
        for value in range(20):
            frame[:] = value
            video.write(frame)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert [int(f.mean()) for f in decoded] == list(range(20))


def test_a_read_only_view_of_a_reused_array(tmp_path: Path, ffmpeg_exe: str) -> None:
    """Read-only is not immutable: the array behind the view changes after write()."""
    base = np.zeros((H, W, 3), np.uint8)
    view = base.view()
    view.flags.writeable = False
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24") as video:
        for value in range(10):
            base[:] = value
            video.write(view)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert [int(f.mean()) for f in decoded] == list(range(10))


def test_output_to_stdout(tmp_path: Path, ffmpeg_exe: str) -> None:
    """FFmpeg writes "-" to the writer's own stdout, as it would on the command line."""
    frames = [f.tobytes() for f in random_frames(3)]
    script = f"""
import sys
from turbopipe import VideoWriter
with VideoWriter("-", {W}, {H}, codec="ffv1", pix_fmt="rgb24", extra_args=["-f", "matroska"],
                 ffmpeg={ffmpeg_exe!r}) as video:
    for frame in {frames!r}:
        video.write(frame)
"""
    video = tmp_path / "out.mkv"
    with video.open("wb") as stdout:
        subprocess.run([sys.executable, "-c", script], stdout=stdout, check=True, timeout=60)
    assert decode(ffmpeg_exe, video) == b"".join(frames)


def test_bytes_frames(tmp_path: Path, ffmpeg_exe: str) -> None:
    frames = [f.tobytes() for f in random_frames(5)]
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24") as video:
        for frame in frames:
            video.write(frame)
    assert decode(ffmpeg_exe, tmp_path / "out.mkv") == b"".join(frames)


@pytest.mark.parametrize("vflip", [None, False])
def test_moderngl_buffers(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context, vflip: bool | None
) -> None:
    frames = random_frames(6)
    buffer = gl_context.buffer(reserve=W * H * 3)
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24", vflip=vflip
    ) as video:
        for frame in frames:
            buffer.write(frame.tobytes())  # the writer copied the last one: GL may write it
            video.write(buffer)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    expected = np.stack(frames)
    # Bytes read from OpenGL are bottom-up: by default the writer turns them over.
    assert np.array_equal(decoded, expected if vflip is False else expected[:, ::-1])
    buffer.release()


def test_rejected_frames_neither_drop_nor_repeat_the_others(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context
) -> None:
    """A program that catches the error of a bad frame and goes on: 1 to 4 bad frames in
    a row (the ring holds 3) leave the good ones around them as they were."""
    frames = random_frames(5)
    buffer = gl_context.buffer(reserve=W * H * 3)
    wrong = gl_context.buffer(reserve=W * H * 3 + 3)
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24", vflip=False, ring=3
    ) as video:
        for index, frame in enumerate(frames):
            buffer.write(frame.tobytes())
            video.write(buffer)
            for _ in range(index + 1 if index < 4 else 0):
                with pytest.raises(ValueError, match="buffer is"):
                    video.write(wrong)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))
    for released in (buffer, wrong):
        released.release()


def test_a_buffer_the_program_pipes_too(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context
) -> None:
    """The documented loop (sync, write the buffer, pipe it) plus the writer on the same
    buffer: the writer waits for the program's write, GL copies the buffer unmapped."""
    frames = random_frames(5)
    buffer = gl_context.buffer(reserve=W * H * 3)
    # A one-page pipe and a slow reader: each frame is still being piped at video.write.
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    reader = Reader(read_fd, chunk=1024, pause=0.005)
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24", vflip=False
    ) as video:
        for frame in frames:
            turbopipe.sync(buffer)
            buffer.write(frame.tobytes())
            turbopipe.pipe(buffer, write_fd, pipe_size=0)
            video.write(buffer)
    turbopipe.sync()
    os.close(write_fd)
    assert reader.join() == md5(*(frame.tobytes() for frame in frames))
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))
    buffer.release()


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
    for gpu_convert in (True, False):
        path = tmp_path / f"{gpu_convert}.mkv"
        with VideoWriter(
            path, 128, 96, codec="ffv1", pix_fmt=pix_fmt, gpu_convert=gpu_convert
        ) as video:
            for frame in range(8):
                render_quadrants(gl_context, fbo, frame)
                video.write(fbo)
        outputs[gpu_convert] = np.frombuffer(decode(ffmpeg_exe, path, pix_fmt), np.uint8)
        rgb = frames_of(decode(ffmpeg_exe, path), 128, 96, 3)
        assert len(rgb) == 8
        assert rgb[0, 0, 0, 0] > 200 > rgb[0, -1, 0, 0], "not right side up"
    difference = np.abs(outputs[True].astype(int) - outputs[False].astype(int))
    # At most 2 levels apart, but for chroma along the color edge, where FFmpeg's
    # subsampling filter reaches further than the GPU's 2x2 average.
    assert np.mean(difference <= 2) > 0.97, np.mean(difference <= 2)
    assert difference.max() <= 12, difference.max()


@pytest.mark.parametrize("gpu_convert", [False, True])
def test_hd_colors_and_tags(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context, gpu_convert: bool
) -> None:
    """HD is BT.709, limited range, on both paths, and the stream says so."""
    width, height = 1280, 720
    red = gl_context.texture((width, height), 3, b"\xff\x00\x00" * (width * height))
    path = tmp_path / "out.mkv"
    with VideoWriter(path, width, height, codec="ffv1", gpu_convert=gpu_convert) as video:
        video.write(red)
    planes = np.frombuffer(decode(ffmpeg_exe, path, "yuv420p"), np.uint8).astype(int)
    y, u, v = planes[0], planes[width * height], planes[-1]
    assert abs(y - 63) <= 1 and abs(u - 102) <= 1 and abs(v - 240) <= 1, (y, u, v)
    probe = subprocess.run([ffmpeg_exe, "-hide_banner", "-i", str(path)], capture_output=True)
    assert b"yuv420p(tv, bt709" in probe.stderr, probe.stderr
    red.release()


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "gpu_convert", "size"),
    [("mjpeg", "yuv420p", False, (W, H)), ("mjpeg", "yuv420p", True, (W, H)),
     ("mjpeg", "yuv444p", True, (W, H)), ("ljpeg", "yuv444p", False, (W, H)),
     ("ffv1", "yuvj420p", False, (W, H)),
     ("mjpeg", "yuv420p", False, (1280, 720)), ("mjpeg", "yuv420p", True, (1280, 720))],
)  # fmt: skip
def test_jpeg_encoders_and_yuvj_formats_get_full_range(
    tmp_path: Path,
    ffmpeg_exe: str,
    gl_context: moderngl.Context,
    codec: str,
    pix_fmt: str,
    gpu_convert: bool,
    size: tuple[int, int],
) -> None:
    """FFmpeg's JPEG encoders refuse limited range, and JPEG is BT.601 whatever the size:
    the colors come back as they went in."""
    color = (200, 100, 50)
    width, height = size
    texture = gl_context.texture(size, 3, bytes(color) * (width * height))
    path = tmp_path / "out.mkv"
    with VideoWriter(
        path, width, height, codec=codec, pix_fmt=pix_fmt, gpu_convert=gpu_convert
    ) as video:
        video.write(texture)
    rgb = frames_of(decode(ffmpeg_exe, path), width, height, 3).astype(int)
    assert len(rgb) == 1
    # A range or a matrix mixed up on the way moves 200 by 10 levels or more.
    assert np.abs(rgb - color).max() <= 3, rgb.reshape(-1, 3)[0]
    probe = subprocess.run([ffmpeg_exe, "-hide_banner", "-i", str(path)], capture_output=True)
    assert b"(pc, " in probe.stderr, probe.stderr
    texture.release()


def test_the_callers_gl_state_cannot_spoil_the_conversion(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context
) -> None:
    grey = gl_context.texture((W, H), 3, b"\x80" * (W * H * 3))
    gl_context.enable(moderngl.BLEND | moderngl.CULL_FACE)
    gl_context.blend_func = moderngl.ONE, moderngl.ONE
    gl_context.cull_face = "front_and_back"
    try:
        with VideoWriter(
            tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="yuv444p", gpu_convert=True
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


@pytest.mark.parametrize("gpu_convert", [False, True])
def test_texture_frames_as_rgb24(
    tmp_path: Path, ffmpeg_exe: str, gl_context: moderngl.Context, gpu_convert: bool
) -> None:
    """Read as is and flipped by FFmpeg, or flipped by a GPU pass: the same frames."""
    frames = random_frames(4)
    texture = gl_context.texture((W, H), 3)
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24", gpu_convert=gpu_convert
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


@pytest.mark.parametrize("gpu_convert", [False, True])
@pytest.mark.parametrize("written", ["framebuffer", "texture"])
def test_multisampled_frames(
    tmp_path: Path,
    ffmpeg_exe: str,
    gl_context: moderngl.Context,
    multisampled_fbo: moderngl.Framebuffer,
    multisampled_texture_fbo: moderngl.Framebuffer,
    gpu_convert: bool,
    written: str,
) -> None:
    """A renderbuffer framebuffer, or a texture written as is, resolved before reading."""
    fbo = multisampled_fbo if written == "framebuffer" else multisampled_texture_fbo
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="yuv444p", gpu_convert=gpu_convert
    ) as video:
        for frame in range(3):
            render_quadrants(gl_context, fbo, frame)
            video.write(fbo if written == "framebuffer" else fbo.color_attachments[0])
    rgb = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert len(rgb) == 3
    assert rgb[0, 0, 0, 0] > 200 > rgb[0, -1, 0, 0], "not right side up"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"codec": "no-such-encoder"}, "Unknown encoder"),
        ({"extra_args": ["-no-such-option", "1"]}, "no-such-option"),
    ],
)
def test_ffmpeg_refusing_its_arguments_raises_with_its_message(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    video = VideoWriter(tmp_path / "out.mp4", W, H, **options)  # type: ignore[arg-type]
    with pytest.raises(FFmpegError, match=message) as caught, video:
        for frame in random_frames(30):
            video.write(frame)
    assert caught.value.returncode not in (0, None)
    assert video.pid is not None and process_gone(video.pid)


def test_unwritable_output_raises(tmp_path: Path) -> None:
    video = VideoWriter(tmp_path / "missing" / "out.mp4", W, H)
    with pytest.raises(FFmpegError, match=r"missing/out\.mp4"):
        for frame in random_frames(30):
            video.write(frame)
        video.close()
    assert video.pid is not None and process_gone(video.pid)


def test_existing_output_is_kept_without_overwrite(tmp_path: Path) -> None:
    (tmp_path / "out.mp4").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match=r"out\.mp4"):
        VideoWriter(tmp_path / "out.mp4", W, H, overwrite=False)
    assert (tmp_path / "out.mp4").read_bytes() == b"keep me"


def test_ffmpeg_dying_mid_stream_raises_and_leaves_no_process(tmp_path: Path) -> None:
    video = VideoWriter(tmp_path / "out.mkv", 640, 480, codec="ffv1")
    frame = np.zeros((480, 640, 3), np.uint8)
    video.write(frame)
    assert video.pid is not None
    os.kill(video.pid, 9)
    with pytest.raises(FFmpegError, match="status -9"):
        for _ in range(200):
            video.write(frame)
        video.close()
    assert process_gone(video.pid)


def test_ffmpeg_told_to_stop_early_says_so(tmp_path: Path) -> None:
    video = VideoWriter(tmp_path / "out.mkv", 640, 480, codec="ffv1", extra_args=["-frames:v", "2"])
    frame = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(FFmpegError, match="status 0 before reading every frame"):
        for _ in range(200):  # more than the pipe holds
            video.write(frame)
        video.close()
    assert video.pid is not None and process_gone(video.pid)


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (np.zeros((H, W, 3), np.float32), TypeError),
        (np.zeros((H, W + 1, 3), np.uint8), ValueError),
        (np.zeros((H, W), np.uint8), ValueError),
        (b"short", ValueError),
        (12, TypeError),
    ],
)
def test_bad_frames_raise_at_write(tmp_path: Path, frame: object, error: type) -> None:
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1") as video:
        video.write(np.zeros((H, W, 3), np.uint8))
        with pytest.raises(error):
            video.write(frame)
        video.write(np.zeros((H, W, 3), np.uint8))
    assert video.frames == 2


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"width": 0}, ValueError),
        ({"width": 64.0}, TypeError),
        ({"fps": 0}, ValueError),
        ({"fps": float("nan")}, ValueError),
        ({"fps": "60"}, TypeError),
        ({"ring": 1}, ValueError),
        ({"ring": 2.5}, TypeError),
        ({"extra_args": "-an"}, TypeError),
    ],
)
def test_bad_writer_arguments(arguments: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        VideoWriter("out.mp4", **{"width": W, "height": H, **arguments})


def test_a_wrong_first_frame_starts_no_ffmpeg(
    tmp_path: Path, gl_context: moderngl.Context, fbo: moderngl.Framebuffer
) -> None:
    video = VideoWriter(tmp_path / "out.mkv", W, H)
    with pytest.raises(ValueError, match=f"the video {W}x{H}"):
        video.write(fbo)
    assert video.pid is None
    video.close()
    assert not (tmp_path / "out.mkv").exists()


def test_video_filters_of_extra_args_join_the_writers_own(tmp_path: Path, ffmpeg_exe: str) -> None:
    """FFmpeg keeps only the last -vf: the caller's must not replace the flip."""
    frames = random_frames(2)
    extra_args = ["-vf", "hflip"]
    with VideoWriter(
        tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24", vflip=True, extra_args=extra_args
    ) as video:
        for frame in frames:
            video.write(frame)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames)[:, ::-1, ::-1])


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), np.float32(30000 / 1001)])
def test_any_real_frame_rate(tmp_path: Path, ffmpeg_exe: str, fps: Real) -> None:
    with VideoWriter(tmp_path / "out.mkv", W, H, fps, codec="ffv1") as video:
        video.write(random_frames(1)[0])
    probe = subprocess.run(
        [ffmpeg_exe, "-i", str(tmp_path / "out.mkv")], capture_output=True, text=True
    )
    assert "29.97 fps" in probe.stderr


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


def test_gpu_convert_refuses_frames_it_cannot_convert(
    tmp_path: Path, gl_context: moderngl.Context
) -> None:
    buffer = gl_context.buffer(reserve=W * H * 3)
    for frame in (np.zeros((H, W, 3), np.uint8), buffer):
        video = VideoWriter(tmp_path / "out.mkv", W, H, gpu_convert=True)
        with pytest.raises(ValueError, match=f"gpu_convert=True.*not {type(frame).__name__}"):
            video.write(frame)
        assert video.pid is None
        video.close()
    buffer.release()


def test_a_numpy_writer_given_gl_frames_says_so(tmp_path: Path, fbo: moderngl.Framebuffer) -> None:
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1") as video:
        video.write(np.zeros((H, W, 3), np.uint8))
        with pytest.raises(TypeError, match=r"numpy arrays or bytes-like frames.*Framebuffer"):
            video.write(fbo)


def test_ffmpeg_runs_in_its_own_session(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to its foreground process group: ours, not FFmpeg's."""
    with VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1") as video:
        video.write(np.zeros((H, W, 3), np.uint8))
        assert video.pid is not None
        assert os.getpgid(video.pid) != os.getpgrp()


def test_an_error_inside_with_still_leaves_a_playable_video(
    tmp_path: Path, ffmpeg_exe: str
) -> None:
    frames = random_frames(3)
    video = VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24")
    with pytest.raises(KeyboardInterrupt), video:  # a recording ended by Ctrl-C
        for frame in frames:
            video.write(frame)
        raise KeyboardInterrupt
    assert video.pid is not None and process_gone(video.pid)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


def test_the_blocks_error_wins_over_a_failing_close(tmp_path: Path) -> None:
    video = VideoWriter(tmp_path / "missing" / "out.mkv", W, H, codec="ffv1")
    # The close failure is a note on the error, or before Python 3.11 a warning.
    told = "closing the VideoWriter failed"
    warned = (
        contextlib.nullcontext()
        if sys.version_info >= (3, 11)
        else pytest.warns(RuntimeWarning, match=told)
    )
    with warned, pytest.raises(KeyError) as raised, video:
        video.write(np.zeros((H, W, 3), np.uint8))
        raise KeyError("the program's own")
    assert sys.version_info < (3, 11) or told in "".join(raised.value.__notes__)


def test_a_dropped_writer_is_closed_even_when_warnings_are_errors(
    tmp_path: Path, ffmpeg_exe: str
) -> None:
    frames = random_frames(2)
    np.save(tmp_path / "frames.npy", np.stack(frames))
    result = run_with_engine(
        f"""
        import gc, warnings
        import numpy as np
        from turbopipe import VideoWriter
        warnings.simplefilter("error")
        video = VideoWriter({str(tmp_path / "out.mkv")!r}, {W}, {H}, codec="ffv1",
                            pix_fmt="rgb24")
        for frame in np.load({str(tmp_path / "frames.npy")!r}):
            video.write(frame)
        pid = video.pid
        del video
        gc.collect()
        print(pid)
        """
    )
    assert "ResourceWarning" in result.stderr
    assert process_gone(int(result.stdout))
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


def test_a_dropped_writer_is_closed_complete(tmp_path: Path, ffmpeg_exe: str) -> None:
    frames = random_frames(3)
    video = VideoWriter(tmp_path / "out.mkv", W, H, codec="ffv1", pix_fmt="rgb24")
    for frame in frames:
        video.write(frame)
    pid = video.pid
    assert pid is not None
    with pytest.warns(ResourceWarning, match="was not closed"):
        del video
        gc.collect()
    assert process_gone(pid)
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


def test_a_forked_child_does_not_keep_ffmpeg_waiting(tmp_path: Path, ffmpeg_exe: str) -> None:
    """A child still alive when the parent closes the writer (a worker pool, say) holds
    no copy of FFmpeg's stdin: FFmpeg sees the end of its input."""
    frames = random_frames(3)
    np.save(tmp_path / "frames.npy", np.stack(frames))
    result = run_with_engine(
        f"""
        import os, signal, time
        import numpy as np
        from turbopipe import VideoWriter
        video = VideoWriter({str(tmp_path / "out.mkv")!r}, {W}, {H}, codec="ffv1",
                            pix_fmt="rgb24")
        for frame in np.load({str(tmp_path / "frames.npy")!r}):
            video.write(frame)
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        started = time.monotonic()
        video.close()
        print(round(time.monotonic() - started))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 10  # seconds: not until the child exits
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


def test_a_forked_child_leaves_the_parents_writer_alone(tmp_path: Path, ffmpeg_exe: str) -> None:
    """A child that exits normally does not close (nor add to) the writer it inherited."""
    frames = random_frames(5)
    np.save(tmp_path / "frames.npy", np.stack(frames))
    result = run_with_engine(
        f"""
        import os, sys, warnings
        import moderngl, numpy as np
        from turbopipe import VideoWriter
        warnings.simplefilter("default", ResourceWarning)
        frames = np.load({str(tmp_path / "frames.npy")!r})
        ctx = moderngl.create_standalone_context(backend="egl")
        texture = ctx.texture(({W}, {H}), 3)
        video = VideoWriter({str(tmp_path / "out.mkv")!r}, {W}, {H}, codec="ffv1",
                            pix_fmt="rgb24", vflip=False, gpu_convert=False)
        for index, frame in enumerate(frames):
            texture.write(frame.tobytes())
            video.write(texture)  # piped one frame late: one is held back at the fork
            if index == 2:
                child = os.fork()
                if child == 0:
                    sys.exit(0)  # atexit runs in the child
                assert os.waitpid(child, 0)[1] == 0
        video.close()
        """
    )
    assert result.returncode == 0, result.stderr
    assert "was not closed" not in result.stderr
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


@pytest.mark.parametrize("kind", ["numpy", "texture"])
def test_a_writer_left_open_at_exit_is_closed_complete(
    tmp_path: Path, ffmpeg_exe: str, kind: str
) -> None:
    """Even GL frames, which the writer pipes one frame late, all reach the file."""
    frames = random_frames(4)
    np.save(tmp_path / "frames.npy", np.stack(frames))
    result = run_with_engine(
        f"""
        import warnings
        import numpy as np
        from turbopipe import VideoWriter
        warnings.simplefilter("default", ResourceWarning)
        frames = np.load({str(tmp_path / "frames.npy")!r})
        video = VideoWriter({str(tmp_path / "out.mkv")!r}, {W}, {H}, codec="ffv1",
                            pix_fmt="rgb24", vflip=False, gpu_convert=False)
        if {kind!r} == "texture":
            import moderngl
            ctx = moderngl.create_standalone_context(backend="egl")
            texture = ctx.texture(({W}, {H}), 3)
        for frame in frames:
            if {kind!r} == "texture":
                texture.write(frame.tobytes())
                video.write(texture)
            else:
                video.write(frame)
        print(video.pid)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ResourceWarning" in result.stderr and "was not closed" in result.stderr
    assert process_gone(int(result.stdout))
    decoded = frames_of(decode(ffmpeg_exe, tmp_path / "out.mkv"), W, H, 3)
    assert np.array_equal(decoded, np.stack(frames))


def test_matrix_by_height() -> None:
    assert matrix_for(1080) == matrix_for(720) == "bt709"
    assert matrix_for(480) == "bt601"


def test_an_ffmpeg_that_cannot_start_leaves_the_writer_consistent(tmp_path: Path) -> None:
    not_ffmpeg = tmp_path / "ffmpeg"
    not_ffmpeg.write_text("not a program")
    not_ffmpeg.chmod(0o755)
    video = VideoWriter(tmp_path / "out.mkv", W, H, ffmpeg=not_ffmpeg)
    for _ in range(2):  # the same clear error each time, never an inconsistent writer
        with pytest.raises(OSError, match="Exec format error"):
            video.write(np.zeros((H, W, 3), np.uint8))
    video.close()


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, even where a shell's background job ignores it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_ctrl_c_in_close_stops_ffmpeg(tmp_path: Path) -> None:
    stuck = tmp_path / "ffmpeg"
    stuck.write_text("#!/bin/sh\nexec sleep 60\n")  # an FFmpeg that never reads
    stuck.chmod(0o755)
    video = VideoWriter(tmp_path / "out.mkv", 640, 480, ffmpeg=stuck)
    for _ in range(2):  # more than the pipe holds, less than the ring: close() has to wait
        video.write(np.zeros((480, 640, 3), np.uint8))
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        video.close()
    assert video.pid is not None and process_gone(video.pid)
