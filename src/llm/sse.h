/*
 * sse.h - an incremental Server-Sent Events parser (WHATWG HTML, "Server-sent
 * events", section "Parsing an event stream").
 *
 * The LLM clients feed the response body to it in whatever chunks the network
 * delivers (split anywhere: inside a line, between CR and LF, inside a UTF-8
 * sequence); it calls on_event once per dispatched event. Lines end in LF, CR
 * or CRLF; a leading UTF-8 byte order mark is skipped; lines starting with ':'
 * are comments; fields are event, data, id and retry (others are ignored; an
 * event or id field whose value holds a NUL byte is ignored too);
 * several data lines are joined with "\n"; a blank line dispatches. Bytes are
 * passed through as they are (no replacement of invalid UTF-8: the consumers
 * parse the data as JSON, which rejects it).
 *
 * Memory is bounded: a line or an event larger than max_event bytes fails the
 * stream with KP_ETOOLARGE. A kp_sse is used by one thread at a time.
 */
#ifndef KP_SSE_H
#define KP_SSE_H

#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"

#define KP_SSE_DEFAULT_MAX_EVENT (4u * 1024u * 1024u)

/*
 * Called once per event. event is the event type ("message" when the event had
 * no event field); data is NUL-terminated and len bytes long (it may contain
 * NUL bytes). Both are valid only during the call. Return 0 to go on, non-zero
 * to stop: kp_sse_feed() then returns at once and ignores any further input.
 */
typedef int (*kp_sse_event_fn)(void *ud, const char *event, const char *data, size_t len);

typedef struct kp_sse {
    kp_sse_event_fn on_event;
    void *ud;
    size_t max_event; /* bound on line + pending event bytes */
    kp_buf line;      /* the current line when it spans chunks */
    kp_buf data;      /* the data buffer (each data line + "\n") */
    kp_buf event;     /* the event type buffer */
    kp_buf id_buf;    /* the last event ID buffer (set by "id" fields) */
    kp_buf last_id;   /* the last event ID string (id_buf as of the last dispatch) */
    long retry_ms;    /* last valid retry field, -1 if none */
    int bom_matched;  /* bytes of a leading BOM matched so far */
    int started;      /* past the point where a BOM could be */
    int after_cr;     /* the previous line ended with CR: skip one LF */
    int stop;         /* the value on_event returned to stop; 0 while running */
    kp_status status; /* KP_OK, or the failure that ended the stream */
} kp_sse;

/* Prepares p; max_event 0 means KP_SSE_DEFAULT_MAX_EVENT. Free with kp_sse_free(). */
void kp_sse_init(kp_sse *p, kp_sse_event_fn on_event, void *ud, size_t max_event);

/*
 * Parses len more bytes, dispatching events as they complete. Returns KP_OK
 * (also when on_event asked to stop: see kp_sse_stopped()), KP_ETOOLARGE when a
 * line or event exceeds max_event, KP_ENOMEM. After a failure or a stop,
 * further calls do nothing and return the same result.
 */
kp_status kp_sse_feed(kp_sse *p, const char *data, size_t len, kp_err *err);

/*
 * Ends the stream. Per the specification an event not terminated by a blank
 * line is discarded, not dispatched. Returns 1 if such an unterminated event
 * (or a partial line) was discarded, 0 otherwise.
 */
int kp_sse_finish(kp_sse *p);

/* The non-zero value on_event returned to stop the stream, or 0. */
int kp_sse_stopped(const kp_sse *p);

/* The last event ID set by an "id" field, "" if none (valid until the next feed). */
const char *kp_sse_last_event_id(const kp_sse *p);

/* The reconnection time from the last valid "retry" field, -1 if none. */
long kp_sse_retry_ms(const kp_sse *p);

/* Releases the buffers; p may be initialised again. */
void kp_sse_free(kp_sse *p);

#endif
