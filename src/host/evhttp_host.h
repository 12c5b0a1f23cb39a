/*
 * evhttp_host.h - an HTTP/1.1 server on libevent's evhttp that turns each
 * request into a kp_req, calls one dispatch function and writes the kp_resp.
 *
 * A host serves one address with one dispatch function (the API uses
 * kp_router_dispatch; the apps origin can run a second host with its own).
 * It runs `threads` workers, each with its own event_base, evhttp and listening
 * socket bound to the same address with SO_REUSEPORT, so the kernel spreads
 * connections across them, and its own kp_ctx (its own database handle, from
 * open_store, called on the worker thread). The calling thread is not used.
 *
 * Per request the host: rejects bodies over KP_MAX_BODY with 413, takes or
 * generates X-Request-Id, dispatches, writes status/headers/body (or streams
 * resp->stream), logs one JSON line and records metrics (app->metrics).
 *
 * Ownership: the options' strings and app are borrowed and must outlive the
 * host; kp_host_stop() frees everything the host made.
 */
#ifndef KP_EVHTTP_HOST_H
#define KP_EVHTTP_HOST_H

#include "api/router.h"
#include "core/err.h"
#include "store/store.h"

typedef struct kp_host kp_host;

typedef void (*kp_dispatch_fn)(kp_ctx *ctx, kp_req *req, kp_resp *resp);

typedef struct kp_host_options {
    const char *addr; /* "host:port", "[v6]:port" or ":port" (all interfaces); port 0 picks a free one */
    int threads;      /* worker threads, >= 1 (values < 1 mean 1) */
    kp_app *app;      /* shared application state, handed to dispatch in kp_ctx */
    /* Opens the worker's database handle; called once on each worker thread at
     * start (NULL: workers get ctx->store == NULL). The host closes the handle
     * with store->ops->close when the worker ends. */
    kp_status (*open_store)(void *ud, kp_store **out, kp_err *err);
    void *open_store_ud;
    kp_dispatch_fn dispatch; /* NULL: kp_router_dispatch */
    int drain_timeout_ms;    /* how long kp_host_stop waits for in-flight responses (0: 10 s) */
    int header_timeout_s;    /* a whole request head (0: 10 s); then 408 */
    int body_timeout_s;      /* a whole request body (0: 60 s); then the connection closes */
    long max_connections;    /* open connections of the whole process, every host together (0: derived from
                                RLIMIT_NOFILE); the last host started sets it (see host/evhttp/conn.h) */
    /* Headers every response carries unless it sets them itself: name, value,
     * name, value, ..., NULL (NULL: none). */
    const char *const *default_headers;
    /* Fills resp with the host's own errors (rejected requests, limits, handler
     * bugs) in this host's style (NULL: kp_resp_error's JSON). */
    void (*error_page)(kp_resp *resp, int status, const char *code, const char *message);
    /* 1: each response is written with its own system call, as where the
     * kernel offers no io_uring (tests take both paths); 0: a loop turn's
     * responses go in one call where io_uring is available (host/evhttp/burst.h). */
    int write_each;
} kp_host_options;

/*
 * Binds, opens the workers' stores, starts the worker threads and returns once
 * they all serve. On failure nothing is left running, *out is NULL and err says
 * why (naming the address when it cannot be bound or is already in use).
 */
kp_status kp_host_start(const kp_host_options *opt, kp_host **out, kp_err *err);

/* The bound TCP port (the chosen one when addr asked for port 0). */
int kp_host_port(const kp_host *h);

/*
 * Graceful stop: stops accepting, lets in-flight responses (streams included)
 * finish for up to drain_timeout_ms, then closes every connection (releasing
 * unfinished streams), joins the workers, closes their stores and frees h.
 * Call from a thread that is not a worker. h may be NULL.
 */
void kp_host_stop(kp_host *h);

#endif
