// Moving pages instead of copying them: the relay, and vmsplice with its tail scheme.
#include <climits>
#include <cstdlib>

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include "fdio_internal.hpp"

namespace turbopipe {

#ifdef __linux__

namespace {

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

}  // namespace

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

}  // namespace turbopipe
