#include "fdio.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <csignal>
#include <mutex>
#include <new>
#include <unordered_set>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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
// their reader from ever seeing end of file), and for ours() to tell the
// caller's numbers from ours. Opened and closed under held_mutex: the set is then exactly
// the engine's open descriptors for anyone holding it (a forked child included).
std::mutex held_mutex;
std::unordered_set<int> held;
// Descriptors the engine opens for a moment (a writer thread emptying a pipe, a scan of
// /proc): a fixed table, as inserting into `held` may allocate, which writer threads never
// do. Also guarded by held_mutex; -1 marks a free slot.
std::array<int, 64> transient = [] {
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

// A descriptor the engine holds for a moment (a writer thread emptying a pipe, a scan of
// /proc), recorded in `transient`: the caller's calls then know its number is the
// engine's, and a forked child closes it.
class TransientFd {
public:
    // open_fd() returns a descriptor, or -1 with errno set; get() is -1 with errno set if
    // it failed, or if 64 are open at once (EMFILE).
    template <class Open>
    explicit TransientFd(Open open_fd) {
        std::lock_guard<std::mutex> lock(held_mutex);
        slot_ = std::find(transient.begin(), transient.end(), -1);
        if (slot_ == transient.end()) {
            errno = EMFILE;
            return;
        }
        fd_ = open_fd();
        if (fd_ >= 0) *slot_ = fd_;
    }
    TransientFd(const TransientFd&) = delete;
    TransientFd& operator=(const TransientFd&) = delete;
    ~TransientFd() {
        if (fd_ < 0) return;
        std::lock_guard<std::mutex> lock(held_mutex);
        *slot_ = -1;
        close(fd_);
    }
    int get() const { return fd_; }

private:
    int* slot_ = nullptr;
    int fd_ = -1;
};

int file_of(int fd, FileId* file) {
    struct stat info;
    if (fstat(fd, &info) < 0) return errno;
    *file = FileId{uint64_t(info.st_dev), uint64_t(info.st_ino), S_ISFIFO(info.st_mode)};
    return 0;
}

// A number the caller closed may be one of ours now: for the caller, it is closed.
bool ours(int fd) { return held.count(fd) || std::count(transient.begin(), transient.end(), fd); }

// The file a descriptor writes to; EBADF if it is read-only.
int writable_file_of(int fd, FileId* file) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return errno;
    if ((flags & O_ACCMODE) == O_RDONLY) return EBADF;
    if (int error = file_of(fd, file)) return error;
#ifdef O_DIRECT
    file->packet = (flags & O_DIRECT) != 0;
#endif
    return 0;
}

// The destination or the system refused splicing: write() does the rest.
bool splice_refused(int error) {
    return std::count(std::begin(kSpliceRefused), std::end(kSpliceRefused), error) > 0;
}

#ifdef __linux__

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
    TransientFd reader([&] { return open(path.text, O_RDONLY | O_NONBLOCK | O_CLOEXEC); });
    if (reader.get() < 0) return;
    uint8_t scratch[65536];
    while (read(reader.get(), scratch, sizeof scratch) > 0) {
    }
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

// Calls visit(name) for each entry of the directory `dir` until it returns false; false
// then, or if reading failed. With getdents64: opendir() allocates.
template <class Visit>
bool for_each_entry(int dir, Visit visit) {
    alignas(8) char buffer[8192];
    for (;;) {
        long length = syscall(SYS_getdents64, dir, buffer, sizeof buffer);
        if (length < 0 && errno == EINTR) continue;
        if (length <= 0) return length == 0;
        for (long at = 0; at < length;) {
            const auto* entry = reinterpret_cast<const dirent64*>(buffer + at);
            at += entry->d_reclen;
            if (!visit(entry->d_name)) return false;
        }
    }
}

// A directory entry's name as a number: a process id or a descriptor; -1 for others.
int number_of(const char* name) {
    long value = 0;
    for (const char* digit = name; *digit; digit++) {
        if (*digit < '0' || *digit > '9' || value > INT_MAX / 10) return -1;
        value = value * 10 + (*digit - '0');
    }
    return *name ? int(value) : -1;
}

// Whether an executable is FFmpeg or ffprobe, which read() their input: named so, or with
// a suffix after a dash, as some packages name them (imageio-ffmpeg's
// "ffmpeg-linux-x86_64-v7.0.2"). A deleted one ("ffmpeg (deleted)") is not known.
bool known_to_copy_out(const char* executable) {
    const char* name = std::strrchr(executable, '/');
    name = name ? name + 1 : executable;
    for (const char* known : {"ffmpeg", "ffprobe"}) {
        size_t length = std::strlen(known);
        if (std::strncmp(name, known, length) == 0 && (!name[length] || name[length] == '-')) {
            return true;
        }
    }
    return false;
}

// The access mode (O_RDONLY...) of descriptor `fd` of process `pid`, from its fdinfo; -1
// if unknown.
int access_mode(int proc, int pid, int fd) {
    char path[64], text[256] = {};
    std::snprintf(path, sizeof path, "%d/fdinfo/%d", pid, fd);
    TransientFd info([&] { return openat(proc, path, O_RDONLY | O_CLOEXEC); });
    ssize_t length = info.get() < 0 ? -1 : read(info.get(), text, sizeof text - 1);
    const char* flags = length > 0 ? std::strstr(text, "flags:") : nullptr;
    return flags ? int(std::strtoul(flags + 6, nullptr, 8) & O_ACCMODE) : -1;
}

// For readers_copy_out: false if process `pid` may read the pipe whose
// /proc link is `pipe` and is not known to copy out; counts it in *readers if it is.
bool reads_by_copy(int proc, int pid, const char* pipe, int* readers) {
    char path[64];
    std::snprintf(path, sizeof path, "%d", pid);
    struct stat owner;
    if (fstatat(proc, path, &owner, 0) < 0) return errno == ENOENT;  // exited meanwhile
    std::snprintf(path, sizeof path, "%d/fd", pid);
    TransientFd fds([&] { return openat(proc, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
    if (fds.get() < 0) {
        if (errno == ENOENT || errno == ESRCH) return true;  // it exited meanwhile
        // Another user's process: it holds this process's pipe only if handed over on
        // purpose (SCM_RIGHTS), as it may not take it from /proc. One of this user's
        // that refuses inspection (not dumpable) is a doubt.
        return (errno == EACCES || errno == EPERM) && owner.st_uid != geteuid();
    }
    size_t pipe_length = std::strlen(pipe);
    bool reads = false;
    bool scanned = for_each_entry(fds.get(), [&](const char* name) {
        char link[64];
        int fd = number_of(name);
        if (fd < 0) return true;
        ssize_t length = readlinkat(fds.get(), name, link, sizeof link);
        if (length < 0 || size_t(length) != pipe_length || std::memcmp(link, pipe, pipe_length)) {
            return true;  // another file, or closed meanwhile
        }
        int mode = access_mode(proc, pid, fd);
        if (mode < 0) return false;
        reads = reads || mode != O_WRONLY;
        return true;
    });
    if (!scanned) return false;
    if (!reads) return true;
    if (pid == getpid()) return false;  // a reader of our own might splice onward
    char executable[PATH_MAX];
    std::snprintf(path, sizeof path, "%d/exe", pid);
    ssize_t length = readlinkat(proc, path, executable, sizeof executable - 1);
    if (length < 0) return false;
    executable[length] = '\0';
    if (!known_to_copy_out(executable)) return false;
    ++*readers;
    return true;
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
// write()s share pages). *mapped counts the bytes spliced from the caller's memory.
int vmsplice_item(int fd, const uint8_t* data, size_t size, int capacity, size_t chunk,
                  TailBuffers* tails, size_t* written, size_t* mapped) {
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
    *mapped = head;
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

bool readers_copy_out(int fd) {
#ifdef __linux__
    char pipe[64];
    ssize_t length = readlink(proc_path(fd).text, pipe, sizeof pipe - 1);
    if (length <= 0) return false;
    pipe[length] = '\0';
    if (std::strncmp(pipe, "pipe:[", 6) != 0) return false;  // a FIFO's link is its path
    TransientFd proc([] { return open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
    if (proc.get() < 0) return false;
    int readers = 0;
    bool known = for_each_entry(proc.get(), [&](const char* name) {
        int pid = number_of(name);
        return pid < 0 || reads_by_copy(proc.get(), pid, pipe, &readers);
    });
    return known && readers > 0;
#else
    (void)fd;
    return false;
#endif
}

int identify_descriptor(int fd, FileId* file) {
    std::lock_guard<std::mutex> lock(held_mutex);
    return ours(fd) ? EBADF : file_of(fd, file);
}

int check_descriptor(int fd, FileId* file) {
    std::lock_guard<std::mutex> lock(held_mutex);
    return ours(fd) ? EBADF : writable_file_of(fd, file);
}

int capture_descriptor(int fd, int* duplicate, FileId* file) {
    // Duplicated first, then asked: what is checked is what will be written to.
    int copy = open_held([&] { return fcntl(fd, F_DUPFD_CLOEXEC, 0); });
    if (copy < 0) return errno;
    if (int error = writable_file_of(copy, file)) {
        close_held(copy);
        return error;
    }
    *duplicate = copy;
    return 0;
}

void release_descriptor(int fd) { close_held(fd); }

void before_fork() { held_mutex.lock(); }

void after_fork_in_parent() { held_mutex.unlock(); }

void after_fork_in_child() {
    for (int fd : held) close(fd);
    held.clear();
    for (int& fd : transient) {
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
               size_t* written, WritePath* path) {
    *written = 0;
    *path = WritePath::Direct;
    int error = kNotSpliced;
#ifdef __linux__
    if (file.pipe) {
        int capacity = pipe_capacity(fd, options.pipe_size);
        // A packet-mode pipe makes a packet of each write(); spliced pages would not be one.
        bool spliceable = !file.packet;
        if (spliceable && options.vmsplice == Vmsplice::On) {
            size_t mapped = 0;
            error = vmsplice_item(fd, data, size, capacity, options.chunk, tails, written,
                                  &mapped);
            if (mapped) *path = WritePath::Vmsplice;
        } else if (spliceable && options.relay && size >= kRelayMinimum && relay &&
                   capacity > 0 && relay->ready(size_t(capacity))) {
            error = relay->send(fd, data, size, options.chunk, written);
            if (!splice_refused(error)) *path = WritePath::Relay;
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
