/*
 * test_openai_events.c - OpenAI-compatible chat completions streaming, fed
 * through the SSE parser whole and cut at every byte position; and the
 * request body builder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "llm/openai_events.h"
#include "llm/sse.h"

#define CHUNK_HEAD                                                                                                     \
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,"                      \
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\","

/* The documented shape, with usage requested through stream_options. */
static const char STREAM[] = CHUNK_HEAD
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
    ": OPENROUTER PROCESSING\n\n" CHUNK_HEAD
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,"
    "\"finish_reason\":null}],\"usage\":null}\n\n" CHUNK_HEAD
    "\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"thinking...\",\"content\":null},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n" CHUNK_HEAD
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" w\xC3\xB6rld \xE6\x97\xA5\xE6\x9C\xAC "
    "\\ud83d\\ude00\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
    "event: some_vendor_extension\ndata: {\"whatever\":1}\n\n" CHUNK_HEAD
    "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":null}\n\n" CHUNK_HEAD
    "\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21,"
    "\"prompt_tokens_details\":{\"cached_tokens\":3},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n"
    "data: [DONE]\n\n"
    "data: {\"after\":\"done is ignored\"}\n\n";

typedef struct sink {
    kp_buf text;
} sink;

static kp_status on_text(void *ud, const char *text, size_t len, kp_err *err)
{
    (void)err;
    sink *s = ud;
    json_t *check = json_stringn(text, len); /* each piece is valid UTF-8 */
    assert_non_null(check);
    json_decref(check);
    kp_buf_append(&s->text, text, len);
    return KP_OK;
}

typedef struct outcome {
    kp_llm_result result;
    char finish_reason[64];
    kp_status status;
    char err[256];
    char text[512];
    int stopped;
} outcome;

static void run(const char *in, size_t n, const size_t *cuts, size_t ncuts, outcome *o)
{
    sink s = {KP_BUF_INIT};
    kp_openai oa;
    kp_sse p;
    kp_err err;
    kp_openai_init(&oa, on_text, &s);
    kp_sse_init(&p, kp_openai_on_sse_event, &oa, 0);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        assert_int_equal(kp_sse_feed(&p, in + at, end - at, &err), KP_OK);
        at = end;
    }
    kp_sse_finish(&p);
    memset(o, 0, sizeof *o);
    memcpy(&o->result, &oa.result, sizeof o->result);
    memcpy(o->finish_reason, oa.finish_reason, sizeof o->finish_reason);
    o->status = oa.status;
    snprintf(o->err, sizeof o->err, "%s", oa.status == KP_OK ? "" : oa.err.msg);
    snprintf(o->text, sizeof o->text, "%s", kp_buf_cstr(&s.text));
    o->stopped = kp_sse_stopped(&p);
    kp_sse_free(&p);
    kp_buf_free(&s.text);
}

static void assert_same(const outcome *a, const outcome *b)
{
    assert_string_equal(a->text, b->text);
    assert_int_equal(a->status, b->status);
    assert_string_equal(a->err, b->err);
    assert_int_equal(a->stopped, b->stopped);
    assert_string_equal(a->finish_reason, b->finish_reason);
    assert_memory_equal(&a->result, &b->result, sizeof a->result);
}

/* Whole, byte by byte, and cut once at every position. */
static void run_all_ways(const char *in, outcome *whole)
{
    size_t n = strlen(in);
    outcome o;
    run(in, n, NULL, 0, whole);
    size_t *bytes = malloc(n * sizeof *bytes + 1);
    assert_non_null(bytes);
    for (size_t i = 0; i + 1 < n; i++)
        bytes[i] = i + 1;
    run(in, n, bytes, n - 1, &o);
    assert_same(whole, &o);
    free(bytes);
    for (size_t i = 0; i <= n; i++) {
        size_t cut[1] = {i};
        run(in, n, cut, 1, &o);
        assert_same(whole, &o);
    }
}

static void test_stream(void **state)
{
    (void)state;
    outcome o;
    run_all_ways(STREAM, &o);
    assert_int_equal(o.status, KP_OK);
    assert_string_equal(o.text, "Hello w\xC3\xB6rld \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80");
    assert_string_equal(o.result.message_id, "chatcmpl-123");
    assert_string_equal(o.result.model, "gpt-4o-mini-2024-07-18");
    assert_string_equal(o.finish_reason, "stop");
    assert_string_equal(o.result.stop_reason, "end_turn");
    assert_int_equal(o.result.input_tokens, 9);
    assert_int_equal(o.result.output_tokens, 12);
    assert_int_equal(o.result.cache_read_input_tokens, 3);
    assert_int_equal(o.result.done, 1);
    assert_int_equal(o.stopped, 1);
    assert_string_equal(o.result.error_type, "");
}

static void test_finish_reasons(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"length", "max_tokens"},
        {"stop", "end_turn"},
        {"content_filter", "refusal"},
        {"tool_calls", "tool_use"},
        {"something_else", "something_else"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char in[512];
        snprintf(in, sizeof in,
                 "data: "
                 "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"%s\"}]}\n\n"
                 "data: [DONE]\n\n",
                 cases[i][0]);
        outcome o;
        run_all_ways(in, &o);
        assert_string_equal(o.text, "x");
        assert_string_equal(o.finish_reason, cases[i][0]);
        assert_string_equal(o.result.stop_reason, cases[i][1]);
        assert_int_equal(o.result.done, 1);
    }
}

static void test_no_done_means_not_done(void **state)
{
    (void)state;
    outcome o;
    run_all_ways("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"},\"finish_reason\":null}]}\n\n",
                 &o);
    assert_string_equal(o.text, "partial");
    assert_int_equal(o.result.done, 0);
    assert_string_equal(o.result.stop_reason, "");
    assert_int_equal(o.stopped, 0);
}

static void test_error_chunk(void **state)
{
    (void)state;
    outcome o;
    run_all_ways("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n"
                 "data: {\"error\":{\"message\":\"The server had an error while processing your request.\","
                 "\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"
                 "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n",
                 &o);
    assert_int_equal(o.status, KP_EUNAVAILABLE);
    assert_string_equal(o.text, "a");
    assert_string_equal(o.result.error_type, "server_error");
    assert_string_equal(o.result.error_message, "The server had an error while processing your request.");
    assert_non_null(strstr(o.err, "server_error"));
    assert_int_equal(o.stopped, 1);

    run_all_ways("data: {\"error\":{\"message\":\"Rate limit reached\",\"code\":\"rate_limit_exceeded\"}}\n\n", &o);
    assert_string_equal(o.result.error_type, "rate_limit_exceeded");
    run_all_ways("data: {\"error\":\"upstream timed out\"}\n\n", &o);
    assert_int_equal(o.status, KP_EUNAVAILABLE);
    assert_string_equal(o.result.error_type, "error");
    assert_string_equal(o.result.error_message, "upstream timed out");
    run_all_ways("data: {\"object\":\"error\",\"message\":\"max_tokens is too large\",\"type\":\"BadRequestError\","
                 "\"param\":null,\"code\":400}\n\n",
                 &o);
    assert_string_equal(o.result.error_type, "BadRequestError");
    assert_string_equal(o.result.error_message, "max_tokens is too large");
}

static void test_error_event(void **state)
{
    (void)state;
    outcome o;
    run_all_ways("event: error\ndata: {\"error\":{\"type\":\"overloaded\",\"message\":\"busy\"}}\n\n", &o);
    assert_int_equal(o.status, KP_EUNAVAILABLE);
    assert_string_equal(o.result.error_type, "overloaded");
    assert_string_equal(o.result.error_message, "busy");
    run_all_ways("event: error\ndata: Internal Server Error\n\n", &o);
    assert_int_equal(o.status, KP_EUNAVAILABLE);
    assert_string_equal(o.result.error_message, "Internal Server Error");
}

/* Valid UTF-8 (what the server builds JSON from), NUL-terminated within cap. */
static void assert_utf8(const char *s, size_t cap)
{
    assert_true(strnlen(s, cap) < cap);
    json_t *j = json_string(s);
    assert_non_null(j);
    json_decref(j);
}

/* Found by fuzzing (tests/fuzz/corpus/fuzz_events/crash-6b36...): an error
 * event whose data is not UTF-8 was copied byte for byte into error_message,
 * and a long message was cut inside a character. */
static void test_error_strings_stay_utf8(void **state)
{
    (void)state;
    outcome o;
    run_all_ways("event: error\ndata: bad \xff\xfe bytes\n\n", &o);
    assert_int_equal(o.status, KP_EUNAVAILABLE);
    assert_utf8(o.result.error_message, sizeof o.result.error_message);
    assert_non_null(strstr(o.result.error_message, "not UTF-8"));

    /* 300 bytes of two-byte characters: a cut at 255 bytes falls inside one */
    kp_buf in = KP_BUF_INIT;
    kp_buf_puts(&in, "data: {\"error\":{\"type\":\"x\",\"message\":\"");
    for (int i = 0; i < 150; i++)
        kp_buf_puts(&in, "\xC3\xA9");
    kp_buf_puts(&in, "\"}}\n\n");
    run(in.data, in.len, NULL, 0, &o);
    assert_int_equal(o.status, KP_EUNAVAILABLE);
    assert_utf8(o.result.error_message, sizeof o.result.error_message);
    assert_int_equal(strlen(o.result.error_message), 254); /* 127 whole characters */

    kp_buf_reset(&in);
    kp_buf_puts(&in, "data: {\"id\":\"");
    for (int i = 0; i < 100; i++)
        kp_buf_puts(&in, "\xE6\x97\xA5");
    kp_buf_puts(&in, "\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"");
    for (int i = 0; i < 40; i++)
        kp_buf_puts(&in, "\xC3\xA9");
    kp_buf_puts(&in, "\"}]}\n\n");
    run(in.data, in.len, NULL, 0, &o);
    assert_int_equal(o.status, KP_OK);
    assert_utf8(o.result.message_id, sizeof o.result.message_id);
    assert_int_equal(strlen(o.result.message_id), 126);
    assert_utf8(o.finish_reason, sizeof o.finish_reason);
    assert_utf8(o.result.stop_reason, sizeof o.result.stop_reason);
    kp_buf_free(&in);
}

/* Counts outside [0, KP_LLM_MAX_TOKEN_COUNT] are not believed (sums of them would overflow). */
static void test_implausible_usage_is_ignored(void **state)
{
    (void)state;
    outcome o;
    run_all_ways("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12}}\n\n"
                 "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":9223372036854775807,"
                 "\"prompt_tokens_details\":{\"cached_tokens\":-1}}}\n\n",
                 &o);
    assert_int_equal(o.result.input_tokens, 9);
    assert_int_equal(o.result.output_tokens, 12);
    assert_int_equal(o.result.cache_read_input_tokens, 0);
}

static void test_malformed_chunk(void **state)
{
    (void)state;
    outcome o;
    run_all_ways("data: {\"choices\":[\n\n", &o);
    assert_int_equal(o.status, KP_EIO);
    run_all_ways("data: [DONE] \n\n", &o); /* not exactly [DONE] */
    assert_int_equal(o.status, KP_EIO);
    assert_int_equal(o.result.done, 0);
}

/* ---- request body ---- */

static void test_build_request(void **state)
{
    (void)state;
    kp_llm_msg msgs[] = {{"user", "Make a game \xF0\x9F\x8E\xAE"}, {"assistant", "ok"}, {"user", "go"}};
    kp_buf out = KP_BUF_INIT;
    kp_err err;
    assert_int_equal(kp_openai_build_request("gpt-x", 16000, "You write web apps.", msgs, 3, &out, &err), KP_OK);
    json_t *j = json_loads(kp_buf_cstr(&out), 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "model")), "gpt-x");
    assert_int_equal(json_integer_value(json_object_get(j, "max_tokens")), 16000);
    assert_true(json_is_true(json_object_get(j, "stream")));
    assert_true(json_is_true(json_object_get(json_object_get(j, "stream_options"), "include_usage")));
    json_t *m = json_object_get(j, "messages");
    assert_int_equal(json_array_size(m), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "role")), "system");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "content")), "You write web apps.");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "content")),
                        "Make a game \xF0\x9F\x8E\xAE");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 2), "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 3), "content")), "go");
    assert_int_equal(json_object_size(j), 5); /* no sampling parameters */
    assert_null(json_object_get(j, "temperature"));
    json_decref(j);

    kp_buf_reset(&out);
    assert_int_equal(kp_openai_build_request("gpt-x", 10, NULL, msgs, 1, &out, &err), KP_OK);
    assert_string_equal(
        kp_buf_cstr(&out),
        "{\"model\":\"gpt-x\",\"messages\":[{\"role\":\"user\",\"content\":\"Make a game \xF0\x9F\x8E\xAE\"}],"
        "\"max_tokens\":10,\"stream\":true,\"stream_options\":{\"include_usage\":true}}");

    kp_buf_reset(&out);
    kp_llm_msg bad = {"system", "x"};
    assert_int_equal(kp_openai_build_request("gpt-x", 10, NULL, &bad, 1, &out, &err), KP_EINVAL);
    assert_int_equal(kp_openai_build_request("gpt-x", 10, "\xC3", msgs, 1, &out, &err), KP_EINVAL);
    assert_int_equal(kp_openai_build_request("gpt-x", 0, NULL, msgs, 1, &out, &err), KP_EINVAL);
    assert_int_equal(kp_openai_build_request("", 10, NULL, msgs, 1, &out, &err), KP_EINVAL);
    assert_int_equal(kp_openai_build_request("\xFF", 10, NULL, msgs, 1, &out, &err), KP_EINVAL);
    assert_int_equal(out.len, 0);
    kp_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_finish_reasons),
        cmocka_unit_test(test_no_done_means_not_done),
        cmocka_unit_test(test_error_chunk),
        cmocka_unit_test(test_error_event),
        cmocka_unit_test(test_error_strings_stay_utf8),
        cmocka_unit_test(test_implausible_usage_is_ignored),
        cmocka_unit_test(test_malformed_chunk),
        cmocka_unit_test(test_build_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
