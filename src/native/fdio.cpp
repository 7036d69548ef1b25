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
#endif

}  // namespace

int capture_descriptor(int fd, int* duplicate, FileId* file) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return errno;
    if ((flags & O_ACCMODE) == O_RDONLY) return EBADF;
    struct stat info;
    if (fstat(fd, &info) < 0) return errno;
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return errno;
    *duplicate = copy;
    *file = FileId{uint64_t(info.st_dev), uint64_t(info.st_ino)};
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
            int error = errno;
            if (error == EPIPE) discard_pending_sigpipe();
            return error;
        }
    }
    return 0;
}

int write_item(int fd, const uint8_t* data, size_t size, const WriteOptions& options,
               size_t* written) {
    *written = 0;
    size_t head = 0;
    int capacity = -1;
#ifdef __linux__
    struct stat info;
    if (fstat(fd, &info) == 0 && S_ISFIFO(info.st_mode)) {
        if (options.pipe_size) grow_pipe(fd, options.pipe_size);
        if (options.vmsplice) capacity = fcntl(fd, F_GETPIPE_SZ);
        // Splice all but the last pipe-capacity bytes and write() those: when that write
        // returns the pipe has held nothing but them, so the reader has consumed every
        // spliced page and the caller may reuse the memory.
        if (capacity > 0 && size > size_t(capacity)) {
            int error = vmsplice_all(fd, data, size - size_t(capacity), &head);
            // EFAULT/EINVAL: memory the kernel cannot pin (device mappings); write() it.
            if (error && error != EFAULT && error != EINVAL && error != ENOSYS) {
                if (error == EPIPE) discard_pending_sigpipe();
                *written = head;
                return error;
            }
        }
    }
#else
    (void)options;
    (void)capacity;
#endif
    size_t tail = 0;
    int error = write_all(fd, data + head, size - head, options.chunk, &tail);
    *written = head + tail;
#ifdef __linux__
    // Grown meanwhile (by the reader, or a stream on another dup of it): the tail no longer
    // proves the spliced pages were consumed, but an empty pipe does.
    if (head && !error && fcntl(fd, F_GETPIPE_SZ) > capacity) wait_drained(fd);
#endif
    return error;
}

void block_sigpipe() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

}  // namespace turbopipe
