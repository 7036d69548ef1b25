// Descriptors: which file one names, holding on to it, and writing to it with write().
#include <csignal>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

#include "fdio_internal.hpp"

namespace turbopipe {

namespace {

// write_item's "no splicing path took the item": not a pipe, not asked, or not able
// (errno values are positive).
constexpr int kNotSpliced = -1;

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

int file_of(int fd, FileId* file) {
    struct stat info;
    if (fstat(fd, &info) < 0) return errno;
    *file = FileId{uint64_t(info.st_dev), uint64_t(info.st_ino), S_ISFIFO(info.st_mode)};
    return 0;
}

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

}  // namespace

int wait_writable(int fd) {
    pollfd entry{fd, POLLOUT, 0};
    while (poll(&entry, 1, -1) < 0) {
        if (errno != EINTR) return errno;
    }
    // POLLERR/POLLHUP: the next write reports the precise errno (EPIPE...).
    return 0;
}

bool splice_refused(int error) {
    return std::count(std::begin(kSpliceRefused), std::end(kSpliceRefused), error) > 0;
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
