/*
 * fuzz_jwt.c - libFuzzer target for the JWT parser and verifier
 * (src/auth/jwt.c, through kp_auth_verify in src/auth/auth.c).
 *
 * A verifier with a fixed HS256 key and a fixed clock checks tokens built two
 * ways, chosen by the first byte:
 *   even: the rest of the input is the token, as a client would send it;
 *   odd:  the rest is "header JSON" NUL "payload JSON": the target encodes
 *         both and signs them with the key, so the fuzzer gets past the
 *         signature to the header and claim checks (bit 1 set: one bit of the
 *         signature is flipped, which must always fail).
 * Oracles: a token accepted has a signature that the key really made (checked
 * here with libsodium, apart from jwt.c), a non-empty sub, an exp not in the
 * past; the same token verified again (from the per-thread cache) gives the
 * same claims; nothing crashes, leaks or reads out of bounds.
 */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "auth/jwt.h"
#include "core/buf.h"
#include "harness.h"

#define NOW 1700000000
#define KEY "fuzz-key-0123456789-0123456789-0123456789"

static int64_t fixed_clock(void *arg)
{
    (void)arg;
    return NOW;
}

static kp_auth *verifier(void)
{
    static kp_auth *a;
    if (!a) {
        kp_auth_options o = {0};
        kp_err err = {0};
        o.hs256_secret = KEY;
        o.hs256_secret_len = strlen(KEY);
        o.clock = fixed_clock;
        FZ_CHECK(kp_auth_new(&o, &a, &err) == KP_OK, "kp_auth_new failed");
    }
    return a;
}

static void append_b64(kp_buf *b, const void *data, size_t len)
{
    char *enc = kp_jwt_b64url_encode(data, len);
    FZ_CHECK(enc != NULL, "out of memory");
    kp_buf_puts(b, enc);
    free(enc);
}

/* "b64(header).b64(payload).b64(HMAC)" from "header NUL payload". */
static void signed_token(const char *in, size_t len, int tamper, kp_buf *token)
{
    const char *nul = memchr(in, '\0', len);
    size_t hlen = nul ? (size_t)(nul - in) : len;
    const char *payload = nul ? nul + 1 : "";
    size_t plen = nul ? len - hlen - 1 : 0;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    append_b64(token, in, hlen);
    kp_buf_puts(token, ".");
    append_b64(token, payload, plen);
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)KEY, strlen(KEY));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)token->data, token->len);
    crypto_auth_hmacsha256_final(&st, mac);
    if (tamper)
        mac[len % sizeof mac] ^= (unsigned char)(1u << (len % 8));
    kp_buf_puts(token, ".");
    append_b64(token, mac, sizeof mac);
}

/* The token's signature is the key's HMAC of its first two segments. */
static int really_signed(const char *token)
{
    const char *dot = strrchr(token, '.');
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    if (!dot || kp_jwt_b64url_decode(dot + 1, strlen(dot + 1), &sig, &sig_len) != 0)
        return 0;
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)KEY, strlen(KEY));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)token, (size_t)(dot - token));
    crypto_auth_hmacsha256_final(&st, mac);
    int ok = sig_len == sizeof mac && memcmp(sig, mac, sizeof mac) == 0;
    free(sig);
    return ok;
}

/* The parser's accessors on whatever parses, whether or not it verifies. */
static void inspect(const char *token)
{
    kp_jwt jwt = KP_JWT_INIT;
    kp_err err = {0};
    if (kp_jwt_parse(token, &jwt, &err) == KP_OK) {
        const char *alg = kp_jwt_header_string(&jwt, "alg");
        const char *sub = kp_jwt_claim_string(&jwt, "sub");
        int64_t exp = 0;
        FZ_CHECK(jwt.header && jwt.payload && jwt.sig_len > 0, "a parsed token lacks header, payload or signature");
        FZ_CHECK((!alg || strlen(alg) < KP_JWT_MAX_LEN) && (!sub || strlen(sub) < KP_JWT_MAX_LEN),
                 "a header or claim longer than the token");
        kp_jwt_check_times(&jwt, NOW, 60, &exp, &err);
        kp_jwt_check_times(&jwt, INT64_MIN + 1000, 60, &exp, &err);
        kp_jwt_check_times(&jwt, INT64_MAX - 1000, 60, &exp, &err);
    }
    kp_jwt_free(&jwt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    FZ_CHECK(sodium_init() >= 0, "sodium_init failed");
    kp_buf token = KP_BUF_INIT;
    int structured = data[0] & 1, tamper = (data[0] >> 1) & 1;
    if (structured)
        signed_token((const char *)data + 1, size - 1, tamper, &token);
    else
        kp_buf_append(&token, data + 1, size - 1);
    const char *t = kp_buf_cstr(&token);
    kp_claims c1, c2;
    kp_err err = {0};
    kp_status st = kp_auth_verify(verifier(), t, &c1, &err);
    if (st == KP_OK) {
        FZ_CHECK(!(structured && tamper) && really_signed(t), "a token was accepted without the key's signature");
        FZ_CHECK(c1.sub[0] != '\0' && c1.exp > NOW - KP_AUTH_LEEWAY_S, "a token was accepted without sub, or expired");
        FZ_CHECK(kp_auth_verify(verifier(), t, &c2, &err) == KP_OK && memcmp(&c1, &c2, sizeof c1) == 0,
                 "verifying the same token again (cached) gave another answer");
    } else {
        FZ_CHECK(st == KP_EAUTH || st == KP_ENOMEM, "verification failed with a status other than KP_EAUTH");
    }
    inspect(t);
    kp_buf_free(&token);
    return 0;
}
