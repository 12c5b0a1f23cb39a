/*
 * conn.h - the connection layer under evhttp: what libevent 2.1's evhttp does
 * not do for a server facing the open Internet.
 *
 * Every connection a worker's evhttp accepts gets a kp_conn (through
 * evhttp_set_bevcb). The conn watches the bytes the socket delivers before
 * evhttp parses them: a request head is held back until it is complete and
 * has passed kp_framing_check(); a body is handed on up to its declared
 * length, and the next head is held again. A head that fails the check is
 * never shown to evhttp: in its place evhttp gets a placeholder request
 * ("GET /.rejected ... Connection: close"), and when the host dispatches it,
 * kp_conn_request_begin() says which error to answer, so that rejections go
 * through the host's normal response path (headers, request id, log line,
 * metrics) in order behind any pipelined response still being written.
 *
 * Deadlines: a request head must arrive whole within header_timeout_s of its
 * first byte (of the accept, for a connection's first request), else it is
 * answered 408 (through the placeholder, like a rejection); a body within
 * body_timeout_s of its head, else the connection is closed. Time between
 * requests is evhttp's idle timeout.
 *
 * A request with a chunked body is the last on its connection
 * (kp_conn_must_close), so bytes after it never reach evhttp unchecked.
 *
 * Lingering close: when a connection closes after a rejection whose response
 * was written whole, the conn outlives evhttp's connection: it keeps the
 * socket on a descriptor of its own, shuts down its write side and discards
 * what the client still sends (its body) until EOF or a bound (2 s idle, 5 s
 * in all, 8 MiB), so that the kernel does not reset the connection under the
 * response. It still counts against the cap and is the first victim.
 *
 * Threads: a kp_conn_set belongs to one worker and is only touched on that
 * worker's thread.
 *
 * Ownership: a conn lives as long as its evhttp connection (it is freed from
 * the connection's close callback), so a kp_conn pointer is valid only inside
 * callbacks of that connection (a lingering conn is no longer reachable
 * from the host). kp_conn_set_free() is called after evhttp_free() has
 * closed every connection; it ends the lingering ones.
 */
#ifndef KP_CONN_H
#define KP_CONN_H

#include <stddef.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

typedef struct kp_conn kp_conn;
typedef struct kp_conn_set kp_conn_set;

typedef struct kp_conn_limits {
    size_t max_head;      /* request line + headers; larger heads get 431 */
    size_t max_body;      /* larger declared Content-Length gets 413 before any body is read */
    size_t max_chunked;   /* raw bytes of a chunked body; beyond them the connection is closed */
    int header_timeout_s; /* a whole head, from its first byte (from the accept for the first one): else 408 */
    int body_timeout_s;   /* a whole body, from the end of its head: else the connection is closed */
} kp_conn_limits;

/* What a rejected head is answered with. */
typedef struct kp_conn_rejection {
    int status;
    const char *code;
    char message[160];
} kp_conn_rejection;

/* Creates the worker's set and installs it on http (evhttp_set_bevcb).
 * NULL when out of memory. */
kp_conn_set *kp_conn_set_new(struct event_base *base, struct evhttp *http, const kp_conn_limits *limits);
/* Frees the set; call after evhttp_free(http). NULL is fine. */
void kp_conn_set_free(kp_conn_set *set);

/*
 * The connection cap, shared by every set of the process (both hosts): at
 * the cap, a new connection evicts the oldest lingering one, else the oldest
 * one that has not completed a request (else the oldest idle one); when
 * every connection is busy the new one is closed. max_connections <= 0 derives it: RLIMIT_NOFILE (first
 * raised to its hard limit, at most 2^20) minus a quarter (at least 128) kept
 * for files, databases and upstream connections. Returns the cap in force.
 */
long kp_conn_set_cap(long max_connections);

/* The worker's listener (NULL when it stops listening): accept errors such as
 * EMFILE pause it briefly instead of spinning, and are logged about once a
 * second. */
void kp_conn_set_listener(kp_conn_set *set, struct evconnlistener *lev);

/* The conn of an evhttp connection of this set, or NULL. */
kp_conn *kp_conn_of(kp_conn_set *set, struct evhttp_connection *evcon);

/* A request reached the host. Returns 1 and fills r when it is the
 * placeholder of a rejected head (answer r, never dispatch), else 0. */
int kp_conn_request_begin(kp_conn *c, kp_conn_rejection *r);
/* The current request's response was fully written. */
void kp_conn_request_end(kp_conn *c);
/* The response must close the connection (after a chunked body or a rejection). */
int kp_conn_must_close(const kp_conn *c);

/* The connection's close callback belongs to the conn; the host registers its
 * own per-request one here (NULL clears it). It is called once, when the
 * connection closes, before the conn is freed. */
void kp_conn_on_close(kp_conn *c, void (*cb)(struct evhttp_connection *, void *), void *arg);

#endif
