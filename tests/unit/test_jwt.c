/*
 * test_jwt.c - compact JWS parsing, base64url strictness, HS256 and RS256
 * signature checks and the time claims (src/auth/jwt.c).
 *
 * Tokens are minted here with OpenSSL directly (HMAC / EVP_DigestSign), not
 * with the module's own signer, except where the signer itself is tested.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "auth/jwt.h"
#include "core/buf.h"

static const unsigned char KEY[] = "0123456789abcdef0123456789abcdef";
#define KEY_LEN (sizeof KEY - 1)

static EVP_PKEY *rsa2048;

/* ---- minting ---- */

static void b64_append(kp_buf *b, const void *data, size_t len)
{
    char *s = kp_jwt_b64url_encode(data, len);

    assert_non_null(s);
    assert_int_equal(kp_buf_puts(b, s), 0);
    free(s);
}

/* header.payload.signature with an HMAC-SHA256 (key) or RS256 (rsa) signature. */
static char *mint(const char *header, const char *payload, const unsigned char *key, size_t key_len, EVP_PKEY *rsa)
{
    kp_buf b = KP_BUF_INIT;
    unsigned char sig[1024];
    size_t sig_len = sizeof sig;

    b64_append(&b, header, strlen(header));
    assert_int_equal(kp_buf_puts(&b, "."), 0);
    b64_append(&b, payload, strlen(payload));
    if (rsa) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, rsa), 1);
        assert_int_equal(EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *)b.data, b.len), 1);
        EVP_MD_CTX_free(ctx);
    } else {
        assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, (const unsigned char *)b.data,
                                  b.len, sig, sizeof sig, &sig_len));
    }
    assert_int_equal(kp_buf_puts(&b, "."), 0);
    b64_append(&b, sig, sig_len);
    return kp_buf_steal(&b);
}

static char *mint_hs(const char *payload)
{
    return mint("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, KEY, KEY_LEN, NULL);
}

/* Parses token and returns the status; on failure err.msg must contain want. */
static kp_status parse_expect(const char *token, const char *want)
{
    kp_jwt jwt = KP_JWT_INIT;
    kp_err err;
    kp_status st;

    kp_err_clear(&err);
    st = kp_jwt_parse(token, &jwt, &err);
    if (want) {
        assert_int_equal(st, KP_EAUTH);
        if (!strstr(err.msg, want))
            fail_msg("error '%s' does not contain '%s'", err.msg, want);
        assert_null(jwt.header);
        assert_null(jwt.payload);
        assert_null(jwt.sig);
    } else {
        assert_int_equal(st, KP_OK);
    }
    kp_jwt_free(&jwt);
    return st;
}

static int group_setup(void **state)
{
    (void)state;
    rsa2048 = EVP_RSA_gen(2048);
    return rsa2048 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(rsa2048);
    return 0;
}

/* ---- base64url ---- */

static void test_b64url_roundtrip_and_vectors(void **state)
{
    unsigned char *out = NULL;
    size_t out_len = 0;
    char *enc;
    (void)state;

    /* RFC 4648 test vectors without padding, plus the two URL-safe characters */
    enc = kp_jwt_b64url_encode((const unsigned char *)"foob", 4);
    assert_string_equal(enc, "Zm9vYg");
    free(enc);
    enc = kp_jwt_b64url_encode((const unsigned char *)"\xfb\xff", 2);
    assert_string_equal(enc, "-_8");
    free(enc);
    enc = kp_jwt_b64url_encode(NULL, 0);
    assert_string_equal(enc, "");
    free(enc);

    assert_int_equal(kp_jwt_b64url_decode("-_8", 3, &out, &out_len), 0);
    assert_int_equal(out_len, 2);
    assert_memory_equal(out, "\xfb\xff", 2);
    free(out);
    assert_int_equal(kp_jwt_b64url_decode("", 0, &out, &out_len), 0);
    assert_non_null(out);
    assert_int_equal(out_len, 0);
    free(out);
}

static void test_b64url_strict(void **state)
{
    static const char *bad[] = {
        "Zm9vYg==", /* padding */
        "Zm9v Yg",  /* whitespace */
        "Zm9vYg\n", /* trailing newline */
        "+_8",      /* standard alphabet '+' */
        "-/8",      /* standard alphabet '/' */
        "Zm9vY",    /* impossible length (1 mod 4) */
        "Zm9vYh",   /* non-zero trailing bits */
        "Zm9v!g",   /* foreign character */
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char *out = (unsigned char *)"sentinel";
        size_t out_len = 99;
        if (kp_jwt_b64url_decode(bad[i], strlen(bad[i]), &out, &out_len) != -1)
            fail_msg("accepted '%s'", bad[i]);
        assert_null(out);
    }
}

/* ---- parsing ---- */

static void test_parse_valid(void **state)
{
    char *tok = mint_hs("{\"sub\":\"u1\",\"exp\":2000000000}");
    kp_jwt jwt = KP_JWT_INIT;
    kp_err err;
    (void)state;

    assert_int_equal(kp_jwt_parse(tok, &jwt, &err), KP_OK);
    assert_string_equal(kp_jwt_header_string(&jwt, "alg"), "HS256");
    assert_string_equal(kp_jwt_claim_string(&jwt, "sub"), "u1");
    assert_null(kp_jwt_claim_string(&jwt, "exp")); /* a number, not a string */
    assert_int_equal(jwt.sig_len, 32);
    assert_int_equal(jwt.signing_input_len, (size_t)(strrchr(tok, '.') - tok));
    assert_ptr_equal(jwt.signing_input, tok);
    kp_jwt_free(&jwt);
    kp_jwt_free(&jwt); /* idempotent */
    free(tok);
}

static void test_parse_segments(void **state)
{
    char *tok = mint_hs("{\"sub\":\"u1\"}");
    kp_buf b = KP_BUF_INIT;
    char *two;
    (void)state;

    parse_expect(NULL, "missing token");
    parse_expect("", "missing token");
    parse_expect("abc", "3 segments");
    two = strdup(tok);
    *strrchr(two, '.') = '\0';
    parse_expect(two, "3 segments");                        /* header.payload */
    kp_buf_printf(&b, "%s.%s", tok, strrchr(tok, '.') + 1); /* 4 segments */
    parse_expect(b.data, "3 segments");
    kp_buf_reset(&b);
    kp_buf_printf(&b, "%s.", two); /* empty signature */
    parse_expect(b.data, "missing signature");
    parse_expect("..", "missing signature");
    parse_expect("...", "3 segments");
    kp_buf_free(&b);
    free(two);
    free(tok);
}

static void test_parse_bad_segments(void **state)
{
    kp_buf b = KP_BUF_INIT;
    char *good = mint_hs("{\"sub\":\"u1\"}");
    const char *rest = strchr(good, '.'); /* ".payload.sig" */
    char *h;
    (void)state;

    kp_buf_printf(&b, "e30=%s", rest); /* "{}" padded */
    parse_expect(b.data, "header is not base64url");
    kp_buf_reset(&b);
    kp_buf_printf(&b, "!!!!%s", rest);
    parse_expect(b.data, "header is not base64url");

    /* header decodes but is not a JSON object */
    h = kp_jwt_b64url_encode((const unsigned char *)"not json", 8);
    kp_buf_reset(&b);
    kp_buf_printf(&b, "%s%s", h, rest);
    parse_expect(b.data, "header is not a JSON object");
    free(h);
    h = kp_jwt_b64url_encode((const unsigned char *)"[\"HS256\"]", 9);
    kp_buf_reset(&b);
    kp_buf_printf(&b, "%s%s", h, rest);
    parse_expect(b.data, "header is not a JSON object");
    free(h);
    kp_buf_reset(&b);
    kp_buf_printf(&b, "%s", rest); /* empty header */
    parse_expect(b.data, "header is not a JSON object");
    free(good);

    /* payload problems */
    good = mint_hs("\"just a string\"");
    parse_expect(good, "payload is not a JSON object");
    free(good);
    good = mint_hs("{\"sub\":\"a\",\"sub\":\"b\"}"); /* duplicate member: ambiguous */
    parse_expect(good, "payload is not a JSON object");
    free(good);
    good = mint_hs("{\"sub\":\"u\"}");
    kp_buf_reset(&b);
    kp_buf_puts(&b, good);
    b.data[strrchr(b.data, '.') - b.data + 1] = '*'; /* signature not base64url */
    parse_expect(b.data, "signature is not base64url");
    free(good);
    kp_buf_free(&b);
}

/* A structurally valid token of exactly total bytes: a fixed header and
 * payload, and a signature segment sized to fill the rest. */
static char *token_of_length(size_t total)
{
    const char *payloads[] = {"{}", "{ }"};
    kp_buf b = KP_BUF_INIT;
    size_t i;

    for (i = 0; i < 2; i++) {
        size_t rest, m;
        unsigned char *sig;

        kp_buf_reset(&b);
        b64_append(&b, "{\"alg\":\"HS256\"}", 15);
        kp_buf_puts(&b, ".");
        b64_append(&b, payloads[i], strlen(payloads[i]));
        kp_buf_puts(&b, ".");
        rest = total - b.len;
        if (rest % 4 == 1) /* no byte string encodes to this length */
            continue;
        m = rest / 4 * 3 + (rest % 4 ? rest % 4 - 1 : 0);
        sig = malloc(m);
        memset(sig, 0x5a, m);
        b64_append(&b, sig, m);
        free(sig);
        assert_int_equal(b.len, total);
        return kp_buf_steal(&b);
    }
    fail();
    return NULL;
}

/* Exactly KP_JWT_MAX_LEN bytes parses; one more, or 64 KiB, does not. */
static void test_parse_length_limit(void **state)
{
    char *tok;
    (void)state;

    tok = token_of_length(KP_JWT_MAX_LEN);
    parse_expect(tok, NULL);
    free(tok);
    tok = token_of_length(KP_JWT_MAX_LEN + 1);
    parse_expect(tok, "token too long");
    free(tok);
    tok = token_of_length(64 * 1024);
    parse_expect(tok, "token too long");
    free(tok);
}

/* ---- HS256 ---- */

static void test_hs256_verify(void **state)
{
    char *tok = mint_hs("{\"sub\":\"u1\"}");
    kp_jwt jwt = KP_JWT_INIT;
    kp_err err;
    static const unsigned char other[] = "0123456789abcdef0123456789abcdeX";
    (void)state;

    assert_int_equal(kp_jwt_parse(tok, &jwt, &err), KP_OK);
    assert_int_equal(kp_jwt_verify_hs256(&jwt, KEY, KEY_LEN, &err), KP_OK);
    assert_int_equal(kp_jwt_verify_hs256(&jwt, other, sizeof other - 1, &err), KP_EAUTH);
    assert_string_equal(err.msg, "invalid signature");
    assert_int_equal(kp_jwt_verify_hs256(&jwt, KEY, KEY_LEN - 1, &err), KP_EAUTH);
    /* a truncated MAC must not verify, even though its prefix matches */
    jwt.sig_len = 16;
    assert_int_equal(kp_jwt_verify_hs256(&jwt, KEY, KEY_LEN, &err), KP_EAUTH);
    kp_jwt_free(&jwt);
    free(tok);
}

static void test_hs256_tampered_payload(void **state)
{
    char *a = mint_hs("{\"sub\":\"alice\"}");
    char *b = mint_hs("{\"sub\":\"mallory\"}");
    kp_buf t = KP_BUF_INIT;
    kp_jwt jwt = KP_JWT_INIT;
    kp_err err;
    const char *a_dot1 = strchr(a, '.'), *a_dot2 = strrchr(a, '.');
    const char *b_dot1 = strchr(b, '.'), *b_dot2 = strrchr(b, '.');
    (void)state;

    /* alice's header and signature around mallory's payload */
    kp_buf_append(&t, a, (size_t)(a_dot1 - a) + 1);
    kp_buf_append(&t, b_dot1 + 1, (size_t)(b_dot2 - b_dot1 - 1));
    kp_buf_puts(&t, a_dot2);
    assert_int_equal(kp_jwt_parse(t.data, &jwt, &err), KP_OK);
    assert_int_equal(kp_jwt_verify_hs256(&jwt, KEY, KEY_LEN, &err), KP_EAUTH);
    kp_jwt_free(&jwt);
    kp_buf_free(&t);
    free(a);
    free(b);
}

static void test_sign_hs256_roundtrip(void **state)
{
    json_t *payload = json_pack("{s:s, s:I}", "sub", "usr_1", "exp", (json_int_t)2000000000);
    char *tok = NULL, *expected;
    kp_jwt jwt = KP_JWT_INIT;
    kp_err err;
    (void)state;

    assert_int_equal(kp_jwt_sign_hs256(payload, KEY, KEY_LEN, &tok, &err), KP_OK);
    /* independently minted over the same bytes: identical token */
    expected = mint_hs("{\"sub\":\"usr_1\",\"exp\":2000000000}");
    assert_string_equal(tok, expected);
    assert_int_equal(kp_jwt_parse(tok, &jwt, &err), KP_OK);
    assert_int_equal(kp_jwt_verify_hs256(&jwt, KEY, KEY_LEN, &err), KP_OK);
    assert_string_equal(kp_jwt_header_string(&jwt, "typ"), "JWT");
    kp_jwt_free(&jwt);
    free(tok);
    free(expected);

    assert_int_equal(kp_jwt_sign_hs256(payload, KEY, 0, &tok, &err), KP_EINVAL);
    assert_null(tok);
    json_decref(payload);
}

/* ---- RS256 ---- */

static void test_rs256_verify(void **state)
{
    char *tok = mint("{\"alg\":\"RS256\",\"kid\":\"k1\"}", "{\"sub\":\"x\"}", NULL, 0, rsa2048);
    kp_jwt jwt = KP_JWT_INIT;
    kp_err err;
    (void)state;

    assert_int_equal(kp_jwt_parse(tok, &jwt, &err), KP_OK);
    assert_int_equal(jwt.sig_len, 256);
    assert_int_equal(kp_jwt_verify_rs256(&jwt, rsa2048, &err), KP_OK);
    /* flip one signature bit */
    jwt.sig[10] ^= 1;
    assert_int_equal(kp_jwt_verify_rs256(&jwt, rsa2048, &err), KP_EAUTH);
    assert_string_equal(err.msg, "invalid signature");
    jwt.sig[10] ^= 1;
    /* a shortened signature */
    jwt.sig_len--;
    assert_int_equal(kp_jwt_verify_rs256(&jwt, rsa2048, &err), KP_EAUTH);
    jwt.sig_len++;
    /* the right signature over different bytes */
    jwt.signing_input_len--;
    assert_int_equal(kp_jwt_verify_rs256(&jwt, rsa2048, &err), KP_EAUTH);
    kp_jwt_free(&jwt);
    free(tok);
}

static void test_rs256_refuses_weak_and_non_rsa_keys(void **state)
{
    EVP_PKEY *weak = EVP_RSA_gen(1024);
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    char *tok = mint("{\"alg\":\"RS256\"}", "{\"sub\":\"x\"}", NULL, 0, weak);
    kp_jwt jwt = KP_JWT_INIT;
    kp_err err;
    (void)state;

    assert_non_null(weak);
    assert_non_null(ec);
    assert_int_equal(kp_jwt_parse(tok, &jwt, &err), KP_OK);
    assert_int_equal(kp_jwt_verify_rs256(&jwt, weak, &err), KP_EAUTH); /* correctly signed, but 1024 bits */
    assert_non_null(strstr(err.msg, "2048"));
    assert_int_equal(kp_jwt_verify_rs256(&jwt, ec, &err), KP_EAUTH);
    assert_non_null(strstr(err.msg, "not an RSA key"));
    assert_int_equal(kp_jwt_verify_rs256(&jwt, NULL, &err), KP_EAUTH);
    kp_jwt_free(&jwt);
    free(tok);
    EVP_PKEY_free(weak);
    EVP_PKEY_free(ec);
}

/* ---- time claims ---- */

static kp_status times(const char *payload, int64_t now, int64_t *exp, kp_err *err)
{
    char *tok = mint_hs(payload);
    kp_jwt jwt = KP_JWT_INIT;
    kp_status st;

    assert_int_equal(kp_jwt_parse(tok, &jwt, err), KP_OK);
    st = kp_jwt_check_times(&jwt, now, 60, exp, err);
    kp_jwt_free(&jwt);
    free(tok);
    return st;
}

static void test_check_times(void **state)
{
    const int64_t now = 1800000000;
    int64_t exp = 0;
    kp_err err;
    (void)state;

    assert_int_equal(times("{\"exp\":1800000100}", now, &exp, &err), KP_OK);
    assert_int_equal(exp, 1800000100);
    /* leeway: 30 s past exp passes, 60 s does not */
    assert_int_equal(times("{\"exp\":1799999970}", now, NULL, &err), KP_OK);
    assert_int_equal(times("{\"exp\":1799999940}", now, NULL, &err), KP_EAUTH);
    assert_string_equal(err.msg, "token expired");
    assert_int_equal(times("{\"exp\":1700000000}", now, NULL, &err), KP_EAUTH);
    /* fractional NumericDate */
    assert_int_equal(times("{\"exp\":1800000000.5}", now, &exp, &err), KP_OK);
    assert_int_equal(exp, 1800000000);
    /* exp required and numeric */
    assert_int_equal(times("{\"sub\":\"x\"}", now, NULL, &err), KP_EAUTH);
    assert_string_equal(err.msg, "token has no expiry");
    assert_int_equal(times("{\"exp\":\"1800000100\"}", now, NULL, &err), KP_EAUTH);
    assert_string_equal(err.msg, "invalid exp claim");
    assert_int_equal(times("{\"exp\":null}", now, NULL, &err), KP_EAUTH);
    assert_int_equal(times("{\"exp\":1e300}", now, NULL, &err), KP_EAUTH);
    /* nbf: 30 s ahead passes (skew), 120 s ahead does not */
    assert_int_equal(times("{\"exp\":1800000100,\"nbf\":1800000030}", now, NULL, &err), KP_OK);
    assert_int_equal(times("{\"exp\":1800000100,\"nbf\":1800000120}", now, NULL, &err), KP_EAUTH);
    assert_string_equal(err.msg, "token not yet valid");
    assert_int_equal(times("{\"exp\":1800000100,\"nbf\":\"soon\"}", now, NULL, &err), KP_EAUTH);
    /* iat far in the future */
    assert_int_equal(times("{\"exp\":1800009000,\"iat\":1800000000}", now, NULL, &err), KP_OK);
    assert_int_equal(times("{\"exp\":1800009000,\"iat\":1800003600}", now, NULL, &err), KP_EAUTH);
    assert_string_equal(err.msg, "token issued in the future");
    /* an enormous exp must not overflow into "expired" or crash */
    assert_int_equal(times("{\"exp\":9223372036854775807}", now, NULL, &err), KP_OK);
    assert_int_equal(times("{\"exp\":-9223372036854775807}", now, NULL, &err), KP_EAUTH);
    /* nor an nbf or iat far in the past (signed overflow before; the JWT fuzz target's seed nbf-overflow) */
    assert_int_equal(times("{\"exp\":1800000100,\"nbf\":-9223372036854775808}", now, NULL, &err), KP_OK);
    assert_int_equal(times("{\"exp\":1800000100,\"iat\":-9223372036854775800}", now, NULL, &err), KP_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_roundtrip_and_vectors),
        cmocka_unit_test(test_b64url_strict),
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_segments),
        cmocka_unit_test(test_parse_bad_segments),
        cmocka_unit_test(test_parse_length_limit),
        cmocka_unit_test(test_hs256_verify),
        cmocka_unit_test(test_hs256_tampered_payload),
        cmocka_unit_test(test_sign_hs256_roundtrip),
        cmocka_unit_test(test_rs256_verify),
        cmocka_unit_test(test_rs256_refuses_weak_and_non_rsa_keys),
        cmocka_unit_test(test_check_times),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
