// Who reads a pipe: the scan of /proc that tells whether zero-copy is safe for it.
#include <climits>
#include <cstdlib>
#include <cstring>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "fdio_internal.hpp"

namespace turbopipe {

#ifdef __linux__
namespace {

// Calls visit(name) for each entry of the directory `dir` until it returns false; false
// then, or if reading failed. With getdents64: opendir() allocates.
template <class Visit>
bool for_each_entry(int dir, Visit visit) {
    alignas(8) char buffer[8192];
    for (;;) {
        long length = syscall(SYS_getdents64, dir, buffer, sizeof buffer);
        if (length < 0 && errno == EINTR) continue;
        if (length <= 0) return length == 0;
        for (long at = 0; at < length;) {
            const auto* entry = reinterpret_cast<const dirent64*>(buffer + at);
            at += entry->d_reclen;
            if (!visit(entry->d_name)) return false;
        }
    }
}

// A directory entry's name as a number: a process id or a descriptor; -1 for others.
int number_of(const char* name) {
    long value = 0;
    for (const char* digit = name; *digit; digit++) {
        if (*digit < '0' || *digit > '9' || value > INT_MAX / 10) return -1;
        value = value * 10 + (*digit - '0');
    }
    return *name ? int(value) : -1;
}

// Whether an executable is FFmpeg or ffprobe, which read() their input: named so, or with
// a suffix after a dash, as some packages name them (imageio-ffmpeg's
// "ffmpeg-linux-x86_64-v7.0.2"). A deleted one ("ffmpeg (deleted)") is not known.
bool known_to_copy_out(const char* executable) {
    const char* name = std::strrchr(executable, '/');
    name = name ? name + 1 : executable;
    for (const char* known : {"ffmpeg", "ffprobe"}) {
        size_t length = std::strlen(known);
        if (std::strncmp(name, known, length) == 0 && (!name[length] || name[length] == '-')) {
            return true;
        }
    }
    return false;
}

// The access mode (O_RDONLY...) of descriptor `fd` of process `pid`, from its fdinfo; -1
// if unknown.
int access_mode(int proc, int pid, int fd) {
    char path[64], text[256] = {};
    std::snprintf(path, sizeof path, "%d/fdinfo/%d", pid, fd);
    TransientFd info([&] { return openat(proc, path, O_RDONLY | O_CLOEXEC); });
    ssize_t length = info.get() < 0 ? -1 : read(info.get(), text, sizeof text - 1);
    const char* flags = length > 0 ? std::strstr(text, "flags:") : nullptr;
    return flags ? int(std::strtoul(flags + 6, nullptr, 8) & O_ACCMODE) : -1;
}

// For readers_copy_out: false if process `pid` may read the pipe whose
// /proc link is `pipe` and is not known to copy out; counts it in *readers if it is.
bool reads_by_copy(int proc, int pid, const char* pipe, int* readers) {
    char path[64];
    std::snprintf(path, sizeof path, "%d", pid);
    struct stat owner;
    if (fstatat(proc, path, &owner, 0) < 0) return errno == ENOENT;  // exited meanwhile
    std::snprintf(path, sizeof path, "%d/fd", pid);
    TransientFd fds([&] { return openat(proc, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
    if (fds.get() < 0) {
        if (errno == ENOENT || errno == ESRCH) return true;  // it exited meanwhile
        // Another user's process: it holds this process's pipe only if handed over on
        // purpose (SCM_RIGHTS), as it may not take it from /proc. One of this user's
        // that refuses inspection (not dumpable) is a doubt.
        return (errno == EACCES || errno == EPERM) && owner.st_uid != geteuid();
    }
    size_t pipe_length = std::strlen(pipe);
    bool reads = false;
    bool scanned = for_each_entry(fds.get(), [&](const char* name) {
        char link[64];
        int fd = number_of(name);
        if (fd < 0) return true;
        ssize_t length = readlinkat(fds.get(), name, link, sizeof link);
        if (length < 0 || size_t(length) != pipe_length || std::memcmp(link, pipe, pipe_length)) {
            return true;  // another file, or closed meanwhile
        }
        int mode = access_mode(proc, pid, fd);
        if (mode < 0) return false;
        reads = reads || mode != O_WRONLY;
        return true;
    });
    if (!scanned) return false;
    if (!reads) return true;
    char executable[PATH_MAX];
    std::snprintf(path, sizeof path, "%d/exe", pid);
    ssize_t length = readlinkat(proc, path, executable, sizeof executable - 1);
    if (length < 0) return false;
    executable[length] = '\0';
    if (!known_to_copy_out(executable)) return false;
    ++*readers;
    return true;
}

// Whether this process holds a descriptor that may read the pipe `piped` (its fstat); -1
// if unknown. By fstat and F_GETFL, as the descriptors are ours: the readlink and fdinfo
// that another process's need cost microseconds each, and a process may hold thousands.
int reads_here(const struct stat& piped) {
    TransientFd fds([] { return open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
    if (fds.get() < 0) return -1;
    bool reads = false;
    bool scanned = for_each_entry(fds.get(), [&](const char* name) {
        int fd = number_of(name);
        struct stat file;
        if (fd < 0 || fd == fds.get() || fstat(fd, &file) < 0) return true;  // or closed
        if (file.st_dev != piped.st_dev || file.st_ino != piped.st_ino) return true;
        int flags = fcntl(fd, F_GETFL);
        reads = flags < 0 || (flags & O_ACCMODE) != O_WRONLY;
        return !reads;
    });
    return reads ? 1 : scanned ? 0 : -1;
}

}  // namespace
#endif

bool readers_copy_out(int fd) {
#ifdef __linux__
    char pipe[64];
    ssize_t length = readlink(proc_path(fd).text, pipe, sizeof pipe - 1);
    if (length <= 0) return false;
    pipe[length] = '\0';
    if (std::strncmp(pipe, "pipe:[", 6) != 0) return false;  // a FIFO's link is its path
    // A reader of our own might splice onward.
    struct stat piped;
    if (fstat(fd, &piped) < 0 || reads_here(piped) != 0) return false;
    TransientFd proc([] { return open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
    if (proc.get() < 0) return false;
    int readers = 0, self = getpid();
    bool known = for_each_entry(proc.get(), [&](const char* name) {
        int pid = number_of(name);
        return pid < 0 || pid == self || reads_by_copy(proc.get(), pid, pipe, &readers);
    });
    return known && readers > 0;
#else
    (void)fd;
    return false;
#endif
}

}  // namespace turbopipe
