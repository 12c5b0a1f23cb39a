/*
 * test_host.c - the evhttp host end to end over real sockets (libcurl and a
 * raw socket as clients), with a test dispatch function instead of the
 * router: request building, response writing, limits, request ids, logging,
 * metrics, per-thread stores, streamed responses (normal end, client gone,
 * graceful and forced stop) and start-up failures.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "api/http.h"
#include "api/router.h"
#include "core/log.h"
#include "core/metrics.h"
#include "host/evhttp_host.h"

/* ---- a producer for streamed responses ---- */

typedef struct fake_stream {
    kp_stream base;
    pthread_mutex_t mu;
    kp_sink *sink; /* NULL once released */
    pthread_t thread;
    int thread_started;
    int events; /* how many "data: i" events; -1: until the client is gone */
    int interval_ms;
    atomic_int started;
    atomic_int released;
    atomic_int write_failed;
} fake_stream;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *produce(void *arg)
{
    fake_stream *fs = arg;
    for (int i = 0; fs->events < 0 || i < fs->events; i++) {
        sleep_ms(fs->interval_ms);
        char line[32];
        int n = snprintf(line, sizeof line, "data: %d\n\n", i);
        pthread_mutex_lock(&fs->mu);
        int rc = fs->sink ? fs->sink->write(fs->sink, line, (size_t)n) : -1;
        pthread_mutex_unlock(&fs->mu);
        if (rc != 0) {
            atomic_store(&fs->write_failed, 1);
            return NULL;
        }
    }
    pthread_mutex_lock(&fs->mu);
    if (fs->sink)
        fs->sink->end(fs->sink);
    pthread_mutex_unlock(&fs->mu);
    return NULL;
}

static void fake_start(kp_stream *s, kp_sink *sink)
{
    fake_stream *fs = (fake_stream *)s;
    pthread_mutex_lock(&fs->mu);
    fs->sink = sink;
    pthread_mutex_unlock(&fs->mu);
    fs->thread_started = pthread_create(&fs->thread, NULL, produce, fs) == 0;
    atomic_store(&fs->started, 1);
}

/* After this returns the producer thread is gone: it never touches the sink again. */
static void fake_release(kp_stream *s)
{
    fake_stream *fs = (fake_stream *)s;
    pthread_mutex_lock(&fs->mu);
    fs->sink = NULL;
    pthread_mutex_unlock(&fs->mu);
    if (fs->thread_started)
        pthread_join(fs->thread, NULL);
    atomic_fetch_add(&fs->released, 1);
}

static void fake_stream_init(fake_stream *fs, int events, int interval_ms)
{
    memset(fs, 0, sizeof *fs);
    pthread_mutex_init(&fs->mu, NULL);
    fs->base.start = fake_start;
    fs->base.release = fake_release;
    fs->events = events;
    fs->interval_ms = interval_ms;
}

static void fake_stream_destroy(fake_stream *fs)
{
    pthread_mutex_destroy(&fs->mu);
}

/* ---- a producer for deferred responses: replies from its own thread once
 * the test lets it (go), as a hashing pool would ---- */

typedef struct fake_deferred {
    kp_deferred base;
    kp_reply *reply;
    pthread_t thread;
    int thread_started;
    atomic_int go;
    atomic_int started;
    atomic_int sent;
    atomic_int released;
} fake_deferred;

static void *reply_later(void *arg)
{
    fake_deferred *fd = arg;
    for (int i = 0; i < 2000 && !atomic_load(&fd->go); i++) /* bounded: 10 s */
        sleep_ms(5);
    kp_resp resp;
    memset(&resp, 0, sizeof resp);
    kp_resp_json(&resp, 201, json_pack("{s:b}", "deferred", 1));
    kp_headers_set(&resp.headers, "X-Deferred", "1");
    atomic_store(&fd->sent, 1);
    fd->reply->send(fd->reply, &resp);
    kp_resp_free(&resp); /* left empty by send() */
    return NULL;
}

static void fake_deferred_start(kp_deferred *d, kp_reply *reply)
{
    fake_deferred *fd = (fake_deferred *)d;
    fd->reply = reply;
    fd->thread_started = pthread_create(&fd->thread, NULL, reply_later, fd) == 0;
    atomic_store(&fd->started, 1);
}

static void fake_deferred_release(kp_deferred *d)
{
    fake_deferred *fd = (fake_deferred *)d;
    if (fd->thread_started)
        pthread_join(fd->thread, NULL);
    atomic_fetch_add(&fd->released, 1);
}

/* A producer that replies at once, from the worker's own thread, within start(). */
static void deferred_now_start(kp_deferred *d, kp_reply *reply)
{
    (void)d;
    kp_resp resp;
    memset(&resp, 0, sizeof resp);
    kp_resp_json(&resp, 201, json_pack("{s:b}", "deferred", 1));
    reply->send(reply, &resp);
    kp_resp_free(&resp);
}

static void deferred_now_release(kp_deferred *d)
{
    (void)d;
}

static kp_deferred deferred_now = {.start = deferred_now_start, .release = deferred_now_release};

static void fake_deferred_init(fake_deferred *fd)
{
    memset(fd, 0, sizeof *fd);
    fd->base.start = fake_deferred_start;
    fd->base.release = fake_deferred_release;
}

/* ---- a store that only counts opens and closes, and knows whether a snapshot is open ---- */

static atomic_int store_opens, store_closes;

static void fake_store_close(kp_store *s)
{
    atomic_fetch_add(&store_closes, 1);
    free(s);
}

/* Snapshots (store.h): the worker's handle only remembers whether one is open. */
static void fake_snapshot_begin(kp_store *s)
{
    s->impl = s; /* open */
}

static void fake_snapshot_end(kp_store *s)
{
    s->impl = NULL;
}

static const kp_store_ops fake_store_ops = {
    .snapshot_begin = fake_snapshot_begin,
    .snapshot_end = fake_snapshot_end,
    .close = fake_store_close,
};

/* ud: NULL, or an int: the open with that number (1-based) fails */
static kp_status fake_open_store(void *ud, kp_store **out, kp_err *err)
{
    int n = atomic_fetch_add(&store_opens, 1) + 1;
    if (ud && n == *(int *)ud)
        return kp_err_set(err, KP_EDB, "database %d is broken", n);
    kp_store *s = calloc(1, sizeof *s);
    if (!s)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    s->ops = &fake_store_ops;
    *out = s;
    return KP_OK;
}

/* ---- the dispatch function under test ---- */

static atomic_int dispatched;
static atomic_int saw_store;
static fake_stream *current_stream;
static fake_deferred *current_deferred;

static json_t *headers_json(const kp_headers *h)
{
    json_t *o = json_object();
    for (size_t i = 0; i < h->n; i++)
        json_object_set_new(o, h->items[i].name, json_string(h->items[i].value));
    return o;
}

static void test_dispatch(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    atomic_fetch_add(&dispatched, 1);
    if (ctx->store)
        atomic_store(&saw_store, 1);
    if (strcmp(req->path, "/stream") == 0) {
        req->route = "/stream";
        resp->status = 200;
        kp_headers_set(&resp->headers, "Content-Type", "text/event-stream");
        resp->stream = &current_stream->base;
        return;
    }
    if (strcmp(req->path, "/deferred") == 0) {
        req->route = "/deferred";
        resp->deferred = &current_deferred->base;
        return;
    }
    if (strcmp(req->path, "/deferred-now") == 0) { /* as a route whose authentication began a snapshot */
        req->route = "/deferred-now";
        kp_store_snapshot_begin(ctx->store);
        resp->deferred = &deferred_now;
        return;
    }
    if (strcmp(req->path, "/snapshot") == 0) { /* whether one was open when this request came */
        req->route = "/snapshot";
        kp_resp_json(resp, 200, json_pack("{s:b}", "open", ctx->store && ctx->store->impl));
        return;
    }
    if (strncmp(req->path, "/status/", 8) == 0) {
        req->route = "/status/{code}";
        kp_resp_error(resp, atoi(req->path + 8), "test", "status asked for");
        return;
    }
    if (strcmp(req->path, "/no-status") == 0)
        return;                             /* a handler bug: the host must still answer */
    if (strcmp(req->path, "/pause") == 0) { /* holds the worker while other requests arrive */
        req->route = "/pause";
        sleep_ms(100);
        kp_resp_json(resp, 200, json_pack("{s:b}", "paused", 1));
        return;
    }
    req->route = "/echo";
    if (kp_req_header(req, "X-User")) {
        req->principal.authenticated = 1;
        snprintf(req->principal.user_id, sizeof req->principal.user_id, "%s", kp_req_header(req, "X-User"));
    }
    json_t *body = json_pack("{s:s,s:s,s:o,s:o,s:s%,s:s,s:s,s:b}", "method", req->method, "path", req->path, "query",
                             headers_json(&req->query), "headers", headers_json(&req->headers), "body",
                             req->body ? req->body : "", req->body_len, "remote_addr", req->remote_addr, "request_id",
                             req->request_id, "has_store", ctx->store != NULL);
    kp_resp_json(resp, 200, body);
    kp_headers_add(&resp->headers, "X-Echo", "1");
}

/* ---- starting hosts ---- */

static kp_config test_cfg;
static kp_app test_app = {.cfg = &test_cfg};

static int write_each; /* the host option, for the next start_host */

static kp_host *start_host(int threads, int drain_ms)
{
    kp_host_options o = {
        .write_each = write_each,
        .addr = "127.0.0.1:0",
        .threads = threads,
        .app = &test_app,
        .open_store = fake_open_store,
        .dispatch = test_dispatch,
        .drain_timeout_ms = drain_ms,
    };
    kp_host *h = NULL;
    kp_err err = {0};
    kp_status rc = kp_host_start(&o, &h, &err);
    if (rc != KP_OK)
        fail_msg("kp_host_start: %s", err.msg);
    assert_true(kp_host_port(h) > 0);
    return h;
}

static int setup(void **state)
{
    (void)state;
    atomic_store(&dispatched, 0);
    atomic_store(&saw_store, 0);
    atomic_store(&store_opens, 0);
    atomic_store(&store_closes, 0);
    test_app.metrics = kp_metrics_new();
    return test_app.metrics ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kp_metrics_free(test_app.metrics);
    test_app.metrics = NULL;
    return 0;
}

/* ---- an HTTP client on libcurl ---- */

typedef struct http_result {
    long status;
    CURLcode code;
    kp_buf body;
    kp_buf head; /* status line and headers */
} http_result;

static size_t collect(char *data, size_t size, size_t n, void *ud)
{
    return kp_buf_append(ud, data, size * n) == 0 ? size * n : 0;
}

static void http_free(http_result *r)
{
    kp_buf_free(&r->body);
    kp_buf_free(&r->head);
}

/* headers: NULL-terminated "Name: value" list or NULL; body NULL for none. */
static void http_do(int port, const char *method, const char *path, const char *const *headers, const char *body,
                    size_t body_len, http_result *r)
{
    char url[512];
    struct curl_slist *list = NULL;
    memset(r, 0, sizeof *r);
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->head);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    for (; headers && *headers; headers++)
        list = curl_slist_append(list, *headers);
    if (list)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    r->code = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
}

/* The value of a response header (case-insensitive name) into out; 0 if found. */
static int header_value(const http_result *r, const char *name, char *out, size_t n)
{
    const char *p = kp_buf_cstr(&r->head);
    size_t len = strlen(name);
    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, len) == 0 && p[len] == ':') {
            const char *v = p + len + 1;
            while (*v == ' ')
                v++;
            size_t vl = strcspn(v, "\r\n");
            snprintf(out, n, "%.*s", (int)vl, v);
            return 0;
        }
    }
    return -1;
}

static json_t *body_json(const http_result *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, &e);
    if (!j)
        fail_msg("response body is not JSON (%s): %s", e.text, kp_buf_cstr(&r->body));
    return j;
}

static int is_hex16(const char *s)
{
    if (strlen(s) != 16)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

static int wait_until(atomic_int *v, int want, int timeout_ms)
{
    for (int waited = 0; atomic_load(v) != want; waited += 5) {
        if (waited >= timeout_ms)
            return 0;
        sleep_ms(5);
    }
    return 1;
}

/* ---- tests: requests and responses ---- */

static void test_request_is_translated(void **state)
{
    (void)state;
    kp_host *h = start_host(2, 0);
    const char *hdrs[] = {"X-Test: yes", NULL};
    http_result r;
    http_do(kp_host_port(h), "GET", "/a%20b/c?x=1&y=hello%20world+again&flag&z=%26", hdrs, NULL, 0, &r);
    assert_int_equal(r.code, CURLE_OK);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/a b/c");
    json_t *q = json_object_get(j, "query");
    assert_string_equal(json_string_value(json_object_get(q, "x")), "1");
    assert_string_equal(json_string_value(json_object_get(q, "y")), "hello world again");
    assert_string_equal(json_string_value(json_object_get(q, "z")), "&");
    assert_null(json_object_get(q, "flag")); /* malformed pair skipped, the others kept */
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "headers"), "X-Test")), "yes");
    assert_string_equal(json_string_value(json_object_get(j, "remote_addr")), "127.0.0.1");
    assert_true(json_is_true(json_object_get(j, "has_store")));

    char v[128];
    assert_int_equal(header_value(&r, "Content-Type", v, sizeof v), 0);
    assert_string_equal(v, "application/json");
    assert_int_equal(header_value(&r, "X-Echo", v, sizeof v), 0);
    assert_int_equal(header_value(&r, "X-Request-Id", v, sizeof v), 0);
    assert_true(is_hex16(v));
    assert_string_equal(v, json_string_value(json_object_get(j, "request_id")));
    json_decref(j);
    http_free(&r);
    kp_host_stop(h);
}

static void test_request_ids(void **state)
{
    (void)state;
    kp_host *h = start_host(1, 0);
    int port = kp_host_port(h);
    char a[80], b[80];
    http_result r;

    const char *sane[] = {"X-Request-Id: Abc-123_x.y", NULL};
    http_do(port, "GET", "/", sane, NULL, 0, &r);
    assert_int_equal(header_value(&r, "X-Request-Id", a, sizeof a), 0);
    assert_string_equal(a, "Abc-123_x.y");
    http_free(&r);

    const char *odd[] = {"X-Request-Id: has space", NULL};
    http_do(port, "GET", "/", odd, NULL, 0, &r);
    assert_int_equal(header_value(&r, "X-Request-Id", a, sizeof a), 0);
    assert_true(is_hex16(a));
    http_free(&r);

    char longid[100];
    snprintf(longid, sizeof longid, "X-Request-Id: %065d", 7); /* 65 characters */
    const char *toolong[] = {longid, NULL};
    http_do(port, "GET", "/", toolong, NULL, 0, &r);
    assert_int_equal(header_value(&r, "X-Request-Id", b, sizeof b), 0);
    assert_true(is_hex16(b));
    assert_string_not_equal(a, b); /* generated ids differ */
    http_free(&r);
    kp_host_stop(h);
}

static void test_bodies_and_the_size_limit(void **state)
{
    (void)state;
    kp_host *h = start_host(1, 0);
    int port = kp_host_port(h);
    http_result r;

    http_do(port, "POST", "/echo", NULL, "{\"k\":1}", 7, &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "body")), "{\"k\":1}");
    json_decref(j);
    http_free(&r);

    size_t big_len = 2 * 1024 * 1024;
    char *big = malloc(big_len);
    assert_non_null(big);
    memset(big, 'x', big_len);
    int before = atomic_load(&dispatched);
    http_do(port, "POST", "/echo", NULL, big, big_len, &r);
    assert_int_equal(r.status, 413);
    assert_int_equal(atomic_load(&dispatched), before); /* never reached the dispatcher */
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "payload_too_large");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
                        "request body exceeds 1 MiB");
    json_decref(j);
    http_free(&r);

    /* exactly the limit is fine */
    http_do(port, "PUT", "/echo", NULL, big, KP_MAX_BODY, &r);
    assert_int_equal(r.status, 200);
    http_free(&r);
    free(big);
    kp_host_stop(h);
}

static void test_head_status_and_methods(void **state)
{
    (void)state;
    kp_host *h = start_host(1, 0);
    int port = kp_host_port(h);
    http_result get, head, r;
    char v[64];

    http_do(port, "GET", "/status/200", NULL, NULL, 0, &get);
    http_do(port, "HEAD", "/status/200", NULL, NULL, 0, &head);
    assert_int_equal(get.status, 200);
    assert_true(get.body.len > 0);
    assert_int_equal(head.status, 200);
    assert_int_equal(head.body.len, 0);
    assert_int_equal(header_value(&head, "Content-Length", v, sizeof v), 0);
    assert_int_equal(atoi(v), (int)get.body.len);
    /* the host writes Date and Content-Length itself (respond.c): once each, as evhttp did */
    assert_int_equal(header_value(&get, "Content-Length", v, sizeof v), 0);
    assert_int_equal(atoi(v), (int)get.body.len);
    assert_null(strstr(strstr(kp_buf_cstr(&get.head), "Content-Length:") + 1, "Content-Length:"));
    assert_int_equal(header_value(&get, "Date", v, sizeof v), 0);
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    assert_true(rest && *rest == '\0' && strlen(v) == 29); /* IMF-fixdate */
    time_t sent = timegm(&tm), now = time(NULL);
    assert_true(sent <= now && now - sent < 60);
    assert_null(strstr(strstr(kp_buf_cstr(&get.head), "Date:") + 1, "Date:"));
    http_free(&get);
    http_free(&head);

    http_do(port, "GET", "/status/429", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 429);
    assert_non_null(strstr(kp_buf_cstr(&r.head), "HTTP/1.1 429 Too Many Requests\r\n"));
    http_free(&r);

    http_do(port, "GET", "/no-status", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 500);
    http_free(&r);

    http_do(port, "GET", "/status/204", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body.len, 0);
    http_free(&r);

    static const char *methods[] = {"PATCH", "OPTIONS", "DELETE", "PUT"};
    for (size_t i = 0; i < 4; i++) {
        http_do(port, methods[i], "/echo", NULL, NULL, 0, &r);
        assert_int_equal(r.status, 200); /* evhttp lets them through to dispatch */
        json_t *j = body_json(&r);
        assert_string_equal(json_string_value(json_object_get(j, "method")), methods[i]);
        json_decref(j);
        http_free(&r);
    }
    kp_host_stop(h);
}

static void test_one_log_line_and_metrics_per_request(void **state)
{
    (void)state;
    kp_host *h = start_host(1, 0);
    kp_log_set_level(KP_LOG_INFO);
    char path[] = "/tmp/koumpa-host-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    fflush(stderr);
    dup2(fd, STDERR_FILENO);

    const char *hdrs[] = {"X-User: usr_abc", "X-Request-Id: log-test-1", NULL};
    http_result r;
    http_do(kp_host_port(h), "GET", "/echo", hdrs, NULL, 0, &r);
    http_free(&r);
    http_do(kp_host_port(h), "GET", "/status/404", NULL, NULL, 0, &r);
    http_free(&r);

    fflush(stderr);
    kp_log_set_level(KP_LOG_WARN);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char text[4096] = {0};
    assert_true(pread(fd, text, sizeof text - 1, 0) > 0);
    close(fd);
    unlink(path);

    json_error_t e;
    char *line = strstr(text, "\"log-test-1\"");
    assert_non_null(line);
    while (line > text && line[-1] != '\n')
        line--;
    json_t *j = json_loadb(line, strcspn(line, "\n"), 0, &e);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(j, "route")), "/echo");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_string_equal(json_string_value(json_object_get(j, "user_id")), "usr_abc");
    assert_string_equal(json_string_value(json_object_get(j, "remote_addr")), "127.0.0.1");
    assert_true(json_is_number(json_object_get(j, "duration_ms")));
    json_decref(j);

    kp_buf m = KP_BUF_INIT;
    kp_metrics_render(test_app.metrics, &m);
    assert_non_null(strstr(kp_buf_cstr(&m), "koumpa_http_requests_total{route=\"/echo\",status=\"200\"} 1\n"));
    assert_non_null(strstr(kp_buf_cstr(&m), "koumpa_http_requests_total{route=\"/status/{code}\",status=\"404\"} 1\n"));
    kp_buf_free(&m);
    kp_host_stop(h);
}

/* ---- tests: threads and stores ---- */

typedef struct client_args {
    int port;
    int n;
    int ok;
} client_args;

static void *many_requests(void *arg)
{
    client_args *a = arg;
    CURL *c = curl_easy_init();
    char url[128];
    kp_buf sink = KP_BUF_INIT;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/echo", a->port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    for (int i = 0; i < a->n; i++) { /* one handle: a keep-alive connection */
        long status = 0;
        kp_buf_reset(&sink);
        if (curl_easy_perform(c) == CURLE_OK && curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
            status == 200)
            a->ok++;
    }
    kp_buf_free(&sink);
    curl_easy_cleanup(c);
    return NULL;
}

static void test_threads_each_get_a_store_and_share_the_load(void **state)
{
    (void)state;
    kp_host *h = start_host(3, 0);
    assert_int_equal(atomic_load(&store_opens), 3);
    client_args args[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (client_args){kp_host_port(h), 100, 0};
        assert_int_equal(pthread_create(&t[i], NULL, many_requests, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].ok, 100);
    }
    assert_int_equal(atomic_load(&saw_store), 1);
    kp_host_stop(h);
    assert_int_equal(atomic_load(&store_closes), 3);
}

static void test_start_failures(void **state)
{
    (void)state;
    kp_host *h = NULL, *h2 = NULL;
    kp_err err = {0};
    int fail_second = 2;
    kp_host_options o = {.addr = "127.0.0.1:0",
                         .threads = 3,
                         .app = &test_app,
                         .open_store = fake_open_store,
                         .open_store_ud = &fail_second,
                         .dispatch = test_dispatch};
    assert_int_equal(kp_host_start(&o, &h, &err), KP_EDB);
    assert_null(h);
    assert_non_null(strstr(err.msg, "database 2 is broken"));
    assert_int_equal(atomic_load(&store_closes), atomic_load(&store_opens) - 1); /* the opened ones were closed */

    o.addr = "no-port-here";
    o.open_store_ud = NULL;
    assert_int_equal(kp_host_start(&o, &h, &err), KP_EINVAL);
    o.addr = "127.0.0.1:99999";
    assert_int_equal(kp_host_start(&o, &h, &err), KP_EINVAL);

    /* a port in use is refused even though the workers use SO_REUSEPORT */
    h = start_host(2, 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", kp_host_port(h));
    o.addr = addr;
    assert_int_equal(kp_host_start(&o, &h2, &err), KP_EIO);
    assert_null(h2);
    assert_non_null(strstr(err.msg, addr));
    kp_host_stop(h);
    kp_host_stop(NULL);
}

/* ---- tests: streams ---- */

static void test_stream_is_delivered_in_order(void **state)
{
    (void)state;
    fake_stream fs;
    fake_stream_init(&fs, 5, 10);
    current_stream = &fs;
    kp_host *h = start_host(2, 0);
    http_result r;
    http_do(kp_host_port(h), "GET", "/stream", NULL, NULL, 0, &r);
    assert_int_equal(r.code, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(kp_buf_cstr(&r.body), "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
    char v[64];
    assert_int_equal(header_value(&r, "Content-Type", v, sizeof v), 0);
    assert_string_equal(v, "text/event-stream");
    assert_int_equal(header_value(&r, "Transfer-Encoding", v, sizeof v), 0);
    assert_string_equal(v, "chunked");
    assert_true(wait_until(&fs.released, 1, 5000));
    assert_int_equal(atomic_load(&fs.write_failed), 0);

    /* the connection is reusable after a stream */
    http_free(&r);
    http_do(kp_host_port(h), "GET", "/echo", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    http_free(&r);
    kp_host_stop(h);
    assert_int_equal(atomic_load(&fs.released), 1);
    fake_stream_destroy(&fs);
}

static void test_head_on_a_stream_runs_no_producer(void **state)
{
    (void)state;
    fake_stream fs;
    fake_stream_init(&fs, 3, 5);
    current_stream = &fs;
    kp_host *h = start_host(1, 0);
    http_result r;
    http_do(kp_host_port(h), "HEAD", "/stream", NULL, NULL, 0, &r);
    assert_int_equal(r.code, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 0);
    char v[64];
    assert_int_equal(header_value(&r, "Content-Type", v, sizeof v), 0);
    assert_string_equal(v, "text/event-stream");
    assert_int_not_equal(header_value(&r, "Content-Length", v, sizeof v), 0);
    /* released at once, never started: no body means no producer */
    assert_int_equal(atomic_load(&fs.released), 1);
    assert_int_equal(atomic_load(&fs.started), 0);
    http_free(&r);
    /* and the host's next request works */
    http_do(kp_host_port(h), "GET", "/echo", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    http_free(&r);
    kp_host_stop(h);
    fake_stream_destroy(&fs);
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Reads from fd until `want` appears in what was read; returns 1 if it did. */
static int read_until(int fd, const char *want)
{
    char buf[8192];
    size_t len = 0;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (len < sizeof buf - 1) {
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            return 0;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, want))
            return 1;
    }
    return 0;
}

/* A turn's responses are written when it ends (respond.c), in one system
 * call where io_uring is available, else each with its own: requests that
 * arrive together, on many connections, are each answered on their own, and
 * one whose client left before the turn ended costs nothing (the worker keeps
 * serving, and stopping leaks nothing). */
static void responses_of_one_turn_each_arrive(int each)
{
    enum { N = 16 };
    write_each = each;
    kp_host *h = start_host(1, 0);
    write_each = 0;
    int port = kp_host_port(h);
    int fds[N];
    char text[96];
    for (int i = 0; i < N; i++)
        fds[i] = connect_to(port);
    int gone = connect_to(port);
    int pauser = connect_to(port); /* the others arrive while it holds the worker: one turn sees them all */
    static const char pause_req[] = "GET /pause HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_int_equal(send(pauser, pause_req, sizeof pause_req - 1, 0), (ssize_t)(sizeof pause_req - 1));
    sleep_ms(20);
    static const char gone_req[] = "GET /echo?gone=1 HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_int_equal(send(gone, gone_req, sizeof gone_req - 1, 0), (ssize_t)(sizeof gone_req - 1));
    close(gone);
    for (int i = 0; i < N; i++) {
        int n = snprintf(text, sizeof text, "GET /echo?n=%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", i);
        assert_int_equal(send(fds[i], text, (size_t)n, 0), (ssize_t)n);
    }
    for (int i = 0; i < N; i++) {
        snprintf(text, sizeof text, "\"query\":{\"n\":\"%d\"}", i);
        assert_true(read_until(fds[i], text));
        close(fds[i]);
    }
    assert_true(read_until(pauser, "{\"paused\":true}"));
    close(pauser);
    http_result r;
    http_do(port, "GET", "/echo", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    http_free(&r);
    kp_host_stop(h);
}

static void test_responses_of_one_turn_each_arrive(void **state)
{
    (void)state;
    responses_of_one_turn_each_arrive(0);
}

static void test_responses_of_one_turn_each_arrive_written_each(void **state)
{
    (void)state;
    responses_of_one_turn_each_arrive(1);
}

static void test_stream_released_when_client_goes_away(void **state)
{
    (void)state;
    fake_stream fs;
    fake_stream_init(&fs, -1, 5); /* until the client is gone */
    current_stream = &fs;
    kp_host *h = start_host(1, 0);
    int fd = connect_to(kp_host_port(h));
    const char *req = "POST /stream HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}";
    assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    assert_true(read_until(fd, "data: 2"));
    close(fd);
    assert_true(wait_until(&fs.released, 1, 5000));

    /* the host keeps serving */
    http_result r;
    http_do(kp_host_port(h), "GET", "/echo", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    http_free(&r);
    kp_host_stop(h);
    assert_int_equal(atomic_load(&fs.released), 1);
    fake_stream_destroy(&fs);
}

typedef struct stream_client {
    int port;
    http_result r;
} stream_client;

static void *get_stream(void *arg)
{
    stream_client *c = arg;
    http_do(c->port, "GET", "/stream", NULL, NULL, 0, &c->r);
    return NULL;
}

static void test_graceful_stop_finishes_streams(void **state)
{
    (void)state;
    fake_stream fs;
    fake_stream_init(&fs, 5, 60); /* ~300 ms */
    current_stream = &fs;
    kp_host *h = start_host(2, 5000);
    stream_client c = {.port = kp_host_port(h)};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, get_stream, &c), 0);
    assert_true(wait_until(&fs.started, 1, 5000));
    kp_host_stop(h); /* waits for the stream */
    pthread_join(t, NULL);
    assert_int_equal(c.r.code, CURLE_OK);
    assert_string_equal(kp_buf_cstr(&c.r.body), "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
    assert_int_equal(atomic_load(&fs.released), 1);
    http_free(&c.r);
    fake_stream_destroy(&fs);
}

static void test_forced_stop_releases_endless_streams(void **state)
{
    (void)state;
    fake_stream fs;
    fake_stream_init(&fs, -1, 10);
    current_stream = &fs;
    kp_host *h = start_host(1, 200);
    stream_client c = {.port = kp_host_port(h)};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, get_stream, &c), 0);
    assert_true(wait_until(&fs.started, 1, 5000));
    sleep_ms(50);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kp_host_stop(h);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_join(t, NULL);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(took >= 0.15 && took < 3.0); /* waited for the drain timeout, not forever */
    assert_int_equal(atomic_load(&fs.released), 1);
    assert_int_not_equal(c.r.code, CURLE_OK); /* the client saw the stream cut */
    assert_non_null(strstr(kp_buf_cstr(&c.r.body), "data: 0\n\n"));
    http_free(&c.r);
    fake_stream_destroy(&fs);
}

/* ---- tests: deferred responses ---- */

typedef struct deferred_client {
    int port;
    const char *method;
    http_result r;
} deferred_client;

static void *get_deferred(void *arg)
{
    deferred_client *c = arg;
    http_do(c->port, c->method, "/deferred", NULL, NULL, 0, &c->r);
    return NULL;
}

static void test_deferred_reply_leaves_the_worker_free(void **state)
{
    (void)state;
    fake_deferred fd;
    fake_deferred_init(&fd);
    current_deferred = &fd;
    kp_host *h = start_host(1, 0); /* one worker: a blocked worker would answer nothing else */
    deferred_client c = {.port = kp_host_port(h), .method = "GET"};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, get_deferred, &c), 0);
    assert_true(wait_until(&fd.started, 1, 5000));

    http_result r;
    http_do(kp_host_port(h), "GET", "/echo", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200); /* answered while the deferred one waits */
    assert_int_equal(atomic_load(&fd.sent), 0);
    http_free(&r);

    atomic_store(&fd.go, 1);
    pthread_join(t, NULL);
    assert_int_equal(c.r.status, 201);
    json_t *j = body_json(&c.r);
    assert_true(json_is_true(json_object_get(j, "deferred")));
    json_decref(j);
    char v[64];
    assert_int_equal(header_value(&c.r, "X-Deferred", v, sizeof v), 0);
    assert_int_equal(header_value(&c.r, "X-Request-Id", v, sizeof v), 0);
    http_free(&c.r);
    assert_true(wait_until(&fd.released, 1, 5000));
    kp_host_stop(h);
    assert_int_equal(atomic_load(&fd.released), 1);
}

/* A request pipelined behind a deferred one is handled on the same loop turn
 * as the reply: the turn's snapshot, begun before the reply's thread wrote,
 * must have ended (the reply ends it), or the request would not see the write. */
static void test_deferred_reply_ends_the_snapshot(void **state)
{
    (void)state;
    kp_host *h = start_host(1, 0);
    int fd = connect_to(kp_host_port(h));
    static const char two[] = "GET /deferred-now HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /snapshot HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_int_equal(send(fd, two, sizeof two - 1, 0), (ssize_t)(sizeof two - 1));
    assert_true(read_until(fd, "{\"open\":false}"));
    close(fd);
    kp_host_stop(h);
}

static void test_deferred_head_has_length_and_no_body(void **state)
{
    (void)state;
    fake_deferred fd;
    fake_deferred_init(&fd);
    atomic_store(&fd.go, 1);
    current_deferred = &fd;
    kp_host *h = start_host(1, 0);
    deferred_client c = {.port = kp_host_port(h), .method = "HEAD"};
    get_deferred(&c);
    assert_int_equal(c.r.status, 201);
    assert_int_equal(c.r.body.len, 0);
    char v[64];
    assert_int_equal(header_value(&c.r, "Content-Length", v, sizeof v), 0);
    assert_int_equal(atoi(v), (int)strlen("{\"deferred\":true}"));
    http_free(&c.r);
    kp_host_stop(h);
    assert_int_equal(atomic_load(&fd.released), 1);
}

static void test_deferred_client_gone_before_the_reply(void **state)
{
    (void)state;
    fake_deferred fd;
    fake_deferred_init(&fd);
    current_deferred = &fd;
    kp_host *h = start_host(1, 0);
    int sock = connect_to(kp_host_port(h));
    const char *req = "GET /deferred HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_int_equal(send(sock, req, strlen(req), 0), (ssize_t)strlen(req));
    assert_true(wait_until(&fd.started, 1, 5000));
    close(sock);
    sleep_ms(100); /* lets the worker see the close first (either order must hold) */
    atomic_store(&fd.go, 1);
    assert_true(wait_until(&fd.released, 1, 5000));

    /* the worker keeps serving, and stopping leaks nothing */
    http_result r;
    http_do(kp_host_port(h), "GET", "/echo", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    http_free(&r);
    kp_host_stop(h);
    assert_int_equal(atomic_load(&fd.released), 1);
}

static void test_deferred_pending_at_stop_is_released_after_its_reply(void **state)
{
    (void)state;
    fake_deferred fd;
    fake_deferred_init(&fd);
    current_deferred = &fd;
    kp_host *h = start_host(1, 50); /* a drain shorter than the reply */
    int sock = connect_to(kp_host_port(h));
    const char *req = "GET /deferred HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_int_equal(send(sock, req, strlen(req), 0), (ssize_t)strlen(req));
    assert_true(wait_until(&fd.started, 1, 5000));
    atomic_store(&fd.go, 1);
    kp_host_stop(h); /* waits for the reply, then releases */
    assert_int_equal(atomic_load(&fd.released), 1);
    close(sock);
}

static void test_stop_waits_for_nothing_when_idle(void **state)
{
    (void)state;
    kp_host *h = start_host(2, 5000);
    http_result r;
    http_do(kp_host_port(h), "GET", "/echo", NULL, NULL, 0, &r);
    http_free(&r);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kp_host_stop(h);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(took < 1.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request_is_translated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bodies_and_the_size_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_status_and_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_log_line_and_metrics_per_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_each_get_a_store_and_share_the_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_is_delivered_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_on_a_stream_runs_no_producer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_responses_of_one_turn_each_arrive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_responses_of_one_turn_each_arrive_written_each, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_released_when_client_goes_away, setup, teardown),
        cmocka_unit_test_setup_teardown(test_graceful_stop_finishes_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forced_stop_releases_endless_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_waits_for_nothing_when_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_reply_leaves_the_worker_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_head_has_length_and_no_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_reply_ends_the_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_client_gone_before_the_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_pending_at_stop_is_released_after_its_reply, setup, teardown),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    kp_log_set_level(KP_LOG_WARN); /* one test turns info on to check the request log line */
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
