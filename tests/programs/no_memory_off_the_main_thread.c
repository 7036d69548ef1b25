/* Preloaded by test_the_writer_threads_never_allocate: every allocation fails but on the
   main thread. glibc's __libc_* entry points are the real allocator, without a lookup that
   could allocate in turn. */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);

static int refused(void) {
    static __thread int known, other;
    if (!known) {
        other = syscall(SYS_gettid) != getpid();
        known = 1;
    }
    if (other) errno = ENOMEM;
    return other;
}

void* malloc(size_t n) { return refused() ? NULL : __libc_malloc(n); }
void* calloc(size_t k, size_t n) { return refused() ? NULL : __libc_calloc(k, n); }
void* realloc(void* p, size_t n) { return refused() ? NULL : __libc_realloc(p, n); }
void* memalign(size_t a, size_t n) { return refused() ? NULL : __libc_memalign(a, n); }
void* aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
int posix_memalign(void** p, size_t a, size_t n) {
    return (*p = memalign(a, n)) ? 0 : ENOMEM;
}
