// Platform I/O on file descriptors: every system call the engine makes lives here.
// Functions return 0 or an errno value; none of them throws.
#pragma once

#include <cstddef>
#include <cstdint>

namespace turbopipe {

// Which file a descriptor names: two descriptors with the same FileId write to one file.
struct FileId {
    uint64_t device;
    uint64_t inode;
    bool operator==(const FileId& other) const {
        return device == other.device && inode == other.inode;
    }
    bool operator<(const FileId& other) const {
        return device != other.device ? device < other.device : inode < other.inode;
    }
};

struct WriteOptions {
    size_t chunk;      // most bytes handed to one write(); 0 means no limit
    size_t pipe_size;  // grow a pipe to this many bytes before writing; 0 leaves it alone
    bool vmsplice;     // map pages into a pipe instead of copying them (see write_item)
};

// Duplicates `fd` (close-on-exec) so that queued bytes keep going to the file the caller
// meant even if it closes `fd` or reuses the number, and tells which file that is. Fails
// with EBADF for a closed or read-only descriptor.
int capture_descriptor(int fd, int* duplicate, FileId* file);

// Closes a descriptor made by capture_descriptor.
void release_descriptor(int fd);

// Writes all of data[0, size) to fd, retrying partial writes and EINTR, and waiting with
// poll() when a non-blocking fd returns EAGAIN. `*written` counts the bytes that made it.
int write_all(int fd, const uint8_t* data, size_t size, size_t chunk, size_t* written);

// Writes one queued item: grows the pipe if asked, then write_all, or vmsplice when asked
// and fd is a pipe.
int write_item(int fd, const uint8_t* data, size_t size, const WriteOptions& options,
               size_t* written);

// Blocks SIGPIPE in the calling thread so that a dead reader yields EPIPE, never a signal.
void block_sigpipe();

}  // namespace turbopipe
