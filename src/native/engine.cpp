#include "engine.hpp"

#include <algorithm>
#include <system_error>

namespace turbopipe {

std::string Failure::describe() const {
    std::string text = "fd " + std::to_string(fd) + ": wrote " + std::to_string(written) +
                       " of " + std::to_string(size) + " bytes";
    if (dropped) text += ", " + std::to_string(dropped) + " queued items dropped";
    return text;
}

Outcome Engine::submit(int fd, const Item& item, Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto ready = [&] {
        Stream* stream = current(fd, &item.file);
        if (stream && stream->failure) return true;
        if (active_keys_.count(item.key)) return false;
        return !stream || stream->queue.size() < queue_limit_;
    };
    if (!progress_.wait_until(lock, deadline, ready)) return Outcome::TimedOut;

    Stream* stream = current(fd, &item.file);
    if (stream && take_failure(stream, failure)) return Outcome::Failed;
    if (!stream) {
        auto created = std::make_unique<Stream>();
        created->fd = fd;
        created->file = item.file;
        try {
            created->worker = std::thread(&Engine::run, this, created.get());
        } catch (const std::system_error&) {
            *failure = Failure{fd, EAGAIN, 0, item.size, 0, {}, {}};
            return Outcome::Failed;
        }
        stream = created.get();
        streams_[fd] = std::move(created);
    }
    stream->queue.push_back(item);
    active_keys_.insert(item.key);
    // Notified under the lock: once it is released the stream may go idle and be stopped.
    stream->wake.notify_one();
    return Outcome::Done;
}

Outcome Engine::wait_key(uintptr_t key, Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!progress_.wait_until(lock, deadline, [&] { return !active_keys_.count(key); })) {
        return Outcome::TimedOut;
    }
    Stream* stream = failed_stream([&](const Failure& f) {
        return std::find(f.keys.begin(), f.keys.end(), key) != f.keys.end();
    });
    return take_failure(stream, failure) ? Outcome::Failed : Outcome::Done;
}

Outcome Engine::wait_fd(int fd, Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto idle = [&] {
        Stream* stream = current(fd, nullptr);
        return !stream || stream->idle();
    };
    if (!progress_.wait_until(lock, deadline, idle)) return Outcome::TimedOut;
    return take_failure(current(fd, nullptr), failure) ? Outcome::Failed : Outcome::Done;
}

Outcome Engine::wait_all(Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!progress_.wait_until(lock, deadline, [&] { return active_keys_.empty(); })) {
        return Outcome::TimedOut;
    }
    Stream* stream = failed_stream([](const Failure&) { return true; });
    return take_failure(stream, failure) ? Outcome::Failed : Outcome::Done;
}

void Engine::stop_idle_workers() {
    std::vector<std::unique_ptr<Stream>> stopped;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        auto stoppable = [](const std::unique_ptr<Stream>& stream) {
            return stream->idle() && !stream->failure;
        };
        for (auto it = streams_.begin(); it != streams_.end();) {
            if (stoppable(it->second)) {
                stopped.push_back(std::move(it->second));
                it = streams_.erase(it);
            } else {
                ++it;
            }
        }
        for (auto& stream : retired_) {
            if (stoppable(stream)) stopped.push_back(std::move(stream));
        }
        retired_.erase(std::remove(retired_.begin(), retired_.end(), nullptr), retired_.end());
        for (auto& stream : stopped) {
            stream->stopping = true;
            stream->wake.notify_one();
        }
    }
    for (auto& stream : stopped) stream->worker.join();
}

bool Engine::busy(uintptr_t key) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (active_keys_.count(key)) return true;
    return failures_ && failed_stream([&](const Failure& f) {
               return std::find(f.keys.begin(), f.keys.end(), key) != f.keys.end();
           }) != nullptr;
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
        stream->wake.wait(lock, [&] { return stream->stopping || !stream->queue.empty(); });
        if (stream->queue.empty()) return;  // stopping, and nothing left to write
        Item item = stream->queue.front();
        stream->queue.pop_front();
        stream->writing = true;

        lock.unlock();
        size_t written = 0;
        int error = write_item(item.descriptor, item.data, item.size, item.options, &written);
        release_descriptor(item.descriptor);
        lock.lock();

        stream->writing = false;
        active_keys_.erase(item.key);
        if (!error) {
            finished_.push_back(item.owner);
        } else {
            Failure failure{stream->fd, error, written, item.size, 0, {item.key}, {item.owner}};
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

Engine::Stream* Engine::current(int fd, const FileId* file) {
    auto found = streams_.find(fd);
    if (found == streams_.end()) return nullptr;
    if (file && !(found->second->file == *file)) {
        retired_.push_back(std::move(found->second));
        streams_.erase(found);
        return nullptr;
    }
    return found->second.get();
}

bool Engine::take_failure(Stream* stream, Failure* failure) {
    if (!stream || !stream->failure) return false;
    *failure = std::move(*stream->failure);
    stream->failure.reset();
    failures_--;
    return true;
}

template <class Match>
Engine::Stream* Engine::failed_stream(Match match) {
    Stream* best = nullptr;
    if (!failures_) return best;
    for_each_stream([&](Stream* stream) {
        if (stream->failure && match(*stream->failure) && (!best || stream->fd < best->fd)) {
            best = stream;
        }
    });
    return best;
}

template <class Visit>
void Engine::for_each_stream(Visit visit) {
    for (auto& [fd, stream] : streams_) visit(stream.get());
    for (auto& stream : retired_) visit(stream.get());
}

}  // namespace turbopipe
