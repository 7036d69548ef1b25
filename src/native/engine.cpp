#include "engine.hpp"

#include <algorithm>
#include <iterator>
#include <new>
#include <system_error>

namespace turbopipe {

namespace {
bool holds(const std::list<Item>& items, uintptr_t root) {
    return std::any_of(items.begin(), items.end(),
                       [&](const Item& item) { return item.root == root; });
}
}  // namespace

Outcome Engine::submit(int fd, const Item& item, Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    // What allocates comes first, and is undone if a later step fails: short of memory or
    // threads, nothing is queued and nothing is lost.
    std::list<Item> node;
    bool created = false, key_added = false, root_added = false;
    auto undo = [&](int error) {
        if (created) streams_.erase(item.file);
        if (key_added) active_keys_.erase(item.key);
        if (root_added) active_roots_.erase(item.root);
        *failure = Failure{fd, error, 0, item.size, 0, {}, -1};
        return Outcome::Failed;
    };
    try {
        files_[fd] = item.file;  // before the wait, which may end in that file's failure
    } catch (const std::bad_alloc&) {
        return undo(ENOMEM);
    }
    auto ready = [&] {
        Stream* stream = stream_of_file(item.file);
        if (stream && stream->failure) return true;
        if (item.key && active_keys_.contains(item.key)) return false;
        return !stream || stream->queue.size() < queue_limit_;
    };
    if (!wait_for_progress(lock, deadline, ready)) return Outcome::TimedOut;

    auto found = streams_.find(item.file);
    std::shared_ptr<Stream> stream = found == streams_.end() ? nullptr : found->second;
    if (take_failure(stream.get(), failure)) return Outcome::Failed;
    if (stream && stream->exited) {  // returned after idling: replace it
        if (stream->worker.joinable()) exited_--;
        join(*stream);
        streams_.erase(found);
        stream.reset();
    }
    // The caller duplicates its fd only where the stream has no descriptor to share.
    if (item.descriptor < 0 && !(stream && stream->descriptor >= 0 && sharing(*stream, item))) {
        return Outcome::NeedsDescriptor;
    }
    // Auto splices into a pipe only if its readers copy out: asked once per stream, by the
    // caller, outside the lock.
    bool decide = item.options.vmsplice == Vmsplice::Auto && item.file.pipe &&
                  !(stream && stream->readers_copy);
    if (decide && !item.readers_copy) return Outcome::Undecided;
    try {
        node.push_back(item);
        if (item.key) active_keys_.insert(item.key);  // absent: ready() waited for that
        key_added = item.key != 0;
        active_roots_.insert(item.root);
        root_added = true;
        if (!stream) {
            stream = std::make_shared<Stream>();
            stream->file = item.file;
            stream->closing.reserve(queue_limit_);
            created = streams_.emplace(item.file, stream).second;
            stream->worker = std::thread(&Engine::run, this, stream.get());
        }
    } catch (const std::bad_alloc&) {
        return undo(ENOMEM);
    } catch (const std::system_error&) {
        return undo(EAGAIN);
    }
    stream->fd = fd;
    if (decide) stream->readers_copy = item.readers_copy;
    Item& queued = node.front();
    queued.order = next_order_++;
    if (item.descriptor < 0) {
        queued.descriptor = stream->descriptor;
    } else if (stream->descriptor < 0 && sharing(*stream, item)) {
        stream->descriptor = item.descriptor;  // else it serves this item alone
    }
    queued.shared = queued.descriptor == stream->descriptor;
    stream->descriptor_users += queued.shared;
    // The worker uses the relay only if it saw it open, under this lock. Failing to open
    // leaves the items to write().
    if (item.options.relay && item.options.vmsplice != Vmsplice::On && item.file.pipe &&
        !stream->relay.is_open()) {
        stream->relay.open();
    }
    stream->queue.splice(stream->queue.end(), node);
    // Woken after unlocking, so that it does not wake only to wait for the lock (measured:
    // the median submit with vmsplice went from 15 to 1.5 us). Meanwhile the stream may
    // go idle and be removed; this reference keeps its condition variable alive.
    lock.unlock();
    stream->wake.notify_one();
    return Outcome::Done;
}

template <class Predicate>
bool Engine::wait_for_progress(std::unique_lock<std::mutex>& lock, Deadline deadline,
                               Predicate ready) {
    // glibc makes a futex call even for a deadline past: a check needs none.
    if (deadline == kCheckOnly) return ready();
    return progress_.wait_until(lock, deadline, ready);
}

Outcome Engine::wait_root(uintptr_t root, Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!wait_for_progress(lock, deadline, [&] { return !active_roots_.contains(root); })) {
        return Outcome::TimedOut;
    }
    Stream* stream = failed_stream([&](const Failure& f) { return holds(f.items, root); });
    return take_failure(stream, failure) ? Outcome::Failed : Outcome::Done;
}

uint64_t Engine::mark() {
    std::lock_guard<std::mutex> lock(mutex_);
    return next_order_;
}

Outcome Engine::wait_fd(int fd, const FileId* file, uint64_t mark, Deadline deadline,
                        Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto stream = [&] { return stream_of(fd, file); };
    auto done = [&] { return !stream() || stream()->done_before(mark); };
    if (!wait_for_progress(lock, deadline, done)) return Outcome::TimedOut;
    return take_failure(stream(), failure) ? Outcome::Failed : Outcome::Done;
}

Outcome Engine::wait_all(uint64_t mark, Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto done = [&] {
        for (auto& [file, stream] : streams_) {
            if (!stream->done_before(mark)) return false;
        }
        return true;
    };
    if (!wait_for_progress(lock, deadline, done)) return Outcome::TimedOut;
    Stream* stream = failed_stream([](const Failure&) { return true; });
    return take_failure(stream, failure) ? Outcome::Failed : Outcome::Done;
}

void Engine::stop_idle_workers() {
    auto stopped = remove_streams(
        [](const Stream& stream) { return stream.idle() && !stream.failure; });
    for (auto& stream : stopped) join(*stream);
}

void Engine::join_exited_workers() {
    if (!exited_) return;
    // A stream with a failure to report stays, without its thread. Each thread is joined
    // holding its stream: the worker may still be closing the relay, and meanwhile the
    // stream may be reported and removed by others.
    std::vector<std::pair<std::thread, std::shared_ptr<Stream>>> returned;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        try {
            returned.reserve(streams_.size());
        } catch (const std::bad_alloc&) {
            return;  // a later call joins them
        }
        for (auto& [file, stream] : streams_) {
            if (stream->exited && stream->failure && stream->worker.joinable()) {
                returned.emplace_back(std::move(stream->worker), stream);
                exited_--;
            }
        }
    }
    for (auto& [thread, stream] : returned) thread.join();
    auto exited = remove_streams(
        [](const Stream& stream) { return stream.exited && !stream.failure; });
    for (auto& stream : exited) join(*stream);
}

void Engine::join(Stream& stream) {
    if (stream.worker.joinable()) stream.worker.join();
}

std::vector<std::shared_ptr<Engine::Stream>> Engine::remove_streams(
    bool (*remove)(const Stream&)) {
    std::vector<std::shared_ptr<Stream>> removed;
    std::lock_guard<std::mutex> lock(mutex_);
    try {
        removed.reserve(streams_.size());
    } catch (const std::bad_alloc&) {
        return removed;  // none: a later call removes them
    }
    for (auto it = streams_.begin(); it != streams_.end();) {
        if (remove(*it->second)) {
            Stream& stream = *it->second;
            if (stream.exited && stream.worker.joinable()) exited_--;
            stream.stopping = true;
            stream.wake.notify_one();
            removed.push_back(std::move(it->second));
            it = streams_.erase(it);
        } else {
            ++it;
        }
    }
    // Forget the fd numbers that named those files: a later submit records them again.
    for (auto it = files_.begin(); it != files_.end();) {
        it = streams_.count(it->second) ? std::next(it) : files_.erase(it);
    }
    return removed;
}

std::vector<Pending> Engine::pending() {
    std::vector<Pending> found;
    std::lock_guard<std::mutex> lock(mutex_);
    try {
        found.reserve(streams_.size());
    } catch (const std::bad_alloc&) {
        return found;
    }
    for (auto& [file, stream] : streams_) {
        Pending left{stream->fd, stream->queue.size(), 0};
        for (const Item& item : stream->queue) left.bytes += item.size;
        if (stream->writing) {
            left.items++;
            left.bytes += stream->writing_size;
        }
        if (left.items) found.push_back(left);  // reserved: no allocation
    }
    return found;
}

bool Engine::busy(uintptr_t root) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (active_roots_.contains(root) || holds(finished_, root)) return true;
    return failed_stream([&](const Failure& f) { return holds(f.items, root); }) != nullptr;
}

std::list<Item> Engine::take_finished() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::list<Item> finished;
    finished.swap(finished_);
    return finished;
}

void Engine::run(Stream* stream) {
    block_sigpipe();
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        auto woken = [&] { return stream->stopping || !stream->queue.empty(); };
        if (!stream->wake.wait_for(lock, kIdleExit, woken)) {
            // Idle: leave. The next call joins the thread; a failure stays in the stream
            // for the next call that touches its file, which replaces the stream.
            stream->exited = true;
            exited_++;
            lock.unlock();
            stream->relay.close();  // nobody else uses an exited stream's relay
            stream->tails.release();
            return;
        }
        if (stream->queue.empty()) return;  // stopping
        std::list<Item> current;  // the item being written
        current.splice(current.end(), stream->queue, stream->queue.begin());
        Item& item = current.front();
        stream->writing = true;
        stream->writing_order = item.order;
        stream->writing_size = item.size;
        Relay* relay = stream->relay.is_open() ? &stream->relay : nullptr;
        if (item.options.vmsplice == Vmsplice::Auto) {
            item.options.vmsplice = stream->readers_copy.value_or(false) ? Vmsplice::On
                                                                         : Vmsplice::Off;
        }

        lock.unlock();
        check_vmsplice(*stream, item);
        size_t written = 0;
        WritePath path;
        int error = write_item(item.descriptor, item.file, item.data, item.size, item.options,
                               relay, &stream->tails, &written, &path);
        if (!item.shared && !error) release_descriptor(item.descriptor);
        lock.lock();
        // Closed before the item counts as done: once a wait for it returns, the engine
        // holds no descriptor of a file it has nothing queued for.
        if (int last = item.shared ? let_go(*stream, item) : -1; last >= 0) {
            lock.unlock();
            release_descriptor(last);
            lock.lock();
        }

        stream->writing = false;
        active_keys_.erase(item.key);
        active_roots_.erase(item.root);
        stream->stats.path = path;
        stream->stats.bytes += written;
        stream->stats.items += !error;
        if (!error) {
            finished_.splice(finished_.end(), current);
        } else {
            Failure& failure = stream->failure.emplace(Failure{
                item.fd, error, written, item.size, stream->queue.size(), {},
                item.shared ? -1 : item.descriptor});
            for (const Item& lost : stream->queue) {
                active_keys_.erase(lost.key);
                active_roots_.erase(lost.root);
                int descriptor = let_go(*stream, lost);
                if (descriptor >= 0) stream->closing.push_back(descriptor);  // reserved
            }
            failure.items.splice(failure.items.end(), current);
            failure.items.splice(failure.items.end(), stream->queue);
            failures_++;
        }
        if (!stream->closing.empty()) {
            // Closing can block (a file on NFS): not under the lock.
            lock.unlock();
            for (int descriptor : stream->closing) release_descriptor(descriptor);
            stream->closing.clear();
            lock.lock();
        }
        progress_.notify_all();
    }
}

bool Engine::sharing(const Stream& stream, const Item& item) {
    // Any write end of one pipe writes alike, but for O_DIRECT's packets; a file's
    // descriptors may differ in offset, so each item of a file keeps its own.
    return item.file.pipe && item.file.packet == stream.file.packet;
}

int Engine::let_go(Stream& stream, const Item& item) {
    if (!item.shared) return item.descriptor;
    if (--stream.descriptor_users) return -1;
    int descriptor = stream.descriptor;
    stream.descriptor = -1;
    return descriptor;
}

void Engine::check_vmsplice(Stream& stream, Item& item) {
    // Only into a pipe the engine could empty (fdio.hpp); else a plain write().
    if (item.options.vmsplice != Vmsplice::On || !item.file.pipe) return;
    if (!stream.emptiable) stream.emptiable = can_empty_pipe(item.descriptor);
    if (!*stream.emptiable) {
        item.options.vmsplice = Vmsplice::Off;
        item.options.relay = false;
    }
}

bool Engine::stats(int fd, const FileId* file, StreamStats* stats) {
    std::lock_guard<std::mutex> lock(mutex_);
    Stream* stream = stream_of(fd, file);
    if (stream) *stats = stream->stats;
    return stream != nullptr;
}

Engine::Stream* Engine::stream_of_file(const FileId& file) {
    auto found = streams_.find(file);
    return found == streams_.end() ? nullptr : found->second.get();
}

Engine::Stream* Engine::stream_of_fd(int fd) {
    auto file = files_.find(fd);
    return file == files_.end() ? nullptr : stream_of_file(file->second);
}

Engine::Stream* Engine::stream_of(int fd, const FileId* file) {
    return file ? stream_of_file(*file) : stream_of_fd(fd);
}

// The failure's owners join the finished ones: released by the caller's next
// take_finished(), which, like busy(), runs with the GIL held, so no thread can see the
// key idle while an export is still held.
bool Engine::take_failure(Stream* stream, Failure* failure) {
    if (!stream || !stream->failure) return false;
    *failure = std::move(*stream->failure);
    stream->failure.reset();
    failures_--;
    finished_.splice(finished_.end(), failure->items);
    return true;
}

template <class Match>
Engine::Stream* Engine::failed_stream(Match match) {
    Stream* best = nullptr;
    if (!failures_) return best;
    for (auto& [file, stream] : streams_) {
        if (stream->failure && match(*stream->failure) && (!best || stream->fd < best->fd)) {
            best = stream.get();
        }
    }
    return best;
}

}  // namespace turbopipe
