/*
 * sse_readers.c - the SSE readers of `make bench-generations`
 * (BENCH_READERS_IMPL=c, the default), in C on libevent's HTTP client, so
 * that reading thousands of event streams costs the benchmark's two cores
 * little (the Node.js readers, bench/sse-readers.mjs, took 12 s of CPU over a
 * 35 s run at 8,000). Each generation is one POST /v1/projects with Accept:
 * text/event-stream on a connection of its own, read to its end.
 *
 * In (stdin, JSON): {url, jobs: [{token, i}], spreadMs, total, startAt}: the
 * server's base URL (http://host:port), the generations to run, a spread of
 * the starts (job i waits i * spreadMs / total ms) and the epoch ms to begin.
 * Out (stdout, JSON): {results: [...], cpuSeconds}, one record per job, as
 * bench/sse-readers.mjs writes them: {outcome, seconds, maxGapMs, gapAtMs,
 * doneLagMs, headersMs, secondMs}. outcome: done; error:CODE (the stream's
 * error event); http_STATUS:CODE (an answer other than 200);
 * network:CAUSE (the connection failed); no_done (the stream ended without
 * done or error).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#define TAIL_BYTES 4096 /* the end of a stream kept: enough for its last event */
#define ERR_BODY_BYTES 4096
#define IO_TIMEOUT_S 600

typedef struct readers readers;

typedef struct job {
    readers *r;
    const char *token;
    long i;
    struct evhttp_connection *conn;
    struct event *start_timer;
    int64_t started, prev;           /* ms */
    int64_t max_gap, max_gap_before; /* the longest pause between two chunks, and before the last one */
    int64_t gap_at, gap_at_before;   /* when it began (ms after the request) */
    int64_t last_gap;                /* the pause before the last chunk */
    int64_t headers_ms, second_ms;
    long chunks;
    int status;
    char tail[TAIL_BYTES + 1]; /* NUL-terminated when read */
    size_t tail_len;
    char *err_body;
    size_t err_len;
    const char *net_cause; /* set by the error callback */
    json_t *result;        /* set when the job ends */
} job;

struct readers {
    struct event_base *base;
    char host[256];
    int port;
    size_t left; /* jobs not ended */
};

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Keeps the last TAIL_BYTES of the stream. */
static void tail_add(job *j, const char *data, size_t len)
{
    if (len >= TAIL_BYTES) {
        memcpy(j->tail, data + len - TAIL_BYTES, TAIL_BYTES);
        j->tail_len = TAIL_BYTES;
        return;
    }
    if (j->tail_len + len > TAIL_BYTES) {
        size_t drop = j->tail_len + len - TAIL_BYTES;
        memmove(j->tail, j->tail + drop, j->tail_len - drop);
        j->tail_len -= drop;
    }
    memcpy(j->tail + j->tail_len, data, len);
    j->tail_len += len;
}

/* The code of an error body {"error": {"code"}} or an error event's data {"code"}; "unparsed" if none. */
static const char *code_of(json_t *doc, int nested, char *out, size_t n)
{
    json_t *obj = nested ? json_object_get(doc, "error") : doc;
    const char *code = json_string_value(json_object_get(obj, "code"));
    snprintf(out, n, "%s", code ? code : "unparsed");
    return out;
}

/* The outcome from the stream's last event: done, error:CODE or no_done. */
static void stream_outcome(job *j, char *out, size_t n)
{
    j->tail[j->tail_len] = '\0';
    const char *ev = NULL;
    for (const char *p = strstr(j->tail, "event: "); p; p = strstr(p + 1, "event: "))
        if (p == j->tail || p[-1] == '\n')
            ev = p;
    if (!ev) {
        snprintf(out, n, "no_done");
        return;
    }
    const char *name = ev + 7;
    if (strncmp(name, "done\n", 5) == 0) {
        snprintf(out, n, "done");
        return;
    }
    if (strncmp(name, "error\n", 6) != 0) {
        snprintf(out, n, "no_done");
        return;
    }
    const char *data = strstr(name, "data: ");
    char code[128] = "unparsed";
    if (data) {
        const char *end = strchr(data, '\n');
        json_t *d = json_loadb(data + 6, end ? (size_t)(end - data - 6) : strlen(data + 6), 0, NULL);
        code_of(d, 0, code, sizeof code);
        json_decref(d);
    }
    snprintf(out, n, "error:%s", code);
}

static void job_end(job *j, const char *outcome)
{
    if (j->result)
        return;
    double seconds = (double)(now_ms() - j->started) / 1000.0;
    if (strcmp(outcome, "done") == 0 || strncmp(outcome, "error:", 6) == 0 || strcmp(outcome, "no_done") == 0)
        j->result = json_pack("{s:s,s:f,s:I,s:I,s:I,s:I,s:I}", "outcome", outcome, "seconds", seconds, "maxGapMs",
                              (json_int_t)j->max_gap_before, "gapAtMs", (json_int_t)j->gap_at_before, "doneLagMs",
                              (json_int_t)j->last_gap, "headersMs", (json_int_t)j->headers_ms, "secondMs",
                              (json_int_t)j->second_ms);
    else
        j->result = json_pack("{s:s,s:f}", "outcome", outcome, "seconds", seconds);
    free(j->err_body);
    j->err_body = NULL;
    if (--j->r->left == 0)
        event_base_loopexit(j->r->base, NULL);
}

static int on_headers(struct evhttp_request *req, void *arg)
{
    job *j = arg;
    j->headers_ms = now_ms() - j->started;
    j->status = evhttp_request_get_response_code(req);
    return 0;
}

static void on_chunk(struct evhttp_request *req, void *arg)
{
    job *j = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return;
    if (j->status != 200) {
        size_t room = ERR_BODY_BYTES - j->err_len;
        size_t take = len < room ? len : room;
        char *grown = take ? realloc(j->err_body, j->err_len + take + 1) : j->err_body;
        if (grown) {
            j->err_body = grown;
            evbuffer_remove(in, j->err_body + j->err_len, take);
            j->err_len += take;
            j->err_body[j->err_len] = '\0';
        }
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    int64_t now = now_ms();
    if (++j->chunks == 2)
        j->second_ms = now - j->started;
    if (j->prev) {
        j->last_gap = now - j->prev;
        j->max_gap_before = j->max_gap;
        j->gap_at_before = j->gap_at;
        if (j->last_gap > j->max_gap) {
            j->max_gap = j->last_gap;
            j->gap_at = j->prev - j->started;
        }
    }
    j->prev = now;
    /* only the last TAIL_BYTES can matter */
    if (len > TAIL_BYTES) {
        evbuffer_drain(in, len - TAIL_BYTES);
        len = TAIL_BYTES;
    }
    char piece[TAIL_BYTES];
    evbuffer_remove(in, piece, len);
    tail_add(j, piece, len);
}

static void on_error(enum evhttp_request_error e, void *arg)
{
    job *j = arg;
    j->net_cause = e == EVREQ_HTTP_TIMEOUT          ? "TIMEOUT"
                   : e == EVREQ_HTTP_EOF            ? "EOF"
                   : e == EVREQ_HTTP_INVALID_HEADER ? "INVALID_HEADER"
                   : e == EVREQ_HTTP_BUFFER_ERROR   ? "BUFFER_ERROR"
                   : e == EVREQ_HTTP_DATA_TOO_LONG  ? "DATA_TOO_LONG"
                                                    : "ECONN";
}

static void on_done(struct evhttp_request *req, void *arg)
{
    job *j = arg;
    char outcome[192];
    if (!req || j->net_cause || evhttp_request_get_response_code(req) == 0) {
        snprintf(outcome, sizeof outcome, "network:%s", j->net_cause ? j->net_cause : "ECONN");
    } else if (j->status != 200) {
        char code[128] = "unparsed";
        json_t *d = j->err_body ? json_loadb(j->err_body, j->err_len, 0, NULL) : NULL;
        code_of(d, 1, code, sizeof code);
        json_decref(d);
        snprintf(outcome, sizeof outcome, "http_%d:%s", j->status, code);
    } else {
        stream_outcome(j, outcome, sizeof outcome);
    }
    job_end(j, outcome);
}

static void start_job(evutil_socket_t fd, short what, void *arg)
{
    job *j = arg;
    (void)fd;
    (void)what;
    char auth[1024], body[128], len[32];
    j->started = now_ms();
    j->conn = evhttp_connection_base_new(j->r->base, NULL, j->r->host, (unsigned short)j->r->port);
    struct evhttp_request *req = j->conn ? evhttp_request_new(on_done, j) : NULL;
    if (!req) {
        job_end(j, "network:ENOMEM");
        return;
    }
    evhttp_connection_set_timeout(j->conn, IO_TIMEOUT_S);
    evhttp_request_set_header_cb(req, on_headers);
    evhttp_request_set_chunked_cb(req, on_chunk);
    evhttp_request_set_error_cb(req, on_error);
    snprintf(auth, sizeof auth, "Bearer %s", j->token);
    int n = snprintf(body, sizeof body, "{\"prompt\":\"A to-do app, number %ld\"}", j->i);
    snprintf(len, sizeof len, "%d", n);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", j->r->host);
    evhttp_add_header(h, "Authorization", auth);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Accept", "text/event-stream");
    evhttp_add_header(h, "Content-Length", len);
    evbuffer_add(evhttp_request_get_output_buffer(req), body, (size_t)n);
    if (evhttp_make_request(j->conn, req, EVHTTP_REQ_POST, "/v1/projects") != 0)
        job_end(j, "network:EREQUEST");
}

static json_t *read_stdin(void)
{
    json_error_t e;
    json_t *in = json_loadf(stdin, 0, &e);
    if (!in)
        fprintf(stderr, "sse-readers: bad input: %s\n", e.text);
    return in;
}

static int parse_url(readers *r, const char *url)
{
    return url && sscanf(url, "http://%255[^:/]:%d", r->host, &r->port) == 2 ? 0 : -1;
}

int main(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { /* a descriptor per generation */
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    json_t *in = read_stdin();
    readers r = {0};
    json_t *jobs_in = json_object_get(in, "jobs");
    if (!in || parse_url(&r, json_string_value(json_object_get(in, "url"))) != 0 || !json_is_array(jobs_in)) {
        fprintf(stderr, "sse-readers: expected {url: \"http://host:port\", jobs: [...], ...}\n");
        return 2;
    }
    size_t njobs = json_array_size(jobs_in);
    double spread = json_number_value(json_object_get(in, "spreadMs"));
    double total = json_number_value(json_object_get(in, "total"));
    int64_t start_at = (int64_t)json_number_value(json_object_get(in, "startAt"));
    job *jobs = calloc(njobs ? njobs : 1, sizeof *jobs);
    r.base = event_base_new();
    if (!jobs || !r.base)
        return 1;
    r.left = njobs;
    int64_t wait0 = start_at - now_ms();
    for (size_t k = 0; k < njobs; k++) {
        job *j = &jobs[k];
        json_t *o = json_array_get(jobs_in, k);
        j->r = &r;
        j->token = json_string_value(json_object_get(o, "token"));
        j->i = (long)json_integer_value(json_object_get(o, "i"));
        int64_t ms = (wait0 > 0 ? wait0 : 0) + (spread > 0 && total > 0 ? (int64_t)((double)j->i * spread / total) : 0);
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
        j->start_timer = evtimer_new(r.base, start_job, j);
        if (!j->token || !j->start_timer || evtimer_add(j->start_timer, &tv) != 0)
            return 1;
    }
    if (njobs)
        event_base_dispatch(r.base);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 (double)ru.ru_stime.tv_usec / 1e6;
    json_t *results = json_array();
    for (size_t k = 0; k < njobs; k++) {
        json_array_append_new(results, jobs[k].result ? jobs[k].result : json_pack("{s:s}", "outcome", "no_done"));
        event_free(jobs[k].start_timer);
        if (jobs[k].conn)
            evhttp_connection_free(jobs[k].conn);
    }
    json_t *out = json_pack("{s:o,s:f}", "results", results, "cpuSeconds", cpu);
    json_dumpf(out, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(out);
    json_decref(in);
    free(jobs);
    event_base_free(r.base);
    return 0;
}
