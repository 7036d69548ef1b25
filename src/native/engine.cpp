#include "engine.hpp"

#include <algorithm>
#include <iterator>
#include <system_error>

namespace turbopipe {

namespace {
// How long a worker waits for work before it exits on its own.
constexpr auto kIdleExit = std::chrono::seconds(2);

bool holds(const Failure& failure, uintptr_t key) {
    return std::find(failure.keys.begin(), failure.keys.end(), key) != failure.keys.end();
}
}  // namespace

std::string Failure::describe() const {
    std::string text = "fd " + std::to_string(fd) + ": wrote " + std::to_string(written) +
                       " of " + std::to_string(size) + " bytes";
    if (dropped) text += ", " + std::to_string(dropped) + " queued items dropped";
    return text;
}

Outcome Engine::submit(int fd, const Item& item, Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    files_[fd] = item.file;
    auto ready = [&] {
        auto found = streams_.find(item.file);
        Stream* stream = found == streams_.end() ? nullptr : found->second.get();
        if (stream && stream->failure) return true;
        if (active_keys_.count(item.key)) return false;
        return !stream || stream->queue.size() < queue_limit_;
    };
    if (!progress_.wait_until(lock, deadline, ready)) return Outcome::TimedOut;

    auto& stream = streams_[item.file];
    if (stream && take_failure(stream.get(), failure)) return Outcome::Failed;
    if (stream && stream->exited) {  // returned after idling: replace it
        if (stream->worker.joinable()) exited_--;
        join(*stream);
        stream.reset();
    }
    if (!stream) {
        auto created = std::make_shared<Stream>();
        created->file = item.file;
        try {
            created->worker = std::thread(&Engine::run, this, created.get());
        } catch (const std::system_error&) {
            streams_.erase(item.file);
            *failure = Failure{fd, EAGAIN, 0, item.size, 0, {}, {}};
            return Outcome::Failed;
        }
        stream = std::move(created);
    }
    stream->fd = fd;
    Item queued = item;
    queued.order = next_order_++;
    // The worker uses the relay only if it saw it open, under this lock. Failing to open
    // leaves the items to write().
    if (queued.options.relay && !queued.options.vmsplice && queued.file.pipe &&
        !stream->relay.is_open()) {
        stream->relay.open();
    }
    stream->queue.push_back(queued);
    active_keys_.insert(item.key);
    // Woken after unlocking, so that it does not wake only to wait for the lock (measured:
    // the median submit with vmsplice went from 15 to 1.5 us). Meanwhile the stream may
    // go idle and be removed; this reference keeps its condition variable alive.
    std::shared_ptr<Stream> woken = stream;
    lock.unlock();
    woken->wake.notify_one();
    return Outcome::Done;
}

Outcome Engine::wait_key(uintptr_t key, Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!progress_.wait_until(lock, deadline, [&] { return !active_keys_.count(key); })) {
        return Outcome::TimedOut;
    }
    Stream* stream = failed_stream([&](const Failure& f) { return holds(f, key); });
    return take_failure(stream, failure) ? Outcome::Failed : Outcome::Done;
}

uint64_t Engine::mark() {
    std::lock_guard<std::mutex> lock(mutex_);
    return next_order_;
}

Outcome Engine::wait_fd(int fd, const FileId* file, uint64_t mark, Deadline deadline,
                        Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto stream = [&] { return file ? stream_of_file(*file) : stream_of_fd(fd); };
    auto done = [&] { return !stream() || stream()->done_before(mark); };
    if (!progress_.wait_until(lock, deadline, done)) return Outcome::TimedOut;
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
    if (!progress_.wait_until(lock, deadline, done)) return Outcome::TimedOut;
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

bool Engine::busy(uintptr_t key) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (active_keys_.count(key)) return true;
    return failed_stream([&](const Failure& f) { return holds(f, key); }) != nullptr;
}

std::vector<void*> Engine::take_finished() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<void*> owners;
    owners.swap(finished_);
    return owners;
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
        Item item = stream->queue.front();
        stream->queue.pop_front();
        stream->writing = true;
        stream->writing_order = item.order;
        Relay* relay = stream->relay.is_open() ? &stream->relay : nullptr;

        lock.unlock();
        // vmsplice only into a pipe the engine could empty (fdio.hpp); else a plain write().
        if (item.options.vmsplice && item.file.pipe) {
            if (!stream->emptiable) stream->emptiable = can_empty_pipe(item.descriptor);
            if (!*stream->emptiable) item.options.vmsplice = item.options.relay = false;
        }
        size_t written = 0;
        int error = write_item(item.descriptor, item.file, item.data, item.size, item.options,
                               relay, &stream->tails, &written);
        release_descriptor(item.descriptor);
        lock.lock();

        stream->writing = false;
        active_keys_.erase(item.key);
        if (!error) {
            finished_.push_back(item.owner);
        } else {
            Failure failure{item.fd, error, written, item.size, 0, {item.key}, {item.owner}};
            std::deque<Item> dropped;
            dropped.swap(stream->queue);
            for (const Item& lost : dropped) {
                active_keys_.erase(lost.key);
                failure.dropped++;
                failure.keys.push_back(lost.key);
                failure.owners.push_back(lost.owner);
            }
            stream->failure = std::move(failure);
            failures_++;
            // Closing can block (a file on NFS): not under the lock.
            lock.unlock();
            for (const Item& lost : dropped) release_descriptor(lost.descriptor);
            lock.lock();
        }
        progress_.notify_all();
    }
}

Engine::Stream* Engine::stream_of_file(const FileId& file) {
    auto found = streams_.find(file);
    return found == streams_.end() ? nullptr : found->second.get();
}

Engine::Stream* Engine::stream_of_fd(int fd) {
    auto file = files_.find(fd);
    return file == files_.end() ? nullptr : stream_of_file(file->second);
}

// The failure's owners join the finished ones: released by the caller's next
// take_finished(), which, like busy(), runs with the GIL held, so no thread can see the
// key idle while an export is still held.
bool Engine::take_failure(Stream* stream, Failure* failure) {
    if (!stream || !stream->failure) return false;
    *failure = std::move(*stream->failure);
    stream->failure.reset();
    failures_--;
    finished_.insert(finished_.end(), failure->owners.begin(), failure->owners.end());
    failure->owners.clear();
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
