// The engine: one queue and one writer thread per file written to.
//
// Invariants (all state below is guarded by the one mutex_, never held during I/O):
// - A stream serves one file (FileId: what the caller's fd named at submission), whatever
//   fd numbers reach it: its items are written in submission order by its worker only.
//   An fd number closed and reused by an open() names another file, hence another stream.
// - Items are numbered in submission order across streams (Item::order): wait_fd and
//   wait_all wait for the items submitted before them, never for later ones.
// - A key has at most one item queued or being written; submit() waits otherwise, so an
//   owner's memory is exported at most once (key 0: an owner that may be exported again).
//   wait_root() waits for the items of a root, the object whose memory they are.
// - Every owner queued by submit() (it returned Done; otherwise the caller keeps it) comes
//   back exactly once from take_finished(): after its bytes are written, or after the
//   failure that dropped it is reported. Until then its root stays busy(), so neither it
//   nor its key can be freed and its address reused by another.
// - A failed write drops the items queued behind it on that stream and leaves one Failure
//   there, reported by the next submit/wait touching that stream.
// - An item is written through a duplicate of the caller's fd: its own, or for a pipe the
//   one its stream shares among the items queued while it is open. A duplicate is closed
//   before its last item counts as done, so once a wait returns the engine holds none for
//   a file with nothing queued: the reader sees end of file when the caller closes its fd.
// - A worker idle for kIdleExit exits on its own, closing its relay; the next call that
//   finds it exited joins it, and a later item for its file starts a new one. A stream
//   with a failure to report stays, without a worker, until the failure is reported.
// - Workers never allocate: an item's list node is made by submit(), on the caller's
//   thread, and then moves (splice) from queue to finished or failure. The caller's calls
//   allocate before they change anything; short of memory, submit() fails with ENOMEM
//   and the others put off their cleanup. No call throws.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "fdio.hpp"

namespace turbopipe {

// Items a stream queues before submit() waits for room.
constexpr size_t kQueueLimit = 16;
// How long a worker waits for work before it exits on its own.
constexpr auto kIdleExit = std::chrono::seconds(2);

using Deadline = std::chrono::steady_clock::time_point;
// The deadline of a wait that only checks, and returns TimedOut where it would wait.
constexpr Deadline kCheckOnly{};

struct Item {
    const uint8_t* data;
    size_t size;
    // From capture_descriptor, the engine closes it; or -1: the engine takes its stream's
    // (submit() says NeedsDescriptor where there is none to take).
    int descriptor;
    int fd;          // the caller's number for it, for messages
    FileId file;     // what the fd named at submission
    uintptr_t key;   // identity that submit() serializes on; 0 for none
    uintptr_t root;  // identity that wait_root() waits on: whose memory it is
    void* owner;     // the caller's handle keeping `data` alive
    WriteOptions options;
    // For Vmsplice::Auto: readers_copy_out() of the pipe, asked when submit() says Undecided.
    std::optional<bool> readers_copy;
    uint64_t order = 0;  // set by submit: the items before it have lower ones
    bool shared = false;  // set by submit: descriptor is its stream's
};

struct Failure {
    int fd = -1;
    int error = 0;          // errno
    size_t written = 0;     // bytes of the failing item that were written
    size_t size = 0;        // size of the failing item
    size_t dropped = 0;     // queued items behind it that were never written
    std::list<Item> items;  // the failing and the dropped items, finished when reported
    // The failing item's own descriptor, or -1: held open until the failure is reported
    // (by the caller, who closes it), so that the file's inode number cannot go to a new
    // file, which would then see this failure as its own.
    int descriptor = -1;
};

// What submit() needs before it can queue an item: NeedsDescriptor, the item's own
// descriptor (its stream has none to share); Undecided, item.readers_copy (for a stream it
// would start).
enum class Outcome { Done, Failed, TimedOut, NeedsDescriptor, Undecided };

// What a stream has written since it started.
struct StreamStats {
    WritePath path = WritePath::None;  // how its last item went
    uint64_t items = 0;                // written whole
    uint64_t bytes = 0;                // including those of a failed item
};

// What a stream has yet to write: its items queued or being written.
struct Pending {
    int fd;          // the last fd number its items came through
    size_t items;    // queued or being written
    uint64_t bytes;  // their sizes, the one being written whole
};

// Identities of items queued or being written, a multiset: a few dozen at most, so
// searched in a line (no hashing, no node per identity), and erasing never allocates.
class KeySet {
public:
    bool contains(uintptr_t key) const {
        return std::find(keys_.begin(), keys_.end(), key) != keys_.end();
    }
    void insert(uintptr_t key) { keys_.push_back(key); }  // may throw std::bad_alloc
    void erase(uintptr_t key) {
        auto found = std::find(keys_.begin(), keys_.end(), key);
        if (found == keys_.end()) return;
        *found = keys_.back();
        keys_.pop_back();
    }

private:
    std::vector<uintptr_t> keys_;
};

class Engine {
public:
    explicit Engine(size_t queue_limit) : queue_limit_(queue_limit) {}
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Queues `item` for `fd`, first waiting until its key is idle and the queue has room.
    // Unless Done, `item` was not queued and the caller still owns its descriptor and owner.
    Outcome submit(int fd, const Item& item, Deadline deadline, Failure* failure);

    Outcome wait_root(uintptr_t root, Deadline deadline, Failure* failure);

    // What wait_fd and wait_all wait for: the items submitted before this call, not those
    // other threads submit meanwhile (else they could wait for ever). Taken once per wait.
    uint64_t mark();
    // `file` is what fd names now; null for a closed fd: the file it named at its last
    // submit, if any.
    Outcome wait_fd(int fd, const FileId* file, uint64_t mark, Deadline deadline,
                    Failure* failure);
    Outcome wait_all(uint64_t mark, Deadline deadline, Failure* failure);

    // Stops and joins the workers of idle streams with nothing to report; a later submit
    // starts them again.
    void stop_idle_workers();

    // Joins the workers that exited after idling; quick: they have returned already.
    void join_exited_workers();

    // The stats of the stream serving `file` (what fd names now, or null for the file it
    // named at its last submit); false if no stream serves it.
    bool stats(int fd, const FileId* file, StreamStats* stats);

    // The streams with items queued or being written. Allocates (on the caller's thread);
    // short of memory, some may be left out.
    std::vector<Pending> pending();

    // Whether the engine holds an owner of root's: an item queued, being written, finished
    // but not taken yet (take_finished), or in an unreported failure.
    bool busy(uintptr_t root);

    // Items that are done (written, or dropped and reported), for the caller to release
    // their owners.
    std::list<Item> take_finished();

private:
    struct Stream {
        int fd;  // the last fd number its items came through, for messages
        FileId file;
        std::list<Item> queue;
        // The duplicate its pipe's items share (none to make per item), and how many
        // queued or written items hold it; -1 when none does.
        int descriptor = -1;
        size_t descriptor_users = 0;
        bool writing = false;
        uint64_t writing_order = 0;  // the order of the item being written
        size_t writing_size = 0;     // and its size
        bool stopping = false;
        bool exited = false;  // its worker returned after idling; join it if joinable
        std::optional<Failure> failure;
        std::condition_variable wake;
        std::thread worker;
        Relay relay;        // opened by submit; the worker uses it if it saw it open
        TailBuffers tails;  // the worker's only
        std::optional<bool> emptiable;  // the worker's only: can_empty_pipe, asked once
        // readers_copy_out(), asked by the submit() that started it: what Auto means here.
        std::optional<bool> readers_copy;
        StreamStats stats;
        // The worker's only: descriptors of dropped items, to close after unlocking.
        // Reserved for a full queue, so that filling it does not allocate.
        std::vector<int> closing;

        bool idle() const { return queue.empty() && !writing; }
        // Whether every item submitted before `mark` is done here.
        bool done_before(uint64_t mark) const {
            if (writing) return writing_order >= mark;
            return queue.empty() || queue.front().order >= mark;
        }
    };

    // progress_.wait_until(lock, deadline, ready).
    template <class Predicate>
    bool wait_for_progress(std::unique_lock<std::mutex>& lock, Deadline deadline,
                           Predicate ready);
    void run(Stream* stream);
    // Whether item may share its stream's descriptor.
    static bool sharing(const Stream& stream, const Item& item);
    // Gives up `item`'s hold on its descriptor: the descriptor to close now (after
    // unlocking), or -1 while other items share it.
    static int let_go(Stream& stream, const Item& item);
    // Turns Vmsplice::On to Off where it cannot serve (the worker's, not under the lock).
    static void check_vmsplice(Stream& stream, Item& item);
    Stream* stream_of_file(const FileId& file);
    Stream* stream_of_fd(int fd);
    // The stream of `file` (what fd names now), or for null, of the file fd last named.
    Stream* stream_of(int fd, const FileId* file);
    bool take_failure(Stream* stream, Failure* failure);
    // The stream with the lowest fd whose failure matches.
    template <class Match>
    Stream* failed_stream(Match match);
    std::vector<std::shared_ptr<Stream>> remove_streams(bool (*remove)(const Stream&));
    // Joins its worker unless done already: one that has returned or was told to stop.
    static void join(Stream& stream);

    const size_t queue_limit_;
    std::mutex mutex_;
    uint64_t next_order_ = 0;
    std::condition_variable progress_;  // an item finished or failed
    // Shared: submit() wakes a worker after unlocking, holding on to its stream meanwhile.
    std::map<FileId, std::shared_ptr<Stream>> streams_;
    std::unordered_map<int, FileId> files_;      // fd number -> the file it last named
    KeySet active_keys_;   // of items queued or being written, but for key 0
    KeySet active_roots_;  // of the same items
    size_t failures_ = 0;                        // streams holding a failure
    // Streams whose worker returned and is not joined yet; written under mutex_.
    std::atomic<size_t> exited_{0};
    std::list<Item> finished_;
};

}  // namespace turbopipe
