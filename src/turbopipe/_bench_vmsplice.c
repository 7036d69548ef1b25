/* The benchmark's bound: a C program, no Python, that vmsplices frames into stdout.
 *
 * Usage: _bench_vmsplice FRAME_BYTES FRAMES BUFFERS
 * Fills BUFFERS frames with noise once, then maps frame i % BUFFERS into the pipe on
 * stdout, FRAMES times, with a 1 MiB pipe: what the kernel and the reader allow, with no
 * copy and no wait for the reader. Unsafe for a real program (a frame's memory may change
 * while the reader still has its pages); the frames never change here. Prints the wall
 * and CPU seconds of the loop, and its CPU seconds in all, on stderr.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
           usage.ru_stime.tv_usec / 1e6;
}

static double wall_seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec + now.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s FRAME_BYTES FRAMES BUFFERS\n", argv[0]);
        return 2;
    }
    size_t size = strtoull(argv[1], NULL, 10);
    long frames = strtol(argv[2], NULL, 10), count = strtol(argv[3], NULL, 10);
    unsigned char** buffers = calloc(count, sizeof *buffers);
    unsigned seed = 1;
    for (long b = 0; b < count; b++) {
        buffers[b] = malloc(size);
        for (size_t i = 0; i < size; i++) {
            seed = seed * 1103515245 + 12345;
            buffers[b][i] = (unsigned char)(128 + (seed >> 16) % 8);
        }
    }
    fcntl(1, F_SETPIPE_SZ, 1 << 20);
    double wall = wall_seconds(), cpu = cpu_seconds();
    for (long f = 0; f < frames; f++) {
        struct iovec span = {buffers[f % count], size};
        while (span.iov_len) {
            ssize_t n = vmsplice(1, &span, 1, 0);
            if (n < 0) {
                perror("vmsplice");
                return 1;
            }
            span.iov_base = (char*)span.iov_base + n;
            span.iov_len -= (size_t)n;
        }
    }
    fprintf(stderr, "%f %f %f\n", wall_seconds() - wall, cpu_seconds() - cpu, cpu_seconds());
    return 0;
}
