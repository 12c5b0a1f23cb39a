/*
 * jwt.c - compact JWS parsing, HS256/RS256 signature checks, HS256 signing.
 *
 * Every primitive comes from a library: base64url from libsodium (its
 * URL-safe no-padding variant rejects '=', whitespace, foreign characters and
 * non-zero trailing bits), JSON from jansson (duplicate member names are
 * rejected so a token cannot say two things), HMAC and RSA from OpenSSL 3,
 * MAC comparison with CRYPTO_memcmp (constant time).
 *
 * Invariant: a kp_jwt that kp_jwt_parse returned KP_OK for has a JSON object
 * header and payload and a non-empty signature; nothing in it is trusted until
 * one of the verify functions says so.
 */
#include "auth/jwt.h"

#include <math.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

#define B64_VARIANT sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define MIN_RSA_BITS 2048
#define HS256_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

int kp_jwt_b64url_decode(const char *in, size_t in_len, unsigned char **out, size_t *out_len)
{
    size_t cap = in_len / 4 * 3 + 3;
    unsigned char *buf = malloc(cap);
    size_t n = 0;

    *out = NULL;
    *out_len = 0;
    if (!buf)
        return -1;
    /* ignore = NULL and b64_end = NULL: every input character must be part of
     * the encoding, so trailing garbage, padding and whitespace all fail. */
    if (sodium_base642bin(buf, cap, in, in_len, NULL, &n, NULL, B64_VARIANT) != 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

char *kp_jwt_b64url_encode(const unsigned char *in, size_t in_len)
{
    size_t cap = sodium_base64_ENCODED_LEN(in_len, B64_VARIANT);
    char *out = malloc(cap);

    if (!out)
        return NULL;
    sodium_bin2base64(out, cap, in, in_len, B64_VARIANT);
    return out;
}

/* Decodes one base64url segment holding a JSON object into *out. */
static kp_status decode_json_segment(const char *seg, size_t seg_len, const char *what, json_t **out, kp_err *err)
{
    unsigned char *raw = NULL;
    size_t raw_len = 0;
    json_t *obj = NULL;
    json_error_t jerr;

    if (kp_jwt_b64url_decode(seg, seg_len, &raw, &raw_len) != 0)
        return kp_err_set(err, KP_EAUTH, "malformed token: %s is not base64url", what);
    obj = json_loadb((const char *)raw, raw_len, JSON_REJECT_DUPLICATES, &jerr);
    free(raw);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return kp_err_set(err, KP_EAUTH, "malformed token: %s is not a JSON object", what);
    }
    *out = obj;
    return KP_OK;
}

kp_status kp_jwt_parse(const char *token, kp_jwt *out, kp_err *err)
{
    kp_status st;
    size_t len;
    const char *dot1, *dot2, *sig;
    size_t sig_len;

    *out = (kp_jwt)KP_JWT_INIT;
    if (!token || !*token)
        return kp_err_set(err, KP_EAUTH, "missing token");
    len = strnlen(token, KP_JWT_MAX_LEN + 1);
    if (len > KP_JWT_MAX_LEN)
        return kp_err_set(err, KP_EAUTH, "token too long");

    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot2)
        return kp_err_set(err, KP_EAUTH, "malformed token: expected 3 segments");
    sig = dot2 + 1;
    sig_len = len - (size_t)(sig - token);
    if (memchr(sig, '.', sig_len))
        return kp_err_set(err, KP_EAUTH, "malformed token: expected 3 segments");
    if (sig_len == 0)
        return kp_err_set(err, KP_EAUTH, "malformed token: missing signature");

    st = decode_json_segment(token, (size_t)(dot1 - token), "header", &out->header, err);
    if (st != KP_OK)
        goto cleanup;
    st = decode_json_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1), "payload", &out->payload, err);
    if (st != KP_OK)
        goto cleanup;
    if (kp_jwt_b64url_decode(sig, sig_len, &out->sig, &out->sig_len) != 0 || out->sig_len == 0) {
        st = kp_err_set(err, KP_EAUTH, "malformed token: signature is not base64url");
        goto cleanup;
    }
    out->signing_input = token;
    out->signing_input_len = (size_t)(dot2 - token);
    st = KP_OK;

cleanup:
    if (st != KP_OK)
        kp_jwt_free(out);
    return st;
}

void kp_jwt_free(kp_jwt *jwt)
{
    if (!jwt)
        return;
    json_decref(jwt->header);
    json_decref(jwt->payload);
    free(jwt->sig);
    *jwt = (kp_jwt)KP_JWT_INIT;
}

const char *kp_jwt_header_string(const kp_jwt *jwt, const char *name)
{
    return json_string_value(json_object_get(jwt->header, name));
}

const char *kp_jwt_claim_string(const kp_jwt *jwt, const char *name)
{
    return json_string_value(json_object_get(jwt->payload, name));
}

/* Reads a NumericDate (RFC 7519 section 2): a JSON number of seconds, possibly
 * fractional; fractions are dropped toward the past. */
static int numeric_date(const json_t *v, int64_t *out)
{
    double d;

    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_real(v))
        return -1;
    d = floor(json_real_value(v));
    if (!(d > -9.0e18 && d < 9.0e18))
        return -1;
    *out = (int64_t)d;
    return 0;
}

kp_status kp_jwt_check_times(const kp_jwt *jwt, int64_t now, long leeway, int64_t *exp_out, kp_err *err)
{
    const json_t *exp_v = json_object_get(jwt->payload, "exp");
    const json_t *nbf_v = json_object_get(jwt->payload, "nbf");
    const json_t *iat_v = json_object_get(jwt->payload, "iat");
    int64_t exp, nbf, iat;

    if (!exp_v)
        return kp_err_set(err, KP_EAUTH, "token has no expiry");
    if (numeric_date(exp_v, &exp) != 0)
        return kp_err_set(err, KP_EAUTH, "invalid exp claim");
    /* now < exp + leeway, written so that a huge exp cannot overflow */
    if (now - leeway >= exp)
        return kp_err_set(err, KP_EAUTH, "token expired");
    if (nbf_v) {
        if (numeric_date(nbf_v, &nbf) != 0)
            return kp_err_set(err, KP_EAUTH, "invalid nbf claim");
        if (nbf > now + leeway) /* now is the clock's: adding to it cannot overflow, subtracting from nbf could */
            return kp_err_set(err, KP_EAUTH, "token not yet valid");
    }
    if (iat_v) {
        if (numeric_date(iat_v, &iat) != 0)
            return kp_err_set(err, KP_EAUTH, "invalid iat claim");
        if (iat > now + leeway)
            return kp_err_set(err, KP_EAUTH, "token issued in the future");
    }
    if (exp_out)
        *exp_out = exp;
    return KP_OK;
}

/* HMAC-SHA256 of data; *mac_len is set to 32 on success. libsodium's
 * implementation: no provider lookup or allocation per call (OpenSSL 3's
 * EVP_Q_mac fetches the algorithm each time), on every request's path. */
static int hmac_sha256(const unsigned char *key, size_t key_len, const void *data, size_t data_len,
                       unsigned char mac[EVP_MAX_MD_SIZE], size_t *mac_len)
{
    crypto_auth_hmacsha256_state st;
    if (crypto_auth_hmacsha256_init(&st, key, key_len) != 0 ||
        crypto_auth_hmacsha256_update(&st, data, data_len) != 0 || crypto_auth_hmacsha256_final(&st, mac) != 0) {
        sodium_memzero(&st, sizeof st);
        return -1;
    }
    sodium_memzero(&st, sizeof st);
    *mac_len = crypto_auth_hmacsha256_BYTES;
    return 0;
}

kp_status kp_jwt_verify_hs256(const kp_jwt *jwt, const unsigned char *key, size_t key_len, kp_err *err)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mac_len = 0;
    kp_status st;

    if (!key || key_len == 0)
        return kp_err_set(err, KP_EINTERNAL, "no HMAC key");
    if (hmac_sha256(key, key_len, jwt->signing_input, jwt->signing_input_len, mac, &mac_len) != 0)
        return kp_err_set(err, KP_EINTERNAL, "HMAC computation failed");
    if (jwt->sig_len == mac_len && CRYPTO_memcmp(jwt->sig, mac, mac_len) == 0)
        st = KP_OK;
    else
        st = kp_err_set(err, KP_EAUTH, "invalid signature");
    OPENSSL_cleanse(mac, sizeof mac);
    return st;
}

kp_status kp_jwt_verify_rs256(const kp_jwt *jwt, EVP_PKEY *key, kp_err *err)
{
    EVP_MD_CTX *ctx = NULL;
    kp_status st;

    if (!key || !EVP_PKEY_is_a(key, "RSA"))
        return kp_err_set(err, KP_EAUTH, "signing key is not an RSA key");
    if (EVP_PKEY_get_bits(key) < MIN_RSA_BITS)
        return kp_err_set(err, KP_EAUTH, "signing key is shorter than %d bits", MIN_RSA_BITS);
    ctx = EVP_MD_CTX_new();
    if (!ctx)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    if (EVP_DigestVerifyInit_ex(ctx, NULL, "SHA256", NULL, NULL, key, NULL) != 1) {
        st = kp_err_set(err, KP_EINTERNAL, "RSA verification setup failed");
        goto cleanup;
    }
    if (EVP_DigestVerify(ctx, jwt->sig, jwt->sig_len, (const unsigned char *)jwt->signing_input,
                         jwt->signing_input_len) == 1)
        st = KP_OK;
    else
        st = kp_err_set(err, KP_EAUTH, "invalid signature");

cleanup:
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    return st;
}

/* Appends the base64url form of data to b. */
static int append_b64url(kp_buf *b, const void *data, size_t len)
{
    char *enc = kp_jwt_b64url_encode(data, len);
    int rc;

    if (!enc)
        return -1;
    rc = kp_buf_puts(b, enc);
    free(enc);
    return rc;
}

kp_status kp_jwt_sign_hs256(const json_t *payload, const unsigned char *key, size_t key_len, char **token_out,
                            kp_err *err)
{
    kp_buf b = KP_BUF_INIT;
    char *payload_json = NULL;
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mac_len = 0;
    kp_status st;

    *token_out = NULL;
    if (!json_is_object(payload) || !key || key_len == 0)
        return kp_err_set(err, KP_EINVAL, "HS256 signing needs a payload object and a key");
    payload_json = json_dumps(payload, JSON_COMPACT);
    if (!payload_json) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (append_b64url(&b, HS256_HEADER, strlen(HS256_HEADER)) != 0 || kp_buf_puts(&b, ".") != 0 ||
        append_b64url(&b, payload_json, strlen(payload_json)) != 0) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (hmac_sha256(key, key_len, b.data, b.len, mac, &mac_len) != 0) {
        st = kp_err_set(err, KP_EINTERNAL, "HMAC computation failed");
        goto cleanup;
    }
    if (kp_buf_puts(&b, ".") != 0 || append_b64url(&b, mac, mac_len) != 0) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    *token_out = kp_buf_steal(&b);
    st = KP_OK;

cleanup:
    OPENSSL_cleanse(mac, sizeof mac);
    free(payload_json);
    kp_buf_free(&b);
    return st;
}
