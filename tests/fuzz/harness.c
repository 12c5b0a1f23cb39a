/* harness.c - see harness.h. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fz_chunks_init(fz_chunks *c, const uint8_t *data, size_t size)
{
    memset(c, 0, sizeof *c);
    if (size == 0)
        return;
    size_t k = data[0] & 7u;
    c->flags = data[0] >> 3;
    if (size < 1 + k)
        return;
    memcpy(c->sizes, data + 1, k);
    c->nsizes = k;
    c->payload = (const char *)data + 1 + k;
    c->len = size - 1 - k;
}

size_t fz_chunks_next(fz_chunks *c, const char **piece)
{
    size_t left = c->len - c->at;
    if (left == 0)
        return 0;
    size_t n = c->nsizes ? c->sizes[c->turn % c->nsizes] : 0;
    if (n == 0 || n > left)
        n = left;
    *piece = c->payload + c->at;
    c->at += n;
    c->turn++;
    return n;
}

void fz_chunks_rewind(fz_chunks *c)
{
    c->at = 0;
    c->turn = 0;
}

void fz_fail(const char *what)
{
    fprintf(stderr, "oracle failed: %s\n", what);
    abort();
}
