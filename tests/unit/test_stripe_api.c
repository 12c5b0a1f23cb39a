/*
 * test_stripe_api.c - the pure parts of the Stripe client (stripe/stripe_api.c):
 * the form encoder (bracket keys, the characters form encoding must escape,
 * UTF-8), the mapping of Stripe's error bodies to a kp_err, and which
 * answers are retried. The wire itself (headers, retries, idempotency) is
 * tested against the fake Stripe in tests/integration/billing.test.mjs;
 * here only what a call does before and without an answer: no key, a key
 * that would break the header, a stopped client, nothing listening.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/log.h"
#include "fake_secrets.h"
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

/* A client of a closed loopback port (nothing answers), with secrets of its own (no key yet). */
typedef struct fixture {
    kp_fake_secrets *secrets;
    kp_stripe *stripe;
} fixture;

static int setup_client(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->secrets = kp_fake_secrets_new();
    kp_stripe_options o = {
        .api_base = "http://127.0.0.1:1/",
        .api_version = "2026-10-28.endive",
        .secrets = kp_fake_secrets_service(f->secrets),
        .connect_timeout_s = 5,
        .timeout_s = 5,
        .max_retries = 2,
        .backoff_ms = 1,
    };
    kp_err err = {0};
    assert_int_equal(kp_stripe_new(&o, &f->stripe, &err), KP_OK);
    *state = f;
    return 0;
}

static int teardown_client(void **state)
{
    fixture *f = *state;
    kp_stripe_free(f->stripe);
    kp_fake_secrets_free(f->secrets);
    free(f);
    return 0;
}

static kp_status call(fixture *f, kp_stripe_result *res, kp_err *err)
{
    const kp_stripe_param p[] = {{"customer", "cus_1"}, {"return_url", "https://x.example/billing"}};
    json_t *out = NULL;
    kp_status rc = kp_stripe_call(f->stripe, "POST", "/v1/billing_portal/sessions", p, 2, &out, res, err);
    assert_null(out);
    return rc;
}

static void test_call_without_key(void **state)
{
    fixture *f = *state;
    kp_stripe_result res;
    kp_err err = {0};
    assert_false(kp_stripe_configured(f->stripe));
    assert_int_equal(call(f, &res, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "STRIPE_SECRET_KEY"));
    assert_int_equal(res.attempts, 0);
}

static void test_call_refuses_key_that_breaks_the_header(void **state)
{
    fixture *f = *state;
    kp_stripe_result res;
    kp_err err = {0};
    kp_fake_secrets_put(f->secrets, KP_SECRET_STRIPE_SECRET_KEY, "sk_test_1\r\nX-Injected: 1");
    assert_int_equal(call(f, &res, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "control character"));
    assert_null(strstr(err.msg, "sk_test_1")); /* never the value */
    assert_int_equal(res.attempts, 0);
}

static void test_call_nothing_listening_is_retried_then_eio(void **state)
{
    fixture *f = *state;
    kp_stripe_result res;
    kp_err err = {0};
    kp_fake_secrets_put(f->secrets, KP_SECRET_STRIPE_SECRET_KEY, "sk_test_123");
    assert_true(kp_stripe_configured(f->stripe));
    assert_int_equal(call(f, &res, &err), KP_EIO);
    assert_int_equal(res.attempts, 3);
    assert_int_equal(res.http_status, 0);
    assert_non_null(strstr(err.msg, "Stripe did not answer after 3 attempts"));
    assert_memory_equal(res.idempotency_key, "koumpa-", 7);
    assert_int_equal(strlen(res.idempotency_key), 7 + 32);
}

static void test_call_after_stop(void **state)
{
    fixture *f = *state;
    kp_stripe_result res;
    kp_err err = {0};
    json_t *out = NULL;
    kp_fake_secrets_put(f->secrets, KP_SECRET_STRIPE_SECRET_KEY, "sk_test_123");
    kp_stripe_stop(f->stripe);
    assert_int_equal(call(f, &res, &err), KP_EUNAVAILABLE);
    assert_int_equal(res.attempts, 0);
    assert_int_equal(kp_stripe_call(f->stripe, "DELETE", "/v1/x", NULL, 0, &out, NULL, &err), KP_EINTERNAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_bracket_keys),
        cmocka_unit_test(test_form_escapes_separators),
        cmocka_unit_test(test_form_unreserved_and_utf8),
        cmocka_unit_test(test_form_empty_and_appends),
        cmocka_unit_test(test_form_refuses_null),
        cmocka_unit_test(test_error_with_stripe_message),
        cmocka_unit_test(test_error_without_message),
        cmocka_unit_test(test_should_retry),
        cmocka_unit_test_setup_teardown(test_call_without_key, setup_client, teardown_client),
        cmocka_unit_test_setup_teardown(test_call_refuses_key_that_breaks_the_header, setup_client, teardown_client),
        cmocka_unit_test_setup_teardown(test_call_nothing_listening_is_retried_then_eio, setup_client, teardown_client),
        cmocka_unit_test_setup_teardown(test_call_after_stop, setup_client, teardown_client),
    };
    kp_log_set_level(KP_LOG_ERROR); /* the retries' warnings */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
