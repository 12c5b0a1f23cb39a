/*
 * arc4random.c - arc4random / arc4random_buf / arc4random_uniform for the Lambda
 * bootstrap (scripts/build-lambda.sh; docs/DEVELOPMENT.md, "Lambda build").
 *
 * Debian 12's glibc (2.36) provides these, and libevent's static library calls
 * them (evutil_secure_rng_*), so a binary linked here would import
 * arc4random@GLIBC_2.36, which provided.al2023 (glibc 2.34) lacks. This object,
 * linked ahead of libc, defines them over getrandom(2) (glibc 2.25, Linux 3.17):
 * the binary then needs nothing above GLIBC_2.34. Only the Lambda build links it;
 * `make` never does.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>

void arc4random_buf(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            abort(); /* like glibc's: no silent fallback to weak randomness */
        }
        p += got;
        n -= (size_t)got;
    }
}

uint32_t arc4random(void)
{
    uint32_t v;
    arc4random_buf(&v, sizeof v);
    return v;
}

/* Uniform in [0, upper) by rejection (no modulo bias). */
uint32_t arc4random_uniform(uint32_t upper)
{
    if (upper < 2)
        return 0;
    uint32_t min = -upper % upper; /* 2^32 mod upper */
    for (;;) {
        uint32_t r = arc4random();
        if (r >= min)
            return r % upper;
    }
}
