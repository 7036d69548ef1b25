// turbopipe._core: the only file that knows CPython. It turns Python objects into
// (pointer, length, owner) for the engine, releases owners on a Python thread with the GIL
// held, waits with the GIL released, and turns engine failures into OSError subclasses.
// Same calls as the Python engine, turbopipe/_python.py; see _core.pyi.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>

#include <iterator>
#include <new>
#include <utility>
#include <vector>

#include "engine.hpp"
#include "yuv.hpp"

namespace {

using turbopipe::Deadline;
using turbopipe::Engine;
using turbopipe::Failure;
using turbopipe::Item;
using turbopipe::Outcome;

// Waits run in slices of this length so that signal handlers (Ctrl-C) run between them.
constexpr auto kWaitSlice = std::chrono::milliseconds(50);

Engine* engine = new Engine(turbopipe::kQueueLimit);

// In a forked child the parent's workers do not exist and the mutex may be held by one of
// them: start over, leaking the parent's state rather than touching it (but closing the
// descriptors it held).
void reset_after_fork() {
    turbopipe::after_fork_in_child();
    engine = new Engine(turbopipe::kQueueLimit);
}

// What keeps an item's memory valid: the buffer export, and references to its key and root
// (their addresses identify the item's).
struct Export {
    Py_buffer view;
    PyObject* key;
    PyObject* root;
};

void release(Export* owner) {
    PyBuffer_Release(&owner->view);
    Py_DECREF(owner->key);
    Py_DECREF(owner->root);
    delete owner;
}

// Releasing an export may run the exporter's code, which must not see a pending exception.
void release_finished() {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    for (const Item& item : engine->take_finished()) release(static_cast<Export*>(item.owner));
    PyErr_Restore(type, value, traceback);
}

// turbopipe._errors, imported with the module: importing it when an error is to be raised
// fails when that error is running out of descriptors (EMFILE).
PyObject* errors_module = nullptr;

// Raises the OSError that turbopipe._errors.<maker>(*args) makes: both engines make
// theirs there. Takes args (null if building them failed); returns null.
PyObject* raise_error(const char* maker, PyObject* args) {
    PyObject* exception = nullptr;
    if (args) {
        PyObject* make = PyObject_GetAttrString(errors_module, maker);
        exception = make ? PyObject_CallObject(make, args) : nullptr;
        Py_XDECREF(make);
        Py_DECREF(args);
    }
    if (exception) {
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exception)), exception);
        Py_DECREF(exception);
    }
    return nullptr;
}

PyObject* raise_write_failed(const Failure& failure) {
    using Count = unsigned long long;
    return raise_error("write_failed",
                       Py_BuildValue("(iiKKK)", failure.error, failure.fd, Count(failure.written),
                                     Count(failure.size), Count(failure.dropped)));
}

// Runs one engine wait until it is Done or Failed: first a check with the GIL held (no
// wait needed is the common case, and giving the GIL away costs a thread switch when other
// Python threads run), then waits with the GIL released. Returns TimedOut only when a
// signal handler raised, with that exception set.
template <class Wait>
Outcome wait_interruptibly(Wait wait, Failure* failure) {
    Outcome outcome = wait(turbopipe::kCheckOnly, failure);
    while (outcome == Outcome::TimedOut) {
        if (PyErr_CheckSignals() < 0) return outcome;
        Py_BEGIN_ALLOW_THREADS
        outcome = wait(std::chrono::steady_clock::now() + kWaitSlice, failure);
        Py_END_ALLOW_THREADS
    }
    return outcome;
}

PyObject* conclude(Outcome outcome, const Failure& failure) {
    if (failure.descriptor >= 0) turbopipe::release_descriptor(failure.descriptor);
    release_finished();
    engine->join_exited_workers();
    if (outcome == Outcome::Failed) return raise_write_failed(failure);
    if (outcome == Outcome::TimedOut) return nullptr;
    Py_RETURN_NONE;
}

bool to_fd(PyObject* object, int* fd) {
    int overflow;
    long value = PyLong_AsLongAndOverflow(object, &overflow);
    if (value == -1 && PyErr_Occurred()) return false;
    if (overflow || value < 0 || value > INT32_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "file must be a file descriptor (a non-negative int), not %S", object);
        return false;
    }
    *fd = int(value);
    return true;
}

bool to_size(PyObject* object, size_t* size) {
    *size = PyLong_AsSize_t(object);
    return !(*size == size_t(-1) && PyErr_Occurred());
}

// None stands for no key: 0.
uintptr_t key_of(PyObject* key) { return key == Py_None ? 0 : reinterpret_cast<uintptr_t>(key); }

// Whether a buffer's struct format holds Python object pointers ('O'), which are no data.
// Field names, between colons ("T{i:Offset:}"), are not codes.
bool holds_pointers(const char* format) {
    bool in_name = false;
    for (const char* code = format; code && *code; code++) {
        if (*code == ':') {
            in_name = !in_name;
        } else if (!in_name && *code == 'O') {
            return true;
        }
    }
    return false;
}

PyObject* submit(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "submit(data, fd, key, root, chunk, pipe_size, vmsplice, relay)");
        return nullptr;
    }
    int fd;
    turbopipe::WriteOptions options{};
    if (!to_fd(args[1], &fd) || !to_size(args[4], &options.chunk) ||
        !to_size(args[5], &options.pipe_size)) {
        return nullptr;
    }
    bool automatic =
        PyUnicode_Check(args[6]) && PyUnicode_CompareWithASCIIString(args[6], "auto") == 0;
    int vmsplice = automatic ? 1 : PyObject_IsTrue(args[6]);
    int relay = vmsplice < 0 ? -1 : PyObject_IsTrue(args[7]);
    if (relay < 0) return nullptr;
    options.vmsplice = automatic  ? turbopipe::Vmsplice::Auto
                       : vmsplice ? turbopipe::Vmsplice::On
                                  : turbopipe::Vmsplice::Off;
    options.relay = relay != 0;

    // Exported from the object itself, a memoryview too: the engine's hold then keeps its
    // release (and so a moderngl buffer's unmap) from happening while queued. With the
    // format, as memoryview() asks: the Python engine refuses what this refuses.
    auto* owner = new (std::nothrow) Export{};
    if (!owner) return PyErr_NoMemory();
    if (PyObject_GetBuffer(args[0], &owner->view, PyBUF_RECORDS_RO) < 0) {
        delete owner;
        return nullptr;
    }
    Py_INCREF(args[2]);
    owner->key = args[2];
    Py_INCREF(args[3]);
    owner->root = args[3];
    if (!PyBuffer_IsContiguous(&owner->view, 'C')) {
        release(owner);
        PyErr_SetString(PyExc_ValueError, "data must be C-contiguous");
        return nullptr;
    }
    if (holds_pointers(owner->view.format)) {
        release(owner);
        PyErr_SetString(PyExc_TypeError, "data holds Python object pointers (format 'O'), not bytes");
        return nullptr;
    }
    Item item{static_cast<const uint8_t*>(owner->view.buf),
              size_t(owner->view.len),
              -1,
              fd,
              {},
              key_of(args[2]),
              key_of(args[3]),
              owner,
              options,
              std::nullopt};
    int error = turbopipe::check_descriptor(fd, &item.file);
    Failure failure;
    auto submit_item = [&](Deadline deadline, Failure* out) {
        return engine->submit(fd, item, deadline, out);
    };
    Outcome outcome = error ? Outcome::Failed : wait_interruptibly(submit_item, &failure);
    // What the engine asks for first: a descriptor of its own, then who reads the pipe.
    if (outcome == Outcome::NeedsDescriptor) {
        error = turbopipe::capture_descriptor(fd, &item.descriptor, &item.file);
        outcome = error ? Outcome::Failed : wait_interruptibly(submit_item, &failure);
    }
    if (outcome == Outcome::Undecided) {
        bool readers_copy;
        Py_BEGIN_ALLOW_THREADS
        readers_copy = turbopipe::readers_copy_out(item.descriptor);
        Py_END_ALLOW_THREADS
        item.readers_copy = readers_copy;
        outcome = wait_interruptibly(submit_item, &failure);
    }
    if (outcome != Outcome::Done) {
        if (item.descriptor >= 0) turbopipe::release_descriptor(item.descriptor);
        release(owner);
    }
    if (error) return raise_error("descriptor_refused", Py_BuildValue("(ii)", error, fd));
    return conclude(outcome, failure);
}

PyObject* wait_root(PyObject*, PyObject* root) {
    Failure failure;
    Outcome outcome = wait_interruptibly(
        [&](Deadline deadline, Failure* out) {
            return engine->wait_root(key_of(root), deadline, out);
        },
        &failure);
    return conclude(outcome, failure);
}

// The file fd names now: once its number is reused, not the one it named before. Null if
// it is closed: the engine then looks for the file it named at its last submit.
const turbopipe::FileId* named_file(int fd, turbopipe::FileId* file) {
    return turbopipe::identify_descriptor(fd, file) ? nullptr : file;
}

PyObject* wait_fd(PyObject*, PyObject* arg) {
    int fd;
    if (!to_fd(arg, &fd)) return nullptr;
    turbopipe::FileId file;
    const turbopipe::FileId* named = named_file(fd, &file);
    Failure failure;
    uint64_t mark = engine->mark();
    Outcome outcome = wait_interruptibly(
        [&](Deadline deadline, Failure* out) {
            return engine->wait_fd(fd, named, mark, deadline, out);
        },
        &failure);
    return conclude(outcome, failure);
}

// Waits for everything queued before the call.
Outcome wait_for_all(Failure* failure) {
    uint64_t mark = engine->mark();
    return wait_interruptibly(
        [&](Deadline deadline, Failure* out) { return engine->wait_all(mark, deadline, out); },
        failure);
}

PyObject* wait_all(PyObject*, PyObject*) {
    Failure failure;
    Outcome outcome = wait_for_all(&failure);
    return conclude(outcome, failure);
}

PyObject* stop(PyObject*, PyObject*) {
    Failure failure;
    Outcome outcome = wait_for_all(&failure);
    if (outcome != Outcome::TimedOut) {
        Py_BEGIN_ALLOW_THREADS
        engine->stop_idle_workers();
        Py_END_ALLOW_THREADS
    }
    return conclude(outcome, failure);
}

PyObject* stats(PyObject*, PyObject* arg) {
    int fd;
    if (!to_fd(arg, &fd)) return nullptr;
    turbopipe::FileId file;
    turbopipe::StreamStats stats;
    if (!engine->stats(fd, named_file(fd, &file), &stats)) Py_RETURN_NONE;
    static const char* const paths[] = {nullptr, "direct", "relay", "vmsplice"};
    const char* path = paths[int(stats.path)];
    return Py_BuildValue("(zKK)", path, static_cast<unsigned long long>(stats.items),
                         static_cast<unsigned long long>(stats.bytes));
}

PyObject* pending(PyObject*, PyObject*) {
    std::vector<turbopipe::Pending> streams;
    Py_BEGIN_ALLOW_THREADS
    streams = engine->pending();
    Py_END_ALLOW_THREADS
    PyObject* list = PyList_New(0);
    for (const turbopipe::Pending& left : streams) {
        PyObject* entry = list ? Py_BuildValue("(inK)", left.fd, Py_ssize_t(left.items),
                                               static_cast<unsigned long long>(left.bytes))
                               : nullptr;
        if (!entry || PyList_Append(list, entry) < 0) {
            Py_XDECREF(entry);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(entry);
    }
    return list;
}

PyObject* busy(PyObject*, PyObject* root) { return PyBool_FromLong(engine->busy(key_of(root))); }

// The frame's pixels for rgb_to_yuv: a (height, width, 3 or 4) array of bytes whose pixels
// are contiguous (rows may be apart, or upside down: any row stride), or a C-contiguous
// buffer of width*height*3 or *4 bytes. Sets an exception and returns false otherwise.
bool to_rgb_frame(const Py_buffer& view, int width, int height, turbopipe::RgbFrame* frame) {
    if (view.itemsize != 1 || holds_pointers(view.format)) {
        PyErr_Format(PyExc_TypeError, "frame must hold bytes (uint8), not format '%s'",
                     view.format ? view.format : "B");
        return false;
    }
    frame->width = width;
    frame->height = height;
    Py_ssize_t pixels = Py_ssize_t(width) * height;
    if (view.ndim == 3 && view.shape[0] == height && view.shape[1] == width &&
        (view.shape[2] == 3 || view.shape[2] == 4) && view.strides[2] == 1 &&
        view.strides[1] == view.shape[2]) {
        frame->pixels = static_cast<const uint8_t*>(view.buf);
        frame->components = int(view.shape[2]);
        frame->stride = view.strides[0];
        return true;
    }
    if (PyBuffer_IsContiguous(&view, 'C') && (view.len == 3 * pixels || view.len == 4 * pixels)) {
        frame->pixels = static_cast<const uint8_t*>(view.buf);
        frame->components = int(view.len / pixels);
        frame->stride = Py_ssize_t(frame->components) * width;
        return true;
    }
    PyErr_Format(PyExc_ValueError,
                 "frame must be (%d, %d, 3 or 4) with contiguous pixels, or %zd or %zd bytes",
                 height, width, 3 * pixels, 4 * pixels);
    return false;
}

bool to_yuv_layout(PyObject* name, turbopipe::YuvLayout* layout) {
    static const std::pair<const char*, turbopipe::YuvLayout> layouts[] = {
        {"yuv420p", turbopipe::YuvLayout::Yuv420p},
        {"nv12", turbopipe::YuvLayout::Nv12},
        {"yuv444p", turbopipe::YuvLayout::Yuv444p}};
    for (const auto& [known, value] : layouts) {
        if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, known) == 0) {
            *layout = value;
            return true;
        }
    }
    PyErr_Format(PyExc_ValueError, "pix_fmt must be yuv420p, nv12 or yuv444p, not %R", name);
    return false;
}

PyObject* rgb_to_yuv(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "rgb_to_yuv(frame, out, width, height, pix_fmt, kr, kb, "
                                         "full_range, flip, bgr)");
        return nullptr;
    }
    long width = PyLong_AsLong(args[2]), height = PyLong_AsLong(args[3]);
    double kr = PyFloat_AsDouble(args[5]), kb = PyFloat_AsDouble(args[6]);
    int full_range = PyObject_IsTrue(args[7]), flip = PyObject_IsTrue(args[8]),
        bgr = PyObject_IsTrue(args[9]);
    turbopipe::YuvLayout layout;
    if (PyErr_Occurred() || full_range < 0 || flip < 0 || bgr < 0 ||
        !to_yuv_layout(args[4], &layout)) {
        return nullptr;
    }
    if (width <= 0 || height <= 0 || width > INT32_MAX / 4 || height > INT32_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "width and height must be positive, not %ldx%ld", width,
                     height);
        return nullptr;
    }
    if (layout != turbopipe::YuvLayout::Yuv444p && (width % 2 || height % 2)) {
        PyErr_Format(PyExc_ValueError, "%U needs an even width and height, not %ldx%ld",
                     args[4], width, height);
        return nullptr;
    }
    Py_buffer in, out;
    if (PyObject_GetBuffer(args[0], &in, PyBUF_RECORDS_RO) < 0) return nullptr;
    if (PyObject_GetBuffer(args[1], &out, PyBUF_RECORDS_RO) < 0) {
        PyBuffer_Release(&in);
        return nullptr;
    }
    turbopipe::RgbFrame frame{};
    size_t size = turbopipe::yuv_frame_size(layout, int(width), int(height));
    bool ok = to_rgb_frame(in, int(width), int(height), &frame);
    if (ok && out.readonly) {
        PyErr_SetString(PyExc_TypeError, "out must be writable");
        ok = false;
    } else if (ok && !PyBuffer_IsContiguous(&out, 'C')) {
        PyErr_SetString(PyExc_ValueError, "out must be C-contiguous");
        ok = false;
    } else if (ok && size_t(out.len) != size) {
        PyErr_Format(PyExc_ValueError, "out must be %zu bytes for %U, not %zd", size, args[4],
                     out.len);
        ok = false;
    }
    if (ok) {
        frame.bgr = bgr != 0;
        turbopipe::YuvEncoding encoding{kr, kb, full_range != 0};
        Py_BEGIN_ALLOW_THREADS
        turbopipe::rgb_to_yuv(frame, flip != 0, encoding, layout, static_cast<uint8_t*>(out.buf));
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&in);
    if (!ok) return nullptr;
    Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"submit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(submit)),
     METH_FASTCALL,
     "submit(data, fd, key, root, chunk, pipe_size, vmsplice, relay)\n--\n\n"
     "Queue data (root's memory) for fd, waiting while key is busy or the queue is full."},
    {"wait_root", wait_root, METH_O, "wait_root(root)\n--\n\nWait until the writes of root's items are done."},
    {"wait_fd", wait_fd, METH_O, "wait_fd(fd)\n--\n\nWait until what was queued for fd before the call is written."},
    {"wait_all", wait_all, METH_NOARGS, "wait_all()\n--\n\nWait until everything queued before the call is written."},
    {"stop", stop, METH_NOARGS, "stop()\n--\n\nwait_all(), then stop idle workers."},
    {"stats", stats, METH_O, "stats(fd)\n--\n\n(path, items, bytes) of the stream writing to fd's file, or None."},
    {"pending", pending, METH_NOARGS, "pending()\n--\n\n[(fd, items, bytes)] of the streams with items queued or being written."},
    {"rgb_to_yuv", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(rgb_to_yuv)),
     METH_FASTCALL,
     "rgb_to_yuv(frame, out, width, height, pix_fmt, kr, kb, full_range, flip, bgr)\n--\n\n"
     "Convert an RGB(A) frame into out, planes back to back, with the GIL released."},
    {"busy", busy, METH_O, "busy(root)\n--\n\nWhether the engine holds an export of root's: its write queued, in "
     "progress, done but not released yet, or failed unreported."},
    {nullptr, nullptr, 0, nullptr},
};

// The engine's constants, which the Python engine's must equal (a test checks).
int add_constants(PyObject* core) {
    PyObject* refused = PyTuple_New(Py_ssize_t(std::size(turbopipe::kSpliceRefused)));
    if (!refused) return -1;
    for (size_t i = 0; i < std::size(turbopipe::kSpliceRefused); i++) {
        PyObject* error = PyLong_FromLong(turbopipe::kSpliceRefused[i]);
        if (!error) {
            Py_DECREF(refused);
            return -1;
        }
        PyTuple_SetItem(refused, Py_ssize_t(i), error);  // steals error; cannot fail here
    }
    if (PyModule_AddObject(core, "SPLICE_REFUSED", refused) < 0) {
        Py_DECREF(refused);
        return -1;
    }
    PyObject* idle_exit =
        PyFloat_FromDouble(std::chrono::duration<double>(turbopipe::kIdleExit).count());
    if (!idle_exit || PyModule_AddObject(core, "IDLE_EXIT", idle_exit) < 0) {
        Py_XDECREF(idle_exit);
        return -1;
    }
    if (PyModule_AddIntConstant(core, "QUEUE_LIMIT", long(turbopipe::kQueueLimit)) < 0) return -1;
    return PyModule_AddIntConstant(core, "RELAY_MINIMUM", long(turbopipe::kRelayMinimum));
}

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_core", "Native engine of turbopipe.", -1, methods,
    nullptr,               nullptr, nullptr,                       nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__core() {
    static bool registered = false;
    if (!registered) {
        pthread_atfork(turbopipe::before_fork, turbopipe::after_fork_in_parent,
                       reset_after_fork);
        registered = true;
    }
    if (!errors_module) errors_module = PyImport_ImportModule("turbopipe._errors");
    if (!errors_module) return nullptr;
    PyObject* core = PyModule_Create(&module);
    if (core && add_constants(core) < 0) Py_CLEAR(core);
    return core;
}
