/*
 * fuzz_sse.c - libFuzzer target for the Server-Sent Events parser
 * (src/llm/sse.c).
 *
 * The payload (see harness.h) is parsed twice: fed whole, and fed in the
 * pieces the fuzzer chose. Both runs must see the same events, in the same
 * order, with the same last event ID, retry time, stop and failure: the parser
 * promises that where the network cuts the stream does not matter. Flags: bit 0
 * bounds events to 64 bytes (so KP_ETOOLARGE is reached), bits 1..4 stop the
 * stream after that many events.
 */
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "harness.h"
#include "llm/sse.h"

typedef struct run {
    kp_buf events; /* each event as type NUL length(8 bytes) data */
    int count;
    int stop_after;
} run;

typedef struct outcome {
    kp_status status;
    int stopped;
    int discarded;
    long retry;
    kp_buf last_id;
} outcome;

static int on_event(void *ud, const char *event, const char *data, size_t len)
{
    run *r = ud;
    uint64_t n = len;
    FZ_CHECK(data[len] == '\0' && *event, "an event without a type or NUL-terminated data");
    kp_buf_puts(&r->events, event);
    kp_buf_append(&r->events, "", 1);
    kp_buf_append(&r->events, &n, sizeof n);
    kp_buf_append(&r->events, data, len);
    r->count++;
    return r->stop_after && r->count >= r->stop_after ? 3 : 0;
}

static void parse(fz_chunks *c, int whole, run *r, outcome *o)
{
    kp_sse p;
    kp_err err = {0};
    kp_sse_init(&p, on_event, r, (c->flags & 1) ? 64 : 0);
    r->stop_after = (int)(c->flags >> 1);
    o->status = KP_OK;
    fz_chunks_rewind(c);
    if (whole) {
        o->status = kp_sse_feed(&p, c->payload ? c->payload : "", c->len, &err);
    } else {
        const char *piece;
        size_t n;
        while (o->status == KP_OK && (n = fz_chunks_next(c, &piece)) > 0)
            o->status = kp_sse_feed(&p, piece, n, &err);
        if (o->status != KP_OK || kp_sse_stopped(&p))
            FZ_CHECK(kp_sse_feed(&p, "data: x\n\n", 9, &err) == o->status,
                     "feeding after a failure or a stop changed the result");
    }
    o->stopped = kp_sse_stopped(&p);
    o->retry = kp_sse_retry_ms(&p);
    kp_buf_puts(&o->last_id, kp_sse_last_event_id(&p));
    o->discarded = kp_sse_finish(&p);
    kp_sse_free(&p);
}

static int same_buf(const kp_buf *a, const kp_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_chunks c;
    run r1 = {KP_BUF_INIT, 0, 0}, r2 = {KP_BUF_INIT, 0, 0};
    outcome o1 = {0}, o2 = {0};
    fz_chunks_init(&c, data, size);
    parse(&c, 1, &r1, &o1);
    parse(&c, 0, &r2, &o2);
    FZ_CHECK(o1.status == o2.status && o1.stopped == o2.stopped && o1.retry == o2.retry,
             "status, stop or retry differ");
    FZ_CHECK(same_buf(&r1.events, &r2.events), "whole and chunked runs see different events");
    FZ_CHECK(same_buf(&o1.last_id, &o2.last_id), "whole and chunked runs end with different last event IDs");
    /* a partial event at the end is only reported when the stream ran to its end */
    if (o1.status == KP_OK && !o1.stopped)
        FZ_CHECK(o1.discarded == o2.discarded, "whole and chunked runs differ on a discarded partial event");
    kp_buf_free(&r1.events);
    kp_buf_free(&r2.events);
    kp_buf_free(&o1.last_id);
    kp_buf_free(&o2.last_id);
    return 0;
}
