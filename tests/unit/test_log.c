/*
 * test_log.c - the JSON writer (core/jsonw.h) and the log's buffering
 * (core/log.h): what the writer writes parses as the same JSON jansson would
 * write, and buffered lines all reach the file: when a buffer is full, after
 * the flush interval, before a warn line, at exit, and on a crash signal.
 * The buffering cases run in a child process (fork), whose output is a file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/jsonw.h"
#include "core/log.h"

/* ---- the writer ---- */

static json_t *parse(const kp_buf *b)
{
    json_error_t e;
    json_t *v = json_loadb(b->data, b->len, JSON_DECODE_ANY, &e);
    if (!v)
        fail_msg("not JSON (%s): %s", e.text, b->data);
    return v;
}

static void test_jsonw_object_parses_back(void **state)
{
    (void)state;
    kp_buf b = KP_BUF_INIT;
    kp_jsonw w;
    kp_jsonw_init(&w, &b);
    kp_jsonw_open(&w, NULL);
    kp_jsonw_str(&w, "s", "plain");
    kp_jsonw_int(&w, "zero", 0);
    kp_jsonw_int(&w, "min", INT64_MIN);
    kp_jsonw_int(&w, "max", INT64_MAX);
    kp_jsonw_int(&w, "neg", -42);
    kp_jsonw_bool(&w, "t", 1);
    kp_jsonw_bool(&w, "f", 0);
    kp_jsonw_null(&w, "n");
    kp_jsonw_str(&w, "null_str", NULL);
    kp_jsonw_open(&w, "inner");
    kp_jsonw_open(&w, "empty");
    kp_jsonw_close(&w);
    kp_jsonw_milli(&w, "ms", 12345);
    kp_jsonw_milli(&w, "small", 7);
    kp_jsonw_milli(&w, "negative", -1500);
    kp_jsonw_close(&w);
    kp_jsonw_close(&w);
    assert_int_equal(kp_jsonw_end(&w), 0);
    json_t *v = parse(&b);
    json_t *want =
        json_pack("{s:s,s:I,s:I,s:I,s:I,s:b,s:b,s:n,s:n,s:{s:{},s:f,s:f,s:f}}", "s", "plain", "zero", (json_int_t)0,
                  "min", (json_int_t)INT64_MIN, "max", (json_int_t)INT64_MAX, "neg", (json_int_t)-42, "t", 1, "f", 0,
                  "n", "null_str", "inner", "empty", "ms", 12.345, "small", 0.007, "negative", -1.5);
    assert_true(json_equal(v, want));
    json_decref(v);
    json_decref(want);
    kp_buf_free(&b);
}

static void test_jsonw_escapes_like_jansson(void **state)
{
    (void)state;
    const char *texts[] = {"quote \" backslash \\ slash /", "tab\tnewline\nreturn\rbell\x07 del\x7f", "\x01\x1f\b\f",
                           "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", ""};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        kp_buf b = KP_BUF_INIT;
        assert_int_equal(kp_jsonw_quote(&b, texts[i]), 0);
        json_t *v = parse(&b);
        assert_string_equal(json_string_value(v), texts[i]);
        char *theirs = json_dumps(v, JSON_ENCODE_ANY);
        assert_string_equal(b.data, theirs); /* the same text as jansson's */
        free(theirs);
        json_decref(v);
        kp_buf_free(&b);
    }
}

static void test_jsonw_replaces_invalid_utf8(void **state)
{
    (void)state;
    /* a lone continuation, an overlong '/', a surrogate, beyond U+10FFFF, a cut sequence */
    const char *bad[] = {"a\x80z", "a\xc0\xafz", "a\xed\xa0\x80z", "a\xf4\x90\x80\x80z", "a\xe2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kp_buf b = KP_BUF_INIT;
        assert_int_equal(kp_jsonw_quote(&b, bad[i]), 0);
        json_t *v = parse(&b); /* jansson takes it: valid UTF-8 only */
        const char *s = json_string_value(v);
        assert_true(s[0] == 'a');
        assert_non_null(strstr(s, "\xef\xbf\xbd"));
        json_decref(v);
        kp_buf_free(&b);
    }
}

static void test_jsonw_unbalanced_is_an_error(void **state)
{
    (void)state;
    kp_buf b = KP_BUF_INIT;
    kp_jsonw w;
    kp_jsonw_init(&w, &b);
    kp_jsonw_open(&w, NULL);
    assert_int_equal(kp_jsonw_end(&w), -1); /* left open */
    kp_jsonw_close(&w);
    assert_int_equal(kp_jsonw_end(&w), 0);
    kp_jsonw_close(&w);
    assert_int_equal(kp_jsonw_end(&w), -1); /* closed once too often */
    kp_buf_free(&b);
}

/* ---- buffering, in a child process writing to a file ---- */

#define FLUSH_LONG_MS 600000 /* the interval never passes during a test */

static char log_path[64];

/* A child that sends its log to log_path, runs fn, and exits with 0 (or dies as fn makes it). */
static int run_child(void (*fn)(void))
{
    strcpy(log_path, "/tmp/koumpa-test-log-XXXXXX");
    int fd = mkstemp(log_path);
    assert_true(fd >= 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        kp_log_set_level(KP_LOG_INFO);
        kp_log_set_output(fd);
        fn();
        exit(0);
    }
    close(fd);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

/* The file's lines, each parsed (fails on a line that is not JSON); caller decrefs. */
static json_t *read_lines(void)
{
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    json_t *lines = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_error_t e;
        json_t *v = json_loads(line, 0, &e);
        if (!v)
            fail_msg("log line is not JSON (%s): %s", e.text, line);
        json_array_append_new(lines, v);
    }
    free(line);
    fclose(f);
    unlink(log_path);
    return lines;
}

#define THREAD_LINES 5000

static void *log_lines(void *arg)
{
    int base = (int)(intptr_t)arg;
    for (int i = 0; i < THREAD_LINES; i++) {
        kp_jsonw *w = kp_log_begin(KP_LOG_INFO, "request");
        kp_jsonw_int(w, "n", base + i);
        kp_jsonw_str(w, "pad", "a line of a realistic length, so that the buffer fills several times over");
        kp_log_commit(w);
    }
    return NULL;
}

/* Two threads' lines, one thread still running at exit (its lines too must be there). */
static void log_then_exit(void)
{
    kp_log_buffering_start(FLUSH_LONG_MS);
    pthread_t t;
    pthread_create(&t, NULL, log_lines, (void *)(intptr_t)THREAD_LINES);
    log_lines((void *)0);
    pthread_join(t, NULL);
    kp_log(KP_LOG_INFO, "last line before exit");
}

/* Each of the 2 * THREAD_LINES numbered lines exactly once, and the last line. */
static void assert_all_lines(json_t *lines, int with_last)
{
    static char seen[2 * THREAD_LINES];
    memset(seen, 0, sizeof seen);
    int last = 0;
    size_t i;
    json_t *v;
    json_array_foreach(lines, i, v)
    {
        json_t *n = json_object_get(v, "n");
        if (n) {
            json_int_t k = json_integer_value(n);
            assert_true(k >= 0 && k < 2 * THREAD_LINES);
            assert_int_equal(seen[k], 0);
            seen[k] = 1;
            assert_string_equal(json_string_value(json_object_get(v, "level")), "info");
            assert_string_equal(json_string_value(json_object_get(v, "msg")), "request");
        } else if (strcmp(json_string_value(json_object_get(v, "msg")), "last line before exit") == 0) {
            last = 1;
        }
    }
    for (int k = 0; k < 2 * THREAD_LINES; k++)
        if (!seen[k])
            fail_msg("line %d is missing", k);
    assert_int_equal(last, with_last);
}

static void test_buffered_lines_all_reach_the_file_at_exit(void **state)
{
    (void)state;
    int status = run_child(log_then_exit);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    json_t *lines = read_lines();
    assert_all_lines(lines, 1);
    json_decref(lines);
}

/* The child starts as a fresh process would: cmocka's (or a sanitizer's)
 * handlers give way to the default action, which the log then takes over. */
static void default_crash_actions(void)
{
    signal(SIGSEGV, SIG_DFL);
    signal(SIGABRT, SIG_DFL);
}

static void crash_after_logging(void)
{
    default_crash_actions();
    log_then_exit();
    raise(SIGSEGV); /* as a fault would deliver it (a null store is UBSan's own error in make sanitize) */
}

static void abort_after_logging(void)
{
    default_crash_actions();
    log_then_exit();
    abort();
}

static void test_buffered_lines_survive_a_crash(void **state)
{
    (void)state;
    void (*crashes[])(void) = {crash_after_logging, abort_after_logging};
    int signals[] = {SIGSEGV, SIGABRT};
    for (size_t i = 0; i < 2; i++) {
        int status = run_child(crashes[i]);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), signals[i]);
        json_t *lines = read_lines();
        assert_all_lines(lines, 1);
        json_decref(lines);
    }
}

/* info lines wait; a warn line goes at once, after them, in order. */
static void warn_writes_in_order(void)
{
    kp_log_buffering_start(FLUSH_LONG_MS);
    kp_log(KP_LOG_INFO, "first");
    kp_log(KP_LOG_INFO, "second");
    kp_log(KP_LOG_WARN, "third");
    _exit(0); /* no atexit flush: only what was written */
}

static void test_warn_line_writes_the_buffer_first(void **state)
{
    (void)state;
    int status = run_child(warn_writes_in_order);
    assert_true(WIFEXITED(status));
    json_t *lines = read_lines();
    assert_int_equal(json_array_size(lines), 3);
    const char *want[] = {"first", "second", "third"};
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(lines, i), "msg")), want[i]);
    json_decref(lines);
}

/* A line waits at most the interval: the flushing thread writes it (no exit, no flush call). */
static void line_then_wait(void)
{
    kp_log_buffering_start(50);
    kp_log(KP_LOG_INFO, "soon");
    for (int i = 0; i < 200; i++) { /* up to 10 s: a loaded machine */
        FILE *f = fopen(log_path, "r");
        int c = f ? fgetc(f) : EOF;
        if (f)
            fclose(f);
        if (c != EOF)
            _exit(0);
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    _exit(3);
}

static void test_flushing_thread_writes_after_the_interval(void **state)
{
    (void)state;
    int status = run_child(line_then_wait);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    json_t *lines = read_lines();
    assert_int_equal(json_array_size(lines), 1);
    json_decref(lines);
}

/* Stopping writes everything and goes back to writing at once. */
static void stop_then_log(void)
{
    kp_log_buffering_start(FLUSH_LONG_MS);
    kp_log(KP_LOG_INFO, "buffered");
    kp_log_buffering_stop();
    kp_log(KP_LOG_INFO, "direct");
    _exit(0);
}

static void test_stop_writes_and_unbuffers(void **state)
{
    (void)state;
    int status = run_child(stop_then_log);
    assert_true(WIFEXITED(status));
    json_t *lines = read_lines();
    assert_int_equal(json_array_size(lines), 2);
    json_decref(lines);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonw_object_parses_back),
        cmocka_unit_test(test_jsonw_escapes_like_jansson),
        cmocka_unit_test(test_jsonw_replaces_invalid_utf8),
        cmocka_unit_test(test_jsonw_unbalanced_is_an_error),
        cmocka_unit_test(test_buffered_lines_all_reach_the_file_at_exit),
        cmocka_unit_test(test_buffered_lines_survive_a_crash),
        cmocka_unit_test(test_warn_line_writes_the_buffer_first),
        cmocka_unit_test(test_flushing_thread_writes_after_the_interval),
        cmocka_unit_test(test_stop_writes_and_unbuffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
