"""moderngl buffers on a real OpenGL context (Mesa llvmpipe through EGL)."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path

import moderngl
import pytest

import turbopipe
from conftest import FFmpegPassthrough, Pipe, Reader, md5, run_with_engine

GL_ARRAY_BUFFER = 0x8892
GL_ARRAY_BUFFER_BINDING = 0x8894


class ArrayBufferBinding:
    """The caller's GL_ARRAY_BUFFER binding, read and set through the context's own loader."""

    def __init__(self, ctx: moderngl.Context) -> None:
        load = ctx.mglo._context.load
        self._bind = ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.c_uint)(load("glBindBuffer"))
        self._get = ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.POINTER(ctypes.c_int))(
            load("glGetIntegerv")
        )

    def get(self) -> int:
        value = ctypes.c_int()
        self._get(GL_ARRAY_BUFFER_BINDING, ctypes.byref(value))
        return value.value

    def set(self, glo: int) -> None:
        self._bind(GL_ARRAY_BUFFER, glo)


def render(ctx: moderngl.Context, fbo: moderngl.Framebuffer, frame: int) -> bytes:
    """Clear fbo to a color that depends on frame; return the bytes it must read back as."""
    color = (frame * 7 % 256, frame * 13 % 256, frame * 29 % 256)
    fbo.use()
    fbo.clear(*(c / 255 for c in color))
    return bytes(color) * (fbo.width * fbo.height)


@pytest.fixture(scope="module")
def fbo(_gl_session: moderngl.Context) -> moderngl.Framebuffer:
    # Kept for the module: moderngl reports GL_INVALID_OPERATION for the next framebuffer
    # made after releasing the one in use.
    return _gl_session.simple_framebuffer((320, 180), components=3)


@pytest.mark.parametrize("buffers", [1, 4])
def test_framebuffer_readbacks_through_ffmpeg(
    gl_context: moderngl.Context, fbo: moderngl.Framebuffer, ffmpeg_exe: str, buffers: int
) -> None:
    (width, height), frames = fbo.size, 24
    ring = [gl_context.buffer(reserve=width * height * 3) for _ in range(buffers)]
    ffmpeg = FFmpegPassthrough(ffmpeg_exe, width, height)
    expected = []
    for frame in range(frames):
        buffer = ring[frame % buffers]
        turbopipe.sync(buffer)  # its previous write is done: GL may write it again
        expected.append(render(gl_context, fbo, frame))
        fbo.read_into(buffer, components=3)
        turbopipe.pipe(buffer, ffmpeg.fd)
    turbopipe.sync()
    assert gl_context.error == "GL_NO_ERROR"
    assert ffmpeg.finish() == md5(*expected)
    for buffer in ring:
        buffer.release()


def test_same_buffer_piped_again_without_sync(
    gl_context: moderngl.Context, make_pipe: type[Pipe]
) -> None:
    pipe = make_pipe()
    data = os.urandom(1920 * 1080 * 3)
    buffer = gl_context.buffer(data)
    with pytest.warns(RuntimeWarning, match="without sync"):
        for _ in range(10):
            turbopipe.pipe(buffer, pipe.fd)
    turbopipe.sync(buffer.mglo)  # a buffer and its .mglo are one object
    assert pipe.finish() == md5(*[data] * 10)
    buffer.release()


def test_mglo_is_accepted(gl_context: moderngl.Context, make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    data = os.urandom(4096)
    buffer = gl_context.buffer(data)
    turbopipe.pipe(buffer.mglo, pipe.fd)
    turbopipe.sync(buffer)
    assert pipe.finish() == md5(data)
    buffer.write(data[::-1])  # unmapped: GL may write it
    assert gl_context.error == "GL_NO_ERROR"
    buffer.release()


def test_each_buffer_is_unmapped_and_the_callers_binding_kept(
    gl_context: moderngl.Context,
) -> None:
    binding = ArrayBufferBinding(gl_context)
    read_fd, write_fd = os.pipe()
    contents = [os.urandom(2 << 20) for _ in range(3)]
    buffers = [gl_context.buffer(data) for data in contents]
    expected = md5(*contents)
    for buffer in buffers:  # all three mapped at once, the pipe stalled
        turbopipe.pipe(buffer, write_fd)
    unrelated = gl_context.buffer(reserve=16)
    binding.set(unrelated.glo)
    reader = Reader(read_fd)

    turbopipe.sync(buffers[1])  # unmaps buffers[1] (and any other that is done), not the bound one
    assert binding.get() == unrelated.glo
    buffers[1].write(contents[0])  # binds buffers[1]
    assert gl_context.error == "GL_NO_ERROR"
    contents[1] = contents[0]

    binding.set(unrelated.glo)
    turbopipe.sync()
    assert binding.get() == unrelated.glo
    for buffer, data in zip(buffers, contents):
        assert buffer.read() == data  # mapping it again works: it was unmapped
        buffer.write(data[::-1])
    assert gl_context.error == "GL_NO_ERROR"
    os.close(write_fd)
    assert reader.join() == expected
    for buffer in [*buffers, unrelated]:
        buffer.release()


def test_finished_buffers_are_unmapped_by_later_calls(gl_context: moderngl.Context) -> None:
    """Used without sync(), a buffer is unmapped by the next pipe() once its write is done."""
    read_fd, write_fd = os.pipe()
    reader = Reader(read_fd)
    contents = [os.urandom(1 << 20) for _ in range(2)]
    first, second = (gl_context.buffer(content) for content in contents)
    turbopipe.pipe(first, write_fd)
    deadline = time.monotonic() + 30
    while turbopipe.stats(write_fd).items < 1:  # type: ignore[union-attr]  # until written
        assert time.monotonic() < deadline
        time.sleep(0.01)
    turbopipe.pipe(second, write_fd)
    first.write(b"\0" * first.size)  # GL writes it: it must be unmapped by now
    assert gl_context.error == "GL_NO_ERROR"
    turbopipe.sync()
    os.close(write_fd)
    assert reader.join() == md5(*contents)
    first.release()
    second.release()


@pytest.mark.parametrize("size", [64 << 10, 16 << 20])
@pytest.mark.parametrize("piped", ["buffer", "mglo"])
def test_a_buffer_released_before_its_sync_is_reported(
    gl_context: moderngl.Context, size: int, piped: str
) -> None:
    """Released while queued, a small buffer's freed memory may still be readable, a big
    one's not (EFAULT): either way the next call says the bytes are undefined, once, and
    the GL context is left without an error (the buffer is never unmapped). A bare .mglo
    piped and released too, even once a new buffer has taken its GL name."""
    read_fd, write_fd = os.pipe()
    buffer = gl_context.buffer(os.urandom(size))
    other = gl_context.buffer(reserve=16)
    turbopipe.pipe(buffer if piped == "buffer" else buffer.mglo, write_fd)  # not read yet
    (buffer if piped == "buffer" else buffer.mglo).release()
    successor = gl_context.buffer(reserve=16)  # may take the released buffer's name
    reader = Reader(read_fd)
    with pytest.raises(BufferError, match=r"released before sync\(buffer\).*undefined"):
        turbopipe.sync()  # a big one's EFAULT is the context of this error
    turbopipe.sync()  # told once
    os.close(write_fd)
    reader.join()
    other.write(b"still usable" + bytes(4))
    assert other.read()[:12] == b"still usable"
    other.release()
    successor.release()


def test_calls_from_another_thread_leave_gl_mappings_alone(
    gl_context: moderngl.Context, make_pipe: type[Pipe]
) -> None:
    """Only the GL thread can unmap; another thread's calls must not drop the mapping."""
    pipe, other = make_pipe(), make_pipe()
    data = os.urandom(1 << 20)
    buffer = gl_context.buffer(data)
    turbopipe.pipe(buffer, pipe.fd)

    def audio() -> None:
        for _ in range(5):
            turbopipe.pipe(b"audio", other.fd)
        turbopipe.sync()

    thread = threading.Thread(target=audio)
    thread.start()
    thread.join()
    turbopipe.sync(buffer)  # on the GL thread: unmaps
    buffer.write(data[::-1])
    assert gl_context.error == "GL_NO_ERROR"
    turbopipe.pipe(buffer, pipe.fd)
    turbopipe.sync()
    assert pipe.finish() == md5(data, data[::-1])
    assert other.finish() == md5(b"audio" * 5)
    buffer.release()


def test_a_refused_buffer_is_not_left_mapped(gl_context: moderngl.Context) -> None:
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    buffer = gl_context.buffer(os.urandom(4096))
    with pytest.raises(OSError):
        turbopipe.pipe(buffer, write_fd)  # closed: refused at the call
    buffer.write(bytes(4096))  # GL may write it: it is not mapped
    os.close(read_fd)
    buffer.release()


def test_another_thread_may_pipe_a_buffer_the_gl_thread_mapped(
    gl_context: moderngl.Context, make_pipe: type[Pipe]
) -> None:
    """Still mapped since the GL thread piped it, so GL cannot have changed it: the other
    thread's pipe() writes it from that same mapping, with no GL call of its own."""
    pipe = make_pipe()
    data = os.urandom(1 << 20)
    buffer = gl_context.buffer(data)
    turbopipe.pipe(buffer, pipe.fd)
    errors: list[BaseException] = []

    def encoder() -> None:
        try:
            with pytest.warns(RuntimeWarning, match="without sync"):
                turbopipe.pipe(buffer, pipe.fd)
        except BaseException as error:  # reported on the main thread
            errors.append(error)

    thread = threading.Thread(target=encoder)
    thread.start()
    thread.join()
    assert not errors, errors
    turbopipe.sync(buffer)  # on the GL thread: unmaps
    buffer.write(data[::-1])
    assert gl_context.error == "GL_NO_ERROR"
    assert pipe.finish() == md5(data, data)
    buffer.release()


def test_a_forked_child_leaves_the_parents_mappings_alone(tmp_path: Path) -> None:
    """Neither the child's engine nor its mappings may release the parent's exports, not
    even when the child's interpreter exits: for a moderngl buffer that would run
    glUnmapBuffer in the child."""
    result = run_with_engine(
        f"""
        import os, time, moderngl
        ctx = moderngl.create_standalone_context(backend="egl")
        buffer = ctx.buffer(b"x" * 4096)
        fd = os.open({str(tmp_path / "out")!r}, os.O_WRONLY | os.O_CREAT)
        turbopipe.pipe(buffer, fd)  # mapped until its sync
        time.sleep(0.2)
        turbopipe.pipe(b"audio", fd)  # the engine lets go of the written buffer's export
        # What the child inherits, to which it adds an object that tells when it is freed.
        inherited = [turbopipe._api._mappings._live]
        if turbopipe._api._engine.__name__.endswith("_python"):
            inherited.append(turbopipe._api._engine.engine._streams)

        class Freed:
            def __del__(self, write=os.write):
                write(1, b"freed in the child\\n")

        pid = os.fork()
        if pid == 0:  # no GL here: the child must not touch the mapping
            turbopipe.pipe(b"child", os.open({str(tmp_path / "child")!r}, os.O_WRONLY | os.O_CREAT))
            turbopipe.sync()
            try:
                memoryview(buffer.mglo)
                print("unmapped in the child", flush=True)
            except BufferError:
                print("still mapped in the child", flush=True)
            for records in inherited:
                records["freed"] = Freed()
            sys.exit(0)  # a normal exit: the interpreter frees what it can
        _, status = os.waitpid(pid, 0)
        turbopipe.sync(buffer)
        buffer.write(b"y" * 4096)
        print("child", status, ctx.error)
        """
    )
    assert "child 0 GL_NO_ERROR" in result.stdout, result.stderr
    assert "still mapped in the child" in result.stdout, result.stderr
    assert "freed in the child" not in result.stdout, result.stderr
    assert (tmp_path / "out").read_bytes() == b"x" * 4096 + b"audio"
    assert (tmp_path / "child").read_bytes() == b"child"
