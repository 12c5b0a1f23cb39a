/*
 * llm_engine.h - the part of an LLM provider that does not depend on its wire
 * format: a kp_llm (llm.h) whose calls are streaming POSTs on a
 * kp_http_stream_client, retried and mapped to llm.h's callbacks.
 *
 * A provider (anthropic.c, openai.c) describes its wire format as a
 * kp_llm_dialect - how to build the request body, and the SSE event parser
 * that turns the response into text and a kp_llm_result - and gives the URL
 * and headers. The engine does the rest of llm.h's contract: POST the body,
 * feed the response to a kp_sse parser whose events go to the dialect's
 * parser, pass text on as it arrives, retry 429, 529 and 5xx answers,
 * retryable error events and connection failures (refused, reset, timed out
 * before an answer; reset in a 2xx answer before its first text) that come
 * before any output, with exponential backoff and full jitter, honouring
 * retry-after, all within max_tries, map every failure to one of
 * llm.h's error codes, and end each call with exactly one final callback
 * unless it is cancelled.
 *
 * Threads: as llm.h says, start() and cancel() run on the loop thread and so
 * do the callbacks. free() may be called from any thread, and from inside a
 * callback: calls still in flight are cancelled (on the loop thread, at once:
 * no callback comes after free() returns; from another thread, when the loop
 * runs the posted free), and the memory is released by a task posted to the
 * loop (kp_loop_stop() runs it at the latest).
 */
#ifndef KP_LLM_ENGINE_H
#define KP_LLM_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "llm/anthropic_events.h"
#include "llm/http_stream.h"
#include "llm/llm.h"
#include "llm/sse.h"

/* A wire format. Static data, shared by every call. */
typedef struct kp_llm_dialect {
    const char *name; /* kp_llm_ops.name: "anthropic", "openai" */
    /* Appends the request body (see anthropic_events.h for the contract). */
    kp_status (*build_request)(const char *model, int64_t max_tokens, const char *system, const kp_llm_msg *msgs,
                               size_t n, kp_buf *out, kp_err *err);
    size_t parser_size; /* bytes of parser state per call */
    /* Prepares the parser state to send text to on_text(ud). Nothing to free. */
    void (*parser_init)(void *parser, kp_llm_text_fn on_text, void *ud);
    kp_sse_event_fn on_event; /* the SSE parser's callback; its ud is the parser state */
    const kp_llm_result *(*result)(const void *parser);
    /* KP_OK, or the failure that stopped the parser, its message in *message. */
    kp_status (*failure)(const void *parser, const char **message);
    /* The usage to report for a result. */
    void (*usage)(const kp_llm_result *r, kp_llm_usage *out);
} kp_llm_dialect;

/* Retry and timeout settings. */
typedef struct kp_llm_tuning {
    long max_tries;     /* tries in all, >= 1 */
    long retry_base_ms; /* try n+1 waits a random time in [0, base * 2^(n-1)] (full jitter) */
    long retry_max_ms;  /* ceiling of that wait, and the longest retry-after honoured */
    long connect_timeout_ms;
    long idle_timeout_ms; /* no byte received for this long fails the call */
    long total_timeout_ms;
} kp_llm_tuning;

/* What a provider is made of. Strings are copied. */
typedef struct kp_llm_engine_spec {
    const kp_llm_dialect *dialect;
    const char *model;
    long max_tokens; /* used when a request's max_tokens is 0 */
    const char *url;
    const char *const *headers;   /* "Name: value" lines, NULL-terminated (secrets allowed: never logged) */
    const kp_llm_tuning *tuning;  /* NULL: kp_llm_engine_default_tuning() */
    kp_http_version http_version; /* KOUMPA_LLM_HTTP_VERSION; 0: auto */
    /* A header made again for every call, e.g. an API key read from the
     * secrets service so that a rotated key is used: appends one "Name:
     * value" line to out (grow out with kp_buf_reserve first: the engine wipes
     * it when the call ends, not copies a realloc left behind). Runs on the
     * loop thread in start(); its failure fails start(). NULL: none. */
    kp_status (*call_header)(void *ud, kp_buf *out, kp_err *err);
    void *call_header_ud;
} kp_llm_engine_spec;

/*
 * llm.h's values: 3 tries, backoff base 1000 ms (KOUMPA_LLM_RETRY_BASE_MS
 * overrides it), at most 60 s between tries, connect 10 s, idle 60 s
 * (KOUMPA_LLM_IDLE_TIMEOUT_MS overrides it), total 10 min.
 */
void kp_llm_engine_default_tuning(kp_llm_tuning *t);

/* The configuration's KOUMPA_LLM_HTTP_VERSION (validated at start-up); auto when unset. */
kp_http_version kp_llm_http_version(const kp_config *cfg);

/* Creates a provider whose transfers run on loop. Free with (*out)->ops->free(*out). */
kp_status kp_llm_engine_new(const kp_llm_engine_spec *spec, kp_loop *loop, kp_llm **out, kp_err *err);

/* Calls of an engine-made provider in flight (started, no final callback yet, not cancelled). */
size_t kp_llm_engine_active(const kp_llm *llm);

#endif
