/*
 * test_stripe_api.c - the pure parts of the Stripe client (stripe/stripe_api.c):
 * the form encoder (bracket keys, the characters form encoding must escape,
 * UTF-8), the mapping of Stripe's error bodies to a kp_err, and which
 * answers are retried. The wire itself (headers, retries, idempotency) is
 * tested against the fake Stripe in tests/integration/billing.test.mjs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "stripe/stripe_api.h"

static void encode_expect(const kp_stripe_param *p, size_t n, const char *want)
{
    kp_buf out = KP_BUF_INIT;
    kp_err err = {0};
    assert_int_equal(kp_stripe_form_encode(p, n, &out, &err), KP_OK);
    assert_string_equal(kp_buf_cstr(&out), want);
    kp_buf_free(&out);
}

static void test_form_bracket_keys(void **state)
{
    (void)state;
    const kp_stripe_param p[] = {
        {"mode", "subscription"},
        {"line_items[0][price]", "price_123"},
        {"line_items[0][quantity]", "1"},
        {"subscription_data[metadata][koumpa_user_id]", "usr_abc"},
    };
    encode_expect(p, 4,
                  "mode=subscription&line_items%5B0%5D%5Bprice%5D=price_123&line_items%5B0%5D%5Bquantity%5D=1"
                  "&subscription_data%5Bmetadata%5D%5Bkoumpa_user_id%5D=usr_abc");
}

static void test_form_escapes_separators(void **state)
{
    (void)state;
    /* each of these would change the fields a form decoder sees if sent raw */
    const kp_stripe_param p[] = {
        {"a&b=c", "x=1&y=2"},
        {"plus", "a+b c"},
        {"pct", "100%"},
        {"url", "https://h.example/billing/success?session_id={CHECKOUT_SESSION_ID}"},
    };
    encode_expect(p, 4,
                  "a%26b%3Dc=x%3D1%26y%3D2&plus=a%2Bb%20c&pct=100%25"
                  "&url=https%3A%2F%2Fh.example%2Fbilling%2Fsuccess%3Fsession_id%3D%7BCHECKOUT_SESSION_ID%7D");
}

static void test_form_unreserved_and_utf8(void **state)
{
    (void)state;
    const kp_stripe_param p[] = {
        {"keep", "AZaz09-._~"},
        {"email", "zoë@example.com"},
        {"emoji", "\xF0\x9F\x98\x80"},
    };
    encode_expect(p, 3, "keep=AZaz09-._~&email=zo%C3%AB%40example.com&emoji=%F0%9F%98%80");
}

static void test_form_empty_and_appends(void **state)
{
    (void)state;
    kp_buf out = KP_BUF_INIT;
    kp_err err = {0};
    assert_int_equal(kp_stripe_form_encode(NULL, 0, &out, &err), KP_OK);
    assert_string_equal(kp_buf_cstr(&out), "");
    const kp_stripe_param p[] = {{"empty", ""}};
    assert_int_equal(kp_stripe_form_encode(p, 1, &out, &err), KP_OK);
    assert_string_equal(kp_buf_cstr(&out), "empty=");
    kp_buf_free(&out);
}

static void test_form_refuses_null(void **state)
{
    (void)state;
    kp_buf out = KP_BUF_INIT;
    kp_err err = {0};
    const kp_stripe_param p[] = {{"mode", "subscription"}, {"customer", NULL}};
    assert_int_equal(kp_stripe_form_encode(p, 2, &out, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "no value"));
    kp_buf_free(&out);
}

static void test_error_with_stripe_message(void **state)
{
    (void)state;
    const char *body = "{\"error\":{\"type\":\"invalid_request_error\",\"code\":\"resource_missing\","
                       "\"param\":\"line_items[0][price]\",\"message\":\"No such price: 'price_x'\"}}";
    kp_stripe_result res = {0};
    kp_err err = {0};
    assert_int_equal(kp_stripe_error_from_response(400, body, strlen(body), &res, &err), KP_EIO);
    assert_int_equal(err.status, KP_EIO);
    assert_string_equal(err.msg, "Stripe: No such price: 'price_x'");
    assert_string_equal(res.error_type, "invalid_request_error");
    assert_string_equal(res.error_code, "resource_missing");
}

static void test_error_without_message(void **state)
{
    (void)state;
    kp_stripe_result res = {0};
    kp_err err = {0};
    const char *typed = "{\"error\":{\"type\":\"api_error\"}}";
    kp_stripe_error_from_response(500, typed, strlen(typed), &res, &err);
    assert_string_equal(err.msg, "Stripe answered HTTP 500 (api_error)");
    assert_string_equal(res.error_code, "");

    const char *html = "<html>Bad Gateway</html>";
    kp_stripe_error_from_response(502, html, strlen(html), &res, &err);
    assert_string_equal(err.msg, "Stripe answered HTTP 502");
    assert_string_equal(res.error_type, "");

    kp_stripe_error_from_response(503, NULL, 0, NULL, &err);
    assert_string_equal(err.msg, "Stripe answered HTTP 503");

    const char *wrong = "{\"error\":\"nope\"}";
    kp_stripe_error_from_response(401, wrong, strlen(wrong), &res, &err);
    assert_string_equal(err.msg, "Stripe answered HTTP 401");
}

static void test_should_retry(void **state)
{
    (void)state;
    assert_true(kp_stripe_should_retry(0, NULL)); /* timeout, connection error */
    assert_true(kp_stripe_should_retry(500, NULL));
    assert_true(kp_stripe_should_retry(503, NULL));
    assert_true(kp_stripe_should_retry(429, NULL));
    assert_false(kp_stripe_should_retry(400, NULL));
    assert_false(kp_stripe_should_retry(401, NULL));
    assert_false(kp_stripe_should_retry(402, NULL));
    assert_false(kp_stripe_should_retry(404, NULL));
    assert_false(kp_stripe_should_retry(409, NULL));
    /* Stripe's header decides when present */
    assert_true(kp_stripe_should_retry(409, "true"));
    assert_false(kp_stripe_should_retry(500, "false"));
    assert_false(kp_stripe_should_retry(429, "false"));
    assert_true(kp_stripe_should_retry(500, "maybe"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_bracket_keys),        cmocka_unit_test(test_form_escapes_separators),
        cmocka_unit_test(test_form_unreserved_and_utf8), cmocka_unit_test(test_form_empty_and_appends),
        cmocka_unit_test(test_form_refuses_null),        cmocka_unit_test(test_error_with_stripe_message),
        cmocka_unit_test(test_error_without_message),    cmocka_unit_test(test_should_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
