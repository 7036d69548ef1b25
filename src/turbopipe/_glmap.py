"""Mappings of moderngl buffers held while their bytes are being written.

Exporting a moderngl buffer (``memoryview(buffer.mglo)``) maps it with glMapBufferRange;
the engine writes straight from that mapping, so it must stay mapped until the write is
done, and be unmapped before GL writes the buffer again. Two moderngl facts shape this:

- A buffer can be mapped only once: a second export raises BufferError.
- Releasing the export calls ``glUnmapBuffer(GL_ARRAY_BUFFER)``, which unmaps whatever
  buffer is bound there, not necessarily this one. So each unmap binds the buffer first
  and restores the caller's binding afterwards.

GL calls only work on the thread whose context is current: a buffer is unmapped by calls
on the thread that mapped it, never by another thread's.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable
from typing import Any

_GL_ARRAY_BUFFER = 0x8892
_GL_ARRAY_BUFFER_BINDING = 0x8894
_GL_BUFFER_MAPPED = 0x88BC


# Types seen that are neither a moderngl.Buffer nor its .mglo: pipe() asks for every frame.
# A type that exists before moderngl is imported cannot derive from its Buffer.
PLAIN_TYPES: set[type] = set()


def gl_buffer(data: object) -> tuple[object, object | None] | None:
    """(mglo, wrapper) when data is a moderngl.Buffer or its .mglo, else None."""
    kind = type(data)
    if kind in PLAIN_TYPES:
        return None
    moderngl = sys.modules.get("moderngl")
    if moderngl is not None and issubclass(kind, moderngl.Buffer):
        return data.mglo, data  # type: ignore[attr-defined]
    if kind.__module__ == "mgl" and kind.__name__ == "Buffer":
        return data, None
    PLAIN_TYPES.add(kind)
    return None


class _BufferBinding:
    """glBindBuffer / glGetIntegerv for GL_ARRAY_BUFFER, and whether a buffer is still
    mapped, loaded from a moderngl context."""

    def __init__(self, context: Any) -> None:
        load: Callable[[str], int] = context.mglo._context.load
        uint, int_pointer = ctypes.c_uint, ctypes.POINTER(ctypes.c_int)
        self._bind = ctypes.CFUNCTYPE(None, uint, uint)(load("glBindBuffer"))
        self._get = ctypes.CFUNCTYPE(None, uint, int_pointer)(load("glGetIntegerv"))
        self._is_buffer = ctypes.CFUNCTYPE(ctypes.c_ubyte, uint)(load("glIsBuffer"))
        self._parameter = ctypes.CFUNCTYPE(None, uint, uint, int_pointer)(
            load("glGetBufferParameteriv")
        )

    def current(self) -> int:
        value = ctypes.c_int(0)
        self._get(_GL_ARRAY_BUFFER_BINDING, ctypes.byref(value))
        return value.value

    def bind(self, glo: int) -> None:
        self._bind(_GL_ARRAY_BUFFER, glo)

    def is_buffer(self, glo: int) -> bool:
        return bool(self._is_buffer(glo))

    def bound_is_mapped(self) -> bool:
        mapped = ctypes.c_int(0)
        self._parameter(_GL_ARRAY_BUFFER, _GL_BUFFER_MAPPED, ctypes.byref(mapped))
        return bool(mapped.value)


class _Mapping:
    __slots__ = ("glo", "mglo", "reported", "thread", "view", "wrapper")

    def __init__(self, mglo: object, view: memoryview, wrapper: object | None, glo: int) -> None:
        self.mglo = mglo  # held: its id() keys the mapping
        self.view = view
        self.wrapper = wrapper  # its .glo names the buffer; without one, glo does
        self.glo = glo
        # The thread whose GL context mapped it: its Thread object, never another thread's
        # (an ident is reused once a thread ends) and the same on every call from a thread
        # Python did not start.
        self.thread = threading.current_thread()
        self.reported = False  # its release while mapped was raised

    @property
    def name(self) -> int:
        """The GL name of the buffer."""
        return self.glo if self.wrapper is None else self.wrapper.glo  # type: ignore[attr-defined]

    def released(self) -> bool:
        """Whether its moderngl.Buffer was released while mapped: moderngl then gives the
        wrapper another mglo. (A bare mglo's release shows only to GL: see unmap.)"""
        return self.wrapper is not None and self.wrapper.mglo is not self.mglo  # type: ignore[attr-defined]

    def unmap(self, binding: _BufferBinding) -> bool:
        """Unmap it, its buffer bound for moderngl's unmap (which unmaps whatever is bound),
        the caller's binding restored. False, leaving it mapped, if it is a bare mglo whose
        buffer was released: its name no longer names a mapped buffer (deleting a buffer
        unmaps it, and a new buffer taking the name is not mapped). Asked here, once its
        write is done, in the binding unmapping needs anyway."""
        bare = self.wrapper is None
        if bare and not binding.is_buffer(self.glo):
            return False
        previous = binding.current()
        binding.bind(self.name)
        try:
            if bare and not binding.bound_is_mapped():
                return False
            self.view.release()
            return True
        finally:
            binding.bind(previous)


def _keep_for_ever(held: object) -> None:
    """Keep held alive, even through the interpreter's exit: freeing a mapping's view
    releases its export, and moderngl unmaps in that release (whatever buffer is bound
    then)."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(held))


class Mappings:
    """The live mappings, by the mglo they map."""

    def __init__(self) -> None:
        self._live: dict[int, _Mapping] = {}
        self._binding: _BufferBinding | None = None

    def map(self, mglo: object, wrapper: object | None) -> memoryview:
        """Map mglo, which is not mapped, for writing out."""
        binding = self._binding or self._binding_for(wrapper)
        view = memoryview(mglo)  # type: ignore[arg-type]
        # moderngl binds the buffer to GL_ARRAY_BUFFER to map it: that names a bare mglo.
        glo = 0 if wrapper is not None else binding.current()
        self._live[id(mglo)] = _Mapping(mglo, view, wrapper, glo)
        return view

    def view(self, mglo: object) -> memoryview | None:
        """mglo's live mapping, if it has one."""
        mapping = self._live.get(id(mglo))
        return None if mapping is None else mapping.view

    def forget(self) -> None:
        """Let go of every record without unmapping (in a forked child)."""
        _keep_for_ever(self._live)
        self._live = {}

    def unmap_idle(
        self, busy: Callable[[object], bool], queued: object = None, *, all: bool = True
    ) -> None:
        """Unmap the buffers this thread mapped whose writes are done (``queued`` was just
        piped: it is not). ``all=False`` is pipe()'s quick sweep: oldest first, it stops
        at the first still being written, as the later ones most likely are too."""
        if len(self._live) <= (queued is not None):  # none, or only the one just piped
            return
        thread = threading.current_thread()
        lost = []
        for mapping in list(self._live.values()):  # in the order they were mapped
            if mapping.mglo is queued or mapping.thread is not thread:
                continue
            assert self._binding is not None  # made by the map() that made the mapping
            written = not busy(mapping.mglo)
            released = mapping.released()
            if written:
                del self._live[id(mapping.mglo)]
                released = released or not mapping.unmap(self._binding)
                if released:  # its buffer is gone: never unmapped, and kept
                    _keep_for_ever(mapping)
            if released and not mapping.reported:
                mapping.reported = True
                lost.append(mapping)
            if not written and not all:
                break
        if lost:
            names = ", ".join(str(mapping.name) for mapping in lost)
            raise BufferError(
                f"moderngl buffer (glo {names}) released before sync(buffer): the bytes "
                "written for it are undefined; release a piped buffer only after its sync"
            )

    def _binding_for(self, wrapper: object | None) -> _BufferBinding:
        # GL entry points from glcontext's loader are dispatch stubs valid in any context.
        if self._binding is None:
            context = getattr(wrapper, "ctx", None)
            if context is None:
                import moderngl

                context = moderngl.get_context()
            self._binding = _BufferBinding(context)
        return self._binding
