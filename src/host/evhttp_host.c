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
 * modules share), conn.h and framing.h (the connection layer), reqlog.h (the
 * per-request log line and metrics), streams.h (streamed responses: the sink,
 * its high-water mark, pulled streams) and deferreds.h (responses computed
 * elsewhere, answered here through kp_worker_reply()).
 */
#include "host/evhttp_host.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <sodium.h>

#include "core/log.h"
#include "core/metrics.h"
#include "host/evhttp/conn.h"
#include "host/evhttp/deferreds.h"
#include "host/evhttp/reqlog.h"
#include "host/evhttp/streams.h"
#include "host/evhttp/worker.h"

/* Declared bodies over KP_MAX_BODY are refused by the connection layer before
 * they are read; chunked ones are read up to this size so that we can answer
 * 413 with our JSON error (beyond it evhttp answers 413 itself and closes). */
#define HARD_MAX_BODY (4 * KP_MAX_BODY)
#define MAX_HEADERS_SIZE (96 * 1024) /* request line + headers: room for an oversized token to reach the 401 path */
#define KP_IO_TIMEOUT_S 30           /* idle read / stalled write on a connection */
#define LISTEN_BACKLOG 511
#define DEFAULT_DRAIN_MS 10000
#define DEFAULT_HEADER_TIMEOUT_S 10
#define DEFAULT_BODY_TIMEOUT_S 60
#define DRAIN_TICK_MS 20

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

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    }
    return "UNKNOWN";
}

/* Standard reason phrases (RFC 9110, 6585); evhttp's own table stops at 417. */
const char *kp_worker_reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    }
    return NULL; /* evhttp then names the class ("Client Error", ...) */
}

/* The host's own error responses (limits, rejected heads, handler bugs): in
 * the host's style (error_page), JSON by default. */
__attribute__((format(printf, 5, 6))) static void host_error(const worker *w, kp_resp *resp, int status,
                                                             const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (w->host->opt.error_page)
        w->host->opt.error_page(resp, status, code, msg);
    else
        kp_resp_error(resp, status, code, "%s", msg);
}

/* ---- request ids ---- */

static void new_request_id(worker *w, char out[KP_REQUEST_ID_MAX + 1])
{
    snprintf(out, KP_REQUEST_ID_MAX + 1, "%s%08x", w->rid_prefix, (unsigned)w->rid_counter++);
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

/* ---- building the kp_req ---- */

static int copy_headers(struct evkeyvalq *in, kp_headers *out)
{
    for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next)
        if (kp_headers_add(out, kv->key, kv->value) != 0)
            return -1;
    return 0;
}

/* Query parameters, decoded by evhttp. A malformed pair (no '=') makes evhttp
 * reject the whole string, so then each '&'-separated pair is tried alone and
 * the malformed ones are skipped (cache-busters like "?v2" stay harmless). */
static int parse_query(const char *q, kp_headers *out)
{
    struct evkeyvalq kv;
    int rc = 0;
    if (evhttp_parse_query_str(q, &kv) == 0) {
        rc = copy_headers(&kv, out);
        evhttp_clear_headers(&kv);
        return rc;
    }
    char *copy = strdup(q);
    if (!copy)
        return -1;
    char *save = NULL;
    for (char *pair = strtok_r(copy, "&", &save); pair && rc == 0; pair = strtok_r(NULL, "&", &save)) {
        if (evhttp_parse_query_str(pair, &kv) == 0) {
            rc = copy_headers(&kv, out);
            evhttp_clear_headers(&kv);
        }
    }
    free(copy);
    return rc;
}

/*
 * Fills req from evreq. Returns 0, or -1 with resp filled with the error to
 * send instead of dispatching (400, 413, 500). *path_out receives the decoded
 * path, which the caller frees.
 */
static int read_request(worker *w, struct evhttp_request *evreq, kp_req *req, char rid[KP_REQUEST_ID_MAX + 1],
                        char **path_out, kp_resp *resp)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(evreq);
    struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(evreq);
    char *peer = NULL;
    ev_uint16_t peer_port = 0;

    const char *incoming = evhttp_find_header(in, "X-Request-Id");
    if (kp_reqlog_id_is_sane(incoming))
        snprintf(rid, KP_REQUEST_ID_MAX + 1, "%s", incoming);
    else
        new_request_id(w, rid);
    req->request_id = rid;
    req->method = method_name(evhttp_request_get_command(evreq));
    evhttp_connection_get_peer(evcon, &peer, &peer_port);
    req->remote_addr = peer ? peer : "";
    req->path = "/";

    const char *raw_path = uri ? evhttp_uri_get_path(uri) : NULL;
    size_t path_len = 0;
    char *path = evhttp_uridecode(raw_path && *raw_path ? raw_path : "/", 0, &path_len);
    if (!path)
        goto nomem;
    *path_out = path;
    req->path = path;
    if (strlen(path) != path_len) {
        host_error(w, resp, 400, "invalid_request", "the request path contains a NUL byte");
        return -1;
    }
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (query && *query && parse_query(query, &req->query) != 0)
        goto nomem;
    if (copy_headers(in, &req->headers) != 0)
        goto nomem;

    struct evbuffer *body = evhttp_request_get_input_buffer(evreq);
    size_t body_len = evbuffer_get_length(body);
    if (body_len > KP_MAX_BODY) {
        host_error(w, resp, 413, "payload_too_large", "request body exceeds 1 MiB");
        return -1;
    }
    if (body_len > 0) {
        req->body = (const char *)evbuffer_pullup(body, -1);
        if (!req->body)
            goto nomem;
        req->body_len = body_len;
    }
    return 0;

nomem:
    host_error(w, resp, 500, "internal_error", "out of memory (request %s)", rid);
    return -1;
}

/* ---- writing the kp_resp ---- */

void kp_worker_add_response_headers(worker *w, struct evhttp_request *evreq, const kp_resp *resp,
                                    const char *request_id)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(evreq);
    for (size_t i = 0; i < resp->headers.n; i++) {
        const kp_header *hd = &resp->headers.items[i];
        if (evhttp_add_header(out, hd->name, hd->value) != 0)
            kp_log(KP_LOG_WARN, "dropped an invalid response header (%s) for request %s", hd->name, request_id);
    }
    for (const char *const *d = w->host->opt.default_headers; d && d[0] && d[1]; d += 2)
        if (!kp_headers_get(&resp->headers, d[0]))
            evhttp_add_header(out, d[0], d[1]);
    evhttp_add_header(out, "X-Request-Id", request_id);
    struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
    kp_conn *c = evcon ? kp_conn_of(w->conns, evcon) : NULL;
    if (w->draining || (c && kp_conn_must_close(c)))
        evhttp_add_header(out, "Connection", "close");
}

static void free_body(const void *data, size_t len, void *extra)
{
    (void)len;
    (void)extra;
    free((void *)data);
}

static int response_has_body(int method_head, int status)
{
    return !method_head && status >= 200 && status != 204 && status != 304;
}

static void send_response(worker *w, struct evhttp_request *evreq, kp_resp *resp, const char *request_id)
{
    int head = evhttp_request_get_command(evreq) == EVHTTP_REQ_HEAD;
    size_t body_len = resp->file.set ? (size_t)resp->file.len : resp->body.len;
    kp_worker_add_response_headers(w, evreq, resp, request_id);
    if (head && response_has_body(0, resp->status)) {
        /* HEAD answers like GET without the body; evhttp does not count it for us */
        char len[32];
        snprintf(len, sizeof len, "%zu", body_len);
        struct evkeyvalq *out = evhttp_request_get_output_headers(evreq);
        evhttp_remove_header(out, "Content-Length");
        evhttp_add_header(out, "Content-Length", len);
    }
    if (resp->file.set && response_has_body(head, resp->status)) {
        /* the kernel sends it (sendfile) as the client reads: no copy per client */
        struct evbuffer *out = evhttp_request_get_output_buffer(evreq);
        /* this buffer ends up on the socket: without the flag libevent maps or
         * reads the file into memory instead of using sendfile */
        evbuffer_set_flags(out, EVBUFFER_FLAG_DRAINS_TO_FD);
        if (evbuffer_add_file(out, resp->file.fd, resp->file.offset, resp->file.len) == 0)
            resp->file.set = 0; /* the buffer owns fd now */
    } else if (response_has_body(head, resp->status) && resp->body.len > 0) {
        size_t len = resp->body.len;
        char *data = kp_buf_steal(&resp->body); /* handed to evhttp without a copy */
        struct evbuffer *out = evhttp_request_get_output_buffer(evreq);
        if (evbuffer_add_reference(out, data, len, free_body, NULL) != 0)
            free(data);
    }
    evhttp_send_reply(evreq, resp->status, kp_worker_reason_phrase(resp->status), NULL);
}

/* ---- answering ---- */

/* Writes resp (a stream is started and taken) and records the request
 * (streams: when they end). A response without a valid status, or with a
 * deferred left in it, is a handler bug: 500. */
void kp_worker_reply(worker *w, struct evhttp_request *evreq, kp_resp *resp, kp_req_summary *sum)
{
    const char *rid = sum->request_id;
    if (resp->deferred || resp->status < 100 || resp->status > 599) {
        kp_log(KP_LOG_ERROR, "handler left status %d%s for %s %s (request %s)", resp->status,
               resp->deferred ? " and a deferred" : "", sum->method, sum->path, rid);
        kp_resp_free(resp);
        memset(resp, 0, sizeof *resp);
        host_error(w, resp, 500, "internal_error", "internal error (request %s)", rid);
    }
    sum->status = resp->status;
    if (resp->stream && evhttp_request_get_command(evreq) == EVHTTP_REQ_HEAD) {
        /* HEAD: the headers a GET would get, and no producer run for a body
         * nobody reads (without Content-Length, as a stream has none) */
        resp->stream->release(resp->stream);
        resp->stream = NULL;
        kp_worker_add_response_headers(w, evreq, resp, rid);
        evhttp_send_reply(evreq, resp->status, kp_worker_reason_phrase(resp->status), NULL);
        kp_reqlog_record(w->ctx.app ? w->ctx.app->metrics : NULL, sum);
    } else if (resp->stream && kp_streams_start(w, evreq, resp, sum) == 0) {
        /* logged and counted when the stream ends */
    } else {
        if (resp->stream) { /* could not start it: answer 500 instead */
            resp->stream->release(resp->stream);
            resp->stream = NULL;
            kp_headers_free(&resp->headers);
            host_error(w, resp, 500, "internal_error", "internal error (request %s)", rid);
            sum->status = 500;
        }
        send_response(w, evreq, resp, rid);
        kp_reqlog_record(w->ctx.app ? w->ctx.app->metrics : NULL, sum);
    }
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
        read_request(w, evreq, &req, rid, &path, &resp);
        req.route = "rejected";
        kp_resp_free(&resp);
        memset(&resp, 0, sizeof resp);
        host_error(w, &resp, rej.status, rej.code, "%s", rej.message);
    } else if (read_request(w, evreq, &req, rid, &path, &resp) == 0) {
        w->host->opt.dispatch(&w->ctx, &req, &resp);
    }
    kp_reqlog_begin(&sum, req.method, &t0);
    kp_reqlog_take_request(&sum, &req);
    if (resp.deferred && resp.status == 0) {
        if (kp_deferreds_start(w, evreq, &resp, &sum) == 0)
            goto done;         /* answered, logged and counted when its reply comes */
        kp_resp_settle(&resp); /* out of memory: wait for it here */
    }
    kp_worker_reply(w, evreq, &resp, &sum);
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
    unsigned char rnd[4];
    w->host = h;
    w->ctx.app = h->opt.app;
    randombytes_buf(rnd, sizeof rnd);
    snprintf(w->rid_prefix, sizeof w->rid_prefix, "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);

    w->base = new_event_base();
    w->http = w->base ? evhttp_new(w->base) : NULL;
    if (w->http) {
        w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
        w->drain_tick = event_new(w->base, -1, EV_PERSIST, on_drain_tick, w);
    }
    if (!w->base || !w->http || !w->stop_ev || !w->drain_tick)
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

static void *worker_main(void *arg)
{
    worker *w = arg;
    kp_host *h = w->host;
    kp_err err = {0};
    kp_status rc = KP_OK;
    if (h->opt.open_store)
        rc = h->opt.open_store(h->opt.open_store_ud, &w->ctx.store, &err);
    report_started(h, rc, &err);
    if (rc == KP_OK)
        event_base_dispatch(w->base);
    /* closes the remaining connections; unfinished streams are released here */
    evhttp_free(w->http);
    w->http = NULL;
    kp_conn_set_free(w->conns);
    w->conns = NULL;
    kp_deferreds_finish(w);
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
        if (w->base)
            event_base_free(w->base);
    }
    free(h->workers);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
