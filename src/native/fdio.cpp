#include "fdio.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

namespace turbopipe {

namespace {

// write() and vmsplice() take a signed count; Linux moves at most ~2 GiB per call anyway.
constexpr size_t kMaxSyscallBytes = size_t(1) << 30;

// write_item's "no splicing path took the item" (errno values are positive).
constexpr int kNotSpliced = -1;

// Smaller items go through write(): the relay gains nothing there, and each fill takes
// whole pipe pages, where successive write()s share a page.
constexpr size_t kRelayMinimum = 64 * 1024;

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

#ifdef __linux__
void grow_pipe(int fd, size_t wanted) {
    int current = fcntl(fd, F_GETPIPE_SZ);
    if (current < 0) return;
    // Unprivileged processes are capped by /proc/sys/fs/pipe-max-size; settle for less.
    for (size_t size = std::min<size_t>(wanted, INT_MAX); size > size_t(current); size /= 2) {
        if (fcntl(fd, F_SETPIPE_SZ, int(size)) >= 0) return;
    }
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

// Sleeps until the reader has taken every byte out of the pipe, or is gone.
void wait_drained(int fd) {
    int unread = 0;
    while (ioctl(fd, FIONREAD, &unread) == 0 && unread > 0) {
        pollfd entry{fd, 0, 0};
        if (poll(&entry, 1, 0) > 0 && (entry.revents & POLLERR)) return;
        usleep(1000);
    }
}

// The pipe's size, grown first if pipe_size asks for more than before.
int pipe_capacity(int fd, size_t pipe_size, PipeState* pipe) {
    if (pipe->capacity < 0 || pipe_size > pipe->grown_for) {
        if (pipe_size > pipe->grown_for) grow_pipe(fd, pipe_size);
        pipe->grown_for = std::max(pipe->grown_for, pipe_size);
        pipe->capacity = std::max(fcntl(fd, F_GETPIPE_SZ), 0);
    }
    return pipe->capacity;
}

// Splices all but the last pipe-capacity bytes and write()s those: when that write
// returns the pipe has held nothing but them, so the reader has consumed every spliced
// page and the caller may reuse the memory. Memory the kernel cannot pin is write()n.
int vmsplice_item(int fd, const uint8_t* data, size_t size, PipeState* pipe, size_t chunk,
                  size_t* written) {
    int capacity = pipe->capacity;
    size_t head = 0;
    if (capacity > 0 && size > size_t(capacity)) {
        int error = vmsplice_all(fd, data, size - size_t(capacity), &head);
        // EFAULT/EINVAL: memory the kernel cannot pin (device mappings); write() it.
        if (error && error != EFAULT && error != EINVAL && error != ENOSYS) {
            *written = head;
            return error;
        }
    }
    size_t tail = 0;
    int error = write_all(fd, data + head, size - head, chunk, &tail);
    *written = head + tail;
    // Grown meanwhile (by the reader, say): the tail no longer proves the spliced pages
    // were consumed, but an empty pipe does.
    if (head && !error) {
        int now = fcntl(fd, F_GETPIPE_SZ);
        if (now > capacity) wait_drained(fd);
        if (now > 0) pipe->capacity = now;
    }
    return error;
}

#endif

}  // namespace

Relay::~Relay() {
    if (!is_open()) return;
    close(read_end_);
    close(write_end_);
}

bool Relay::open() {
#ifdef __linux__
    int ends[2];
    if (pipe2(ends, O_CLOEXEC) < 0) return false;
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
        grow_pipe(write_end_, wanted);
        int size = fcntl(write_end_, F_GETPIPE_SZ);
        capacity_ = size > 0 ? size_t(size) : 0;
    }
#else
    (void)wanted;
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

int capture_descriptor(int fd, int* duplicate, FileId* file) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return errno;
    if ((flags & O_ACCMODE) == O_RDONLY) return EBADF;
    struct stat info;
    if (fstat(fd, &info) < 0) return errno;
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return errno;
    *duplicate = copy;
    *file = FileId{uint64_t(info.st_dev), uint64_t(info.st_ino), S_ISFIFO(info.st_mode)};
#ifdef O_DIRECT
    file->packet = (flags & O_DIRECT) != 0;
#endif
    return 0;
}

void release_descriptor(int fd) {
    // After close() the descriptor is gone even on EINTR (Linux); never retry.
    close(fd);
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
               const WriteOptions& options, PipeState* pipe, Relay* relay, size_t* written) {
    *written = 0;
    int error = kNotSpliced;
#ifdef __linux__
    if (file.pipe) {
        int capacity = pipe_capacity(fd, options.pipe_size, pipe);
        // A packet-mode pipe makes a packet of each write(); spliced pages would not be one.
        bool spliceable = !file.packet;
        if (spliceable && options.vmsplice) {
            error = vmsplice_item(fd, data, size, pipe, options.chunk, written);
        } else if (spliceable && options.relay && size >= kRelayMinimum && relay &&
                   capacity > 0 && relay->ready(size_t(capacity))) {
            error = relay->send(fd, data, size, options.chunk, written);
        }
    }
#else
    (void)file, (void)options, (void)pipe, (void)relay;
#endif
    // write() what is left: not a pipe, no splicing asked, or splicing refused.
    if (error == kNotSpliced || error == EINVAL || error == ENOSYS || error == EPERM) {
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
