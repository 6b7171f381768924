/* The skew section's workload (xtask/src/bench/skew.rs), built with cc by the bench.
 *
 * skew-load SECS   after a line on stdin (its go): clock_gettime(CLOCK_REALTIME) as often as
 *                  it can for SECS, then "calls wall_s offset_ms": offset_ms is what the
 *                  realtime clock read against the monotonic clock plus their gap before the
 *                  go (the offset a fault applied in between). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long ns(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SECS\n", argv[0]);
        return 2;
    }
    double secs = atof(argv[1]);
    long long gap = ns(CLOCK_REALTIME) - ns(CLOCK_MONOTONIC);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 4;
    long long offset = ns(CLOCK_REALTIME) - (ns(CLOCK_MONOTONIC) + gap);
    long long t0 = ns(CLOCK_MONOTONIC), end = t0 + (long long)(secs * 1e9), calls = 0;
    volatile long long sink = 0;
    for (;;) {
        for (int i = 0; i < 1024; i++) sink += ns(CLOCK_REALTIME);
        calls += 1024;
        if (ns(CLOCK_MONOTONIC) >= end) break;
    }
    printf("%lld %.6f %.3f\n", calls, (ns(CLOCK_MONOTONIC) - t0) / 1e9, offset / 1e6);
    return 0;
}
