/* The delay section's workload (xtask/src/bench/delay.rs), built with cc by the bench.
 *
 * delay-load timed OP FILE N     N calls of OP, each timed: their durations in ns, one line
 * delay-load rate OP FILE SECS   OP as often as it can for SECS: "calls wall_s cpu_s"
 *
 * OP: fsync (of FILE), getppid (the raw system call), read4k (pread of FILE's first 4 KiB,
 * in the page cache). FILE is opened and OP made once before the program reads a line on
 * stdin (its go), so the bench can apply a fault to the running process first. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int fd;
static char buf[4096];

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void op_fsync(void) {
    if (fsync(fd) != 0) { perror("fsync"); exit(3); }
}

static void op_getppid(void) { syscall(SYS_getppid); }

static void op_read4k(void) {
    if (pread(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf) { perror("pread"); exit(3); }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s timed|rate fsync|getppid|read4k FILE N|SECS\n", argv[0]);
        return 2;
    }
    void (*op)(void) = !strcmp(argv[2], "fsync")     ? op_fsync
                       : !strcmp(argv[2], "getppid") ? op_getppid
                       : !strcmp(argv[2], "read4k")  ? op_read4k
                                                     : NULL;
    if (!op) { fprintf(stderr, "unknown op %s\n", argv[2]); return 2; }
    fd = open(argv[3], O_RDWR);
    if (fd < 0) { perror(argv[3]); return 3; }
    op();
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 4;
    if (!strcmp(argv[1], "timed")) {
        long n = atol(argv[4]);
        long long *d = calloc(n, sizeof *d);
        if (!d) return 5;
        for (long i = 0; i < n; i++) {
            long long t0 = now_ns();
            op();
            d[i] = now_ns() - t0;
        }
        for (long i = 0; i < n; i++) printf("%lld%c", d[i], i + 1 < n ? ' ' : '\n');
        return 0;
    }
    if (strcmp(argv[1], "rate")) { fprintf(stderr, "unknown mode %s\n", argv[1]); return 2; }
    long long limit = (long long)(atof(argv[4]) * 1e9), t0 = now_ns(), t = t0;
    unsigned long long calls = 0;
    while (t - t0 < limit) {
        for (int i = 0; i < 256; i++) op();
        calls += 256;
        t = now_ns();
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6;
    printf("%llu %.6f %.6f\n", calls, (t - t0) / 1e9, cpu);
    return 0;
}
