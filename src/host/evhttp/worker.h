/*
 * worker.h - the host's per-thread state, shared by the host's modules
 * (evhttp_host.c: listeners, workers, the request callback; request.c,
 * respond.c, streams.c, deferreds.c). Internal to src/host: the public face is evhttp_host.h.
 *
 * Threads: a worker and everything reached from it belong to the worker's
 * thread (see evhttp_host.c for the few thread-safe entry points).
 *
 * Ownership: the host owns its workers; a worker owns its event_base, evhttp,
 * connection set, unanswered deferred responses and a reference to each
 * connection whose response waits for the turn's end (unwritten).
 */
#ifndef KP_WORKER_H
#define KP_WORKER_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include <event2/event.h>
#include <event2/http.h>

#include "host/evhttp/conn.h"
#include "api/exchange.h"
#include "host/evhttp_host.h"

#define KP_IO_TIMEOUT_S 30 /* idle read / stalled write on a connection */

typedef struct worker {
    kp_host *host;
    pthread_t thread;
    int thread_started;
    struct event_base *base;
    struct evhttp *http;               /* freed by the worker when its loop ends */
    struct evhttp_bound_socket *bound; /* NULL once draining */
    kp_conn_set *conns;                /* the connection layer under http (conn.h) */
    struct host_deferred *deferreds;   /* deferred responses not answered yet */
    struct event *stop_ev;             /* activated by kp_host_stop */
    struct event *drain_tick;
    kp_ctx ctx;
    long inflight; /* worker thread only */
    int draining;  /* worker thread only */
    uint64_t drain_deadline_ms;
    kp_exchange_ids ids;               /* request ids made here */
    struct bufferevent **unwritten;    /* the turn's responses, written when it ends (respond.c) */
    struct kp_burst_item *burst_items; /* as many as unwritten can hold */
    size_t nunwritten, unwritten_cap;
    struct event *write_turn_ev; /* runs kp_respond_write_turn last in the turn */
    struct kp_burst *burst;      /* NULL: each response written with its own call */
    time_t date_sec;             /* the second date_header was formatted for (respond.c) */
    char date_header[32];
} worker;

struct kp_host {
    kp_host_options opt;
    int port;
    int nworkers;
    worker *workers;
    /* start-up handshake */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int nreported;
    kp_status start_status;
    kp_err start_err;
};

/* The request no longer counts as in flight (its response was written or its
 * connection died); a draining worker stops at zero. */
void kp_worker_request_finished(worker *w);
/* Who hears of evcon closing while a request is in progress (NULL cb: nobody). */
void kp_worker_watch_close(worker *w, struct evhttp_connection *evcon, void (*cb)(struct evhttp_connection *, void *),
                           void *arg);
/* A close callback (arg: the worker): the connection died before its response was written. */
void kp_worker_on_closed_early(struct evhttp_connection *evcon, void *arg);
#endif
