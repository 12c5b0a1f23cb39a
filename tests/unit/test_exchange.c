/*
 * test_exchange.c - what every host does around the router (api/exchange.c):
 * request ids, the body limit, the host's error page, the check of what a
 * handler left, HEAD and the request summary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <sodium.h>

#include "api/exchange.h"
#include "core/log.h"

static void test_request_ids(void **state)
{
    (void)state;
    kp_exchange_ids ids;
    char a[KP_REQUEST_ID_MAX + 1], b[KP_REQUEST_ID_MAX + 1];
    kp_exchange_ids_init(&ids);
    kp_exchange_request_id(&ids, NULL, a);
    kp_exchange_request_id(&ids, "bad id with spaces", b);
    assert_int_equal(strlen(a), 16);
    assert_memory_equal(a, b, 8); /* one prefix, then the counter */
    assert_string_not_equal(a, b);
    kp_exchange_request_id(&ids, "abc-DEF_1.2", a);
    assert_string_equal(a, "abc-DEF_1.2");

    char long_id[KP_REQUEST_ID_MAX + 2];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_false(kp_exchange_id_is_sane(long_id));
    long_id[KP_REQUEST_ID_MAX] = '\0';
    assert_true(kp_exchange_id_is_sane(long_id));
    assert_false(kp_exchange_id_is_sane(""));
}

static void plain_page(kp_resp *resp, int status, const char *code, const char *message)
{
    char text[300];
    int n = snprintf(text, sizeof text, "%s: %s", code, message);
    kp_resp_text(resp, status, "text/plain", text, (size_t)n);
}

static void test_body_limit_and_pages(void **state)
{
    (void)state;
    kp_resp resp;
    memset(&resp, 0, sizeof resp);
    assert_int_equal(kp_exchange_check_body(NULL, KP_MAX_BODY, &resp), 0);
    assert_int_equal(resp.status, 0);
    assert_int_equal(kp_exchange_check_body(NULL, KP_MAX_BODY + 1, &resp), -1);
    assert_int_equal(resp.status, 413);
    assert_non_null(strstr(resp.body.data, "\"payload_too_large\""));
    kp_resp_free(&resp);

    memset(&resp, 0, sizeof resp);
    assert_int_equal(kp_exchange_check_body(plain_page, KP_MAX_BODY + 1, &resp), -1);
    assert_int_equal(resp.status, 413);
    assert_string_equal(kp_headers_get(&resp.headers, "Content-Type"), "text/plain");
    assert_non_null(strstr(resp.body.data, "payload_too_large: request body exceeds 1 MiB"));
    kp_resp_free(&resp);
}

static void test_check_response(void **state)
{
    (void)state;
    kp_resp resp;
    kp_req_summary sum;
    struct timespec t0 = {0, 0};
    kp_exchange_begin(&sum, "GET", &t0);
    snprintf(sum.request_id, sizeof sum.request_id, "rid-1");

    memset(&resp, 0, sizeof resp);
    kp_resp_text(&resp, 201, "text/plain", "ok", 2);
    kp_exchange_check_response(NULL, &resp, &sum);
    assert_int_equal(resp.status, 201);
    assert_int_equal(sum.status, 201);
    kp_resp_free(&resp);

    memset(&resp, 0, sizeof resp); /* a handler that set nothing */
    kp_exchange_check_response(NULL, &resp, &sum);
    assert_int_equal(resp.status, 500);
    assert_int_equal(sum.status, 500);
    assert_non_null(strstr(resp.body.data, "request rid-1"));
    kp_resp_free(&resp);
}

static void test_head(void **state)
{
    (void)state;
    assert_true(kp_exchange_is_head("HEAD"));
    assert_false(kp_exchange_is_head("GET"));
    assert_true(kp_exchange_has_body("GET", 200));
    assert_true(kp_exchange_has_body("POST", 404));
    assert_false(kp_exchange_has_body("HEAD", 200));
    assert_false(kp_exchange_has_body("GET", 204));
    assert_false(kp_exchange_has_body("GET", 304));
    assert_false(kp_exchange_has_body("GET", 101));
}

static int released;
static void count_release(kp_stream *s)
{
    (void)s;
    released++;
}

static void test_drop_stream(void **state)
{
    (void)state;
    kp_stream st = {.release = count_release};
    kp_resp resp;
    memset(&resp, 0, sizeof resp);
    resp.stream = &st;
    kp_exchange_drop_stream(&resp);
    assert_null(resp.stream);
    assert_int_equal(released, 1);
    kp_exchange_drop_stream(&resp); /* nothing left: nothing released */
    assert_int_equal(released, 1);
}

static void test_summary(void **state)
{
    (void)state;
    kp_req req;
    kp_req_summary sum;
    struct timespec t0 = {0, 0};
    memset(&req, 0, sizeof req);
    req.path = "/v1/me";
    req.request_id = "r-1";
    req.remote_addr = "203.0.113.9";
    req.principal.authenticated = 1;
    snprintf(req.principal.user_id, sizeof req.principal.user_id, "u_1");
    kp_exchange_begin(&sum, "GET", &t0);
    kp_exchange_take_request(&sum, &req);
    assert_string_equal(sum.route, "unmatched");
    assert_string_equal(sum.path, "/v1/me");
    assert_string_equal(sum.request_id, "r-1");
    assert_string_equal(sum.remote_addr, "203.0.113.9");
    assert_string_equal(sum.user_id, "u_1");
    req.route = "/v1/me";
    kp_exchange_take_request(&sum, &req);
    assert_string_equal(sum.route, "/v1/me");
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    kp_log_set_level(KP_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_ids),    cmocka_unit_test(test_body_limit_and_pages),
        cmocka_unit_test(test_check_response), cmocka_unit_test(test_head),
        cmocka_unit_test(test_drop_stream),    cmocka_unit_test(test_summary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
