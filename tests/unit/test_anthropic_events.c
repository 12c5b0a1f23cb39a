/*
 * test_anthropic_events.c - Anthropic Messages streaming events, fed through
 * the SSE parser in the documented wire format, whole and cut at every byte
 * position; and the request body builder.
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
#include "llm/anthropic_events.h"
#include "llm/sse.h"

/* The stream from the API documentation, verbatim. */
#define DOC_STREAM                                                                                                     \
    "event: message_start\n"                                                                                           \
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":"                   \
    "\"assistant\",\"content\":[],\"model\":\"claude-sonnet-5-5\",\"stop_reason\":null,\"stop_sequence\":"             \
    "null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n"                                                     \
    "\n"                                                                                                               \
    "event: content_block_start\n"                                                                                     \
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n"       \
    "\n"                                                                                                               \
    "event: ping\n"                                                                                                    \
    "data: {\"type\": \"ping\"}\n"                                                                                     \
    "\n"                                                                                                               \
    "event: content_block_delta\n"                                                                                     \
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n"    \
    "\n"                                                                                                               \
    "event: content_block_stop\n"                                                                                      \
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"                                                            \
    "\n"                                                                                                               \
    "event: message_delta\n"                                                                                           \
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},"               \
    "\"usage\":{\"output_tokens\":15}}\n"                                                                              \
    "\n"                                                                                                               \
    "event: message_stop\n"                                                                                            \
    "data: {\"type\":\"message_stop\"}\n"                                                                              \
    "\n"

typedef struct sink {
    kp_buf text;
    int calls;
    int fail_at; /* on_text fails on this call (1-based); 0 = never */
} sink;

static kp_status on_text(void *ud, const char *text, size_t len, kp_err *err)
{
    sink *s = ud;
    s->calls++;
    if (s->fail_at && s->calls == s->fail_at)
        return kp_err_set(err, KP_ETOOLARGE, "sink full");
    /* every piece must be valid UTF-8 on its own */
    json_t *check = json_stringn(text, len);
    assert_non_null(check);
    json_decref(check);
    kp_buf_append(&s->text, text, len);
    return KP_OK;
}

typedef struct outcome {
    kp_llm_result result;
    kp_status status;
    char err[256];
    char text[512];
    int stopped;
} outcome;

static void run(const char *in, size_t n, size_t cut1, size_t cut2, int fail_at, outcome *o)
{
    sink s = {KP_BUF_INIT, 0, fail_at};
    kp_anthropic a;
    kp_sse p;
    kp_err err;
    kp_anthropic_init(&a, on_text, &s);
    kp_sse_init(&p, kp_anthropic_on_sse_event, &a, 0);
    assert_int_equal(kp_sse_feed(&p, in, cut1, &err), KP_OK);
    assert_int_equal(kp_sse_feed(&p, in + cut1, cut2 - cut1, &err), KP_OK);
    assert_int_equal(kp_sse_feed(&p, in + cut2, n - cut2, &err), KP_OK);
    kp_sse_finish(&p);
    memset(o, 0, sizeof *o);
    memcpy(&o->result, &a.result, sizeof o->result);
    o->status = a.status;
    snprintf(o->err, sizeof o->err, "%s", a.status == KP_OK ? "" : a.err.msg);
    snprintf(o->text, sizeof o->text, "%s", kp_buf_cstr(&s.text));
    o->stopped = kp_sse_stopped(&p);
    kp_sse_free(&p);
    kp_buf_free(&s.text);
}

static void run_bytewise(const char *in, size_t n, outcome *o)
{
    sink s = {KP_BUF_INIT, 0, 0};
    kp_anthropic a;
    kp_sse p;
    kp_err err;
    kp_anthropic_init(&a, on_text, &s);
    kp_sse_init(&p, kp_anthropic_on_sse_event, &a, 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(kp_sse_feed(&p, in + i, 1, &err), KP_OK);
    kp_sse_finish(&p);
    memset(o, 0, sizeof *o);
    memcpy(&o->result, &a.result, sizeof o->result);
    o->status = a.status;
    snprintf(o->err, sizeof o->err, "%s", a.status == KP_OK ? "" : a.err.msg);
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
    assert_memory_equal(&a->result, &b->result, sizeof a->result);
}

/* Runs `in` whole, then byte by byte and cut at every pair of positions. */
static void run_all_ways(const char *in, int fail_at, outcome *whole)
{
    size_t n = strlen(in);
    outcome o;
    run(in, n, n, n, fail_at, whole);
    if (!fail_at) {
        run_bytewise(in, n, &o);
        assert_same(whole, &o);
    }
    for (size_t i = 0; i <= n; i++) {
        run(in, n, i, i, fail_at, &o);
        assert_same(whole, &o);
    }
    /* a sample of three-way cuts (all of them would be slow for long streams) */
    for (size_t i = 0; i <= n; i += 29)
        for (size_t j = i; j <= n; j += 7) {
            run(in, n, i, j, fail_at, &o);
            assert_same(whole, &o);
        }
}

static void test_documented_stream(void **state)
{
    (void)state;
    outcome o;
    run_all_ways(DOC_STREAM, 0, &o);
    assert_int_equal(o.status, KP_OK);
    assert_string_equal(o.text, "Hello");
    assert_string_equal(o.result.message_id, "msg_1");
    assert_string_equal(o.result.model, "claude-sonnet-5-5");
    assert_int_equal(o.result.input_tokens, 25);
    assert_int_equal(o.result.output_tokens, 15);
    assert_string_equal(o.result.stop_reason, "end_turn");
    assert_string_equal(o.result.error_type, "");
    assert_int_equal(o.result.done, 1);
    assert_int_equal(o.stopped, 1); /* message_stop ends the stream */
}

static void test_ignores_other_blocks_deltas_and_unknown_events(void **state)
{
    (void)state;
    const char *in =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\","
        "\"content\":[],\"model\":\"claude-opus-4-1\",\"stop_reason\":null,\"stop_sequence\":null,"
        "\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":400,"
        "\"output_tokens\":2}}}\n\n"
        "event: content_block_start\n"
        "data: "
        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n"
        "event: content_block_delta\n"
        "data: "
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}"
        "\n\n"
        "event: content_block_delta\n"
        "data: "
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"Eq==\"}}"
        "\n\n"
        "event: content_block_stop\n"
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: content_block_start\n"
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"W\\u00f6rld "
        "\"}}\n\n"
        "event: future_event_type\n"
        "data: this is not even JSON\n\n"
        "event: content_block_delta\n"
        "data: "
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"\xE2\x80\x94 "
        "\xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80\"}}\n\n"
        "event: content_block_delta\n"
        "data: "
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"citations_delta\",\"citation\":{}}}\n\n"
        "event: content_block_stop\n"
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
        "event: content_block_start\n"
        "data: "
        "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":"
        "\"x\",\"input\":{}}}\n\n"
        "event: content_block_delta\n"
        "data: "
        "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{"
        "\\\"a\\\"\"}}\n\n"
        "event: content_block_stop\n"
        "data: {\"type\":\"content_block_stop\",\"index\":2}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},"
        "\"usage\":{\"output_tokens\":4096}}\n\n"
        "event: message_stop\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    outcome o;
    run_all_ways(in, 0, &o);
    assert_int_equal(o.status, KP_OK);
    assert_string_equal(o.text, "W\xC3\xB6rld \xE2\x80\x94 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80");
    assert_string_equal(o.result.message_id, "msg_2");
    assert_int_equal(o.result.input_tokens, 472);
    assert_int_equal(o.result.cache_creation_input_tokens, 10);
    assert_int_equal(o.result.cache_read_input_tokens, 400);
    assert_int_equal(o.result.output_tokens, 4096);
    assert_string_equal(o.result.stop_reason, "max_tokens");
    assert_int_equal(o.result.done, 1);
}

static void test_error_event(void **state)
{
    (void)state;
    const char *in =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_3\",\"type\":\"message\",\"role\":\"assistant\","
        "\"content\":[],\"model\":\"claude-sonnet-5-5\",\"stop_reason\":null,\"stop_sequence\":null,"
        "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n"
        "event: ping\n"
        "data: {\"type\": \"ping\"}\n\n"
        "event: error\n"
        "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n"
        "event: content_block_delta\n"
        "data: "
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"late\"}}\n\n";
    outcome o;
    run_all_ways(in, 0, &o);
    assert_int_equal(o.status, KP_EUNAVAILABLE);
    assert_string_equal(o.result.error_type, "overloaded_error");
    assert_string_equal(o.result.error_message, "Overloaded");
    assert_non_null(strstr(o.err, "overloaded_error"));
    assert_int_equal(o.result.done, 0);
    assert_int_equal(o.stopped, 1);
    assert_string_equal(o.text, ""); /* nothing after the error is interpreted */
}

static void test_unnamed_events_use_the_data_type(void **state)
{
    (void)state;
    const char *in =
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\n\n"
        "data: not json\n\n"
        "data: {\"type\":\"something_new\"}\n\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    outcome o;
    run_all_ways(in, 0, &o);
    assert_int_equal(o.status, KP_OK);
    assert_string_equal(o.text, "a");
    assert_int_equal(o.result.done, 1);
}

static void test_initial_block_text_counts(void **state)
{
    (void)state;
    const char *in =
        "event: content_block_start\n"
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"Hi "
        "\"}}\n\n"
        "event: content_block_delta\n"
        "data: "
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"there\"}}\n\n";
    outcome o;
    run_all_ways(in, 0, &o);
    assert_string_equal(o.text, "Hi there");
    assert_int_equal(o.result.done, 0);
    assert_int_equal(o.stopped, 0);
}

static void test_malformed_known_event(void **state)
{
    (void)state;
    outcome o;
    run_all_ways("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\n\n", 0, &o);
    assert_int_equal(o.status, KP_EIO);
    assert_non_null(strstr(o.err, "content_block_delta"));
    run_all_ways("event: message_delta\ndata: [1,2]\n\n", 0, &o);
    assert_int_equal(o.status, KP_EIO);
}

static void test_text_callback_failure_stops(void **state)
{
    (void)state;
    outcome o;
    run_all_ways(DOC_STREAM, 1, &o);
    assert_int_equal(o.status, KP_ETOOLARGE);
    assert_string_equal(o.err, "sink full");
    assert_int_equal(o.stopped, 1);
    assert_int_equal(o.result.done, 0);
    assert_string_equal(o.result.stop_reason, ""); /* message_delta came after the failure */
}

static void test_direct_event_calls(void **state)
{
    (void)state;
    kp_anthropic a;
    kp_err err;
    kp_anthropic_init(&a, NULL, NULL); /* no text callback: text is dropped */
    const char *d = "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}";
    assert_int_equal(kp_anthropic_event(&a, "content_block_delta", d, strlen(d), &err), KP_OK);
    const char *e = "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}";
    assert_int_equal(kp_anthropic_event(&a, "error", e, strlen(e), &err), KP_EUNAVAILABLE);
    assert_int_equal(err.status, KP_EUNAVAILABLE);
    assert_string_equal(a.result.error_type, "api_error");
    assert_string_equal(a.result.error_message, "Internal server error");
}

/* A long error message or model name is cut between characters, never inside one. */
static void test_long_strings_cut_between_characters(void **state)
{
    (void)state;
    kp_anthropic a;
    kp_err err;
    kp_buf d = KP_BUF_INIT;
    kp_anthropic_init(&a, NULL, NULL);
    kp_buf_puts(&d, "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"");
    for (int i = 0; i < 64; i++)
        kp_buf_puts(&d, "\xF0\x9F\x98\x80");
    kp_buf_puts(&d, "\",\"usage\":{\"input_tokens\":-3,\"output_tokens\":1000000000001}}}");
    assert_int_equal(kp_anthropic_event(&a, "message_start", d.data, d.len, &err), KP_OK);
    assert_int_equal(strlen(a.result.model), 124); /* 31 whole characters of 4 bytes */
    json_t *j = json_string(a.result.model);
    assert_non_null(j);
    json_decref(j);
    assert_int_equal(a.result.input_tokens, 0); /* implausible counts are not believed */
    assert_int_equal(a.result.output_tokens, 0);

    kp_buf_reset(&d);
    kp_buf_puts(&d, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"ab");
    for (int i = 0; i < 100; i++)
        kp_buf_puts(&d, "\xE6\x97\xA5");
    kp_buf_puts(&d, "\"}}");
    assert_int_equal(kp_anthropic_event(&a, "error", d.data, d.len, &err), KP_EUNAVAILABLE);
    assert_int_equal(strlen(a.result.error_message), 254); /* "ab" + 84 characters of 3 bytes */
    j = json_string(a.result.error_message);
    assert_non_null(j);
    json_decref(j);
    kp_buf_free(&d);
}

/* jansson refuses \u0000 and unpaired surrogates: they become U+FFFD instead of failing the stream. */
static void test_unencodable_escapes_become_replacement_characters(void **state)
{
    (void)state;
    static const struct {
        const char *json_text, *bytes;
    } cases[] = {
        {"\\u0000", "\xEF\xBF\xBD"},
        {"x\\ud800", "x\xEF\xBF\xBD"},
        {"\\udfff\\u0041", "\xEF\xBF\xBD"
                           "A"},
        {"\\ud800\\ud83d\\ude00", "\xEF\xBF\xBD\xF0\x9F\x98\x80"}, /* a high half, then a pair */
        {"\\ud83d\\ude00\\udc00", "\xF0\x9F\x98\x80\xEF\xBF\xBD"}, /* a pair, then a low half */
        {"\\\\u0000 \\\\\\u0000", "\\u0000 \\\xEF\xBF\xBD"},       /* an escaped backslash is not an escape */
        {"\\\"\\ud800\\\"", "\"\xEF\xBF\xBD\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sink s = {KP_BUF_INIT, 0, 0};
        kp_anthropic a;
        kp_err err;
        kp_buf d = KP_BUF_INIT;
        kp_anthropic_init(&a, on_text, &s);
        kp_buf_printf(
            &d, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"%s\"}}",
            cases[i].json_text);
        assert_int_equal(kp_anthropic_event(&a, "content_block_delta", d.data, d.len, &err), KP_OK);
        assert_string_equal(kp_buf_cstr(&s.text), cases[i].bytes);
        kp_buf_free(&d);
        kp_buf_free(&s.text);
    }
    /* what is not JSON stays refused */
    kp_anthropic a;
    kp_err err;
    kp_anthropic_init(&a, NULL, NULL);
    const char *bad = "{\"type\":\"message_start\",\"x\":\"\\u0000\",}";
    assert_int_equal(kp_anthropic_event(&a, "message_start", bad, strlen(bad), &err), KP_EIO);
}

/* ---- request body ---- */

static json_t *build(const char *model, int64_t max_tokens, const char *system, const kp_llm_msg *m, size_t n,
                     kp_status expect)
{
    kp_buf out = KP_BUF_INIT;
    kp_err err;
    kp_status st = kp_anthropic_build_request(model, max_tokens, system, m, n, &out, &err);
    assert_int_equal(st, expect);
    json_t *j = NULL;
    if (st == KP_OK) {
        j = json_loads(kp_buf_cstr(&out), 0, NULL);
        assert_non_null(j);
    } else {
        assert_int_equal(out.len, 0);
        assert_true(err.msg[0] != '\0');
    }
    kp_buf_free(&out);
    return j;
}

static void test_build_request(void **state)
{
    (void)state;
    kp_llm_msg msgs[] = {
        {"user", "Make a to-do app \xE2\x9C\x93"},
        {"assistant", "<file path=\"index.html\">\n"},
    };
    json_t *j = build("claude-sonnet-5-5", 32000, "You write web apps.", msgs, 2, KP_OK);
    assert_string_equal(json_string_value(json_object_get(j, "model")), "claude-sonnet-5-5");
    assert_int_equal(json_integer_value(json_object_get(j, "max_tokens")), 32000);
    assert_string_equal(json_string_value(json_object_get(j, "system")), "You write web apps.");
    assert_true(json_is_true(json_object_get(j, "stream")));
    json_t *m = json_object_get(j, "messages");
    assert_int_equal(json_array_size(m), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "role")), "user");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "content")),
                        "Make a to-do app \xE2\x9C\x93");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "content")),
                        "<file path=\"index.html\">\n");
    /* exactly these keys: never temperature, top_p or top_k */
    assert_int_equal(json_object_size(j), 5);
    assert_null(json_object_get(j, "temperature"));
    assert_null(json_object_get(j, "top_p"));
    assert_null(json_object_get(j, "top_k"));
    json_decref(j);

    j = build("m", 1, NULL, msgs, 1, KP_OK);
    assert_null(json_object_get(j, "system"));
    assert_int_equal(json_object_size(j), 4);
    json_decref(j);
    j = build("m", 1, "", msgs, 1, KP_OK);
    assert_null(json_object_get(j, "system"));
    json_decref(j);
}

static void test_build_request_appends(void **state)
{
    (void)state;
    kp_llm_msg msg = {"user", "hi"};
    kp_buf out = KP_BUF_INIT;
    kp_err err;
    kp_buf_puts(&out, "prefix:");
    assert_int_equal(kp_anthropic_build_request("m", 5, NULL, &msg, 1, &out, &err), KP_OK);
    assert_string_equal(
        kp_buf_cstr(&out),
        "prefix:{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"stream\":true}");
    kp_buf_free(&out);
}

static void test_build_request_rejects(void **state)
{
    (void)state;
    kp_llm_msg ok = {"user", "hi"};
    kp_llm_msg bad_role = {"system", "hi"};
    kp_llm_msg no_role = {NULL, "hi"};
    kp_llm_msg no_content = {"user", NULL};
    kp_llm_msg bad_utf8 = {"user", "caf\xC3"};
    assert_null(build("", 5, NULL, &ok, 1, KP_EINVAL));
    assert_null(build(NULL, 5, NULL, &ok, 1, KP_EINVAL));
    assert_null(build("m", 0, NULL, &ok, 1, KP_EINVAL));
    assert_null(build("m", 5, NULL, &ok, 0, KP_EINVAL));
    assert_null(build("m", 5, NULL, &bad_role, 1, KP_EINVAL));
    assert_null(build("m", 5, NULL, &no_role, 1, KP_EINVAL));
    assert_null(build("m", 5, NULL, &no_content, 1, KP_EINVAL));
    assert_null(build("m", 5, NULL, &bad_utf8, 1, KP_EINVAL));
    assert_null(build("m", 5, "sys\xFF", &ok, 1, KP_EINVAL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_documented_stream),
        cmocka_unit_test(test_ignores_other_blocks_deltas_and_unknown_events),
        cmocka_unit_test(test_error_event),
        cmocka_unit_test(test_unnamed_events_use_the_data_type),
        cmocka_unit_test(test_initial_block_text_counts),
        cmocka_unit_test(test_malformed_known_event),
        cmocka_unit_test(test_text_callback_failure_stops),
        cmocka_unit_test(test_direct_event_calls),
        cmocka_unit_test(test_long_strings_cut_between_characters),
        cmocka_unit_test(test_unencodable_escapes_become_replacement_characters),
        cmocka_unit_test(test_build_request),
        cmocka_unit_test(test_build_request_appends),
        cmocka_unit_test(test_build_request_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
