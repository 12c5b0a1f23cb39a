/*
 * test_stripe_sig.c - Stripe-Signature verification (src/auth/stripe_sig.c):
 * the header's shape, the timestamp's tolerance both ways, v1 signatures
 * under one of several secrets, v0 and other schemes ignored.
 *
 * Signatures are made here with OpenSSL's HMAC (EVP_Q_mac), not with the
 * module's libsodium code, so a wrong MAC construction there cannot pass.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/stripe_sig.h"
#include "core/buf.h"

#define NOW 1700000000
#define TOL 300
#define SECRET "whsec_test_0123456789abcdef"
#define OTHER "whsec_other_fedcba9876543210"
#define BODY "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"invoice.paid\"}"

/* Lower-case hex HMAC-SHA256 of "{t}.{body}" under secret, as Stripe signs. */
static void hex_sig(const char *secret, const char *t, const void *body, size_t body_len, char out[65])
{
    kp_buf msg = KP_BUF_INIT;
    unsigned char mac[32];
    size_t mac_len = 0;
    assert_int_equal(kp_buf_printf(&msg, "%s.", t), 0);
    assert_int_equal(kp_buf_append(&msg, body, body_len), 0);
    assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, strlen(secret),
                              (const unsigned char *)msg.data, msg.len, mac, sizeof mac, &mac_len));
    assert_int_equal(mac_len, 32);
    for (size_t i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
    kp_buf_free(&msg);
}

/* The v1 signature of BODY under secret at NOW. */
static void sig_now(const char *secret, char out[65])
{
    char ts[32];
    snprintf(ts, sizeof ts, "%d", NOW);
    hex_sig(secret, ts, BODY, strlen(BODY), out);
}

/* Verifies BODY with header at NOW; checks the status and that the detail never shows a secret. */
static kp_stripe_sig_status verify_with(const char *header, const char *body, const char *secrets)
{
    const char *detail = NULL;
    kp_stripe_sig_status st = kp_stripe_sig_verify(header, body, strlen(body), secrets, NOW, TOL, &detail);
    assert_non_null(detail);
    assert_null(strstr(detail, "whsec_"));
    assert_null(strstr(kp_stripe_sig_reason(st), "whsec_"));
    return st;
}

static kp_stripe_sig_status verify(const char *header)
{
    return verify_with(header, BODY, SECRET);
}

/* "t={t},v1={sig of BODY under secret at t}". */
static char *header_for(const char *secret, long long t)
{
    char ts[32], sig[65];
    kp_buf h = KP_BUF_INIT;
    snprintf(ts, sizeof ts, "%lld", t);
    hex_sig(secret, ts, BODY, strlen(BODY), sig);
    assert_int_equal(kp_buf_printf(&h, "t=%s,v1=%s", ts, sig), 0);
    return kp_buf_steal(&h);
}

static void test_valid(void **state)
{
    (void)state;
    char *h = header_for(SECRET, NOW);
    assert_int_equal(verify(h), KP_STRIPE_SIG_OK);
    free(h);
}

static void test_tampered_body(void **state)
{
    (void)state;
    char *h = header_for(SECRET, NOW);
    assert_int_equal(verify_with(h, "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"invoice.paid\" }", SECRET),
                     KP_STRIPE_SIG_NO_MATCH);
    free(h);
}

static void test_wrong_secret(void **state)
{
    (void)state;
    char *h = header_for(OTHER, NOW);
    assert_int_equal(verify(h), KP_STRIPE_SIG_NO_MATCH);
    free(h);
}

/* A rotation: any secret of our comma-separated list, spaces around them ignored. */
static void test_several_secrets(void **state)
{
    (void)state;
    char *h = header_for(OTHER, NOW);
    assert_int_equal(verify_with(h, BODY, SECRET "," OTHER), KP_STRIPE_SIG_OK);
    assert_int_equal(verify_with(h, BODY, " " SECRET " , " OTHER " "), KP_STRIPE_SIG_OK);
    assert_int_equal(verify_with(h, BODY, OTHER ",,"), KP_STRIPE_SIG_OK);
    assert_int_equal(verify_with(h, BODY, SECRET), KP_STRIPE_SIG_NO_MATCH);
    /* a secret is used whole: neither a prefix nor one with a space inside matches */
    assert_int_equal(verify_with(h, BODY, "whsec_other_fedcba987654321"), KP_STRIPE_SIG_NO_MATCH);
    free(h);
}

static void test_no_secret(void **state)
{
    (void)state;
    char *h = header_for(SECRET, NOW);
    assert_int_equal(verify_with(h, BODY, ""), KP_STRIPE_SIG_NO_SECRET);
    assert_int_equal(verify_with(h, BODY, " , ,"), KP_STRIPE_SIG_NO_SECRET);
    assert_int_equal(verify_with(h, BODY, NULL), KP_STRIPE_SIG_NO_SECRET);
    free(h);
}

/* Stripe sends several v1 while it rolls the endpoint's secret: one valid is enough, wherever it is. */
static void test_several_v1_one_valid(void **state)
{
    (void)state;
    char good[65], bad[65];
    kp_buf h = KP_BUF_INIT;
    sig_now(SECRET, good);
    sig_now(OTHER, bad);
    kp_buf_printf(&h, "t=%d,v1=%s,v1=%s,v0=%s", NOW, bad, good, bad);
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_OK);
    kp_buf_reset(&h);
    kp_buf_printf(&h, "t=%d,v1=%s,v1=%s", NOW, bad, bad);
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_NO_MATCH);
    kp_buf_free(&h);
}

/* v0 (and any other scheme) is never accepted, even when it holds the right MAC. */
static void test_v0_only(void **state)
{
    (void)state;
    char good[65];
    kp_buf h = KP_BUF_INIT;
    sig_now(SECRET, good);
    kp_buf_printf(&h, "t=%d,v0=%s", NOW, good);
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_NO_V1);
    kp_buf_reset(&h);
    kp_buf_printf(&h, "t=%d,v2=%s,scheme=x", NOW, good);
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_NO_V1);
    kp_buf_reset(&h);
    kp_buf_printf(&h, "v0=%s,t=%d,v9=abc,v1=%s", good, NOW, good); /* other schemes beside v1: ignored */
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_OK);
    kp_buf_free(&h);
}

static void test_stale_and_future(void **state)
{
    (void)state;
    char *h;
    h = header_for(SECRET, NOW - TOL - 1);
    assert_int_equal(verify(h), KP_STRIPE_SIG_STALE);
    free(h);
    h = header_for(SECRET, NOW - TOL); /* at the edge: accepted */
    assert_int_equal(verify(h), KP_STRIPE_SIG_OK);
    free(h);
    h = header_for(SECRET, NOW + TOL + 1);
    assert_int_equal(verify(h), KP_STRIPE_SIG_FUTURE);
    free(h);
    h = header_for(SECRET, NOW + TOL);
    assert_int_equal(verify(h), KP_STRIPE_SIG_OK);
    free(h);
    h = header_for(SECRET, 0);
    assert_int_equal(verify(h), KP_STRIPE_SIG_STALE);
    free(h);
    h = header_for(SECRET, 999999999999LL);
    assert_int_equal(verify(h), KP_STRIPE_SIG_FUTURE);
    free(h);
}

/* The timestamp is signed: moving it (to get past the tolerance) breaks the signature. */
static void test_timestamp_changed_after_signing(void **state)
{
    (void)state;
    char sig[65], ts[32];
    kp_buf h = KP_BUF_INIT;
    snprintf(ts, sizeof ts, "%d", NOW - 1000);
    hex_sig(SECRET, ts, BODY, strlen(BODY), sig);
    kp_buf_printf(&h, "t=%d,v1=%s", NOW, sig);
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_NO_MATCH);
    kp_buf_free(&h);
}

/* Leading zeros are the same number, signed as Stripe's libraries print it. */
static void test_timestamp_leading_zeros(void **state)
{
    (void)state;
    char sig[65];
    kp_buf h = KP_BUF_INIT;
    sig_now(SECRET, sig);
    kp_buf_printf(&h, "t=00%d,v1=%s", NOW, sig);
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_OK);
    kp_buf_free(&h);
}

static void test_missing_and_empty(void **state)
{
    (void)state;
    assert_int_equal(verify(NULL), KP_STRIPE_SIG_MISSING);
    assert_int_equal(verify(""), KP_STRIPE_SIG_MISSING);
}

static void test_malformed(void **state)
{
    (void)state;
    char sig[65];
    sig_now(SECRET, sig);
    const char *cases[] = {
        "garbage",
        "t=,v1=%s",
        "v1=%s",                /* no t */
        "t=abc,v1=%s",          /* t not a number */
        "t=-1700000000,v1=%s",  /* signed */
        "t=+1700000000,v1=%s",  /* signed */
        "t=1700000000.5,v1=%s", /* not whole */
        "t=1234567890123,v1=%s",
        "t=1700000000,t=1700000000,v1=%s",
        "t=1700000000,v1=%s,",   /* trailing comma */
        "t=1700000000,,v1=%s",   /* empty element */
        "t=1700000000,=x,v1=%s", /* empty key */
        "t=1700000000,v1",       /* no value */
        "t=1700000000,v1=%.63s", /* short */
        "t=1700000000,v1=%s0",   /* long */
        "t=1700000000,v1=zz%.62s",
        "t=1700000000;v1=%s",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char header[512];
        snprintf(header, sizeof header, cases[i], sig);
        if (verify(header) != KP_STRIPE_SIG_MALFORMED)
            fail_msg("accepted as well-formed: %s", header);
    }
}

static void test_limits(void **state)
{
    (void)state;
    char sig[65];
    kp_buf h = KP_BUF_INIT;
    sig_now(SECRET, sig);
    kp_buf_printf(&h, "t=%d", NOW);
    for (int i = 0; i < KP_STRIPE_SIG_MAX_V1; i++)
        kp_buf_printf(&h, ",v1=%s", sig);
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_OK);
    kp_buf_printf(&h, ",v1=%s", sig);
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_MALFORMED);
    kp_buf_reset(&h);
    kp_buf_printf(&h, "t=%d,v1=%s", NOW, sig);
    while (h.len <= KP_STRIPE_SIG_HEADER_MAX)
        kp_buf_puts(&h, ",v0=ignored");
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_MALFORMED);
    kp_buf_free(&h);
}

/* Spaces after commas (and around elements) are tolerated, as some of Stripe's libraries do. */
static void test_spaces(void **state)
{
    (void)state;
    char sig[65];
    kp_buf h = KP_BUF_INIT;
    sig_now(SECRET, sig);
    kp_buf_printf(&h, " t=%d, v1=%s ", NOW, sig);
    assert_int_equal(verify(h.data), KP_STRIPE_SIG_OK);
    kp_buf_free(&h);
}

/* The MAC covers the raw bytes, NULs and invalid UTF-8 included. */
static void test_binary_body(void **state)
{
    (void)state;
    static const unsigned char body[] = {'{', 0, 0xff, 0xfe, '}', '\n'};
    char sig[65], ts[32];
    kp_buf h = KP_BUF_INIT;
    snprintf(ts, sizeof ts, "%d", NOW);
    hex_sig(SECRET, ts, body, sizeof body, sig);
    kp_buf_printf(&h, "t=%s,v1=%s", ts, sig);
    assert_int_equal(kp_stripe_sig_verify(h.data, body, sizeof body, SECRET, NOW, TOL, NULL), KP_STRIPE_SIG_OK);
    assert_int_equal(kp_stripe_sig_verify(h.data, body, sizeof body - 1, SECRET, NOW, TOL, NULL),
                     KP_STRIPE_SIG_NO_MATCH);
    kp_buf_free(&h);
}

/* Checks come in order: shape, then time, then signatures (a stale header is never MAC'd). */
static void test_order_and_reasons(void **state)
{
    (void)state;
    char *h = header_for(OTHER, NOW - TOL - 1);
    assert_int_equal(verify(h), KP_STRIPE_SIG_STALE);
    free(h);
    assert_string_equal(kp_stripe_sig_reason(KP_STRIPE_SIG_OK), "ok");
    assert_string_equal(kp_stripe_sig_reason(KP_STRIPE_SIG_MISSING), "missing_header");
    assert_string_equal(kp_stripe_sig_reason(KP_STRIPE_SIG_MALFORMED), "malformed_header");
    assert_string_equal(kp_stripe_sig_reason(KP_STRIPE_SIG_NO_V1), "no_v1_signature");
    assert_string_equal(kp_stripe_sig_reason(KP_STRIPE_SIG_STALE), "timestamp_too_old");
    assert_string_equal(kp_stripe_sig_reason(KP_STRIPE_SIG_FUTURE), "timestamp_in_future");
    assert_string_equal(kp_stripe_sig_reason(KP_STRIPE_SIG_NO_MATCH), "no_matching_signature");
    assert_string_equal(kp_stripe_sig_reason(KP_STRIPE_SIG_NO_SECRET), "no_secret");
}

static void test_parse(void **state)
{
    (void)state;
    kp_stripe_sig_header h;
    const char *detail = NULL;
    char sig[65];
    kp_buf s = KP_BUF_INIT;
    hex_sig(SECRET, "5", "", 0, sig);
    kp_buf_printf(&s, "t=5,v1=%s,v1=%s", sig, sig);
    assert_int_equal(kp_stripe_sig_parse(s.data, &h, &detail), KP_STRIPE_SIG_OK);
    assert_string_equal(detail, "");
    assert_int_equal(h.timestamp, 5);
    assert_int_equal(h.n_v1, 2);
    assert_memory_equal(h.v1[0], h.v1[1], KP_STRIPE_SIG_LEN);
    assert_int_equal(kp_stripe_sig_parse("t=5,v1=x", &h, &detail), KP_STRIPE_SIG_MALFORMED);
    assert_non_null(strstr(detail, "64 hex"));
    kp_buf_free(&s);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_tampered_body),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_several_secrets),
        cmocka_unit_test(test_no_secret),
        cmocka_unit_test(test_several_v1_one_valid),
        cmocka_unit_test(test_v0_only),
        cmocka_unit_test(test_stale_and_future),
        cmocka_unit_test(test_timestamp_changed_after_signing),
        cmocka_unit_test(test_timestamp_leading_zeros),
        cmocka_unit_test(test_missing_and_empty),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_spaces),
        cmocka_unit_test(test_binary_body),
        cmocka_unit_test(test_order_and_reasons),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
