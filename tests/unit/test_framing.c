/*
 * test_framing.c - the strict request-head check (host/evhttp/framing.h):
 * where a head ends (also when it arrives a byte at a time), what passes, and
 * the status each smuggling-shaped head gets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "host/evhttp/framing.h"

#define MAX_BODY (1024 * 1024)

static kp_framing check(const char *head)
{
    kp_framing f;
    size_t end = kp_framing_head_end(head, strlen(head), 0);
    assert_int_equal(end, strlen(head)); /* the test heads end with their empty line */
    kp_framing_check(head, end, MAX_BODY, &f);
    return f;
}

static void test_head_end(void **state)
{
    (void)state;
    const char *h = "GET / HTTP/1.1\r\nHost: x\r\n\r\nNEXT";
    size_t want = strlen(h) - 4;
    assert_int_equal(kp_framing_head_end(h, strlen(h), 0), want);
    assert_int_equal(kp_framing_head_end("GET / HTTP/1.1\nHost: x\n\n", 24, 0), 24); /* bare LF, as evhttp takes */
    assert_int_equal(kp_framing_head_end("GET / HTTP/1.1\r\nHost: x\r\n", 25, 0), 0);
    /* byte by byte, resuming where the last call stopped */
    size_t scanned = 0, end = 0;
    for (size_t len = 1; len <= strlen(h) && !end; len++) {
        end = kp_framing_head_end(h, len, scanned);
        scanned = len;
    }
    assert_int_equal(end, want);
    assert_int_equal(kp_framing_leading_empty("\r\n\nGET", 6), 3);
    assert_int_equal(kp_framing_leading_empty("GET", 3), 0);
}

static void test_what_passes(void **state)
{
    (void)state;
    kp_framing f = check("GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n");
    assert_int_equal(f.status, 0);
    assert_int_equal(f.content_length, -1);
    f = check("POST /a HTTP/1.0\r\nContent-Length: 12\r\ncontent-length:12 \r\n\r\n");
    assert_int_equal(f.status, 0);
    assert_int_equal(f.content_length, 12);
    f = check("POST /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
    assert_int_equal(f.status, 0);
    assert_true(f.chunked);
    f = check("OPTIONS * HTTP/1.1\r\n\r\n");
    assert_int_equal(f.status, 0);
    f = check("GET / HTTP/1.1\r\nAz09!#$%&'*+-.^_`|~: every tchar\r\n\r\n"); /* RFC 9110's tchar */
    assert_int_equal(f.status, 0);
}

static void test_what_is_refused(void **state)
{
    (void)state;
    static const struct {
        const char *head;
        int status;
    } cases[] = {
        {"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 2x\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX(y): 1\r\n\r\n", 400}, /* a delimiter, not a tchar */
        {"GET / HTTP/1.1\r\nX\"y: 1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX\x80y: 1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX@y: 1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\n\r\n", 400},
        {"GET http://x/ HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.x\r\n\r\n", 400},
        {"GET / HTTP/2.0\r\n\r\n", 505},
        {"BREW / HTTP/1.1\r\n\r\n", 501},
        {"CONNECT x:443 HTTP/1.1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n", 413},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kp_framing f = check(cases[i].head);
        if (f.status != cases[i].status)
            fail_msg("case %zu: status %d, want %d (%s)", i, f.status, cases[i].status, f.message);
        assert_non_null(f.code);
        assert_true(f.message[0] != '\0');
    }
}

/* Every byte at every place of a value long enough to span three of the
 * check's 8-byte words: refused exactly when it is a control character other
 * than HTAB (CR and LF end the line before, and are left out). */
static void test_each_byte_in_a_value(void **state)
{
    (void)state;
    enum { LEN = 24 };
    for (int pos = 0; pos < LEN; pos++) {
        for (int b = 1; b < 256; b++) {
            if (b == '\r' || b == '\n')
                continue;
            char head[96];
            int n = snprintf(head, sizeof head, "GET / HTTP/1.1\r\nX: %*s\r\n\r\n", LEN, "");
            char *value = head + n - 4 - LEN;
            memset(value, 'v', LEN);
            value[pos] = (char)b;
            kp_framing f;
            kp_framing_check(head, (size_t)n, MAX_BODY, &f);
            int control = (b < 0x20 && b != '\t') || b == 0x7f;
            if (f.status != (control ? 400 : 0))
                fail_msg("byte 0x%02x at %d: status %d", b, pos, f.status);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_end),
        cmocka_unit_test(test_what_passes),
        cmocka_unit_test(test_what_is_refused),
        cmocka_unit_test(test_each_byte_in_a_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
