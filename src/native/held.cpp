// The descriptors the engine holds, and what a fork does with them (see fdio_internal.hpp).
#include <new>

#include "fdio_internal.hpp"

namespace turbopipe {

std::mutex held_mutex;
std::unordered_set<int> held;
std::array<int, 64> transient = [] {
    std::array<int, 64> slots;
    slots.fill(-1);
    return slots;
}();

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

void close_held(int fd) {
    std::lock_guard<std::mutex> lock(held_mutex);
    held.erase(fd);
    // After close() the descriptor is gone even on EINTR (Linux); never retry.
    close(fd);
}

bool ours(int fd) { return held.count(fd) || std::count(transient.begin(), transient.end(), fd); }

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

}  // namespace turbopipe
