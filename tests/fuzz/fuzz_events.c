/*
 * fuzz_events.c - libFuzzer target for the provider event parsers
 * (src/llm/anthropic_events.c, src/llm/openai_events.c).
 *
 * The input is a response body: it goes through the SSE parser into each
 * dialect's parser, as the engine feeds them (llm_engine.c). What the parsers
 * hand on must be fit for the rest of the server, which builds JSON from it:
 * every piece of text, and every string in the kp_llm_result (id, model, stop
 * reason, error type and message), is valid UTF-8 without U+0000; token counts
 * are within [0, KP_LLM_MAX_TOKEN_COUNT].
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "llm/anthropic_events.h"
#include "llm/openai_events.h"
#include "llm/sse.h"

/* Valid UTF-8 (jansson's check) without NUL. */
static int clean_text(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    json_decref(j);
    return j != NULL && memchr(s, '\0', len) == NULL;
}

static int clean_string(const char *s, size_t cap)
{
    size_t len = strnlen(s, cap);
    return len < cap && clean_text(s, len);
}

static kp_status on_text(void *ud, const char *text, size_t len, kp_err *err)
{
    (void)ud;
    (void)err;
    FZ_CHECK(len > 0 && clean_text(text, len), "on_text got an empty piece, or text that is not clean UTF-8");
    return KP_OK;
}

/* Token counts are what a provider reported, within reason. */
static int plausible_count(int64_t n)
{
    return n >= 0 && n <= KP_LLM_MAX_TOKEN_COUNT;
}

static void check_result(const kp_llm_result *r)
{
    FZ_CHECK(clean_string(r->message_id, sizeof r->message_id), "message_id is not clean UTF-8");
    FZ_CHECK(clean_string(r->model, sizeof r->model), "model is not clean UTF-8");
    FZ_CHECK(clean_string(r->stop_reason, sizeof r->stop_reason), "stop_reason is not clean UTF-8");
    FZ_CHECK(clean_string(r->error_type, sizeof r->error_type), "error_type is not clean UTF-8");
    FZ_CHECK(clean_string(r->error_message, sizeof r->error_message), "error_message is not clean UTF-8");
    FZ_CHECK(plausible_count(r->input_tokens) && plausible_count(r->output_tokens) &&
                 plausible_count(r->cache_creation_input_tokens) && plausible_count(r->cache_read_input_tokens),
             "a token count out of range");
}

static void feed(kp_sse_event_fn fn, void *parser, const uint8_t *data, size_t size)
{
    kp_sse p;
    kp_err err = {0};
    kp_sse_init(&p, fn, parser, 0);
    kp_sse_feed(&p, (const char *)data, size, &err);
    kp_sse_finish(&p);
    kp_sse_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kp_anthropic a;
    kp_openai o;
    kp_anthropic_init(&a, on_text, NULL);
    feed(kp_anthropic_on_sse_event, &a, data, size);
    check_result(&a.result);
    kp_openai_init(&o, on_text, NULL);
    feed(kp_openai_on_sse_event, &o, data, size);
    check_result(&o.result);
    FZ_CHECK(clean_string(o.finish_reason, sizeof o.finish_reason), "finish_reason is not clean UTF-8");
    return 0;
}
