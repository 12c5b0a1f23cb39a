/*
 * llm_engine.c - see llm_engine.h.
 *
 * A call is a sequence of tries (attempts). Each try is one kp_http_stream;
 * a retry waits on the call's timer and starts a new one. The body of a 2xx
 * answer goes through the SSE parser into the dialect's parser; the body of
 * any other answer is kept (bounded) for its error message.
 *
 * Re-entrancy: user callbacks may cancel the call they are about (or start
 * and cancel others). Every engine entry point (HTTP callbacks, the retry
 * timer) brackets its work with enter()/leave(); a call that ends - final
 * callback delivered or cancelled - while a frame is on the stack is only
 * marked finished, and the outermost leave() frees it. A finished call never
 * calls back again.
 */
#include "llm/llm_engine.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/loop.h"
#include "llm/http_stream.h"

#define ERROR_BODY_MAX (16u * 1024u) /* what is kept of a non-2xx answer */

typedef struct engine engine;

struct kp_llm_call {
    engine *e;
    kp_llm_call *prev, *next; /* e->calls, while in flight */
    kp_llm_callbacks cb;
    kp_buf body;          /* the request body, sent on every try; freed once text went out (no try follows) */
    kp_buf call_header;   /* the spec's call_header line (a secret: wiped) */
    const char **headers; /* e->headers, then call_header; NULL-terminated */
    kp_http_stream *http; /* the try in flight, or NULL */
    struct event *timer;  /* the retry timer, made when first needed */
    long attempt;         /* tries started */
    long status;          /* HTTP status of the current try, 0 before it is known */
    long retry_after_ms;  /* what the answer asked for, -1 if nothing */
    char request_id[80];
    kp_buf errbody;
    kp_sse sse;
    void *parser;
    int output_started;
    int depth; /* engine frames on the stack working on this call */
    int finished;
};

struct engine {
    kp_llm llm; /* first: a kp_llm * is an engine * */
    kp_llm_ops ops;
    const kp_llm_dialect *d;
    kp_llm_tuning t;
    kp_loop *loop;
    kp_http_stream_client *http;
    kp_http_version http_version;
    char *model;
    long max_tokens;
    char *url;
    char **headers; /* NULL-terminated */
    size_t nheaders;
    kp_status (*call_header)(void *ud, kp_buf *out, kp_err *err);
    void *call_header_ud;
    kp_llm_call *calls;
    size_t active;
    uint64_t rng;
};

/* ---- small helpers ---- */

static int is_success(long status)
{
    return status >= 200 && status < 300;
}

static uint64_t next_random(engine *e)
{
    uint64_t x = e->rng; /* xorshift64*: jitter needs spread, not secrecy */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    e->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static long env_long(const char *name, long def, long min)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    return (errno || *end || n < min) ? def : n;
}

void kp_llm_engine_default_tuning(kp_llm_tuning *t)
{
    t->max_tries = 3;
    t->retry_base_ms = env_long("KOUMPA_LLM_RETRY_BASE_MS", 1000, 0);
    t->retry_max_ms = 60000;
    t->connect_timeout_ms = KP_HTTP_STREAM_CONNECT_TIMEOUT_MS;
    t->idle_timeout_ms = env_long("KOUMPA_LLM_IDLE_TIMEOUT_MS", KP_HTTP_STREAM_IDLE_TIMEOUT_MS, 1);
    t->total_timeout_ms = KP_HTTP_STREAM_TOTAL_TIMEOUT_MS;
}

kp_http_version kp_llm_http_version(const kp_config *cfg)
{
    kp_http_version v = KP_HTTP_VERSION_AUTO;
    if (cfg->llm_http_version && kp_http_version_parse(cfg->llm_http_version, &v) != 0)
        v = KP_HTTP_VERSION_AUTO;
    return v;
}

/* ---- error vocabulary ---- */

/* llm.h's error code for an error type from the API (Anthropic's names, and OpenAI's where they differ). */
static const char *code_of_type(const char *type)
{
    static const struct {
        const char *type;
        const char *code;
    } map[] = {
        {"overloaded_error", "overloaded"},       {"rate_limit_error", "rate_limited"},
        {"rate_limit_exceeded", "rate_limited"},  {"invalid_request_error", "invalid_request"},
        {"request_too_large", "invalid_request"}, {"not_found_error", "invalid_request"},
        {"authentication_error", "auth_failed"},  {"permission_error", "auth_failed"},
        {"invalid_api_key", "auth_failed"},       {"timeout_error", "timeout"},
    };
    for (size_t i = 0; type && i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].type, type) == 0)
            return map[i].code;
    return "provider_error";
}

/* Error events worth another try when no output came yet: the 529/429/5xx of streams. */
static int is_retryable_type(const char *type)
{
    return strcmp(type, "overloaded_error") == 0 || strcmp(type, "rate_limit_error") == 0 ||
           strcmp(type, "api_error") == 0 || strcmp(type, "server_error") == 0;
}

static int is_retryable_status(long status)
{
    return status == 429 || status >= 500;
}

static const char *code_of_status(long status, const char *type)
{
    switch (status) {
    case 429: return "rate_limited";
    case 529: return "overloaded";
    case 401:
    case 403: return "auth_failed";
    case 408: return "timeout";
    case 400:
    case 404:
    case 413:
    case 422: return "invalid_request";
    default: return code_of_type(type);
    }
}

/*
 * The type and message of an error answer: {"error": {"type", "message"}}
 * (Anthropic, OpenAI), {"error": "text"}, or {"object": "error", "type",
 * "message"} (vLLM). type "" and a generic message when the body says nothing.
 */
static void read_api_error(const engine *e, const kp_buf *body, long status, char *type, size_t tcap, char *msg,
                           size_t mcap)
{
    json_t *root = kp_llm_json_load(body->data ? body->data : "", body->len);
    json_t *err = json_object_get(root, "error");
    json_t *holder = json_is_object(err) ? err : root;
    json_t *t = json_object_get(holder, "type");
    json_t *m = json_is_string(err) ? err : json_object_get(holder, "message");
    if (!json_is_string(t))
        t = json_object_get(holder, "code");
    type[0] = '\0';
    kp_llm_copy_string(type, tcap, t); /* cut between UTF-8 characters: both end up in JSON */
    if (json_string_length(m) > 0)
        kp_llm_copy_string(msg, mcap, m);
    else
        snprintf(msg, mcap, "%s answered HTTP %ld", e->d->name, status);
    json_decref(root);
}

/* Milliseconds the answer asks to wait (retry-after-ms, or retry-after in seconds), -1 if none. */
static long retry_after_of(kp_http_stream *s)
{
    static const struct {
        const char *name;
        double scale;
    } headers[] = {{"retry-after-ms", 1.0}, {"retry-after", 1000.0}};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        const char *v = kp_http_stream_header(s, headers[i].name);
        if (!v || !*v)
            continue;
        char *end;
        double x = strtod(v, &end);
        while (*end == ' ')
            end++;
        if (*end == '\0' && end != v && x >= 0 && x < 86400000.0) /* an HTTP-date is not honoured */
            return (long)(x * headers[i].scale);
    }
    return -1;
}

/* ---- call lifecycle ---- */

static void call_free(kp_llm_call *call)
{
    kp_http_stream_cancel(call->http);
    if (call->timer)
        event_free(call->timer);
    kp_sse_free(&call->sse);
    free(call->parser);
    kp_buf_free(&call->body);
    kp_buf_free(&call->errbody);
    if (call->call_header.data)
        sodium_memzero(call->call_header.data, call->call_header.cap);
    kp_buf_free(&call->call_header);
    free(call->headers);
    free(call);
}

static void enter(kp_llm_call *call)
{
    call->depth++;
}

static void leave(kp_llm_call *call)
{
    if (--call->depth == 0 && call->finished)
        call_free(call);
}

/* The call ends: no callback after the one the caller is about to make. */
static void mark_finished(kp_llm_call *call)
{
    engine *e = call->e;
    call->finished = 1;
    kp_http_stream_cancel(call->http);
    call->http = NULL;
    if (call->timer)
        event_del(call->timer);
    if (call->prev)
        call->prev->next = call->next;
    else
        e->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    call->prev = call->next = NULL;
    e->active--;
}

static void finish_error(kp_llm_call *call, const char *code, const char *message)
{
    engine *e = call->e;
    mark_finished(call);
    kp_log_json(KP_LOG_WARN, "llm call failed",
                json_pack("{s:s, s:s, s:i, s:i, s:b, s:s}", "provider", e->d->name, "code", code, "status",
                          (int)call->status, "tries", (int)call->attempt, "output_started", call->output_started,
                          "request_id", call->request_id));
    if (call->cb.on_error)
        call->cb.on_error(call->cb.ud, code, message, call->output_started);
}

static void finish_done(kp_llm_call *call)
{
    engine *e = call->e;
    const kp_llm_result *r = e->d->result(call->parser);
    kp_llm_usage usage = {0, 0};
    char stop_reason[sizeof r->stop_reason];
    e->d->usage(r, &usage);
    snprintf(stop_reason, sizeof stop_reason, "%s", r->stop_reason[0] ? r->stop_reason : "end_turn");
    mark_finished(call);
    if (call->cb.on_done)
        call->cb.on_done(call->cb.ud, stop_reason, &usage);
}

/* ---- tries ---- */

static void on_http_response(void *ud, kp_http_stream *s, long status);
static void on_http_body(void *ud, kp_http_stream *s, const char *data, size_t len);
static void on_http_done(void *ud, kp_http_stream *s, kp_http_outcome outcome, long status, const char *message);

static kp_status on_parser_text(void *ud, const char *text, size_t len, kp_err *err)
{
    kp_llm_call *call = ud;
    if (!call->finished) {
        if (!call->output_started)
            kp_buf_free(&call->body); /* kept for another try, and none comes once text went out */
        call->output_started = 1;
        if (call->cb.on_text)
            call->cb.on_text(call->cb.ud, text, len);
    }
    if (call->finished) /* cancelled by on_text: stop parsing */
        return kp_err_set(err, KP_EINTERNAL, "the call was cancelled");
    return KP_OK;
}

static kp_status start_try(kp_llm_call *call, kp_err *err)
{
    engine *e = call->e;
    call->attempt++;
    call->status = 0;
    call->retry_after_ms = -1;
    call->request_id[0] = '\0';
    kp_buf_reset(&call->errbody);
    kp_sse_free(&call->sse);
    e->d->parser_init(call->parser, on_parser_text, call);
    kp_sse_init(&call->sse, e->d->on_event, call->parser, 0);
    kp_http_request r = {
        .url = e->url,
        .headers = call->headers,
        .body = call->body.data,
        .body_len = call->body.len,
        .connect_timeout_ms = e->t.connect_timeout_ms,
        .idle_timeout_ms = e->t.idle_timeout_ms,
        .total_timeout_ms = e->t.total_timeout_ms,
        .version = e->http_version,
    };
    kp_http_stream_callbacks hc = {call, on_http_response, on_http_body, on_http_done};
    return kp_http_stream_start(e->http, &r, &hc, &call->http, err);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    kp_llm_call *call = arg;
    kp_err err = {0};
    (void)fd;
    (void)what;
    enter(call);
    if (start_try(call, &err) != KP_OK)
        finish_error(call, "network_error", err.msg);
    leave(call);
}

static long backoff_ms(engine *e, long tries_done)
{
    long ceiling = e->t.retry_base_ms;
    for (long i = 1; i < tries_done && ceiling < e->t.retry_max_ms; i++)
        ceiling *= 2;
    if (ceiling > e->t.retry_max_ms)
        ceiling = e->t.retry_max_ms;
    return ceiling > 0 ? (long)(next_random(e) % (uint64_t)(ceiling + 1)) : 0;
}

/* Another try later, or 0 when that is not allowed (tries used up, retry-after too long). */
static int schedule_retry(kp_llm_call *call, const char *error_type)
{
    engine *e = call->e;
    if (call->attempt >= e->t.max_tries || call->retry_after_ms > e->t.retry_max_ms)
        return 0;
    if (!call->timer && !(call->timer = evtimer_new(kp_loop_base(e->loop), on_retry_timer, call)))
        return 0;
    long delay = call->retry_after_ms >= 0 ? call->retry_after_ms : backoff_ms(e, call->attempt);
    struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
    if (evtimer_add(call->timer, &tv) != 0)
        return 0;
    kp_http_stream_cancel(call->http);
    call->http = NULL;
    kp_log_json(KP_LOG_WARN, "llm call retrying",
                json_pack("{s:s, s:i, s:s, s:i, s:i, s:s}", "provider", e->d->name, "status", (int)call->status,
                          "error", error_type, "try", (int)call->attempt, "delay_ms", (int)delay, "request_id",
                          call->request_id));
    return 1;
}

static void on_http_response(void *ud, kp_http_stream *s, long status)
{
    kp_llm_call *call = ud;
    const char *id = kp_http_stream_header(s, "request-id");
    if (!id)
        id = kp_http_stream_header(s, "x-request-id");
    snprintf(call->request_id, sizeof call->request_id, "%s", id ? id : "");
    call->status = status;
    if (!is_success(status))
        call->retry_after_ms = retry_after_of(s);
}

/* After some of a 2xx body was parsed: an error event or a broken stream ends the try. */
static void check_stream(kp_llm_call *call, kp_status fed, const char *fed_msg)
{
    engine *e = call->e;
    const char *msg = fed_msg;
    kp_status st = fed != KP_OK ? fed : e->d->failure(call->parser, &msg);
    if (st == KP_OK)
        return;
    const kp_llm_result *r = e->d->result(call->parser);
    if (!r->error_type[0]) {
        finish_error(call, "provider_error", msg);
        return;
    }
    if (!call->output_started && is_retryable_type(r->error_type) && schedule_retry(call, r->error_type))
        return;
    finish_error(call, code_of_type(r->error_type), r->error_message[0] ? r->error_message : msg);
}

static void on_http_body(void *ud, kp_http_stream *s, const char *data, size_t len)
{
    kp_llm_call *call = ud;
    (void)s;
    if (call->finished)
        return;
    if (!is_success(call->status)) {
        size_t room = ERROR_BODY_MAX - call->errbody.len;
        kp_buf_append(&call->errbody, data, len < room ? len : room);
        return;
    }
    enter(call);
    kp_err err = {0};
    kp_status st = kp_sse_feed(&call->sse, data, len, &err);
    if (!call->finished)
        check_stream(call, st, err.msg);
    leave(call);
}

static void end_of_stream(kp_llm_call *call, kp_http_outcome outcome, const char *message)
{
    const kp_llm_result *r = call->e->d->result(call->parser);
    kp_sse_finish(&call->sse);
    if (r->done || (outcome == KP_HTTP_COMPLETE && r->stop_reason[0]))
        finish_done(call);
    else if (outcome == KP_HTTP_TIMEOUT)
        finish_error(call, "timeout", message);
    else if (outcome == KP_HTTP_NETWORK)
        finish_error(call, "network_error", message);
    else
        finish_error(call, "network_error", "the stream ended before the message was complete");
}

static void end_of_error_answer(kp_llm_call *call)
{
    char type[64], msg[256];
    read_api_error(call->e, &call->errbody, call->status, type, sizeof type, msg, sizeof msg);
    if (is_retryable_status(call->status) && schedule_retry(call, type))
        return;
    finish_error(call, code_of_status(call->status, type), msg);
}

/*
 * A connection that failed before any output: refused, reset or timed out
 * before an answer came, or reset in the middle of a 2xx answer that had
 * not yet produced text. Like 429/529, worth another try (the official SDKs
 * retry connection errors too); once text went out it is not.
 */
static int is_retryable_connection_failure(const kp_llm_call *call, kp_http_outcome outcome, long status)
{
    if (call->output_started || outcome == KP_HTTP_COMPLETE)
        return 0;
    return status == 0 || (is_success(status) && outcome == KP_HTTP_NETWORK);
}

/* A try is over and will not be retried as a connection failure. */
static void end_of_try(kp_llm_call *call, kp_http_outcome outcome, long status, const char *message)
{
    if (is_success(status))
        end_of_stream(call, outcome, message);
    else if (status > 0)
        end_of_error_answer(call);
    else
        finish_error(call, outcome == KP_HTTP_TIMEOUT ? "timeout" : "network_error", message);
}

static void on_http_done(void *ud, kp_http_stream *s, kp_http_outcome outcome, long status, const char *message)
{
    kp_llm_call *call = ud;
    (void)s;
    call->http = NULL; /* s is freed when this returns */
    if (call->finished)
        return;
    enter(call);
    call->status = status;
    const char *type = outcome == KP_HTTP_TIMEOUT ? "timeout" : "connection_error";
    if (!(is_retryable_connection_failure(call, outcome, status) && schedule_retry(call, type)))
        end_of_try(call, outcome, status, message);
    leave(call);
}

/* ---- kp_llm_ops ---- */

static kp_status copy_messages(const kp_llm_request *req, kp_llm_msg **out, kp_err *err)
{
    *out = NULL;
    if (!req->messages || req->nmessages == 0)
        return kp_err_set(err, KP_EINVAL, "a request needs at least one message");
    kp_llm_msg *msgs = calloc(req->nmessages, sizeof *msgs);
    if (!msgs)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    for (size_t i = 0; i < req->nmessages; i++) {
        msgs[i].role = req->messages[i].role;
        msgs[i].content = req->messages[i].content;
    }
    *out = msgs;
    return KP_OK;
}

static kp_status build_body(engine *e, const kp_llm_request *req, kp_buf *body, kp_err *err)
{
    kp_llm_msg *msgs = NULL;
    kp_status st = copy_messages(req, &msgs, err);
    if (st == KP_OK)
        st = e->d->build_request(e->model, req->max_tokens > 0 ? req->max_tokens : e->max_tokens, req->system, msgs,
                                 req->nmessages, body, err);
    free(msgs);
    return st;
}

/* The call's headers: the engine's, then its own call_header line. */
static kp_status build_headers(engine *e, kp_llm_call *call, kp_err *err)
{
    kp_status st;
    if (!(call->headers = calloc(e->nheaders + 2, sizeof *call->headers)))
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    for (size_t i = 0; i < e->nheaders; i++)
        call->headers[i] = e->headers[i];
    if (!e->call_header)
        return KP_OK;
    if ((st = e->call_header(e->call_header_ud, &call->call_header, err)) != KP_OK)
        return st;
    call->headers[e->nheaders] = kp_buf_cstr(&call->call_header);
    return KP_OK;
}

static kp_status engine_start(kp_llm *llm, const kp_llm_request *req, const kp_llm_callbacks *cb, kp_llm_call **out,
                              kp_err *err)
{
    engine *e = (engine *)llm;
    kp_status st = KP_OK;
    if (!kp_loop_is_current(e->loop))
        return kp_err_set(err, KP_EINTERNAL, "LLM calls start on the loop thread");
    kp_llm_call *call = calloc(1, sizeof *call);
    if (!call)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    call->e = e;
    call->cb = *cb;
    if (!(call->parser = calloc(1, e->d->parser_size))) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    kp_sse_init(&call->sse, e->d->on_event, call->parser, 0);
    if ((st = build_body(e, req, &call->body, err)) != KP_OK || (st = build_headers(e, call, err)) != KP_OK ||
        (st = start_try(call, err)) != KP_OK)
        goto cleanup;
    call->next = e->calls;
    if (e->calls)
        e->calls->prev = call;
    e->calls = call;
    e->active++;
    *out = call;
    return KP_OK;
cleanup:
    call_free(call);
    return st;
}

static void engine_cancel(kp_llm *llm, kp_llm_call *call)
{
    (void)llm;
    if (!call || call->finished)
        return;
    mark_finished(call);
    if (call->depth == 0)
        call_free(call);
}

static void free_strings(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/*
 * Cancels every call in flight. Cancelling one calls nothing back and touches
 * no other call, so the next one is read before: clang-tidy, which cannot see
 * into the functions that free a call, otherwise thought the freed head of
 * e->calls might be visited again.
 */
static void cancel_all(engine *e)
{
    kp_llm_call *call = e->calls, *next;
    for (; call; call = next) {
        next = call->next;
        engine_cancel(&e->llm, call);
    }
    assert(e->calls == NULL);
}

static void engine_destroy(engine *e)
{
    cancel_all(e);
    kp_http_stream_client_free(e->http);
    free(e->model);
    free(e->url);
    free_strings(e->headers);
    free(e);
}

static void destroy_on_loop(void *arg)
{
    engine_destroy(arg);
}

/*
 * On the loop thread the calls are cancelled at once (no callback after this
 * returns) and the rest is freed from a posted task, so that free() may also
 * be called from inside a callback, with HTTP and engine frames still on the
 * stack. Off the loop thread everything is posted.
 */
static void engine_free(kp_llm *llm)
{
    engine *e = (engine *)llm;
    if (!e)
        return;
    if (kp_loop_is_current(e->loop))
        cancel_all(e);
    if (kp_loop_post(e->loop, destroy_on_loop, e) != 0)
        engine_destroy(e); /* the loop is stopping: nothing runs on it any more */
}

static char **copy_strings(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    char **copy = calloc(n + 1, sizeof *copy);
    for (size_t i = 0; copy && i < n; i++) {
        if (!(copy[i] = strdup(v[i]))) {
            free_strings(copy);
            return NULL;
        }
    }
    return copy;
}

kp_status kp_llm_engine_new(const kp_llm_engine_spec *spec, kp_loop *loop, kp_llm **out, kp_err *err)
{
    kp_status st = KP_OK;
    if (!spec->dialect || !spec->model || !*spec->model || !spec->url || !*spec->url)
        return kp_err_set(err, KP_EINVAL, "an LLM provider needs a model and a URL");
    if (spec->http_version == KP_HTTP_VERSION_2 && strncmp(spec->url, "http://", 7) == 0 &&
        !kp_http_stream_h2c_reusable())
        return kp_err_set(err, KP_EINVAL,
                          "KOUMPA_LLM_HTTP_VERSION=2 on an http:// URL (HTTP/2 without TLS) needs libcurl 8.0.0 or "
                          "later; this one (%s) fails every call after a connection's first: use https:// or 1.1",
                          curl_version_info(CURLVERSION_NOW)->version);
    engine *e = calloc(1, sizeof *e);
    if (!e)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    e->d = spec->dialect;
    e->loop = loop;
    e->http_version = spec->http_version;
    e->max_tokens = spec->max_tokens > 0 ? spec->max_tokens : 16000;
    if (spec->tuning)
        e->t = *spec->tuning;
    else
        kp_llm_engine_default_tuning(&e->t);
    if (e->t.max_tries < 1)
        e->t.max_tries = 1;
    e->rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)(uintptr_t)e ^ 0x9E3779B97F4A7C15ULL;
    e->model = strdup(spec->model);
    e->url = strdup(spec->url);
    e->headers = copy_strings(spec->headers);
    while (e->headers && e->headers[e->nheaders])
        e->nheaders++;
    e->call_header = spec->call_header;
    e->call_header_ud = spec->call_header_ud;
    if (!e->model || !e->url || !e->headers) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    if ((st = kp_http_stream_client_new(kp_loop_base(loop), &e->http, err)) != KP_OK)
        goto cleanup;
    e->ops.name = e->d->name;
    e->ops.start = engine_start;
    e->ops.cancel = engine_cancel;
    e->ops.free = engine_free;
    e->llm.ops = &e->ops;
    e->llm.model = e->model;
    e->llm.impl = e;
    *out = &e->llm;
    return KP_OK;
cleanup:
    engine_destroy(e);
    return st;
}

size_t kp_llm_engine_active(const kp_llm *llm)
{
    return ((const engine *)llm)->active;
}
