/* Slow file reads down, for tests that must watch an engine load (LD_PRELOAD).
 *
 * A real llama-server reads its weights with fread()/read() under --load-mode none (orch's
 * load_mode = "no-mmap"). With ORCH_TEST_READ_BPS set, reads of 4 KiB or more are served
 * 64 KiB at a time, each piece followed by the sleep that holds the rate to that many
 * bytes per second, so a model of a few MB takes many seconds to load, steadily, as a
 * large one does from a slow disk. The bytes read, the engine's /proc/PID/io and its
 * answers are the real ones.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PIECE 65536

static double rate(void) {
    static double bps = -1;
    if (bps < 0) {
        const char *s = getenv("ORCH_TEST_READ_BPS");
        bps = s ? atof(s) : 0;
    }
    return bps;
}

static void pause_for(size_t n) {
    double secs = (double)n / rate();
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

size_t fread(void *ptr, size_t size, size_t n, FILE *f) {
    static size_t (*real)(void *, size_t, size_t, FILE *);
    if (!real) {
        real = (size_t (*)(void *, size_t, size_t, FILE *))dlsym(RTLD_NEXT, "fread");
    }
    size_t total = size * n;
    if (rate() <= 0 || size == 0 || total < 4096) {
        return real(ptr, size, n, f);
    }
    size_t done = 0;
    while (done < total) {
        size_t want = total - done < PIECE ? total - done : PIECE;
        size_t got = real((char *)ptr + done, 1, want, f);
        done += got;
        pause_for(got);
        if (got < want) {
            break;
        }
    }
    return done / size;
}

ssize_t read(int fd, void *buf, size_t count) {
    static ssize_t (*real)(int, void *, size_t);
    if (!real) {
        real = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    }
    if (rate() <= 0 || count < 4096) {
        return real(fd, buf, count);
    }
    ssize_t got = real(fd, buf, count < PIECE ? count : PIECE);  /* a short read is legal */
    if (got > 0) {
        pause_for((size_t)got);
    }
    return got;
}
