/*
 * slowfsync.c - a slow disk for benchmarks, without FUSE and without test
 * code in the server: an LD_PRELOAD library whose fsync(), fdatasync() and
 * syncfs() sleep SLOWFSYNC_MS milliseconds (default 5) before doing the real
 * thing. Every sync of the process is slowed: the blob store's (a syncfs per
 * round of puts) and SQLite's alike, as on a real slow disk. Because it needs no
 * build flag, the same trick measures an older binary for comparison.
 *
 *   cc -shared -fPIC -O2 -o slowfsync.so bench/slowfsync.c -ldl
 *   LD_PRELOAD=./slowfsync.so SLOWFSYNC_MS=5 build/koumpa serve
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

/* Sleeps, then calls the C library's function of that name. */
static int slow(const char *name, int (**real)(int), int fd)
{
    const char *v = getenv("SLOWFSYNC_MS");
    long ms = v ? strtol(v, NULL, 10) : 5;
    if (!*real)
        *real = (int (*)(int))dlsym(RTLD_NEXT, name);
    if (ms > 0) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return (*real)(fd);
}

int fsync(int fd)
{
    static int (*real)(int);
    return slow("fsync", &real, fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    return slow("fdatasync", &real, fd);
}

int syncfs(int fd)
{
    static int (*real)(int);
    return slow("syncfs", &real, fd);
}
