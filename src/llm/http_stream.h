/*
 * http_stream.h - streaming HTTP POSTs on an event loop, without a thread per
 * transfer: libcurl's multi interface driven by a libevent base (curl says
 * which sockets to watch and when to wake it up; libevent tells curl when a
 * socket is ready or the time has come).
 *
 * A kp_http_stream_client owns curl multi handles bound to one event_base:
 * one, and one more for each KP_HTTP_STREAM_LANE_TRANSFERS transfers running
 * at once (http_stream.c says why); the transfers of one multi share
 * connections (and HTTP/2 multiplexing) and the DNS cache. Everything here -
 * every function and every callback - runs on the thread that runs that base.
 * The response is delivered as it arrives: the status and headers once, then
 * the body in whatever pieces the network brings, then the end.
 *
 * Lifecycle of a transfer: it ends with exactly one on_done, unless it is
 * cancelled first; after kp_http_stream_cancel() returns no callback of that
 * transfer comes any more. Callbacks may call kp_http_stream_start() and
 * kp_http_stream_cancel() on any transfer of the client (the stream whose
 * callback is running included: the work curl forbids inside its own
 * callbacks is deferred until curl has returned), but must not free the
 * client.
 *
 * HTTP versions (kp_http_request.version): by default HTTP/2 where TLS's
 * ALPN offers it (Anthropic's API does) and HTTP/1.1 on plain http (what
 * local OpenAI-compatible servers speak); HTTP/2 on plain http needs prior
 * knowledge (h2c), asked for with KP_HTTP_VERSION_2. Over HTTP/2 the
 * client's transfers to one host share one connection, up to
 * KP_HTTP_STREAM_MAX_STREAMS at a time each (or fewer if the server says
 * so): a new transfer waits for a connection being set up rather than
 * opening one of its own, so a thousand generations hold about 63 sockets,
 * not a thousand.
 *
 * Timeouts: connecting, no byte received (the idle timeout, reset by every
 * header or body byte), and the whole transfer. Memory per transfer: the curl
 * easy handle with its receive buffer (KP_HTTP_STREAM_RECV_BUFFER bytes, not
 * curl's 16 KiB: a server-sent event is far smaller), a copy of the request
 * headers and body, and a few words; no
 * response buffering here.
 */
#ifndef KP_HTTP_STREAM_H
#define KP_HTTP_STREAM_H

#include <stddef.h>

#include "core/err.h"

struct event_base;

typedef struct kp_http_stream_client kp_http_stream_client;
typedef struct kp_http_stream kp_http_stream;

#define KP_HTTP_STREAM_CONNECT_TIMEOUT_MS 10000L
#define KP_HTTP_STREAM_IDLE_TIMEOUT_MS 60000L
#define KP_HTTP_STREAM_TOTAL_TIMEOUT_MS 600000L
/* Concurrent HTTP/2 streams per connection (curl's default is 100). Fewer, because libcurl 7.88 runs every
 * transfer of a connection on each of its socket events, and all but one poll(2) the socket: at 100 a
 * connection's read cost 99 polls (perf: a fifth of the loop's time with 1,000 generations). */
#define KP_HTTP_STREAM_MAX_STREAMS 16L
/* Transfers per multi handle: libcurl 7.88 walks a multi's connections to the host for each new transfer. */
#define KP_HTTP_STREAM_LANE_TRANSFERS 128
/* curl's receive buffer per transfer: an event of the stream is 100-300 bytes; at 8,000 transfers 2 KiB instead of
 * 4 KiB measured about 1 KiB less RSS each, and the loop no busier (two reads of a 4 KiB burst) */
#define KP_HTTP_STREAM_RECV_BUFFER 2048L
#define KP_HTTP_STREAM_SEND_BUFFER 16384L /* curl's upload buffer, when it needs one (its minimum) */

typedef enum kp_http_version {
    KP_HTTP_VERSION_AUTO = 0, /* HTTP/2 when TLS's ALPN offers it, else HTTP/1.1; HTTP/1.1 on plain http */
    KP_HTTP_VERSION_1_1,      /* HTTP/1.1 only */
    KP_HTTP_VERSION_2         /* HTTP/2: by ALPN over TLS, with prior knowledge (h2c) on plain http */
} kp_http_version;

/* "auto", "1.1" or "2" (KOUMPA_LLM_HTTP_VERSION) into *out; -1 for anything else. */
int kp_http_version_parse(const char *name, kp_http_version *out);

/* 1 when this libcurl can reuse an h2c (prior knowledge) connection: 8.0.0
 * and later. 7.88 fails every transfer after a connection's first with "Error
 * in the HTTP2 framing layer" (curl issue 10634); over TLS it is fine. */
int kp_http_stream_h2c_reusable(void);

typedef enum kp_http_outcome {
    KP_HTTP_COMPLETE = 0, /* the whole response arrived, whatever its status */
    KP_HTTP_TIMEOUT,      /* connect, idle or total timeout */
    KP_HTTP_NETWORK       /* cannot resolve or connect, connection lost, bad HTTP */
} kp_http_outcome;

typedef struct kp_http_request {
    const char *url;            /* http:// or https:// */
    const char *const *headers; /* "Name: value" lines, NULL-terminated (may be NULL); copied */
    const char *body;           /* the POST body; copied */
    size_t body_len;
    kp_http_version version; /* 0: KP_HTTP_VERSION_AUTO */
    long connect_timeout_ms; /* 0: KP_HTTP_STREAM_CONNECT_TIMEOUT_MS */
    long idle_timeout_ms;    /* 0: KP_HTTP_STREAM_IDLE_TIMEOUT_MS */
    long total_timeout_ms;   /* 0: KP_HTTP_STREAM_TOTAL_TIMEOUT_MS */
} kp_http_request;

typedef struct kp_http_stream_callbacks {
    void *ud;
    /* The final response's status line and headers arrived (read them with
     * kp_http_stream_header()); called before any body. May be NULL. */
    void (*on_response)(void *ud, kp_http_stream *s, long status);
    /* A piece of the body (transfer and content encodings removed). May be NULL. */
    void (*on_body)(void *ud, kp_http_stream *s, const char *data, size_t len);
    /* The end: status is the HTTP status (0 when no response came); message
     * says what went wrong for outcomes other than KP_HTTP_COMPLETE ("" for
     * it). s is freed when this returns. Required. */
    void (*on_done)(void *ud, kp_http_stream *s, kp_http_outcome outcome, long status, const char *message);
} kp_http_stream_callbacks;

/* A client whose transfers run on base. Free with kp_http_stream_client_free(). */
kp_status kp_http_stream_client_new(struct event_base *base, kp_http_stream_client **out, kp_err *err);

/* Cancels the transfers still in flight (no callbacks) and frees the client.
 * On the base's thread, not from a callback. NULL is a no-op. */
void kp_http_stream_client_free(kp_http_stream_client *c);

/* Starts a POST. *out is the transfer, owned by the client: it lives until
 * on_done returns or kp_http_stream_cancel() is called. No callback runs
 * before this returns. KP_EINVAL for a missing URL, KP_ENOMEM, KP_EINTERNAL. */
kp_status kp_http_stream_start(kp_http_stream_client *c, const kp_http_request *req, const kp_http_stream_callbacks *cb,
                               kp_http_stream **out, kp_err *err);

/* The value of the final response's header `name` (case-insensitive), or
 * NULL. Valid from on_response to the end of on_done, until the next call. */
const char *kp_http_stream_header(kp_http_stream *s, const char *name);

/* Stops the transfer; no callback of it comes after this. */
void kp_http_stream_cancel(kp_http_stream *s);

/* Transfers in flight (started, not yet ended or cancelled). */
size_t kp_http_stream_client_active(const kp_http_stream_client *c);

#endif
