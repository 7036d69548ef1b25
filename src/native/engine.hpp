// The engine: one queue and one writer thread per file descriptor.
//
// Invariants (all state below is guarded by the one mutex_, never held during I/O):
// - Items of one fd are written in submission order by that fd's worker, and only by it.
// - Only one item per key is queued or being written at a time; submit() waits otherwise,
//   so an owner's memory is exported at most once.
// - An owner handed to submit() comes back exactly once from take_finished(), after its
//   bytes were written or dropped; the engine never touches its memory afterwards.
// - A failed write drops the items queued behind it on that fd and leaves one Failure per
//   fd, which the next submit/wait touching that fd reports and forgets.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "fdio.hpp"

namespace turbopipe {

using Deadline = std::chrono::steady_clock::time_point;

struct Item {
    const uint8_t* data;
    size_t size;
    int descriptor;  // from capture_descriptor; the engine closes it
    uintptr_t key;   // identity that wait_key() waits on
    void* owner;     // the caller's handle keeping `data` alive
    WriteOptions options;
};

struct Failure {
    int fd = -1;
    int error = 0;                // errno
    size_t written = 0;           // bytes of the failing item that were written
    size_t size = 0;              // size of the failing item
    size_t dropped = 0;           // queued items behind it that were never written
    std::vector<uintptr_t> keys;  // keys of the failing and the dropped items

    // "fd 5: wrote 1024 of 6220800 bytes, 3 queued items dropped"
    std::string describe() const;
};

enum class Outcome { Done, Failed, TimedOut };

class Engine {
public:
    explicit Engine(size_t queue_limit) : queue_limit_(queue_limit) {}
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Queues `item` for `fd`, first waiting until its key is idle and the queue has room.
    // On Failed, `item` was not queued and the caller still owns its descriptor and owner.
    Outcome submit(int fd, const Item& item, Deadline deadline, Failure* failure);

    Outcome wait_key(uintptr_t key, Deadline deadline, Failure* failure);
    Outcome wait_fd(int fd, Deadline deadline, Failure* failure);
    Outcome wait_all(Deadline deadline, Failure* failure);

    // Stops and joins the workers of idle fds; a later submit starts them again.
    void stop_idle_workers();

    bool busy(uintptr_t key);

    // Owners whose items are finished, for the caller to release.
    std::vector<void*> take_finished();

private:
    struct Stream {
        int fd;
        std::deque<Item> queue;
        bool writing = false;
        bool stopping = false;
        std::condition_variable wake;
        std::thread worker;
    };

    void run(Stream* stream);
    void finish(const Item& item);
    bool take_failure(int fd, Failure* failure);
    bool idle(int fd);

    const size_t queue_limit_;
    std::mutex mutex_;
    std::condition_variable progress_;  // an item finished
    std::unordered_map<int, std::unique_ptr<Stream>> streams_;
    std::unordered_set<uintptr_t> busy_keys_;  // keys of items queued or being written
    std::map<int, Failure> failures_;
    std::vector<void*> finished_;
};

}  // namespace turbopipe
