// Platform I/O on file descriptors: every system call the engine makes lives here.
// The I/O functions return 0 or an errno value; none of them throws.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace turbopipe {

// Smaller items go through write(): the relay gains nothing there, and each fill takes
// whole pipe pages, where successive write()s share a page.
constexpr size_t kRelayMinimum = 64 * 1024;
// The errors of a destination or system that refuses splicing: write() does the rest.
constexpr int kSpliceRefused[] = {EINVAL, ENOSYS, EPERM};

// Which file a descriptor names: two descriptors with the same FileId write to one file.
struct FileId {
    uint64_t device;
    uint64_t inode;
    // What the descriptor is, beyond identity (not compared):
    bool pipe = false;    // a pipe or FIFO
    bool packet = false;  // opened O_DIRECT: on a pipe, each write() is one packet
    bool operator==(const FileId& other) const {
        return device == other.device && inode == other.inode;
    }
    bool operator<(const FileId& other) const {
        return device != other.device ? device < other.device : inode < other.inode;
    }
};

// Whether to map the caller's pages into a pipe instead of copying them (see write_item).
// Auto does so where readers_copy_out() holds for the pipe, decided once per stream.
enum class Vmsplice : uint8_t { Off, On, Auto };

struct WriteOptions {
    size_t chunk;       // most bytes handed to one write(); 0 means no limit
    size_t pipe_size;   // grow a pipe to this many bytes before writing; 0 leaves it alone
    Vmsplice vmsplice;  // Auto is settled by the engine before write_item sees it
    bool relay;         // copy into a private pipe, then move its pages (see Relay)
};

// How write_item moved an item's bytes: the caller's pages mapped into the pipe, copied
// through the relay, or write() (also what the other two refused).
enum class WritePath : uint8_t { None, Direct, Relay, Vmsplice };

// A pipe private to one stream. A reader holds its pipe's lock while it copies out, and a
// write() into that pipe copies under the same lock, so the two copies take turns.
// Copying into the relay instead, then moving its pages into the destination (splice,
// no copy), lets the reader's copy run while the next bytes are copied in. The pages are
// fresh kernel pages that nobody writes again, as after a write(): safe for any reader,
// including one that splices onward.
class Relay {
public:
    Relay() = default;
    Relay(const Relay&) = delete;
    Relay& operator=(const Relay&) = delete;
    ~Relay();

    // Makes the pipe. Called on the caller's thread at submission, so that the engine
    // takes descriptor numbers only inside the caller's own calls. False if it cannot.
    bool open();
    bool is_open() const { return read_end_ >= 0; }
    void close();

    // The members below are for the writer thread only, once it has seen is_open().

    // Grows it to the destination's capacity; false if it cannot serve.
    bool ready(size_t wanted);

    // Copies data into the relay, at most a relay-full (or a chunk, in whole pages) at a
    // time, and moves each fill into fd. *written counts what reached fd; on failure the
    // rest is dropped from the relay. EINVAL, ENOSYS or EPERM: fd refused splice, the
    // caller may write() the rest.
    int send(int fd, const uint8_t* data, size_t size, size_t chunk, size_t* written);

private:
    void discard();  // reads out what a failed move left in it

    int read_end_ = -1;
    int write_end_ = -1;
    size_t capacity_ = 0;
    size_t wanted_ = 0;    // the largest capacity asked for: grow only when it rises
    bool broken_ = false;  // discard() could not empty it: never use it again
};

// Where vmsplice_item puts the last pipe-full of an item so that the caller's memory can be
// handed back at once: two page-aligned buffers of its own, spliced in turn (copying into
// them costs no page allocation, unlike a write() into the pipe). The pipe references
// their pages until the reader takes them, so a buffer is written again only after the
// other one went in: a pipe-full, so by then the pipe held nothing older. For one
// stream's writer thread.
class TailBuffers {
public:
    TailBuffers() = default;
    TailBuffers(const TailBuffers&) = delete;
    TailBuffers& operator=(const TailBuffers&) = delete;
    ~TailBuffers();

    // The buffer whose turn it is, of at least `size` bytes; null if memory is short.
    uint8_t* next(size_t size);
    // The buffer next() gave went into the pipe: the other one's turn.
    void sent() { turn_ ^= 1; }
    // Unmaps both; next() maps them again.
    void release();

private:

    uint8_t* buffers_[2] = {nullptr, nullptr};
    size_t size_ = 0;  // of each
    int turn_ = 0;
};

// Duplicates `fd` (close-on-exec) so that queued bytes keep going to the file the caller
// meant even if it closes `fd` or reuses the number, and tells which file that is. Fails
// with EBADF for a closed or read-only descriptor.
int capture_descriptor(int fd, int* duplicate, FileId* file);

// Which file the caller's fd names now (as capture_descriptor tells, but for the packet
// flag); EBADF if it is closed, or if its number is one of the engine's own descriptors.
int identify_descriptor(int fd, FileId* file);

// What capture_descriptor tells and checks, without duplicating: EBADF for a closed or
// read-only descriptor, or one of the engine's own.
int check_descriptor(int fd, FileId* file);

// Whether the engine could open a read end of the pipe fd writes to, and so empty it of
// spliced pages when its reader dies: the condition for vmsplice (no /proc, or a FIFO the
// process may write but not read, and it copies instead).
bool can_empty_pipe(int fd);

// Whether the pipe fd writes to is read only by processes known to copy out with read(),
// so that no reader can take the caller's spliced pages onward (splice, tee) and see them
// change after the write is done. True only if fd is an anonymous pipe (a FIFO can gain a
// reader at any time), this process holds no read end of it, and at least one process
// does, each running FFmpeg or ffprobe (by its executable, /proc/<pid>/exe). Any doubt
// (no /proc, a process of this user it may not inspect, an unknown reader) gives false.
// Scans /proc, opening descriptors: for the caller's thread (the engine takes descriptor
// numbers only inside the caller's calls), once per stream. Never allocates.
bool readers_copy_out(int fd);

// Closes a descriptor made by capture_descriptor.
void release_descriptor(int fd);

// Fork handlers (pthread_atfork): the child closes its copies of every descriptor the
// engine holds, so that a child outliving the parent's writes never keeps their reader
// from seeing end of file.
void before_fork();
void after_fork_in_parent();
void after_fork_in_child();

// Writes all of data[0, size) to fd, retrying partial writes and EINTR, and waiting with
// poll() when a non-blocking fd returns EAGAIN. `*written` counts the bytes that made it.
int write_all(int fd, const uint8_t* data, size_t size, size_t chunk, size_t* written);

// Writes one queued item to fd, which names `file`: for a pipe, grows it if asked and goes
// through vmsplice (options.vmsplice On) or the relay (if not null) when asked; else, or
// for what they refuse, write_all.
// `*path` tells how the bytes went.
int write_item(int fd, const FileId& file, const uint8_t* data, size_t size,
               const WriteOptions& options, Relay* relay, TailBuffers* tails,
               size_t* written, WritePath* path);

// Blocks SIGPIPE in the calling thread so that a dead reader yields EPIPE, never a signal.
void block_sigpipe();

}  // namespace turbopipe
