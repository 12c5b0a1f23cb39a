/*
 * harness.h - what the fuzz targets share: an input cut into the pieces a
 * network (or a model's stream) would deliver, at points the fuzzer chooses,
 * and the way a broken oracle is reported.
 *
 * The first byte's low three bits give k (0..7), the next k bytes piece sizes;
 * the rest is the payload, handed out in pieces of those sizes in turn (a size
 * 0 means "all that is left"). k == 0 gives the payload in one piece. Bits 3..7
 * of the first byte are left to the target (fz_chunks.flags).
 */
#ifndef FZ_HARNESS_H
#define FZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct fz_chunks {
    const char *payload;
    size_t len;
    unsigned flags; /* the first byte >> 3 */
    uint8_t sizes[7];
    size_t nsizes;
    size_t at;   /* payload bytes handed out */
    size_t turn; /* pieces handed out */
} fz_chunks;

/* Reads the header off data; an input too short for it gives an empty payload. */
void fz_chunks_init(fz_chunks *c, const uint8_t *data, size_t size);

/* The next piece (*piece, its length returned); 0 once the payload is used up. */
size_t fz_chunks_next(fz_chunks *c, const char **piece);

/* Starts handing out the payload again from its beginning. */
void fz_chunks_rewind(fz_chunks *c);

/* An oracle failed: says which on stderr and aborts (libFuzzer saves the input). */
void fz_fail(const char *what) __attribute__((noreturn));

/* Fails with `what` unless cond holds. */
#define FZ_CHECK(cond, what)                                                                                           \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            fz_fail(what);                                                                                             \
    } while (0)

#endif
