/*
 * fake_upstream.c - the fake Anthropic Messages API of `make
 * bench-generations` (BENCH_UPSTREAM=c), in C on libevent's evhttp, so that
 * serving thousands of streams costs the benchmark's two cores next to
 * nothing (the Node.js fake, bench/fake-upstream.mjs, takes a core of its own
 * at 8,000). HTTP/1.1 only: the HTTP/2 runs keep the Node.js fake.
 *
 * Every POST /v1/messages is answered with the same stream, as
 * tests/integration/fake-anthropic.mjs's `slow` scenario writes it:
 * message_start, content_block_start, then the text in content_block_delta
 * events of 1 to FAKE_PIECE_CHARS characters (pseudo-random lengths, as
 * there), a ping after every fifth, then content_block_stop, message_delta
 * (end_turn) and message_stop. The stream is written in pieces of
 * FAKE_CHUNK_BYTES, spread evenly over FAKE_DURATION_MS, each due at its own
 * time from the request (a late write does not delay the ones after it).
 * Other paths get the API's 404 error body.
 *
 *   fake-upstream < /dev/stdin   (environment: FAKE_TEXT_FILE, the text;
 *                                 FAKE_DURATION_MS 20000; FAKE_CHUNK_BYTES 4096;
 *                                 FAKE_PIECE_CHARS 24)
 * Listens on 127.0.0.1 (a free port), prints its base URL on stdout, and
 * exits when stdin closes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <jansson.h>

#define LISTEN_BACKLOG 8192

typedef struct fake {
    struct event_base *base;
    char *stream; /* the whole response body */
    size_t len;
    size_t chunk;
    long duration_ms;
    size_t nchunks;
} fake;

/* One response being written. */
typedef struct reply {
    fake *f;
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    struct event *timer;
    struct timeval started;
    size_t next; /* the next chunk */
} reply;

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : def;
}

/* Bytes in the UTF-8 sequence that starts with c (1 for a stray byte). */
static size_t utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
}

static int add_frame(struct evbuffer *out, const char *event, json_t *data)
{
    char *text = data ? json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(data);
    if (!text)
        return -1;
    int rc = evbuffer_add_printf(out, "event: %s\ndata: %s\n\n", event, text) < 0 ? -1 : 0;
    free(text);
    return rc;
}

/* The text in pieces of 1..max_chars characters, cut as fake-common.mjs's pieces() cuts it. */
static int add_deltas(struct evbuffer *out, const char *text, long max_chars)
{
    unsigned long seed = 7;
    size_t i = 0, len = strlen(text);
    int rc = 0;
    for (int piece = 0; i < len && rc == 0; piece++) {
        seed = (seed * 1103515245UL + 12345UL) & 0x7fffffffUL;
        long n = 1 + (long)(seed % (unsigned long)(max_chars > 0 ? max_chars : 1));
        size_t end = i;
        for (long c = 0; c < n && end < len; c++)
            end += utf8_len((unsigned char)text[end]);
        if (end > len)
            end = len;
        rc = add_frame(out, "content_block_delta",
                       json_pack("{s:s,s:i,s:{s:s,s:s%}}", "type", "content_block_delta", "index", 0, "delta", "type",
                                 "text_delta", "text", text + i, end - i));
        if (rc == 0 && piece % 5 == 4)
            rc = add_frame(out, "ping", json_pack("{s:s}", "type", "ping"));
        i = end;
    }
    return rc;
}

/* The whole stream, as bytes. */
static int build_stream(fake *f, const char *text, long piece_chars)
{
    struct evbuffer *out = evbuffer_new();
    if (!out)
        return -1;
    json_int_t out_tokens = (json_int_t)(strlen(text) + 3) / 4;
    int rc = add_frame(out, "message_start",
                       json_pack("{s:s,s:{s:s,s:s,s:s,s:[],s:s,s:n,s:n,s:{s:i,s:i,s:i,s:i,s:s}}}", "type",
                                 "message_start", "message", "id", "msg_bench", "type", "message", "role", "assistant",
                                 "content", "model", "claude-sonnet-5-5", "stop_reason", "stop_sequence", "usage",
                                 "input_tokens", 420, "cache_creation_input_tokens", 0, "cache_read_input_tokens", 0,
                                 "output_tokens", 1, "service_tier", "standard"));
    rc = rc ? rc
            : add_frame(out, "content_block_start",
                        json_pack("{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_start", "index", 0, "content_block",
                                  "type", "text", "text", ""));
    rc = rc ? rc : add_frame(out, "ping", json_pack("{s:s}", "type", "ping"));
    rc = rc ? rc : add_deltas(out, text, piece_chars);
    rc = rc ? rc
            : add_frame(out, "content_block_stop", json_pack("{s:s,s:i}", "type", "content_block_stop", "index", 0));
    rc = rc ? rc
            : add_frame(out, "message_delta",
                        json_pack("{s:s,s:{s:s,s:n},s:{s:I}}", "type", "message_delta", "delta", "stop_reason",
                                  "end_turn", "stop_sequence", "usage", "output_tokens", out_tokens));
    rc = rc ? rc : add_frame(out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
    f->len = evbuffer_get_length(out);
    f->stream = malloc(f->len ? f->len : 1);
    if (rc == 0 && f->stream)
        evbuffer_remove(out, f->stream, f->len);
    evbuffer_free(out);
    return rc == 0 && f->stream ? 0 : -1;
}

static void reply_free(reply *r)
{
    if (r->conn)
        evhttp_connection_set_closecb(r->conn, NULL, NULL);
    event_free(r->timer);
    free(r);
}

/* The client went away mid-stream: evhttp frees the request; the reply goes with it. */
static void on_closed(struct evhttp_connection *conn, void *arg)
{
    reply *r = arg;
    (void)conn;
    r->conn = NULL;
    reply_free(r);
}

/* Arms the timer for chunk r->next, due at started + next * duration / nchunks. */
static void schedule(reply *r)
{
    fake *f = r->f;
    long due_ms = (long)((double)f->duration_ms * (double)r->next / (double)f->nchunks);
    struct timeval now, due = {r->started.tv_sec + due_ms / 1000, r->started.tv_usec + (due_ms % 1000) * 1000};
    if (due.tv_usec >= 1000000) {
        due.tv_sec++;
        due.tv_usec -= 1000000;
    }
    gettimeofday(&now, NULL);
    struct timeval wait = {0, 0};
    if (evutil_timercmp(&due, &now, >))
        evutil_timersub(&due, &now, &wait);
    evtimer_add(r->timer, &wait);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    reply *r = arg;
    fake *f = r->f;
    (void)fd;
    (void)what;
    size_t off = r->next * f->chunk;
    size_t n = off + f->chunk <= f->len ? f->chunk : f->len - off;
    struct evbuffer *piece = evbuffer_new();
    if (piece) {
        evbuffer_add_reference(piece, f->stream + off, n, NULL, NULL);
        evhttp_send_reply_chunk(r->req, piece);
        evbuffer_free(piece);
    }
    if (++r->next < f->nchunks) {
        schedule(r);
        return;
    }
    struct evhttp_request *req = r->req;
    reply_free(r);
    evhttp_send_reply_end(req);
}

static void send_error(struct evhttp_request *req, int status, const char *type, const char *message)
{
    struct evbuffer *body = evbuffer_new();
    if (body)
        evbuffer_add_printf(body, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}", type, message);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, NULL, body);
    if (body)
        evbuffer_free(body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    fake *f = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST || !path || strcmp(path, "/v1/messages") != 0) {
        send_error(req, 404, "not_found_error", "Not found");
        return;
    }
    reply *r = calloc(1, sizeof *r);
    if (!r || !(r->timer = evtimer_new(f->base, on_tick, r))) {
        free(r);
        send_error(req, 500, "api_error", "out of memory");
        return;
    }
    r->f = f;
    r->req = req;
    r->conn = evhttp_request_get_connection(req);
    gettimeofday(&r->started, NULL);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/event-stream; charset=utf-8");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "request-id", "req_bench");
    evhttp_send_reply_start(req, 200, "OK");
    evhttp_connection_set_closecb(r->conn, on_closed, r);
    on_tick(-1, 0, r); /* the first chunk at once */
}

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
    char buf[256];
    (void)what;
    if (read(fd, buf, sizeof buf) <= 0)
        event_base_loopbreak(arg);
}

static char *read_file(const char *path)
{
    FILE *fp = path ? fopen(path, "rb") : NULL;
    if (!fp)
        return NULL;
    struct evbuffer *b = evbuffer_new();
    char chunk[4096];
    size_t n;
    while (b && (n = fread(chunk, 1, sizeof chunk, fp)) > 0)
        evbuffer_add(b, chunk, n);
    fclose(fp);
    if (!b)
        return NULL;
    size_t len = evbuffer_get_length(b);
    char *text = malloc(len + 1);
    if (text) {
        evbuffer_remove(b, text, len);
        text[len] = '\0';
    }
    evbuffer_free(b);
    return text;
}

/* Every descriptor the hard limit allows: thousands of streams at once. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(void)
{
    fake f = {0};
    int rc = 1;
    struct evhttp *http = NULL;
    struct evconnlistener *lis = NULL;
    struct evhttp_bound_socket *bound_socket = NULL;
    struct event *in = NULL;
    char *text = read_file(getenv("FAKE_TEXT_FILE"));
    f.duration_ms = env_long("FAKE_DURATION_MS", 20000);
    f.chunk = (size_t)env_long("FAKE_CHUNK_BYTES", 4096);
    if (!text || f.chunk == 0 || f.duration_ms < 0 || build_stream(&f, text, env_long("FAKE_PIECE_CHARS", 24)) != 0) {
        fprintf(stderr, "fake-upstream: set FAKE_TEXT_FILE to a readable text, and FAKE_CHUNK_BYTES > 0\n");
        goto cleanup;
    }
    f.nchunks = (f.len + f.chunk - 1) / f.chunk;
    raise_nofile();
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (!(f.base = event_base_new()) || !(http = evhttp_new(f.base)) ||
        !(lis = evconnlistener_new_bind(f.base, NULL, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, LISTEN_BACKLOG,
                                        (struct sockaddr *)&sin, sizeof sin)) ||
        !(bound_socket = evhttp_bind_listener(http, lis))) {
        fprintf(stderr, "fake-upstream: cannot listen on 127.0.0.1\n");
        goto cleanup;
    }
    lis = NULL; /* evhttp owns it */
    evhttp_set_gencb(http, on_request, &f);
    evhttp_set_timeout(http, 120);
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    if (getsockname(evhttp_bound_socket_get_fd(bound_socket), (struct sockaddr *)&bound, &blen) != 0)
        goto cleanup;
    in = event_new(f.base, STDIN_FILENO, EV_READ | EV_PERSIST, on_stdin, f.base);
    if (!in || event_add(in, NULL) != 0)
        goto cleanup;
    printf("http://127.0.0.1:%d\n", ntohs(bound.sin_port));
    fflush(stdout);
    event_base_dispatch(f.base);
    rc = 0;
cleanup:
    if (in)
        event_free(in);
    if (lis)
        evconnlistener_free(lis);
    if (http)
        evhttp_free(http);
    if (f.base)
        event_base_free(f.base);
    free(f.stream);
    free(text);
    return rc;
}
