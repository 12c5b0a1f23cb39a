/*
 * evhttp_host.c - see evhttp_host.h.
 *
 * Threads: every worker owns an event_base, an evhttp and a SO_REUSEPORT
 * listener, all created on the calling thread by kp_host_start() and then only
 * touched by the worker, except for two thread-safe entry points: the worker's
 * stop event (kp_host_stop) and each stream's wake event (producers), both
 * made active with event_active(), which is safe across threads because
 * evthread_use_pthreads() is called before any base exists.
 *
 * A request's life on a worker: the connection layer (evhttp/conn.h) holds
 * its head back until it is complete and its framing is strict
 * (evhttp/framing.h: a bad head, or a declared body over KP_MAX_BODY, is
 * answered here through a placeholder request and never parsed by evhttp);
 * evhttp reads it (chunked bodies up to HARD_MAX_BODY),
 * handle_request() builds a kp_req, dispatches synchronously and writes the
 * kp_resp. `inflight` counts requests from dispatch until their response is
 * fully written (on_request_complete) or their connection dies first
 * (kp_worker_on_closed_early); draining waits for it to reach 0.
 *
 * The rest lives in src/host/evhttp/: worker.h (the per-thread state these
 * modules share), conn.h and framing.h (the connection layer), request.h
 * (evhttp request -> kp_req), respond.h (kp_resp -> the wire: normal, file
 * and error responses; api/exchange.h holds what the Lambda host shares: request
 * ids, the body limit, HEAD, the per-request log line and metrics),
 * streams.h (streamed responses: the sink, its high-water mark, pulled
 * streams) and deferreds.h (responses computed elsewhere, answered through
 * kp_respond_reply()).
 */
#include "host/evhttp_host.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <sodium.h>

#include "core/log.h"
#include "core/metrics.h"
#include "host/evhttp/burst.h"
#include "host/evhttp/conn.h"
#include "host/evhttp/deferreds.h"
#include "host/evhttp/request.h"
#include "host/evhttp/respond.h"
#include "host/evhttp/streams.h"
#include "host/evhttp/worker.h"

/* Declared bodies over KP_MAX_BODY are refused by the connection layer before
 * they are read; chunked ones are read up to this size so that we can answer
 * 413 with our JSON error (beyond it evhttp answers 413 itself and closes). */
#define HARD_MAX_BODY (4 * KP_MAX_BODY)
#define MAX_HEADERS_SIZE (96 * 1024) /* request line + headers: room for an oversized token to reach the 401 path */
#define LISTEN_BACKLOG 511
#define DEFAULT_DRAIN_MS 10000
#define DEFAULT_HEADER_TIMEOUT_S 10
#define DEFAULT_BODY_TIMEOUT_S 60
#define DRAIN_TICK_MS 20
#define BURST_DEPTH 64 /* responses a system call at the end of a loop turn (burst.h) */

#define ALLOWED_METHODS                                                                                                \
    (EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS |    \
     EVHTTP_REQ_PATCH)

static void handle_request(struct evhttp_request *evreq, void *arg);

/* ---- small helpers ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- in-flight accounting and draining ---- */

void kp_worker_request_finished(worker *w)
{
    w->inflight--;
    if (w->draining && w->inflight <= 0)
        event_base_loopexit(w->base, NULL);
}

/* Who hears of the connection closing while a request is in progress: the
 * conn when there is one (it owns the connection's close callback). */
void kp_worker_watch_close(worker *w, struct evhttp_connection *evcon, void (*cb)(struct evhttp_connection *, void *),
                           void *arg)
{
    kp_conn *c = evcon ? kp_conn_of(w->conns, evcon) : NULL;
    if (c)
        kp_conn_on_close(c, cb, arg);
    else if (evcon)
        evhttp_connection_set_closecb(evcon, cb, arg);
}

/* The response was fully written. */
static void on_request_complete(struct evhttp_request *evreq, void *arg)
{
    worker *w = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
    kp_conn *c = evcon ? kp_conn_of(w->conns, evcon) : NULL;
    if (c)
        kp_conn_request_end(c);
    kp_worker_watch_close(w, evcon, NULL, NULL);
    kp_worker_request_finished(w);
}

/* The connection died before its response was written. */
void kp_worker_on_closed_early(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    kp_worker_request_finished(arg);
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    worker *w = arg;
    (void)fd;
    (void)what;
    if (w->inflight <= 0 || now_ms() >= w->drain_deadline_ms)
        event_base_loopexit(w->base, NULL);
}

/* Runs on the worker when kp_host_stop asks: stop accepting, then wait. */
static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    worker *w = arg;
    int ms = w->host->opt.drain_timeout_ms > 0 ? w->host->opt.drain_timeout_ms : DEFAULT_DRAIN_MS;
    (void)fd;
    (void)what;
    w->draining = 1;
    if (w->bound) {
        kp_conn_set_listener(w->conns, NULL);
        evhttp_del_accept_socket(w->http, w->bound);
        w->bound = NULL;
    }
    if (w->inflight <= 0) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    w->drain_deadline_ms = now_ms() + (uint64_t)ms;
    struct timeval tick = {0, DRAIN_TICK_MS * 1000};
    event_add(w->drain_tick, &tick);
}

/* ---- the request callback ---- */

static void handle_request(struct evhttp_request *evreq, void *arg)
{
    worker *w = arg;
    struct timespec t0;
    kp_req req;
    kp_resp resp;
    kp_req_summary sum;
    char rid[KP_REQUEST_ID_MAX + 1];
    char *path = NULL;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(&req, 0, sizeof req);
    memset(&resp, 0, sizeof resp);
    w->inflight++;
    evhttp_request_set_on_complete_cb(evreq, on_request_complete, w);
    struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
    kp_worker_watch_close(w, evcon, kp_worker_on_closed_early, w);
    kp_conn *c = kp_conn_of(w->conns, evcon);
    kp_conn_rejection rej;

    if (c && kp_conn_request_begin(c, &rej)) {
        /* the placeholder of a head the connection layer refused */
        kp_request_read(w, evreq, &req, rid, &path, &resp);
        req.route = "rejected";
        kp_resp_free(&resp);
        memset(&resp, 0, sizeof resp);
        kp_respond_error(w, &resp, rej.status, rej.code, "%s", rej.message);
    } else if (kp_request_read(w, evreq, &req, rid, &path, &resp) == 0) {
        w->host->opt.dispatch(&w->ctx, &req, &resp);
    }
    kp_exchange_begin(&sum, req.method, &t0);
    kp_exchange_take_request(&sum, &req);
    if (resp.deferred && resp.status == 0) {
        if (kp_deferreds_start(w, evreq, &resp, &sum) == 0)
            goto done;         /* answered, logged and counted when its reply comes */
        kp_resp_settle(&resp); /* out of memory: wait for it here */
    }
    kp_respond_reply(w, evreq, &resp, &sum);
done:
    kp_resp_free(&resp);
    kp_headers_free(&req.headers);
    kp_headers_free(&req.query);
    free(path);
}

/* ---- start and stop ---- */

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;
static int evthread_ok;

static void init_libraries(void)
{
    evthread_ok = evthread_use_pthreads() == 0;
}

/* Splits "host:port" / "[v6]:port" / ":port" and resolves it (numeric port). */
static kp_status resolve_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen, kp_err *err)
{
    char host[256];
    const char *port;
    if (!addr || !*addr)
        return kp_err_set(err, KP_EINVAL, "no listen address given");
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':' || (size_t)(close - addr - 1) >= sizeof host)
            return kp_err_set(err, KP_EINVAL, "invalid listen address %s (expected [ipv6]:port)", addr);
        memcpy(host, addr + 1, (size_t)(close - addr - 1));
        host[close - addr - 1] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= sizeof host)
            return kp_err_set(err, KP_EINVAL, "invalid listen address %s (expected host:port)", addr);
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        if (strchr(host, ':'))
            return kp_err_set(err, KP_EINVAL, "invalid listen address %s (write IPv6 as [addr]:port)", addr);
        port = colon + 1;
    }
    char *end = NULL;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535)
        return kp_err_set(err, KP_EINVAL, "invalid port in listen address %s", addr);

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host[0] && strcmp(host, "*") != 0 ? host : NULL, port, &hints, &res);
    if (gai != 0 || !res)
        return kp_err_set(err, KP_EINVAL, "cannot resolve listen address %s: %s", addr, gai_strerror(gai));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return KP_OK;
}

/*
 * SO_REUSEPORT would let us silently share a port with another process of the
 * same user. A plain bind first (SO_REUSEADDR only) fails with EADDRINUSE if
 * anyone listens there, so a second server refuses to start.
 */
static kp_status check_address_free(const struct sockaddr *sa, socklen_t len, const char *addr, kp_err *err)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return kp_err_set(err, KP_EIO, "cannot listen on %s: socket: %s", addr, strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    kp_status rc = KP_OK;
    if (bind(fd, sa, len) != 0)
        rc = kp_err_set(err, KP_EIO, "cannot listen on %s: %s", addr, strerror(errno));
    close(fd);
    return rc;
}

static int sockaddr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static void set_sockaddr_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

static kp_status configure_http(struct evhttp *http, worker *w, kp_err *err)
{
    const kp_host_options *o = &w->host->opt;
    kp_conn_limits limits = {
        .max_head = MAX_HEADERS_SIZE,
        .max_body = KP_MAX_BODY,
        .max_chunked = HARD_MAX_BODY,
        .header_timeout_s = o->header_timeout_s > 0 ? o->header_timeout_s : DEFAULT_HEADER_TIMEOUT_S,
        .body_timeout_s = o->body_timeout_s > 0 ? o->body_timeout_s : DEFAULT_BODY_TIMEOUT_S,
    };
    w->conns = kp_conn_set_new(w->base, http, &limits);
    if (!w->conns)
        return kp_err_set(err, KP_ENOMEM, "out of memory creating the HTTP workers");
    evhttp_set_gencb(http, handle_request, w);
    evhttp_set_allowed_methods(http, ALLOWED_METHODS); /* others get evhttp's 501 */
    evhttp_set_max_body_size(http, HARD_MAX_BODY);
    evhttp_set_max_headers_size(http, MAX_HEADERS_SIZE);
    evhttp_set_timeout(http, KP_IO_TIMEOUT_S);
    evhttp_set_default_content_type(http, NULL); /* handlers say what they send */
    /* over-long bodies: read and drop the rest, so the client sees the 413 */
    evhttp_set_flags(http, EVHTTP_SERVER_LINGERING_CLOSE);
    return KP_OK;
}

/*
 * evhttp toggles read and write interest on every request; epoll's change
 * list folds those toggles into one epoll_ctl per loop iteration, which
 * halves the epoll_ctl calls per request (4 -> 2). Its caveat (file
 * descriptors cloned with dup()) does not apply to us.
 */
static struct event_base *new_event_base(void)
{
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

/* Creates the worker's base, evhttp and listener (on the calling thread). */
static kp_status worker_init(kp_host *h, worker *w, struct sockaddr_storage *ss, socklen_t sslen, kp_err *err)
{
    w->host = h;
    w->ctx.app = h->opt.app;
    w->ctx.share_reads = 1; /* run_loop ends the store's snapshot at each turn */
    kp_exchange_ids_init(&w->ids);

    w->base = new_event_base();
    w->http = w->base ? evhttp_new(w->base) : NULL;
    if (w->http) {
        w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
        w->drain_tick = event_new(w->base, -1, EV_PERSIST, on_drain_tick, w);
        w->write_turn_ev = event_new(w->base, -1, 0, kp_respond_on_write_turn, w);
    }
    if (!w->base || !w->http || !w->stop_ev || !w->drain_tick || !w->write_turn_ev)
        return kp_err_set(err, KP_ENOMEM, "out of memory creating the HTTP workers");
    kp_status rc = configure_http(w->http, w, err);
    if (rc != KP_OK)
        return rc;

    unsigned flags = LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_CLOSE_ON_FREE;
    struct evconnlistener *l =
        evconnlistener_new_bind(w->base, NULL, NULL, flags, LISTEN_BACKLOG, (struct sockaddr *)ss, (int)sslen);
    if (!l)
        return kp_err_set(err, KP_EIO, "cannot listen on %s: %s", h->opt.addr, strerror(errno));
    w->bound = evhttp_bind_listener(w->http, l);
    if (!w->bound) {
        evconnlistener_free(l);
        return kp_err_set(err, KP_ENOMEM, "out of memory binding %s", h->opt.addr);
    }
    kp_conn_set_listener(w->conns, l);
    if (sockaddr_port(ss) == 0) { /* port 0: the others join the port the first one got */
        struct sockaddr_storage got;
        socklen_t gotlen = sizeof got;
        memset(&got, 0, sizeof got);
        if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&got, &gotlen) != 0)
            return kp_err_set(err, KP_EIO, "cannot listen on %s: getsockname: %s", h->opt.addr, strerror(errno));
        set_sockaddr_port(ss, sockaddr_port(&got));
    }
    h->port = sockaddr_port(ss);
    return KP_OK;
}

static void report_started(kp_host *h, kp_status rc, const kp_err *err)
{
    pthread_mutex_lock(&h->mu);
    if (rc != KP_OK && h->start_status == KP_OK) {
        h->start_status = rc;
        h->start_err = *err;
    }
    h->nreported++;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
}

/* The worker's event loop, a turn at a time (the callbacks of what one wait
 * found ready; the last of them writes the turn's responses in one burst:
 * respond.c). After each turn the store's snapshot, if a request began one,
 * ends. So the requests of one turn share one view of the data, taken after
 * every one of them had arrived, and an idle worker holds none. */
static void run_loop(worker *w)
{
    for (;;) {
        int rc = event_base_loop(w->base, EVLOOP_ONCE);
        kp_store_snapshot_end(w->ctx.store);
        /* a loop exit or break is forgotten when the next turn starts: look now */
        if (rc != 0 || event_base_got_exit(w->base) || event_base_got_break(w->base))
            return;
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    kp_host *h = w->host;
    kp_err err = {0};
    kp_status rc = KP_OK;
    if (h->opt.open_store)
        rc = h->opt.open_store(h->opt.open_store_ud, &w->ctx.store, &err);
    if (!h->opt.write_each) {
        w->burst = kp_burst_new(BURST_DEPTH);       /* NULL where io_uring is not available */
        static atomic_flag said = ATOMIC_FLAG_INIT; /* once for the process, whatever its hosts */
        if (!w->burst && !atomic_flag_test_and_set(&said))
            kp_log(KP_LOG_INFO, "io_uring is not available: each response is written with its own system call");
    }
    report_started(h, rc, &err);
    if (rc == KP_OK)
        run_loop(w);
    /* closes the remaining connections; unfinished streams are released here */
    evhttp_free(w->http);
    w->http = NULL;
    kp_conn_set_free(w->conns);
    w->conns = NULL;
    kp_deferreds_finish(w);
    kp_respond_write_turn(w); /* drops what the freed connections left */
    free(w->unwritten);
    w->unwritten = NULL;
    free(w->burst_items);
    w->burst_items = NULL;
    kp_burst_free(w->burst);
    w->burst = NULL;
    if (w->ctx.store) {
        w->ctx.store->ops->close(w->ctx.store);
        w->ctx.store = NULL;
    }
    return NULL;
}

static void wait_for_workers(kp_host *h, int started)
{
    pthread_mutex_lock(&h->mu);
    while (h->nreported < started)
        pthread_cond_wait(&h->cond, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

static void ignore_sigpipe(void)
{
    /* writes to a closed socket must fail with EPIPE, not kill the process */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

kp_status kp_host_start(const kp_host_options *opt, kp_host **out, kp_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    kp_status rc;
    *out = NULL;

    pthread_once(&evthread_once, init_libraries);
    if (!evthread_ok)
        return kp_err_set(err, KP_EINTERNAL, "libevent has no pthreads support");
    if (sodium_init() < 0)
        return kp_err_set(err, KP_EINTERNAL, "libsodium failed to initialise");
    ignore_sigpipe();
    rc = resolve_addr(opt->addr, &ss, &sslen, err);
    if (rc != KP_OK)
        return rc;
    if (sslen == 0) /* cannot happen; says so to the static analyzer, which assumes kp_err_set may return KP_OK */
        return kp_err_set(err, KP_EINTERNAL, "listen address %s resolved to nothing", opt->addr);
    kp_conn_set_cap(opt->max_connections);
    if (sockaddr_port(&ss) != 0) {
        rc = check_address_free((struct sockaddr *)&ss, sslen, opt->addr, err);
        if (rc != KP_OK)
            return rc;
    }

    kp_host *h = calloc(1, sizeof *h);
    if (!h)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    h->opt = *opt;
    if (!h->opt.dispatch)
        h->opt.dispatch = kp_router_dispatch;
    h->nworkers = opt->threads >= 1 ? opt->threads : 1;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->workers = calloc((size_t)h->nworkers, sizeof *h->workers);
    if (!h->workers) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < h->nworkers; i++) {
        rc = worker_init(h, &h->workers[i], &ss, sslen, err);
        if (rc != KP_OK)
            goto fail;
    }
    int started = 0;
    for (int i = 0; i < h->nworkers; i++) {
        worker *w = &h->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            rc = kp_err_set(err, KP_EIO, "cannot start HTTP worker thread: %s", strerror(errno));
            break;
        }
        w->thread_started = 1;
        pthread_setname_np(w->thread, "kp-http"); /* seen by top -H, perf and gdb */
        started++;
    }
    wait_for_workers(h, started);
    if (rc == KP_OK && h->start_status != KP_OK) {
        rc = h->start_status;
        if (err)
            *err = h->start_err;
    }
    if (rc != KP_OK)
        goto fail;
    *out = h;
    return KP_OK;

fail:
    kp_host_stop(h);
    return rc;
}

int kp_host_port(const kp_host *h)
{
    return h ? h->port : 0;
}

void kp_host_stop(kp_host *h)
{
    if (!h)
        return;
    for (int i = 0; h->workers && i < h->nworkers; i++)
        if (h->workers[i].thread_started)
            event_active(h->workers[i].stop_ev, 0, 0);
    for (int i = 0; h->workers && i < h->nworkers; i++) {
        worker *w = &h->workers[i];
        if (w->thread_started)
            pthread_join(w->thread, NULL);
        if (w->http) /* never ran */
            evhttp_free(w->http);
        kp_conn_set_free(w->conns);
        if (w->stop_ev)
            event_free(w->stop_ev);
        if (w->drain_tick)
            event_free(w->drain_tick);
        if (w->write_turn_ev)
            event_free(w->write_turn_ev);
        if (w->base)
            event_base_free(w->base);
    }
    free(h->workers);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
