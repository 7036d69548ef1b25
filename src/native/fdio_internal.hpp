// What the files of platform I/O share: held.cpp (the descriptors the engine holds),
// fdio.cpp (descriptors and write()), splice.cpp (the relay and vmsplice), readers.cpp (who
// reads a pipe). The engine includes fdio.hpp only.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <mutex>
#include <unordered_set>

#include <unistd.h>

#include "fdio.hpp"

namespace turbopipe {

// write() and vmsplice() take a signed count; Linux moves at most ~2 GiB per call anyway.
constexpr size_t kMaxSyscallBytes = size_t(1) << 30;

// held.cpp

// Every descriptor the engine holds open (duplicates, relay ends), for a forked child to
// close its copies of (a child that outlives the parent's writes would otherwise keep
// their reader from ever seeing end of file), and for ours() to tell the
// caller's numbers from ours. Opened and closed under held_mutex: the set is then exactly
// the engine's open descriptors for anyone holding it (a forked child included).
extern std::mutex held_mutex;
extern std::unordered_set<int> held;
// Descriptors the engine opens for a moment (a writer thread emptying a pipe, a scan of
// /proc): a fixed table, as inserting into `held` may allocate, which writer threads never
// do. Also guarded by held_mutex; -1 marks a free slot.
extern std::array<int, 64> transient;

// Records fd as held; false, with fd closed and errno ENOMEM, if memory is short. Under
// held_mutex.
bool hold(int fd);

// Opens a descriptor with open_fd() (it, or -1 with errno set) and holds it.
template <class Open>
int open_held(Open open_fd) {
    std::lock_guard<std::mutex> lock(held_mutex);
    int fd = open_fd();
    return fd >= 0 && hold(fd) ? fd : -1;
}

void close_held(int fd);

// Whether fd is one of the engine's descriptors. Under held_mutex.
bool ours(int fd);

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

// fdio.cpp

// Waits until fd takes more bytes (or reports why not at the next write); 0 or errno.
int wait_writable(int fd);

// The destination or the system refused splicing: write() does the rest.
bool splice_refused(int error);

// This process's path of its descriptor fd, made without allocating (writer threads
// never do).
struct ProcPath {
    char text[32];
};

inline ProcPath proc_path(int fd) {
    ProcPath path;
    std::snprintf(path.text, sizeof path.text, "/proc/self/fd/%d", fd);
    return path;
}

#ifdef __linux__
// splice.cpp

// The pipe's size in bytes (0 if unknown), after growing it towards `wanted` if it is
// smaller. Asked once per item: asking takes the pipe's lock, which the reader holds
// while it copies out, and the pipe may have been replaced (a FIFO reopened) or resized.
int pipe_capacity(int fd, size_t wanted);

// Splices all but the last pipe-capacity bytes of the caller's memory, then that tail from
// a copy in `tails`: once the tail is in, the pipe has held nothing but it, so the reader
// has consumed every page of the caller's and the caller may reuse the memory. Memory the
// kernel cannot pin is write()n; so are items that fit in the pipe (splicing gains
// nothing there, and a spliced page is never shared with the next item's bytes, where
// write()s share pages). *mapped counts the bytes spliced from the caller's memory.
int vmsplice_item(int fd, const uint8_t* data, size_t size, int capacity, size_t chunk,
                  TailBuffers* tails, size_t* written, size_t* mapped);
#endif

}  // namespace turbopipe
