"""The engine: one queue and one writer thread per file written to.

The native engine's src/native/engine.hpp and engine.cpp, in Python, with the same
invariants (read them there) and the same calls. Where the native engine returns Failed
with a Failure, this raises the failure's OSError, taking the failure only once it is
raised; where it returns TimedOut to let the binding run signal handlers, this waits on,
as Python's waits run them (a KeyboardInterrupt then leaves the call). Every call is
written so that such an exception, wherever it lands, neither loses nor duplicates an
item: the commit of an item is one append.
"""

from __future__ import annotations

import ctypes
import errno
import threading
from collections import deque
from collections.abc import Callable, Iterable

from .._errors import write_failed
from . import fdio
from .fdio import Descriptor, FileId, WriteOptions

# Items a stream queues before submit() waits for room.
QUEUE_LIMIT = 16
# How long a worker waits for work before it exits on its own, in seconds.
IDLE_EXIT = 2.0


class Item:
    __slots__ = (
        "descriptor", "fd", "file", "holding", "key", "options", "order", "queued", "root",
        "shared", "view",
    )  # fmt: skip

    def __init__(
        self,
        view: memoryview,
        fd: int,
        file: Descriptor,
        key: object,
        root: object,
        options: WriteOptions,
    ) -> None:
        self.view = view
        # From capture_descriptor, the engine closes it; or -1: the engine takes its
        # stream's (submit() returns False where there is none to take).
        self.descriptor = -1
        self.fd = fd  # the caller's number for it, for messages
        self.file = file  # what the fd named at submission
        self.key = key  # identity that submit() serializes on; None for none
        self.root = root  # identity that wait_root() waits on: whose memory it is
        self.options = options
        self.order = 0  # set by submit: the items before it have lower ones
        self.shared = False  # set by submit: descriptor is its stream's
        self.queued = False  # set by submit once the item is the engine's
        # Set by a failure: descriptor stays open until the failure is reported (see
        # engine.hpp's Failure), then the binding closes it.
        self.holding = False


class Failure:
    def __init__(self, item: Item, error: int, written: int, dropped: list[Item]) -> None:
        self.fd = item.fd
        self.error = error  # errno
        self.written = written  # bytes of the failing item that were written
        self.size = item.view.nbytes  # size of the failing item
        self.dropped = len(dropped)  # queued items behind it that were never written
        self.items = [item, *dropped]  # the failing and the dropped, finished when reported

    def holds(self, root: object) -> bool:
        return _holds(self.items, root)


class Stream:
    def __init__(self, engine: Engine, fd: int, file: Descriptor) -> None:
        self.fd = fd  # the last fd number its items came through, for messages
        self.file = file
        self.queue: deque[Item] = deque()
        # The duplicate its pipe's items share (none to make per item), and how many
        # queued or written items hold it; -1 when none does.
        self.descriptor = -1
        self.descriptor_users = 0
        # The item being written (the native engine keeps its order and size instead).
        self.current: Item | None = None
        self.stopping = False
        self.exited = False  # its worker returned after idling; join it
        self.failure: Failure | None = None
        self.stats: tuple[str | None, int, int] = (None, 0, 0)  # (path, items, bytes)
        self.relay = fdio.Relay()  # opened by submit; the worker uses it if it saw it open
        self.wake = threading.Condition(engine.lock)
        self.worker = threading.Thread(
            target=engine.run, args=(self,), name=f"turbopipe-fd{fd}", daemon=True
        )

    def idle(self) -> bool:
        return not self.queue and self.current is None

    def unwritten(self) -> list[Item]:
        """Its items queued or being written."""
        return [*self.queue, *([self.current] if self.current else [])]

    def done_before(self, mark: int) -> bool:
        """Whether every item submitted before ``mark`` is done here."""
        if self.current is not None:
            return self.current.order >= mark
        return not self.queue or self.queue[0].order >= mark


class Engine:
    def __init__(self) -> None:
        # All state below is guarded by lock, never held during I/O. An RLock: if a second
        # signal interrupts a wait while it takes the lock back, releasing it raises
        # instead of freeing a lock some worker holds. No with-block holding it returns a
        # call's value (see fdio.py).
        self.lock = threading.RLock()
        self._progress = threading.Condition(self.lock)  # an item finished or failed
        self._next_order = 0
        self._streams: dict[FileId, Stream] = {}
        self._files: dict[int, FileId] = {}  # fd number -> the file it last named
        self._active_keys: set[int] = set()  # ids of keys of items queued or being written
        self._finished: list[Item] = []

    def submit(self, fd: int, item: Item) -> bool:
        """Queue item for fd, first waiting until its key is idle and the queue has room.
        False, with nothing queued, if item needs a descriptor of its own (item.descriptor
        -1 and no stream descriptor to share); item.queued tells whether it was queued."""
        file = item.file.file
        with self.lock:
            self._files[fd] = file  # before the wait, which may end in that file's failure

            def ready() -> bool:
                stream = self._streams.get(file)
                if stream is not None and stream.failure is not None:
                    return True
                if item.key is not None and id(item.key) in self._active_keys:
                    return False
                return stream is None or len(stream.queue) < QUEUE_LIMIT

            self._wait_for_progress(ready)
            stream = self._streams.get(file)
            self._raise_failure(stream)
            if stream is not None and stream.exited:  # returned after idling: replace it
                stream.worker.join()
                stream = None
            # The caller duplicates its fd only where the stream has no descriptor to share.
            take = item.descriptor < 0
            if take and not (stream and stream.descriptor >= 0 and _sharing(stream, item)):
                return False
            if stream is None:
                stream = Stream(self, fd, item.file)
                try:
                    stream.worker.start()
                except RuntimeError as error:
                    # Else raised by a wait in start() that a signal interrupted.
                    if str(error) != "can't start new thread":
                        raise
                    # No thread to be had: as the native engine says.
                    raise write_failed(errno.EAGAIN, fd, 0, item.view.nbytes, 0) from None
                self._streams[file] = stream
            adopt = not take and stream.descriptor < 0 and _sharing(stream, item)
            stream.fd = fd
            if item.options.relay and item.file.pipe:
                stream.relay.open()
            item.order = self._next_order
            self._next_order += 1
            key_id = id(item.key)
            try:
                if item.key is not None:
                    self._active_keys.add(key_id)
                stream.queue.append(item)
            finally:
                # The append is the commit, whatever a signal handler's exception (Ctrl-C)
                # interrupted: once it is done the worker owns the item. No calls below,
                # where such an exception could land, but the last.
                item.queued = item in stream.queue
                if item.queued and take:
                    item.descriptor = stream.descriptor
                elif item.queued and adopt:
                    stream.descriptor = item.descriptor
                if item.queued:
                    item.shared = item.descriptor == stream.descriptor
                    stream.descriptor_users += item.shared
                elif item.key is not None:
                    self._active_keys.discard(key_id)
            stream.wake.notify()
        return True

    def wait_root(self, root: object) -> None:
        with self.lock:
            self._wait_for_progress(lambda: not self._writing_root(root))
            self._raise_failure(self._failed_stream(lambda f: f.holds(root)))

    # wait_fd and wait_all wait for the items submitted before mark(), not for those other
    # threads submit meanwhile (else they could wait for ever).

    def mark(self) -> int:
        with self.lock:
            return self._next_order

    def wait_fd(self, fd: int, file: FileId | None, mark: int) -> None:
        """`file` is what fd names now; None for a closed fd: the file it named at its last
        submit, if any."""
        with self.lock:

            def done() -> bool:
                stream = self._stream_of(fd, file)
                return stream is None or stream.done_before(mark)

            self._wait_for_progress(done)
            self._raise_failure(self._stream_of(fd, file))

    def wait_all(self, mark: int) -> None:
        with self.lock:
            streams = self._streams.values()
            self._wait_for_progress(lambda: all(s.done_before(mark) for s in streams))
            self._raise_failure(self._failed_stream(lambda f: True))

    def stop_idle_workers(self) -> None:
        """Stops and joins the workers of idle streams with nothing to report; a later
        submit starts them again."""
        stopped: list[Stream] = []
        try:
            with self.lock:
                stopped = self._remove_streams(lambda s: s.idle() and s.failure is None)
        finally:
            for stream in stopped:
                stream.worker.join()

    def join_exited_workers(self) -> None:
        """Joins the workers that exited after idling; a stream with a failure to report
        stays, without its thread."""
        with self.lock:
            exited = [s for s in self._streams.values() if s.exited]
            self._remove_streams(lambda s: s.exited and s.failure is None)
        for stream in exited:
            stream.worker.join()

    def stats(self, fd: int, file: FileId | None) -> tuple[str | None, int, int] | None:
        with self.lock:
            stream = self._stream_of(fd, file)
            return None if stream is None else stream.stats

    def pending(self) -> list[tuple[int, int, int]]:
        """(fd, items, bytes) of the streams with items queued or being written."""
        found = []
        with self.lock:
            for stream in self._streams.values():
                items = stream.unwritten()
                if items:
                    found.append((stream.fd, len(items), sum(i.view.nbytes for i in items)))
        return found

    def busy(self, root: object) -> bool:
        """Whether the engine holds an item of root's: queued, being written, finished but
        not taken yet (take_finished), or in an unreported failure."""
        with self.lock:
            held = (
                self._writing_root(root)
                or _holds(self._finished, root)
                or self._failed_stream(lambda f: f.holds(root)) is not None
            )
        return held

    def take_finished(self) -> list[Item]:
        """Items that are done (written, or dropped and reported), for the caller to
        release their views."""
        with self.lock:
            finished = self._finished[:]
            self._finished.clear()
        return finished

    def forget(self) -> None:
        """In a forked child, where the parent's workers do not exist: keep the parent's
        items for ever, even through the interpreter's exit, as freeing one releases its
        export, which for a moderngl buffer runs glUnmapBuffer (the native engine leaks its
        old state likewise)."""
        ctypes.pythonapi.Py_IncRef(ctypes.py_object((self._streams, self._finished)))

    def run(self, stream: Stream) -> None:
        fdio.block_sigpipe()
        with self.lock:
            while self._write_next(stream):
                pass
        stream.relay.close()

    def _write_next(self, stream: Stream) -> bool:
        """Write the next item of stream; False once it stops or exits idle. Holds lock."""
        while not stream.queue and not stream.stopping:
            if not stream.wake.wait(IDLE_EXIT) and not stream.queue:
                # Idle: leave. The next call joins the thread; a failure stays in the
                # stream for the next call that touches its file, which replaces it.
                stream.exited = True
                return False
        if not stream.queue:
            return False  # stopping
        item = stream.queue.popleft()
        stream.current = item
        relay = stream.relay if stream.relay.is_open() else None

        self.lock.release()
        try:
            written, error, path = fdio.write_item(
                item.descriptor, item.file, item.view, item.options, relay
            )
            if not item.shared and not error:
                fdio.release_descriptor(item.descriptor)
        finally:
            self.lock.acquire()
        # Closed before the item counts as done: once a wait for it returns, the engine
        # holds no descriptor of a file it has nothing queued for.
        last = _let_go(stream, item) if item.shared else -1
        if last >= 0:
            self._close_unlocked([last])

        stream.current = None
        if item.key is not None:
            self._active_keys.discard(id(item.key))
        _, items, total = stream.stats
        stream.stats = (path, items + (not error), total + written)
        if not error:
            self._finished.append(item)
        else:
            dropped, stream.queue = list(stream.queue), deque()
            item.holding = not item.shared
            stream.failure = Failure(item, error, written, dropped)
            closing = []
            for lost in dropped:
                if lost.key is not None:
                    self._active_keys.discard(id(lost.key))
                descriptor = _let_go(stream, lost)
                if descriptor >= 0:
                    closing.append(descriptor)
            if closing:
                self._close_unlocked(closing)
        self._progress.notify_all()
        return True

    def _close_unlocked(self, descriptors: list[int]) -> None:
        """Closes descriptors with the lock released (a worker's, which holds it once):
        closing can block (a file on NFS)."""
        self.lock.release()
        try:
            for descriptor in descriptors:
                fdio.release_descriptor(descriptor)
        finally:
            self.lock.acquire()

    def _writing_root(self, root: object) -> bool:
        """Whether an item of root's is queued or being written (the native engine keeps
        a multiset of them; a scan here leaves a Ctrl-C nothing to undo)."""
        return any(_holds(stream.unwritten(), root) for stream in self._streams.values())

    def _wait_for_progress(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self._progress.wait()

    def _stream_of(self, fd: int, file: FileId | None) -> Stream | None:
        """The stream of `file` (what fd names now), or for None, of the file fd last
        named."""
        if file is None:
            file = self._files.get(fd)
        return None if file is None else self._streams.get(file)

    def _failed_stream(self, match: Callable[[Failure], bool]) -> Stream | None:
        """The stream with the lowest fd whose failure matches."""
        best = None
        for stream in self._streams.values():
            if stream.failure is not None and match(stream.failure):
                best = stream if best is None or stream.fd < best.fd else best
        return best

    def _raise_failure(self, stream: Stream | None) -> None:
        """Raise its failure, if any, whose items join the finished (see engine.cpp's
        take_failure)."""
        if stream is None or stream.failure is None:
            return
        failure = stream.failure
        error = write_failed(failure.error, failure.fd, failure.written, failure.size,
                             failure.dropped)  # fmt: skip
        try:
            raise error
        finally:
            # Taken only once raised: a signal handler's exception (Ctrl-C) landing before
            # leaves it for the next call.
            stream.failure = None
            self._finished.extend(failure.items)

    def _remove_streams(self, remove: Callable[[Stream], bool]) -> list[Stream]:
        """Take the matching streams out and tell their workers to stop. Holds lock."""
        removed = [s for s in self._streams.values() if remove(s)]
        for stream in removed:
            del self._streams[stream.file.file]
            stream.stopping = True
            stream.wake.notify()
        # Forget the fd numbers that named those files: a later submit records them again.
        for fd in [fd for fd, file in self._files.items() if file not in self._streams]:
            del self._files[fd]
        return removed


def _holds(items: Iterable[Item], root: object) -> bool:
    return any(item.root is root for item in items)


def _sharing(stream: Stream, item: Item) -> bool:
    """Whether item may share its stream's descriptor: any write end of one pipe writes
    alike, but for O_DIRECT's packets; a file's descriptors may differ in offset, so each
    item of a file keeps its own."""
    return item.file.pipe and item.file.packet == stream.file.packet


def _let_go(stream: Stream, item: Item) -> int:
    """Gives up item's hold on its descriptor: the descriptor to close now (after
    unlocking), or -1 while other items share it."""
    if not item.shared:
        return item.descriptor
    stream.descriptor_users -= 1
    if stream.descriptor_users:
        return -1
    descriptor, stream.descriptor = stream.descriptor, -1
    return descriptor
