/*
 * test_lambda_stream.c - a function URL's streamed answer without a Runtime
 * API (host/lambda/stream.h, outcome.h): the prelude and its 8 NULs, a
 * complete body, a stream pushed from another thread, a pulled stream asked
 * for its next piece only once the previous one was taken, a reader too
 * far behind (write() refused, the response given up), the deadline and a
 * shutdown ending the stream, the release; and what the events' end makes
 * of the invocation (the trailers' error type).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "core/buf.h"
#include "core/log.h"
#include "host/lambda/outcome.h"
#include "host/lambda/runtime.h"
#include "host/lambda/stream.h"

#define PRELUDE "{\"statusCode\":200}"
#define GENERATION                                                                                                     \
    "id: 1\nevent: project\ndata: {\"project_id\":\"prj_1\",\"version\":1}\n\n"                                        \
    ": keep-alive\n\n"                                                                                                 \
    "id: 2\nevent: delta\ndata: {\"text\":\"<file path=\\\"index.html\\\">\"}\n\n"
#define DONE "id: 3\nevent: done\ndata: {\"version\":1}\n\n"
#define ERROR(code) "id: 3\nevent: error\ndata: {\"code\":\"" code "\",\"message\":\"it went wrong\"}\n\n"

/* ---- outcome ---- */

static const char *judge(const char *sse, int ran_generation, char *msg, size_t msg_len)
{
    kp_lambda_outcome o;
    memset(&o, 0, sizeof o);
    kp_lambda_outcome_feed(&o, sse, strlen(sse));
    return kp_lambda_outcome_failure(&o, ran_generation, msg, msg_len);
}

static void test_outcome_rules(void **state)
{
    (void)state;
    char msg[256];
    assert_null(judge(GENERATION DONE, 1, msg, sizeof msg));
    const char *type = judge(GENERATION ERROR("overloaded"), 1, msg, sizeof msg);
    assert_string_equal(type, "Koumpa.GenerationFailed");
    assert_string_equal(msg, "the generation failed: overloaded: it went wrong");
    assert_string_equal(judge(GENERATION ERROR("interrupted"), 1, msg, sizeof msg), "Koumpa.GenerationFailed");
    /* the user's cancel and rejected output are outcomes, not failures */
    assert_null(judge(GENERATION ERROR("canceled"), 1, msg, sizeof msg));
    assert_null(judge(GENERATION ERROR("invalid_output"), 1, msg, sizeof msg));
    assert_null(judge(GENERATION ERROR("too_long"), 1, msg, sizeof msg));
    /* a reader's stream that reached the error event did its job */
    assert_null(judge(GENERATION ERROR("overloaded"), 0, msg, sizeof msg));
    /* no terminal event: interrupted, for readers too */
    assert_string_equal(judge(GENERATION, 0, msg, sizeof msg), "Koumpa.StreamInterrupted");
    assert_string_equal(msg, "the stream ended before its last event (done or error); the last one was delta");
    assert_string_equal(judge("", 1, msg, sizeof msg), "Koumpa.StreamInterrupted");
    /* an event without its blank line is not complete */
    assert_string_equal(judge(GENERATION "id: 3\nevent: done\ndata: {}\n", 1, msg, sizeof msg),
                        "Koumpa.StreamInterrupted");
    /* CRLF lines, "event:" without the space, an error without JSON data */
    assert_string_equal(judge("event:error\r\ndata: not json\r\n\r\n", 1, msg, sizeof msg), "Koumpa.GenerationFailed");
    assert_string_equal(msg, "the generation failed: unknown: ");
}

/* Fed a byte at a time, with a delta line longer than what is kept of a line. */
static void test_outcome_pieces(void **state)
{
    (void)state;
    kp_buf sse = KP_BUF_INIT;
    char msg[256];
    kp_buf_puts(&sse, "id: 1\nevent: delta\ndata: {\"text\":\"");
    for (int i = 0; i < 3 * KP_LAMBDA_OUTCOME_LINE; i++)
        kp_buf_puts(&sse, "x");
    kp_buf_puts(&sse, "\"}\n\n" ERROR("storage_error"));
    kp_lambda_outcome o;
    memset(&o, 0, sizeof o);
    for (size_t i = 0; i < sse.len; i++)
        kp_lambda_outcome_feed(&o, sse.data + i, 1);
    assert_true(kp_lambda_outcome_terminal(&o));
    assert_string_equal(kp_lambda_outcome_failure(&o, 1, msg, sizeof msg), "Koumpa.GenerationFailed");
    assert_string_equal(o.code, "storage_error");
    kp_buf_free(&sse);
}

/* ---- a test stream: pushed from a thread, pushed at start, or pulled ---- */

typedef struct test_stream {
    kp_stream stream; /* first member */
    kp_sink *sink;
    const char *const *pieces; /* written in order; then end() unless no_end */
    int no_end;
    int threaded; /* pushed by a producer thread */
    pthread_t producer;
    int pulled_next; /* the next piece more() writes */
    int more_calls, started, released;
    int write_rcs[8];
    int nwrites;
} test_stream;

static void push_all(test_stream *t)
{
    for (const char *const *p = t->pieces; p && *p; p++)
        t->write_rcs[t->nwrites++ % 8] = t->sink->write(t->sink, *p, strlen(*p));
    if (!t->no_end)
        t->sink->end(t->sink);
}

static void *producer_main(void *arg)
{
    push_all(arg);
    return NULL;
}

static void ts_start(kp_stream *s, kp_sink *sink)
{
    test_stream *t = (test_stream *)s;
    t->sink = sink;
    t->started++;
    if (t->stream.more)
        return;
    if (t->threaded)
        assert_int_equal(pthread_create(&t->producer, NULL, producer_main, t), 0);
    else
        push_all(t);
}

static void ts_more(kp_stream *s, kp_sink *sink)
{
    test_stream *t = (test_stream *)s;
    t->more_calls++;
    const char *piece = t->pieces[t->pulled_next];
    if (piece) {
        t->pulled_next++;
        sink->write(sink, piece, strlen(piece));
    }
    if (!t->pieces[t->pulled_next])
        sink->end(sink);
}

static void ts_release(kp_stream *s)
{
    test_stream *t = (test_stream *)s;
    if (t->threaded && t->started)
        pthread_join(t->producer, NULL);
    t->released++;
}

static void ts_init(test_stream *t, const char *const *pieces)
{
    memset(t, 0, sizeof *t);
    t->stream.start = ts_start;
    t->stream.release = ts_release;
    t->pieces = pieces;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Reads the whole body, cap bytes at a time (a bounded number of reads). */
static void read_all(kp_lambda_body *b, size_t cap, kp_buf *out)
{
    char buf[64];
    for (int i = 0; i < 100000; i++) {
        long n = b->read(b->ud, buf, cap);
        assert_true(n >= 0);
        if (n == 0)
            return;
        kp_buf_append(out, buf, (size_t)n);
    }
    fail_msg("the body did not end");
}

static void assert_head(const kp_buf *got, size_t *off)
{
    const size_t plen = sizeof PRELUDE - 1;
    static const char nuls[8] = {0};
    assert_true(got->len >= plen + 8);
    assert_memory_equal(got->data, PRELUDE, plen);
    assert_memory_equal(got->data + plen, nuls, 8);
    *off = plen + 8;
}

/* ---- stream ---- */

static void test_complete_body(void **state)
{
    (void)state;
    kp_lambda_stream_opts o = {.prelude = PRELUDE, .body = "hello, world", .body_len = 12};
    kp_lambda_stream *s = kp_lambda_stream_new(&o);
    assert_non_null(s);
    kp_lambda_body b = kp_lambda_stream_body(s);
    kp_buf got = KP_BUF_INIT;
    size_t off;
    read_all(&b, 5, &got);
    assert_head(&got, &off);
    assert_int_equal(got.len - off, 12);
    assert_memory_equal(got.data + off, "hello, world", 12);
    const char *message = NULL;
    assert_null(b.failure(b.ud, &message));
    assert_false(b.abandon(b.ud));
    kp_lambda_stream_report rep;
    kp_lambda_stream_report_of(s, &rep);
    assert_int_equal(rep.bytes, 12);
    assert_null(rep.failure);
    kp_lambda_stream_free(s);
    kp_buf_free(&got);
}

static void test_pushed_from_a_thread(void **state)
{
    (void)state;
    static const char *const pieces[] = {"id: 1\nevent: project\ndata: {}\n\n", "id: 2\nevent: del", "ta\ndata: {}\n\n",
                                         DONE, NULL};
    test_stream t;
    ts_init(&t, pieces);
    t.threaded = 1;
    kp_lambda_stream_opts o = {.prelude = PRELUDE, .stream = &t.stream, .ran_generation = 1};
    kp_lambda_stream *s = kp_lambda_stream_new(&o);
    kp_lambda_body b = kp_lambda_stream_body(s);
    kp_buf got = KP_BUF_INIT, want = KP_BUF_INIT;
    size_t off;
    read_all(&b, 7, &got);
    assert_int_equal(t.started, 1);
    assert_head(&got, &off);
    for (const char *const *p = pieces; *p; p++)
        kp_buf_puts(&want, *p);
    assert_int_equal(got.len - off, want.len);
    assert_memory_equal(got.data + off, want.data, want.len);
    const char *message = NULL;
    assert_null(b.failure(b.ud, &message));
    for (int i = 0; i < t.nwrites; i++)
        assert_int_equal(t.write_rcs[i], 0);
    kp_lambda_stream_free(s);
    assert_int_equal(t.released, 1);
    kp_buf_free(&got);
    kp_buf_free(&want);
}

static void test_pulled(void **state)
{
    (void)state;
    static const char *const pieces[] = {"aa", "bb", "cc", NULL};
    test_stream t;
    ts_init(&t, pieces);
    t.stream.more = ts_more;
    kp_lambda_stream_opts o = {.prelude = PRELUDE, .stream = &t.stream};
    kp_lambda_stream *s = kp_lambda_stream_new(&o);
    kp_lambda_body b = kp_lambda_stream_body(s);
    char buf[64];
    long n = b.read(b.ud, buf, sizeof buf); /* the prelude */
    assert_int_equal(n, sizeof PRELUDE - 1 + 8);
    assert_int_equal(t.more_calls, 0);
    assert_int_equal(b.read(b.ud, buf, 1), 1); /* "a": the first piece asked for */
    assert_int_equal(t.more_calls, 1);
    assert_int_equal(b.read(b.ud, buf + 1, 1), 1); /* "a": still the first piece */
    assert_int_equal(t.more_calls, 1);
    assert_int_equal(b.read(b.ud, buf + 2, 64), 2); /* "bb": asked once the first was taken */
    assert_int_equal(t.more_calls, 2);
    assert_int_equal(b.read(b.ud, buf + 4, 64), 2); /* "cc", and the end */
    assert_int_equal(t.more_calls, 3);
    assert_memory_equal(buf, "aabbcc", 6);
    assert_int_equal(b.read(b.ud, buf, 64), 0);
    assert_int_equal(t.more_calls, 3);
    const char *message = NULL;
    /* not SSE with a terminal event: a stream ends "interrupted" unless its events say otherwise */
    assert_string_equal(b.failure(b.ud, &message), "Koumpa.StreamInterrupted");
    kp_lambda_stream_free(s);
    assert_int_equal(t.released, 1);
}

/* A reader KP_LAMBDA_STREAM_PENDING_MAX behind: writes refused, the response given up (or ended, interrupted). */
static void test_reader_too_far_behind(void **state)
{
    (void)state;
    char *big = malloc(KP_LAMBDA_STREAM_PENDING_MAX - 10 + 1);
    assert_non_null(big);
    memset(big, 'x', KP_LAMBDA_STREAM_PENDING_MAX - 10);
    big[KP_LAMBDA_STREAM_PENDING_MAX - 10] = '\0';
    const char *pieces[] = {big, "0123456789abcdef", "more", NULL};
    test_stream t;
    ts_init(&t, pieces);
    t.no_end = 1;
    kp_lambda_stream_opts o = {.prelude = PRELUDE, .stream = &t.stream, .ran_generation = 1};
    kp_lambda_stream *s = kp_lambda_stream_new(&o);
    kp_lambda_body b = kp_lambda_stream_body(s);
    char buf[64];
    assert_true(b.read(b.ud, buf, sizeof buf) > 0); /* the prelude; the stream starts after it */
    assert_int_equal(b.read(b.ud, buf, sizeof buf), sizeof buf);
    assert_int_equal(t.nwrites, 3);
    assert_int_equal(t.write_rcs[0], 0);
    assert_int_equal(t.write_rcs[1], -1); /* the client is gone, as far as the producer knows */
    assert_int_equal(t.write_rcs[2], -1);
    assert_true(b.abandon(b.ud)); /* while the Runtime API takes nothing: aborted */
    kp_buf rest = KP_BUF_INIT;
    read_all(&b, sizeof buf, &rest); /* if it takes bytes: what was queued, then the end */
    assert_int_equal(rest.len + sizeof buf, KP_LAMBDA_STREAM_PENDING_MAX - 10);
    const char *message = NULL;
    assert_string_equal(b.failure(b.ud, &message), "Koumpa.StreamInterrupted");
    assert_string_equal(message, "the reader fell 1048576 bytes behind");
    assert_false(b.abandon(b.ud));
    kp_lambda_stream_free(s);
    kp_buf_free(&rest);
    free(big);
}

/* A stream that would go on: the deadline's margin ends it, the deadline itself gives the response up. */
static void test_deadline(void **state)
{
    (void)state;
    static const char *const pieces[] = {"id: 1\nevent: project\ndata: {}\n\n", NULL};
    test_stream t;
    ts_init(&t, pieces);
    t.no_end = 1;
    kp_lambda_stream_opts o = {.prelude = PRELUDE, .stream = &t.stream, .deadline_ms = now_ms() + 500};
    kp_lambda_stream *s = kp_lambda_stream_new(&o);
    kp_lambda_body b = kp_lambda_stream_body(s);
    kp_buf got = KP_BUF_INIT;
    read_all(&b, 64, &got); /* within the margin already: what was queued, then the end */
    assert_true(got.len > sizeof PRELUDE - 1 + 8);
    const char *message = NULL;
    assert_string_equal(b.failure(b.ud, &message), "Koumpa.StreamInterrupted");
    assert_string_equal(message, "the invocation reached its deadline");
    kp_lambda_stream_free(s);
    kp_buf_free(&got);

    kp_lambda_stream_opts past = {.prelude = PRELUDE, .body = "x", .body_len = 1, .deadline_ms = now_ms() - 1};
    s = kp_lambda_stream_new(&past);
    b = kp_lambda_stream_body(s);
    assert_true(b.abandon(b.ud));
    kp_lambda_stream_free(s);
}

/* A shutdown ends a waiting stream; one never started is released all the same. */
static void test_shutdown_and_release(void **state)
{
    (void)state;
    kp_lambda_runtime *rt = NULL;
    kp_err err = {0};
    assert_int_equal(kp_lambda_runtime_new("127.0.0.1:9", &rt, &err), KP_OK);
    test_stream t;
    ts_init(&t, NULL);
    t.no_end = 1;
    kp_lambda_stream_opts o = {.prelude = PRELUDE, .stream = &t.stream, .rt = rt};
    kp_lambda_stream *s = kp_lambda_stream_new(&o);
    kp_lambda_body b = kp_lambda_stream_body(s);
    char buf[64];
    assert_true(b.read(b.ud, buf, sizeof buf) > 0);
    kp_lambda_runtime_stop(rt);
    assert_int_equal(b.read(b.ud, buf, sizeof buf), 0);
    const char *message = NULL;
    assert_string_equal(b.failure(b.ud, &message), "Koumpa.StreamInterrupted");
    assert_string_equal(message, "the function is shutting down");
    kp_lambda_stream_free(s);
    assert_int_equal(t.released, 1);
    kp_lambda_runtime_free(rt);

    ts_init(&t, NULL);
    kp_lambda_stream_opts never = {.prelude = PRELUDE, .stream = &t.stream};
    kp_lambda_stream_free(kp_lambda_stream_new(&never));
    assert_int_equal(t.started, 0);
    assert_int_equal(t.released, 1);
}

int main(void)
{
    kp_log_set_level(KP_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcome_rules), cmocka_unit_test(test_outcome_pieces),
        cmocka_unit_test(test_complete_body), cmocka_unit_test(test_pushed_from_a_thread),
        cmocka_unit_test(test_pulled),        cmocka_unit_test(test_reader_too_far_behind),
        cmocka_unit_test(test_deadline),      cmocka_unit_test(test_shutdown_and_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
