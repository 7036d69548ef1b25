#include "fdio.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <csignal>
#include <mutex>
#include <new>
#include <unordered_set>

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

namespace turbopipe {

namespace {

// write() and vmsplice() take a signed count; Linux moves at most ~2 GiB per call anyway.
constexpr size_t kMaxSyscallBytes = size_t(1) << 30;

// write_item's "no splicing path took the item": not a pipe, not asked, or not able
// (errno values are positive).
constexpr int kNotSpliced = -1;

int wait_writable(int fd) {
    pollfd entry{fd, POLLOUT, 0};
    while (poll(&entry, 1, -1) < 0) {
        if (errno != EINTR) return errno;
    }
    // POLLERR/POLLHUP: the next write reports the precise errno (EPIPE...).
    return 0;
}

// A write to a dead reader raises SIGPIPE on this thread, where it is blocked; take it
// off the pending set so it can never be delivered later. (sigpending + sigwait: POSIX,
// unlike sigtimedwait.)
void discard_pending_sigpipe() {
    sigset_t pending, sigpipe;
    sigemptyset(&sigpipe);
    sigaddset(&sigpipe, SIGPIPE);
    int signal = 0;
    while (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
        sigwait(&sigpipe, &signal);
    }
}

// Every descriptor the engine holds open (duplicates, relay ends), for a forked child to
// close its copies of (a child that outlives the parent's writes would otherwise keep
// their reader from ever seeing end of file), and for identify_descriptor to tell the
// caller's numbers from ours. Opened and closed under held_mutex: the set is then exactly
// the engine's open descriptors for anyone holding it (a forked child included).
std::mutex held_mutex;
std::unordered_set<int> held;
// Read ends that writer threads open for a moment to empty a pipe (drop_unread), one per
// thread at a time: a fixed table, as inserting into `held` may allocate, which writer
// threads never do. Also guarded by held_mutex; -1 marks a free slot.
std::array<int, 64> draining = [] {
    std::array<int, 64> slots;
    slots.fill(-1);
    return slots;
}();

// Records fd as held; false, with fd closed and errno ENOMEM, if memory is short.
bool hold(int fd) {
    try {
        held.insert(fd);
        return true;
    } catch (const std::bad_alloc&) {
        close(fd);
        errno = ENOMEM;
        return false;
    }
}

// Opens a descriptor with open_fd() (it, or -1 with errno set) and holds it.
template <class Open>
int open_held(Open open_fd) {
    std::lock_guard<std::mutex> lock(held_mutex);
    int fd = open_fd();
    return fd >= 0 && hold(fd) ? fd : -1;
}

void close_held(int fd) {
    std::lock_guard<std::mutex> lock(held_mutex);
    held.erase(fd);
    // After close() the descriptor is gone even on EINTR (Linux); never retry.
    close(fd);
}

int file_of(int fd, FileId* file) {
    struct stat info;
    if (fstat(fd, &info) < 0) return errno;
    *file = FileId{uint64_t(info.st_dev), uint64_t(info.st_ino), S_ISFIFO(info.st_mode)};
    return 0;
}

// The destination or the system refused splicing: write() does the rest.
bool splice_refused(int error) { return error == EINVAL || error == ENOSYS || error == EPERM; }

#ifdef __linux__
// Smaller items go through write(): the relay gains nothing there, and each fill takes
// whole pipe pages, where successive write()s share a page.
constexpr size_t kRelayMinimum = 64 * 1024;

// The pipe's size in bytes (0 if unknown), after growing it towards `wanted` if it is
// smaller. Asked once per item: asking takes the pipe's lock, which the reader holds
// while it copies out, and the pipe may have been replaced (a FIFO reopened) or resized.
int pipe_capacity(int fd, size_t wanted) {
    // Unprivileged processes are capped by /proc/sys/fs/pipe-max-size: no item need ask
    // for more in vain. Below it, the user's pipe quota may refuse growth; settle for less.
    // Read with read(), not fopen(): this runs on a writer thread, which never allocates.
    static const size_t max_size = [] {
        char text[32] = {};
        int file = open("/proc/sys/fs/pipe-max-size", O_RDONLY | O_CLOEXEC);
        ssize_t length = file < 0 ? -1 : read(file, text, sizeof text - 1);
        if (file >= 0) close(file);
        unsigned long size = length > 0 ? std::strtoul(text, nullptr, 10) : 0;
        return size ? std::min<size_t>(size, INT_MAX) : size_t(INT_MAX);
    }();
    int current = fcntl(fd, F_GETPIPE_SZ);
    if (current < 0) return 0;
    for (size_t size = std::min(wanted, max_size); size > size_t(current); size /= 2) {
        if (fcntl(fd, F_SETPIPE_SZ, int(size)) >= 0) return std::max(fcntl(fd, F_GETPIPE_SZ), 0);
    }
    return current;
}

// Maps data[0, size) into the pipe: no copy here, the reader's read() copies straight
// from these pages.
int vmsplice_all(int fd, const uint8_t* data, size_t size, size_t* spliced) {
    *spliced = 0;
    while (*spliced < size) {
        iovec span{const_cast<uint8_t*>(data + *spliced),
                   std::min(size - *spliced, kMaxSyscallBytes)};
        ssize_t n = vmsplice(fd, &span, 1, 0);
        if (n > 0) {
            *spliced += size_t(n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            if (int error = wait_writable(fd)) return error;
        } else {
            return n < 0 ? errno : EIO;
        }
    }
    return 0;
}

// The writer thread asks for it: made without allocating, which it never does.
struct ProcPath {
    char text[32];
};

ProcPath proc_path(int fd) {
    ProcPath path;
    std::snprintf(path.text, sizeof path.text, "/proc/self/fd/%d", fd);
    return path;
}

// Empties a pipe whose reader is gone, through a read end of its own: a later reader
// (of a FIFO, say) would otherwise read spliced pages of the caller's memory as it is then.
void drop_unread(int fd) {
    ProcPath path = proc_path(fd);
    int* slot;
    int reader;
    {
        std::lock_guard<std::mutex> lock(held_mutex);
        slot = std::find(draining.begin(), draining.end(), -1);
        if (slot == draining.end()) return;  // 64 threads draining at once: leave this one
        reader = open(path.text, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (reader < 0) return;
        *slot = reader;
    }
    uint8_t scratch[65536];
    while (read(reader, scratch, sizeof scratch) > 0) {
    }
    std::lock_guard<std::mutex> lock(held_mutex);
    *slot = -1;
    close(reader);
}

// Sleeps until no spliced page is left in the pipe: the reader took them all, or it is
// gone and they are dropped.
void wait_drained(int fd) {
    int unread = 0;
    while (ioctl(fd, FIONREAD, &unread) == 0 && unread > 0) {
        pollfd entry{fd, 0, 0};
        if (poll(&entry, 1, 0) > 0 && (entry.revents & POLLERR)) return drop_unread(fd);
        usleep(1000);
    }
}

// vmsplice also refuses memory the kernel cannot pin (device mappings) with EFAULT.
bool vmsplice_refused(int error) { return splice_refused(error) || error == EFAULT; }

// Copies our own memory through the kernel, unlike memcpy: memory that is gone (a file
// mapping whose file shrank) fails the copy, to be written and so reported as EFAULT,
// instead of raising SIGBUS in the writer thread.
bool copy_checked(uint8_t* to, const uint8_t* from, size_t size) {
    iovec local{to, size};
    iovec remote{const_cast<uint8_t*>(from), size};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == ssize_t(size);
}

// Splices all but the last pipe-capacity bytes of the caller's memory, then that tail from
// a copy in `tails`: once the tail is in, the pipe has held nothing but it, so the reader
// has consumed every page of the caller's and the caller may reuse the memory. Memory the
// kernel cannot pin is write()n; so are items that fit in the pipe (splicing gains
// nothing there, and a spliced page is never shared with the next item's bytes, where
// write()s share pages).
int vmsplice_item(int fd, const uint8_t* data, size_t size, int capacity, size_t chunk,
                  TailBuffers* tails, size_t* written) {
    size_t head = 0;
    int error = 0;
    if (capacity > 0 && size > size_t(capacity)) {
        error = vmsplice_all(fd, data, size - size_t(capacity), &head);
        if (vmsplice_refused(error)) error = 0;
    }
    size_t rest = size - head, tail = 0;
    uint8_t* buffer = head && !error && rest == size_t(capacity) ? tails->next(rest) : nullptr;
    if (buffer && copy_checked(buffer, data + head, rest)) {
        error = vmsplice_all(fd, buffer, rest, &tail);
        if (tail) tails->sent();
        if (vmsplice_refused(error)) error = 0;
    }
    if (!error && tail < rest) {  // the tail, or what splicing left of it
        size_t more = 0;
        error = write_all(fd, data + head + tail, rest - tail, chunk, &more);
        tail += more;
    }
    *written = head + tail;
    // The tail proves nothing after a failure, nor if the pipe grew meanwhile (by the
    // reader, say); an empty pipe does.
    if (head && (error || fcntl(fd, F_GETPIPE_SZ) > capacity)) wait_drained(fd);
    return error;
}

#endif

}  // namespace

TailBuffers::~TailBuffers() { release(); }

void TailBuffers::release() {
    // A pipe may still reference these pages: unmapping keeps them for it, unwritable.
    for (uint8_t*& buffer : buffers_) {
        if (buffer) munmap(buffer, size_);
        buffer = nullptr;
    }
    size_ = 0;
}

uint8_t* TailBuffers::next(size_t size) {
    if (size > size_) {
        release();
        for (uint8_t*& buffer : buffers_) {
            void* mapped =
                mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            buffer = mapped == MAP_FAILED ? nullptr : static_cast<uint8_t*>(mapped);
        }
        size_ = size;
    }
    return buffers_[turn_];
}

Relay::~Relay() { close(); }

void Relay::close() {
    if (!is_open()) return;
    close_held(read_end_);
    close_held(write_end_);
    read_end_ = write_end_ = -1;
    capacity_ = wanted_ = 0;
    broken_ = false;
}

bool Relay::open() {
#ifdef __linux__
    int ends[2];
    std::lock_guard<std::mutex> lock(held_mutex);  // as open_held, for two
    if (pipe2(ends, O_CLOEXEC) < 0) return false;
    if (!hold(ends[0])) {
        ::close(ends[1]);
        return false;
    }
    if (!hold(ends[1])) {
        held.erase(ends[0]);
        ::close(ends[0]);
        return false;
    }
    read_end_ = ends[0];
    write_end_ = ends[1];
    return true;
#else
    return false;
#endif
}

bool Relay::ready(size_t wanted) {
    if (!is_open() || broken_) return false;
#ifdef __linux__
    if (wanted > wanted_) {
        wanted_ = wanted;
        capacity_ = size_t(pipe_capacity(write_end_, wanted));
    }
#else
    (void)wanted, (void)wanted_;
#endif
    return capacity_ > 0;
}

int Relay::send(int fd, const uint8_t* data, size_t size, size_t chunk, size_t* written) {
    *written = 0;
#ifdef __linux__
    // Whole pages: a fill's last page is never shared with the next fill.
    size_t page = size_t(sysconf(_SC_PAGESIZE));
    size_t step = chunk ? std::min((chunk + page - 1) / page * page, capacity_) : capacity_;
    while (*written < size) {
        // The relay is empty here, so it takes the whole fill in one write().
        size_t filled = 0;
        int error =
            write_all(write_end_, data + *written, std::min(size - *written, step), 0, &filled);
        for (size_t moved = 0; !error && moved < filled;) {
            ssize_t n = splice(read_end_, nullptr, fd, nullptr, filled - moved, SPLICE_F_MOVE);
            if (n > 0) {
                moved += size_t(n);
                *written += size_t(n);
            } else if (n < 0 && errno == EAGAIN) {
                error = wait_writable(fd);
            } else if (!(n < 0 && errno == EINTR)) {
                error = n < 0 ? errno : EIO;
            }
        }
        if (error) {
            discard();
            return error;
        }
    }
    return 0;
#else
    (void)fd, (void)data, (void)size, (void)chunk;
    return ENOSYS;
#endif
}

void Relay::discard() {
#ifdef __linux__
    uint8_t scratch[65536];
    int unread = 0;
    while (ioctl(read_end_, FIONREAD, &unread) == 0 && unread > 0) {
        ssize_t n = read(read_end_, scratch, std::min(sizeof scratch, size_t(unread)));
        if (n < 0 && errno != EINTR) break;
    }
    // Stale bytes would go out ahead of the next item's.
    if (ioctl(read_end_, FIONREAD, &unread) != 0 || unread > 0) broken_ = true;
#endif
}

bool can_empty_pipe(int fd) {
#ifdef __linux__
    // Asked, not opened: a read end, even for a moment, could be inherited by a fork.
    return faccessat(AT_FDCWD, proc_path(fd).text, R_OK, AT_EACCESS) == 0;
#else
    (void)fd;
    return false;
#endif
}

int identify_descriptor(int fd, FileId* file) {
    std::lock_guard<std::mutex> lock(held_mutex);
    // A number the caller closed may be one of ours now: for the caller, it is closed.
    bool ours = held.count(fd) || std::count(draining.begin(), draining.end(), fd);
    return ours ? EBADF : file_of(fd, file);
}

int capture_descriptor(int fd, int* duplicate, FileId* file) {
    // Duplicated first, then asked: what is checked is what will be written to.
    int copy = open_held([&] { return fcntl(fd, F_DUPFD_CLOEXEC, 0); });
    if (copy < 0) return errno;
    int flags = fcntl(copy, F_GETFL);
    int error = flags < 0 ? errno : file_of(copy, file);
    if (!error && (flags & O_ACCMODE) == O_RDONLY) error = EBADF;
    if (error) {
        close_held(copy);
        return error;
    }
    *duplicate = copy;
#ifdef O_DIRECT
    file->packet = (flags & O_DIRECT) != 0;
#endif
    return 0;
}

void release_descriptor(int fd) { close_held(fd); }

void before_fork() { held_mutex.lock(); }

void after_fork_in_parent() { held_mutex.unlock(); }

void after_fork_in_child() {
    for (int fd : held) close(fd);
    held.clear();
    for (int& fd : draining) {
        if (fd >= 0) close(fd);
        fd = -1;
    }
    held_mutex.unlock();
}

int write_all(int fd, const uint8_t* data, size_t size, size_t chunk, size_t* written) {
    size_t limit = chunk ? std::min(chunk, kMaxSyscallBytes) : kMaxSyscallBytes;
    *written = 0;
    while (*written < size) {
        ssize_t n = write(fd, data + *written, std::min(size - *written, limit));
        if (n >= 0) {
            *written += size_t(n);
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (int error = wait_writable(fd)) return error;
        } else {
            return errno;
        }
    }
    return 0;
}

int write_item(int fd, const FileId& file, const uint8_t* data, size_t size,
               const WriteOptions& options, Relay* relay, TailBuffers* tails,
               size_t* written) {
    *written = 0;
    int error = kNotSpliced;
#ifdef __linux__
    if (file.pipe) {
        int capacity = pipe_capacity(fd, options.pipe_size);
        // A packet-mode pipe makes a packet of each write(); spliced pages would not be one.
        bool spliceable = !file.packet;
        if (spliceable && options.vmsplice) {
            error = vmsplice_item(fd, data, size, capacity, options.chunk, tails, written);
        } else if (spliceable && options.relay && size >= kRelayMinimum && relay &&
                   capacity > 0 && relay->ready(size_t(capacity))) {
            error = relay->send(fd, data, size, options.chunk, written);
        }
    }
#else
    (void)file, (void)options, (void)relay, (void)tails;
#endif
    // write() what is left: not a pipe, no splicing asked, or splicing refused.
    if (error == kNotSpliced || splice_refused(error)) {
        size_t rest = 0;
        error = write_all(fd, data + *written, size - *written, options.chunk, &rest);
        *written += rest;
    }
    // A write to a dead reader raised SIGPIPE on this thread, where it is blocked.
    if (error == EPIPE) discard_pending_sigpipe();
    return error;
}

void block_sigpipe() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

}  // namespace turbopipe
