/*
 * test_sse.c - the Server-Sent Events parser: each stream is fed whole, one
 * byte at a time, and cut at every one and every pair of positions; the events
 * seen must be the same every time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "llm/sse.h"

/* Records events as "type|data\n" (data escaped: \n -> "\\n", NUL -> "\\0"). */
typedef struct rec {
    kp_buf out;
    int stop_after; /* stop (return 7) after this many events; 0 = never */
    int count;
} rec;

static int on_event(void *ud, const char *event, const char *data, size_t len)
{
    rec *r = ud;
    assert_int_equal(data[len], '\0');
    kp_buf_puts(&r->out, event);
    kp_buf_puts(&r->out, "|");
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n')
            kp_buf_puts(&r->out, "\\n");
        else if (data[i] == '\0')
            kp_buf_puts(&r->out, "\\0");
        else
            kp_buf_append(&r->out, &data[i], 1);
    }
    kp_buf_puts(&r->out, "\n");
    r->count++;
    return r->stop_after && r->count >= r->stop_after ? 7 : 0;
}

typedef struct result {
    char events[2048];
    int discarded;
    int stopped;
    char last_id[64];
    long retry;
} result;

/* Feeds `in` cut at the given positions (ascending), then finishes. */
static void run(const char *in, size_t n, const size_t *cuts, size_t ncuts, int stop_after, result *res)
{
    rec r = {KP_BUF_INIT, stop_after, 0};
    kp_sse p;
    kp_err err;
    kp_sse_init(&p, on_event, &r, 0);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        assert_int_equal(kp_sse_feed(&p, in + at, end - at, &err), KP_OK);
        at = end;
    }
    res->stopped = kp_sse_stopped(&p);
    res->discarded = kp_sse_finish(&p);
    snprintf(res->events, sizeof res->events, "%s", kp_buf_cstr(&r.out));
    snprintf(res->last_id, sizeof res->last_id, "%s", kp_sse_last_event_id(&p));
    res->retry = kp_sse_retry_ms(&p);
    kp_sse_free(&p);
    kp_buf_free(&r.out);
}

static void assert_same(const result *a, const result *b)
{
    assert_string_equal(a->events, b->events);
    assert_int_equal(a->discarded, b->discarded);
    assert_int_equal(a->stopped, b->stopped);
    assert_string_equal(a->last_id, b->last_id);
    assert_int_equal(a->retry, b->retry);
}

/* Checks the whole-feed result against `expected`, then every way of cutting. */
static void check_n(const char *in, size_t n, const char *expected, int expect_discarded, int stop_after)
{
    result whole, cut;
    run(in, n, NULL, 0, stop_after, &whole);
    assert_string_equal(whole.events, expected);
    assert_int_equal(whole.discarded, expect_discarded);

    size_t *bytes = malloc((n + 1) * sizeof *bytes);
    assert_non_null(bytes);
    for (size_t i = 0; i + 1 < n; i++)
        bytes[i] = i + 1;
    run(in, n, bytes, n ? n - 1 : 0, stop_after, &cut);
    assert_same(&whole, &cut);
    free(bytes);

    for (size_t i = 0; i <= n; i++) {
        size_t c1[1] = {i};
        run(in, n, c1, 1, stop_after, &cut);
        assert_same(&whole, &cut);
        for (size_t j = i; j <= n && n <= 300; j++) {
            size_t c2[2] = {i, j};
            run(in, n, c2, 2, stop_after, &cut);
            assert_same(&whole, &cut);
        }
    }
}

static void check(const char *in, const char *expected, int expect_discarded)
{
    check_n(in, strlen(in), expected, expect_discarded, 0);
}

static void test_single_event(void **state)
{
    (void)state;
    check("data: hello\n\n", "message|hello\n", 0);
    check("data:hello\n\n", "message|hello\n", 0);
    check("data:  two spaces\n\n", "message| two spaces\n", 0);
}

static void test_event_type_and_multiline_data(void **state)
{
    (void)state;
    check("event: add\ndata: a\ndata: b\n\n", "add|a\\nb\n", 0);
    check("data: one\n\nevent: x\ndata: two\n\ndata: three\n\n", "message|one\nx|two\nmessage|three\n", 0);
    check("event: a\nevent: b\ndata: d\n\n", "b|d\n", 0); /* the last event field wins */
}

static void test_line_endings(void **state)
{
    (void)state;
    check("data: a\r\n\r\n", "message|a\n", 0);
    check("data: a\r\rdata: b\n\ndata: c\r\ndata: d\r\r\n", "message|a\nmessage|b\nmessage|c\\nd\n", 0);
    /* CR LF LF: the CRLF ends the data line, the next LF is a blank line */
    check("data: x\r\n\n", "message|x\n", 0);
    /* LF CR: two line ends, the second one blank */
    check("data: y\n\r", "message|y\n", 0);
}

static void test_comments_and_unknown_fields(void **state)
{
    (void)state;
    check(": keep-alive\n\ndata: x\n\n", "message|x\n", 0);
    check("data: a\n: comment between\ndata: b\n\n", "message|a\\nb\n", 0);
    check("foo: bar\ndata: x\nDATA: no\n\n", "message|x\n", 0);
    check(":\n\n", "", 0);
}

static void test_fields_without_value(void **state)
{
    (void)state;
    check("data\n\n", "message|\n", 0);
    check("data\ndata\n\n", "message|\\n\n", 0);
    check("data:\n\n", "message|\n", 0);
    check("event\ndata: x\n\n", "message|x\n", 0); /* empty event type -> "message" */
}

static void test_event_without_data_is_not_dispatched(void **state)
{
    (void)state;
    check("event: lonely\n\ndata: y\n\n", "message|y\n", 0);
    check("\n\n\n", "", 0);
}

static void test_unterminated_event_is_discarded(void **state)
{
    (void)state;
    check("data: x\n", "", 1);
    check("data: x\n\ndata: partial", "message|x\n", 1);
    check("data: x\n\n", "message|x\n", 0);
}

static void test_id_and_retry(void **state)
{
    (void)state;
    result r;
    const char *in = "id: 42\nretry: 1500\ndata: x\n\nretry: 15x\nretry:\nid: 43\n\n";
    check(in, "message|x\n", 0);
    run(in, strlen(in), NULL, 0, 0, &r);
    assert_string_equal(r.last_id, "43"); /* an event without data still commits the id */
    assert_int_equal(r.retry, 1500);

    static const char nul_id[] = "id: 7\ndata: a\n\nid: a\0b\ndata: b\n\n";
    run(nul_id, sizeof nul_id - 1, NULL, 0, 0, &r);
    assert_string_equal(r.events, "message|a\nmessage|b\n");
    assert_string_equal(r.last_id, "7"); /* an id with NUL is ignored */

    /* so is an event type with NUL (found by fuzzing: it reached on_event as "") */
    static const char nul_type[] = "event: a\0b\ndata: c\n\nevent: \0\nevent: e\ndata: f\n\n";
    run(nul_type, sizeof nul_type - 1, NULL, 0, 0, &r);
    assert_string_equal(r.events, "message|c\ne|f\n");
}

static void test_bom(void **state)
{
    (void)state;
    check("\xEF\xBB\xBF"
          "data: x\n\n",
          "message|x\n", 0);
    /* only a leading BOM is skipped; elsewhere it is part of the field name */
    check("data: x\n\n\xEF\xBB\xBF"
          "data: y\n\n",
          "message|x\n", 0);
    /* a BOM prefix that turns out not to be one is kept */
    check("\xEF\xBB"
          "data: z\n\n",
          "", 0);
    check("\xEF"
          "\n"
          "data: z\n\n",
          "message|z\n", 0);
}

static void test_utf8_and_nul(void **state)
{
    (void)state;
    check("data: h\xC3\xA9llo \xE2\x80\x94 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80\n\n",
          "message|h\xC3\xA9llo \xE2\x80\x94 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80\n", 0);
    static const char in[] = "data: a\0b\n\n";
    check_n(in, sizeof in - 1, "message|a\\0b\n", 0, 0);
}

static void test_callback_stops(void **state)
{
    (void)state;
    const char *in = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    check_n(in, strlen(in), "message|1\n", 0, 1);
    result r;
    run(in, strlen(in), NULL, 0, 2, &r);
    assert_string_equal(r.events, "message|1\nmessage|2\n");
    assert_int_equal(r.stopped, 7);
}

static void test_anthropic_wire_format(void **state)
{
    (void)state;
    const char *in =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n"
        "\n"
        "event: ping\n"
        "data: {\"type\": \"ping\"}\n"
        "\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n"
        "\n";
    check(in,
          "message_start|{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n"
          "ping|{\"type\": \"ping\"}\n"
          "content_block_delta|{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
          "\"text\":\"Hello\"}}\n",
          0);
}

static void test_too_large(void **state)
{
    (void)state;
    rec r = {KP_BUF_INIT, 0, 0};
    kp_sse p;
    kp_err err;

    /* one long line, arriving in small pieces and never ending */
    kp_sse_init(&p, on_event, &r, 64);
    kp_status st = KP_OK;
    for (int i = 0; i < 100 && st == KP_OK; i++)
        st = kp_sse_feed(&p, "data: xxxx", 10, &err);
    assert_int_equal(st, KP_ETOOLARGE);
    assert_non_null(strstr(err.msg, "64"));
    /* the failure is sticky */
    assert_int_equal(kp_sse_feed(&p, "\n\n", 2, &err), KP_ETOOLARGE);
    assert_int_equal(r.count, 0);
    kp_sse_free(&p);

    /* many short data lines adding up */
    kp_sse_init(&p, on_event, &r, 64);
    st = KP_OK;
    for (int i = 0; i < 100 && st == KP_OK; i++)
        st = kp_sse_feed(&p, "data: 0123456789\n", 17, &err);
    assert_int_equal(st, KP_ETOOLARGE);
    kp_sse_free(&p);

    /* a 64-byte line is fine, a 65-byte one is not */
    kp_sse_init(&p, on_event, &r, 64);
    char line[80] = "data: ";
    memset(line + 6, 'y', 58);
    memcpy(line + 64, "\n\n", 3);
    assert_int_equal(kp_sse_feed(&p, line, strlen(line), &err), KP_OK);
    assert_int_equal(r.count, 1);
    kp_sse_free(&p);
    kp_sse_init(&p, on_event, &r, 64);
    memset(line + 6, 'y', 59);
    memcpy(line + 65, "\n\n", 3);
    assert_int_equal(kp_sse_feed(&p, line, strlen(line), &err), KP_ETOOLARGE);
    assert_int_equal(r.count, 1);
    kp_sse_free(&p);
    kp_buf_free(&r.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_event),
        cmocka_unit_test(test_event_type_and_multiline_data),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_comments_and_unknown_fields),
        cmocka_unit_test(test_fields_without_value),
        cmocka_unit_test(test_event_without_data_is_not_dispatched),
        cmocka_unit_test(test_unterminated_event_is_discarded),
        cmocka_unit_test(test_id_and_retry),
        cmocka_unit_test(test_bom),
        cmocka_unit_test(test_utf8_and_nul),
        cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_anthropic_wire_format),
        cmocka_unit_test(test_too_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
