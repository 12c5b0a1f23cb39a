/*
 * test_core.c - the small core modules everything else leans on: the growable
 * buffer (core/buf.c), the error model (core/err.c), random ids and dates
 * (core/id.c), the login rate limiter (core/ratelimit.c) and the JSON-lines
 * logger's level handling and line format (core/log.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/clock.h"
#include "core/ratelimit.h"

/* ---- kp_buf ---- */

static void test_buf_append_keeps_nul_terminated(void **state)
{
    (void)state;
    kp_buf b = KP_BUF_INIT;
    assert_string_equal(kp_buf_cstr(&b), "");
    assert_int_equal(kp_buf_append(&b, "abc", 3), 0);
    assert_int_equal(b.len, 3);
    assert_int_equal(b.data[3], '\0');
    assert_int_equal(kp_buf_puts(&b, "def"), 0);
    assert_string_equal(kp_buf_cstr(&b), "abcdef");
    /* binary data with an embedded NUL keeps its length */
    assert_int_equal(kp_buf_append(&b, "x\0y", 3), 0);
    assert_int_equal(b.len, 9);
    assert_memory_equal(b.data, "abcdefx\0y", 9);
    assert_int_equal(b.data[9], '\0');
    /* appending nothing to an empty buffer still gives a C string */
    kp_buf e = KP_BUF_INIT;
    assert_int_equal(kp_buf_append(&e, "", 0), 0);
    assert_non_null(e.data);
    assert_string_equal(e.data, "");
    kp_buf_free(&e);
    kp_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
}

static void test_buf_grows_across_many_appends(void **state)
{
    (void)state;
    kp_buf b = KP_BUF_INIT;
    for (int i = 0; i < 10000; i++)
        assert_int_equal(kp_buf_printf(&b, "%d,", i % 10), 0);
    assert_int_equal(b.len, 20000);
    assert_true(b.cap > b.len);
    for (size_t i = 0; i < b.len; i += 2) {
        assert_int_equal(b.data[i], '0' + (int)((i / 2) % 10));
        assert_int_equal(b.data[i + 1], ',');
    }
    assert_int_equal(b.data[b.len], '\0');
    kp_buf_free(&b);
}

static void test_buf_printf_long_and_formats(void **state)
{
    (void)state;
    kp_buf b = KP_BUF_INIT;
    char big[5000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(kp_buf_printf(&b, "[%s|%d|%s]", big, -42, "end"), 0);
    assert_int_equal(b.len, 4999 + 10);
    assert_int_equal(b.data[0], '[');
    assert_string_equal(b.data + 1 + 4999, "|-42|end]");
    kp_buf_free(&b);
}

static void test_buf_consume_and_reset(void **state)
{
    (void)state;
    kp_buf b = KP_BUF_INIT;
    kp_buf_puts(&b, "hello world");
    kp_buf_consume(&b, 6);
    assert_string_equal(kp_buf_cstr(&b), "world");
    assert_int_equal(b.len, 5);
    kp_buf_consume(&b, 0);
    assert_string_equal(kp_buf_cstr(&b), "world");
    kp_buf_consume(&b, 5);
    assert_int_equal(b.len, 0);
    assert_string_equal(kp_buf_cstr(&b), "");

    kp_buf_puts(&b, "again");
    size_t cap = b.cap;
    char *mem = b.data;
    kp_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, cap); /* memory kept */
    assert_ptr_equal(b.data, mem);
    assert_string_equal(kp_buf_cstr(&b), "");
    kp_buf_free(&b);

    /* reset and consume on a never-used buffer are harmless */
    kp_buf z = KP_BUF_INIT;
    kp_buf_reset(&z);
    kp_buf_consume(&z, 3);
    assert_null(z.data);
    assert_string_equal(kp_buf_cstr(&z), "");
}

static void test_buf_steal(void **state)
{
    (void)state;
    kp_buf b = KP_BUF_INIT;
    kp_buf_puts(&b, "mine now");
    char *s = kp_buf_steal(&b);
    assert_string_equal(s, "mine now");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    free(s);

    /* stealing an empty buffer gives a freeable "" rather than NULL */
    char *e = kp_buf_steal(&b);
    assert_non_null(e);
    assert_string_equal(e, "");
    free(e);
}

/* Growth by half again, not doubling: a buffer that grew by appends holds at most about 1.5x what it
 * needs (the text of a running generation is held in such buffers, thousands at a time). */
static void test_buf_growth_leaves_at_most_half_again(void **state)
{
    (void)state;
    kp_buf b = KP_BUF_INIT;
    size_t worst = 0; /* the largest cap / need seen, in thousandths */
    for (size_t len = 1; len <= 200000; len++) {
        assert_int_equal(kp_buf_append(&b, "x", 1), 0);
        size_t need = len + 1;
        size_t ratio = b.cap * 1000 / need;
        if (need > 64 && ratio > worst)
            worst = ratio;
    }
    assert_true(worst <= 1500);
    assert_true(worst > 1400); /* it does grow ahead: appends stay amortised O(1) */
    kp_buf_free(&b);
}

static void test_buf_reserve(void **state)
{
    (void)state;
    kp_buf b = KP_BUF_INIT;
    assert_int_equal(kp_buf_reserve(&b, 1000), 0);
    assert_true(b.cap >= 1001);
    char *mem = b.data;
    for (int i = 0; i < 1000; i++)
        kp_buf_append(&b, "x", 1);
    assert_ptr_equal(b.data, mem); /* no reallocation within the reservation */
    /* an impossible reservation fails and leaves the buffer as it was */
    assert_int_equal(kp_buf_reserve(&b, (size_t)-1), -1);
    assert_int_equal(kp_buf_append(&b, "y", (size_t)-1 - 2), -1);
    assert_int_equal(b.len, 1000);
    assert_ptr_equal(b.data, mem);
    kp_buf_free(&b);
}

/* ---- kp_err ---- */

static void test_err_set_and_clear(void **state)
{
    (void)state;
    kp_err err = {0};
    assert_int_equal(kp_err_set(&err, KP_ENOTFOUND, "no plan with id %s (%d)", "gold", 7), KP_ENOTFOUND);
    assert_int_equal(err.status, KP_ENOTFOUND);
    assert_string_equal(err.msg, "no plan with id gold (7)");
    kp_err_clear(&err);
    assert_int_equal(err.status, KP_OK);
    assert_string_equal(err.msg, "");
    /* NULL err: still returns the status, no crash */
    assert_int_equal(kp_err_set(NULL, KP_EIO, "x %s", "y"), KP_EIO);
    kp_err_clear(NULL);
}

static void test_err_message_truncated_safely(void **state)
{
    (void)state;
    kp_err err;
    memset(&err, 'Q', sizeof err);
    char longtext[1000];
    memset(longtext, 'a', sizeof longtext - 1);
    longtext[sizeof longtext - 1] = '\0';
    kp_err_set(&err, KP_EINVAL, "%s", longtext);
    assert_int_equal(strlen(err.msg), sizeof err.msg - 1);
    assert_int_equal(err.status, KP_EINVAL);
}

static void test_status_names_and_http(void **state)
{
    (void)state;
    static const struct {
        kp_status st;
        const char *name;
        int http;
    } cases[] = {
        {KP_OK, "ok", 200},
        {KP_EINVAL, "invalid_request", 400},
        {KP_EAUTH, "unauthorized", 401},
        {KP_ECREDITS, "insufficient_credits", 402},
        {KP_EFORBIDDEN, "forbidden", 403},
        {KP_ENOTFOUND, "not_found", 404},
        {KP_ECONFLICT, "conflict", 409},
        {KP_EDUPLICATE, "duplicate", 409},
        {KP_ETOOLARGE, "payload_too_large", 413},
        {KP_ERATE, "rate_limited", 429},
        {KP_EUNAVAILABLE, "unavailable", 503},
        {KP_EIO, "io_error", 500},
        {KP_EDB, "database_error", 500},
        {KP_ENOMEM, "out_of_memory", 500},
        {KP_EINTERNAL, "internal_error", 500},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_string_equal(kp_status_name(cases[i].st), cases[i].name);
        assert_int_equal(kp_status_http(cases[i].st), cases[i].http);
    }
    /* an out-of-range value is treated as an internal error, never as success */
    assert_string_equal(kp_status_name((kp_status)999), "internal_error");
    assert_int_equal(kp_status_http((kp_status)999), 500);
}

/* ---- kp_id ---- */

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static void test_id_shape_and_uniqueness(void **state)
{
    (void)state;
    char a[64], b[64];
    kp_id_new("usr", a, sizeof a);
    kp_id_new("usr", b, sizeof b);
    assert_int_equal(strlen(a), 3 + 1 + KP_ID_HEX_LEN);
    assert_memory_equal(a, "usr_", 4);
    assert_true(is_lower_hex(a + 4, KP_ID_HEX_LEN));
    assert_string_not_equal(a, b);

    /* exactly strlen(prefix) + 30 bytes is enough */
    char exact[3 + 30];
    kp_id_new("res", exact, sizeof exact);
    assert_int_equal(strlen(exact), 32);
    assert_true(is_lower_hex(exact + 4, KP_ID_HEX_LEN));

    /* a too-small buffer is truncated, never overrun */
    char small[8];
    memset(small, 'X', sizeof small);
    kp_id_new("usr", small, sizeof small);
    assert_int_equal(strlen(small), 7);
}

static void test_ids_do_not_repeat(void **state)
{
    (void)state;
    enum { N = 2000 };
    char(*ids)[32] = calloc(N, sizeof *ids);
    assert_non_null(ids);
    for (int i = 0; i < N; i++)
        kp_id_new("x", ids[i], sizeof ids[i]);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_true(strcmp(ids[i], ids[j]) != 0);
    free(ids);
}

/* Ids carry their time (48-bit milliseconds first) and increase strictly
 * within a process, also within one millisecond and across prefixes. */
static void test_ids_sort_by_time(void **state)
{
    (void)state;
    enum { N = 5000 };
    char prev[64] = "", id[64];
    int64_t before = kp_time_now_ms(), ms = 0, prev_ms = 0;
    for (int i = 0; i < N; i++) {
        kp_id_new_at(i % 2 ? "prj" : "res", id, sizeof id, &ms);
        char stamp[13];
        memcpy(stamp, id + 4, 12);
        stamp[12] = '\0';
        assert_int_equal((int64_t)strtoll(stamp, NULL, 16), ms);
        assert_true(ms >= before && ms >= prev_ms);
        if (prev[0])
            assert_true(strcmp(id + 4, prev + 4) > 0);
        memcpy(prev, id, sizeof prev);
        prev_ms = ms;
    }
    assert_true(ms <= kp_time_now_ms() + 1);
}

static void test_date_utc_today(void **state)
{
    (void)state;
    char d[11], want[11];
    time_t before = time(NULL);
    kp_date_utc_today(d);
    time_t after = time(NULL);
    struct tm tm;
    assert_int_equal(strlen(d), 10);
    assert_int_equal(d[4], '-');
    assert_int_equal(d[7], '-');
    gmtime_r(&before, &tm);
    strftime(want, sizeof want, "%Y-%m-%d", &tm);
    if (strcmp(d, want) != 0) { /* midnight passed between the calls */
        gmtime_r(&after, &tm);
        strftime(want, sizeof want, "%Y-%m-%d", &tm);
    }
    assert_string_equal(d, want);
}

/* ---- kp_ratelimit ---- */

static void test_ratelimit_limit_then_retry_after(void **state)
{
    (void)state;
    kp_ratelimit *rl = kp_ratelimit_new(3, 60, 16);
    assert_non_null(rl);
    int64_t t0 = 1000000;
    assert_int_equal(kp_ratelimit_hit(rl, "ip:1.2.3.4", t0), 0);
    assert_int_equal(kp_ratelimit_hit(rl, "ip:1.2.3.4", t0 + 1), 0);
    assert_int_equal(kp_ratelimit_hit(rl, "ip:1.2.3.4", t0 + 2), 0);
    /* 4th in the window: refused, retry = seconds until the window ends */
    assert_int_equal(kp_ratelimit_hit(rl, "ip:1.2.3.4", t0 + 10), 50);
    assert_int_equal(kp_ratelimit_hit(rl, "ip:1.2.3.4", t0 + 59), 1);
    /* another key is independent */
    assert_int_equal(kp_ratelimit_hit(rl, "ip:5.6.7.8", t0 + 10), 0);
    /* the window ends: allowed again, with a fresh count */
    assert_int_equal(kp_ratelimit_hit(rl, "ip:1.2.3.4", t0 + 60), 0);
    assert_int_equal(kp_ratelimit_hit(rl, "ip:1.2.3.4", t0 + 61), 0);
    assert_int_equal(kp_ratelimit_hit(rl, "ip:1.2.3.4", t0 + 62), 0);
    assert_true(kp_ratelimit_hit(rl, "ip:1.2.3.4", t0 + 63) >= 1);
    kp_ratelimit_free(rl);
}

static void test_ratelimit_refused_hits_do_not_extend_window(void **state)
{
    (void)state;
    kp_ratelimit *rl = kp_ratelimit_new(1, 10, 4);
    assert_int_equal(kp_ratelimit_hit(rl, "k", 100), 0);
    for (int i = 1; i < 10; i++)
        assert_int_equal(kp_ratelimit_hit(rl, "k", 100 + i), 10 - i);
    assert_int_equal(kp_ratelimit_hit(rl, "k", 110), 0);
    kp_ratelimit_free(rl);
}

static void test_ratelimit_reset_forgets_key(void **state)
{
    (void)state;
    kp_ratelimit *rl = kp_ratelimit_new(2, 60, 8);
    assert_int_equal(kp_ratelimit_hit(rl, "email:a@b.c", 50), 0);
    assert_int_equal(kp_ratelimit_hit(rl, "email:a@b.c", 50), 0);
    assert_true(kp_ratelimit_hit(rl, "email:a@b.c", 50) > 0);
    kp_ratelimit_hit(rl, "email:other@b.c", 50);
    kp_ratelimit_hit(rl, "email:other@b.c", 50);
    kp_ratelimit_reset(rl, "email:a@b.c");
    assert_int_equal(kp_ratelimit_hit(rl, "email:a@b.c", 51), 0);
    /* resetting one key leaves the others alone; unknown keys are a no-op */
    assert_true(kp_ratelimit_hit(rl, "email:other@b.c", 51) > 0);
    kp_ratelimit_reset(rl, "never-seen");
    kp_ratelimit_free(rl);
    kp_ratelimit_free(NULL);
}

static void test_ratelimit_bounded_table_reuses_expired_then_oldest_unlimited(void **state)
{
    (void)state;
    kp_ratelimit *rl = kp_ratelimit_new(2, 60, 2);
    assert_int_equal(kp_ratelimit_hit(rl, "a", 100), 0);
    assert_int_equal(kp_ratelimit_hit(rl, "b", 130), 0);
    /* full, nothing expired, nothing limited: "c" evicts the oldest window ("a") */
    assert_int_equal(kp_ratelimit_hit(rl, "c", 140), 0);
    assert_int_equal(kp_ratelimit_hit(rl, "b", 141), 0); /* b kept its count: now at the limit */
    assert_int_equal(kp_ratelimit_hit(rl, "c", 141), 0); /* c too */
    /* both slots hold limited keys: "a" is refused until the soonest window ends (b's, at 190) */
    assert_int_equal(kp_ratelimit_hit(rl, "a", 142), 48);
    assert_true(kp_ratelimit_hit(rl, "b", 143) > 0);
    assert_true(kp_ratelimit_hit(rl, "c", 143) > 0);
    /* once b's window has passed, a new key takes its slot, and c's lock holds */
    assert_int_equal(kp_ratelimit_hit(rl, "d", 190), 0);
    assert_int_equal(kp_ratelimit_hit(rl, "c", 191), 9);
    kp_ratelimit_free(rl);
}

/* Issue 9, item 4: 10,050 junk keys used to push a locked e-mail out of the
 * 10,000-slot table. A limited key is never evicted. */
static void test_ratelimit_lock_survives_a_flood_of_junk_keys(void **state)
{
    (void)state;
    char key[64];
    kp_ratelimit *rl = kp_ratelimit_new(10, 60, 10000);
    assert_non_null(rl);
    for (int i = 0; i < 10; i++)
        assert_int_equal(kp_ratelimit_hit(rl, "victim@example.com", 5000), 0);
    assert_true(kp_ratelimit_hit(rl, "victim@example.com", 5000) > 0);
    for (int i = 0; i < 10050; i++) {
        snprintf(key, sizeof key, "junk-%d@example.com", i);
        assert_int_equal(kp_ratelimit_hit(rl, key, 5001 + i / 1000), 0);
    }
    assert_int_equal(kp_ratelimit_hit(rl, "victim@example.com", 5020), 40);
    /* the lock ends when its window does, not before */
    assert_int_equal(kp_ratelimit_hit(rl, "victim@example.com", 5060), 0);
    kp_ratelimit_free(rl);
}

static void test_monotonic_clock_moves_forward(void **state)
{
    (void)state;
    int64_t a = kp_clock_mono_s();
    int64_t b = kp_clock_mono_s();
    assert_true(a >= 0);
    assert_true(b >= a);
}

static void test_ratelimit_long_keys(void **state)
{
    (void)state;
    kp_ratelimit *rl = kp_ratelimit_new(1, 60, 8);
    char key[400];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    assert_int_equal(kp_ratelimit_hit(rl, key, 100), 0);
    /* a key longer than the table stores is still limited */
    assert_true(kp_ratelimit_hit(rl, key, 101) > 0);
    /* keys just under the bound work */
    key[299] = '\0';
    kp_ratelimit *rl2 = kp_ratelimit_new(1, 60, 8);
    assert_int_equal(kp_ratelimit_hit(rl2, key, 100), 0);
    assert_true(kp_ratelimit_hit(rl2, key, 101) > 0);
    kp_ratelimit_free(rl2);
    kp_ratelimit_free(rl);
}

/* ---- kp_log ---- */

static void test_log_parse_level(void **state)
{
    (void)state;
    kp_log_level l = KP_LOG_ERROR;
    assert_int_equal(kp_log_parse_level("debug", &l), 0);
    assert_int_equal(l, KP_LOG_DEBUG);
    assert_int_equal(kp_log_parse_level("info", &l), 0);
    assert_int_equal(l, KP_LOG_INFO);
    assert_int_equal(kp_log_parse_level("warn", &l), 0);
    assert_int_equal(l, KP_LOG_WARN);
    assert_int_equal(kp_log_parse_level("error", &l), 0);
    assert_int_equal(l, KP_LOG_ERROR);
    l = KP_LOG_WARN;
    assert_int_equal(kp_log_parse_level("loud", &l), -1);
    assert_int_equal(kp_log_parse_level("", &l), -1);
    assert_int_equal(kp_log_parse_level("warning", &l), -1);
    assert_int_equal(kp_log_parse_level("info ", &l), -1);
    assert_int_equal(l, KP_LOG_WARN); /* untouched on failure */
}

static void test_log_enabled_follows_level(void **state)
{
    (void)state;
    kp_log_set_level(KP_LOG_WARN);
    assert_false(kp_log_enabled(KP_LOG_DEBUG));
    assert_false(kp_log_enabled(KP_LOG_INFO));
    assert_true(kp_log_enabled(KP_LOG_WARN));
    assert_true(kp_log_enabled(KP_LOG_ERROR));
    kp_log_set_level(KP_LOG_DEBUG);
    assert_true(kp_log_enabled(KP_LOG_DEBUG));
    kp_log_set_level(KP_LOG_INFO);
    assert_false(kp_log_enabled(KP_LOG_DEBUG));
    assert_true(kp_log_enabled(KP_LOG_INFO));
}

/* Runs fn with stderr redirected to a temporary file; returns what it wrote (caller frees). */
static char *capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/koumpa-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    FILE *f = fdopen(fd, "r");
    assert_non_null(f);
    rewind(f);
    kp_buf out = KP_BUF_INIT;
    char chunk[512];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        kp_buf_append(&out, chunk, n);
    fclose(f);
    unlink(path);
    return kp_buf_steal(&out);
}

static void write_some_lines(void)
{
    kp_log_set_level(KP_LOG_INFO);
    kp_log_json(KP_LOG_DEBUG, "hidden", json_pack("{s:s}", "k", "v"));
    kp_log_json(KP_LOG_WARN, "with \"quotes\"\nand newline", json_pack("{s:s,s:i}", "route", "/v1/me", "status", 401));
    kp_log(KP_LOG_ERROR, "count=%d", 3);
    kp_log(KP_LOG_DEBUG, "also hidden %d", 4);
    kp_log_json(KP_LOG_INFO, "plain", NULL);
}

static void test_log_writes_one_json_object_per_line(void **state)
{
    (void)state;
    char *text = capture_stderr(write_some_lines);
    kp_log_set_level(KP_LOG_INFO);
    assert_null(strstr(text, "hidden"));
    /* three lines, each a JSON object with time, level and msg */
    const char *want_level[] = {"warn", "error", "info"};
    const char *want_msg[] = {"with \"quotes\"\nand newline", "count=3", "plain"};
    char *save = NULL;
    int lines = 0;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        assert_true(lines < 3);
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "level")), want_level[lines]);
        assert_string_equal(json_string_value(json_object_get(o, "msg")), want_msg[lines]);
        const char *ts = json_string_value(json_object_get(o, "time"));
        assert_non_null(ts);
        /* 2026-11-24T19:41:18.123Z */
        assert_int_equal(strlen(ts), 24);
        assert_int_equal(ts[10], 'T');
        assert_int_equal(ts[19], '.');
        assert_int_equal(ts[23], 'Z');
        if (lines == 0) {
            assert_string_equal(json_string_value(json_object_get(o, "route")), "/v1/me");
            assert_int_equal(json_integer_value(json_object_get(o, "status")), 401);
        }
        json_decref(o);
        lines++;
    }
    assert_int_equal(lines, 3);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append_keeps_nul_terminated),
        cmocka_unit_test(test_buf_grows_across_many_appends),
        cmocka_unit_test(test_buf_printf_long_and_formats),
        cmocka_unit_test(test_buf_consume_and_reset),
        cmocka_unit_test(test_buf_steal),
        cmocka_unit_test(test_buf_growth_leaves_at_most_half_again),
        cmocka_unit_test(test_buf_reserve),
        cmocka_unit_test(test_err_set_and_clear),
        cmocka_unit_test(test_err_message_truncated_safely),
        cmocka_unit_test(test_status_names_and_http),
        cmocka_unit_test(test_id_shape_and_uniqueness),
        cmocka_unit_test(test_ids_do_not_repeat),
        cmocka_unit_test(test_ids_sort_by_time),
        cmocka_unit_test(test_date_utc_today),
        cmocka_unit_test(test_ratelimit_limit_then_retry_after),
        cmocka_unit_test(test_ratelimit_refused_hits_do_not_extend_window),
        cmocka_unit_test(test_ratelimit_reset_forgets_key),
        cmocka_unit_test(test_ratelimit_bounded_table_reuses_expired_then_oldest_unlimited),
        cmocka_unit_test(test_ratelimit_lock_survives_a_flood_of_junk_keys),
        cmocka_unit_test(test_monotonic_clock_moves_forward),
        cmocka_unit_test(test_ratelimit_long_keys),
        cmocka_unit_test(test_log_parse_level),
        cmocka_unit_test(test_log_enabled_follows_level),
        cmocka_unit_test(test_log_writes_one_json_object_per_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
