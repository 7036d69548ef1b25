#include "engine.hpp"

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
        if (failures_.count(fd)) return true;
        if (busy_keys_.count(item.key)) return false;
        auto found = streams_.find(fd);
        return found == streams_.end() || found->second->queue.size() < queue_limit_;
    };
    if (!progress_.wait_until(lock, deadline, ready)) return Outcome::TimedOut;
    if (take_failure(fd, failure)) return Outcome::Failed;

    auto& stream = streams_[fd];
    if (!stream) {
        stream = std::make_unique<Stream>();
        stream->fd = fd;
        try {
            stream->worker = std::thread(&Engine::run, this, stream.get());
        } catch (const std::system_error&) {
            streams_.erase(fd);
            failure->fd = fd;
            failure->error = EAGAIN;
            failure->size = item.size;
            return Outcome::Failed;
        }
    }
    stream->queue.push_back(item);
    busy_keys_.insert(item.key);
    // Notified unlocked so the worker does not wake into a held mutex; the stream cannot
    // be stopped meanwhile, as it is not idle.
    Stream* woken = stream.get();
    lock.unlock();
    woken->wake.notify_one();
    return Outcome::Done;
}

Outcome Engine::wait_key(uintptr_t key, Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!progress_.wait_until(lock, deadline, [&] { return !busy_keys_.count(key); })) {
        return Outcome::TimedOut;
    }
    for (auto& [fd, pending] : failures_) {
        for (uintptr_t failed : pending.keys) {
            if (failed == key) return take_failure(fd, failure) ? Outcome::Failed : Outcome::Done;
        }
    }
    return Outcome::Done;
}

Outcome Engine::wait_fd(int fd, Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!progress_.wait_until(lock, deadline, [&] { return idle(fd); })) return Outcome::TimedOut;
    return take_failure(fd, failure) ? Outcome::Failed : Outcome::Done;
}

Outcome Engine::wait_all(Deadline deadline, Failure* failure) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!progress_.wait_until(lock, deadline, [&] { return busy_keys_.empty(); })) {
        return Outcome::TimedOut;
    }
    if (failures_.empty()) return Outcome::Done;
    take_failure(failures_.begin()->first, failure);
    return Outcome::Failed;
}

void Engine::stop_idle_workers() {
    std::vector<std::unique_ptr<Stream>> stopped;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto it = streams_.begin(); it != streams_.end();) {
            if (idle(it->first)) {
                it->second->stopping = true;
                it->second->wake.notify_one();
                stopped.push_back(std::move(it->second));
                it = streams_.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (auto& stream : stopped) stream->worker.join();
}

bool Engine::busy(uintptr_t key) {
    std::lock_guard<std::mutex> lock(mutex_);
    return busy_keys_.count(key) != 0;
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
        finish(item);
        if (error) {
            Failure& failure = failures_[stream->fd];
            failure = Failure{stream->fd, error, written, item.size, 0, {item.key}};
            for (const Item& dropped : stream->queue) {
                release_descriptor(dropped.descriptor);
                failure.dropped++;
                failure.keys.push_back(dropped.key);
                finish(dropped);
            }
            stream->queue.clear();
        }
        progress_.notify_all();
    }
}

void Engine::finish(const Item& item) {
    busy_keys_.erase(item.key);
    finished_.push_back(item.owner);
}

bool Engine::take_failure(int fd, Failure* failure) {
    auto found = failures_.find(fd);
    if (found == failures_.end()) return false;
    *failure = std::move(found->second);
    failures_.erase(found);
    return true;
}

bool Engine::idle(int fd) {
    auto found = streams_.find(fd);
    return found == streams_.end() || (found->second->queue.empty() && !found->second->writing);
}

}  // namespace turbopipe
