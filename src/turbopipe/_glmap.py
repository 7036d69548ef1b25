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
from collections.abc import Callable
from threading import get_ident
from typing import Any

_GL_ARRAY_BUFFER = 0x8892
_GL_ARRAY_BUFFER_BINDING = 0x8894


def gl_buffer(data: object) -> tuple[object, object | None] | None:
    """(mglo, wrapper) when data is a moderngl.Buffer or its .mglo, else None."""
    moderngl = sys.modules.get("moderngl")
    if moderngl is None:
        return None
    if isinstance(data, moderngl.Buffer):
        return data.mglo, data
    if type(data).__module__ == "mgl" and type(data).__name__ == "Buffer":
        return data, None
    return None


class _BufferBinding:
    """glBindBuffer / glGetIntegerv for GL_ARRAY_BUFFER, loaded from a moderngl context."""

    def __init__(self, context: Any) -> None:
        load: Callable[[str], int] = context.mglo._context.load
        self._bind = ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.c_uint)(load("glBindBuffer"))
        self._get = ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.POINTER(ctypes.c_int))(
            load("glGetIntegerv")
        )

    def current(self) -> int:
        value = ctypes.c_int(0)
        self._get(_GL_ARRAY_BUFFER_BINDING, ctypes.byref(value))
        return value.value

    def bind(self, glo: int) -> None:
        self._bind(_GL_ARRAY_BUFFER, glo)


class _Mapping:
    __slots__ = ("binding", "glo", "mglo", "thread", "view")

    def __init__(self, mglo: object, view: memoryview, glo: int, binding: _BufferBinding) -> None:
        self.mglo = mglo  # held: its id() keys the mapping
        self.view = view
        self.glo = glo
        self.binding = binding
        self.thread = get_ident()

    def unmap(self) -> None:
        previous = self.binding.current()
        self.binding.bind(self.glo)
        try:
            self.view.release()
        finally:
            self.binding.bind(previous)


class Mappings:
    """The live mappings, by the mglo they map."""

    def __init__(self) -> None:
        self._live: dict[int, _Mapping] = {}
        self._binding: _BufferBinding | None = None

    def map(self, mglo: object, wrapper: object | None) -> memoryview:
        """Map mglo, which is not mapped, for writing out."""
        binding = self._binding or self._binding_for(wrapper)
        view = memoryview(mglo)  # type: ignore[arg-type]
        # moderngl binds the buffer to GL_ARRAY_BUFFER to map it: that is its name.
        glo = getattr(wrapper, "glo", None) or binding.current()
        self._live[id(mglo)] = _Mapping(mglo, view, glo, binding)
        return view

    def view(self, mglo: object) -> memoryview | None:
        """mglo's live mapping, if it has one."""
        mapping = self._live.get(id(mglo))
        return None if mapping is None else mapping.view

    def forget(self) -> None:
        """Drop every record without unmapping (in a forked child)."""
        self._live.clear()

    def unmap(self, mglo: object) -> None:
        mapping = self._live.pop(id(mglo), None)
        if mapping is not None:
            mapping.unmap()

    def unmap_idle(self, busy: Callable[[object], bool], queued: object = None) -> None:
        """Unmap every buffer this thread mapped whose writes are done (``queued`` was
        just piped: it is not)."""
        if len(self._live) <= (queued is not None):  # none, or only the one just piped
            return
        thread = get_ident()
        for mapping in list(self._live.values()):
            if mapping.mglo is not queued and mapping.thread == thread and not busy(mapping.mglo):
                self.unmap(mapping.mglo)

    def _binding_for(self, wrapper: object | None) -> _BufferBinding:
        # GL entry points from glcontext's loader are dispatch stubs valid in any context.
        if self._binding is None:
            context = getattr(wrapper, "ctx", None)
            if context is None:
                import moderngl

                context = moderngl.get_context()
            self._binding = _BufferBinding(context)
        return self._binding
