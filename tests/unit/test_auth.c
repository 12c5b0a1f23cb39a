/*
 * test_auth.c - the token policy (src/auth/auth.c) and the JWKS cache
 * (src/auth/jwks.c).
 *
 * The identity provider is simulated: RSA keys generated here, tokens signed
 * here with OpenSSL, and the JWKS served from a file (file:// URL) that tests
 * rewrite to model key rotation. Time comes from a fake clock so expiry and
 * the JWKS refetch interval are exact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"
#include "auth/jwks.h"
#include "auth/jwt.h"
#include "core/buf.h"
#include "core/log.h"
#include "fake_secrets.h"

#define NOW 1800000000LL
#define LOCAL_SECRET "test-secret-0123456789abcdef-0123456789"
#define ISSUER "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TEST"
#define CLIENT "client-123"

static EVP_PKEY *key_a, *key_b, *key_weak;
static char tmpdir[64];
static char jwks_path[128];
static char jwks_url[160];
static int64_t fake_now;

static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

/* ---- the simulated identity provider ---- */

static char *bn_param_b64(EVP_PKEY *key, const char *name)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    int n;
    char *s;

    assert_int_equal(EVP_PKEY_get_bn_param(key, name, &bn), 1);
    n = BN_bn2bin(bn, buf);
    s = kp_jwt_b64url_encode(buf, (size_t)n);
    BN_free(bn);
    return s;
}

/* One JWK; extra is spliced into the object (e.g. ",\"alg\":\"RS256\""). */
static void jwk_append(kp_buf *b, EVP_PKEY *key, const char *kid, const char *extra)
{
    char *n = bn_param_b64(key, OSSL_PKEY_PARAM_RSA_N);
    char *e = bn_param_b64(key, OSSL_PKEY_PARAM_RSA_E);

    if (b->len > 0 && b->data[b->len - 1] == '}')
        kp_buf_puts(b, ",");
    kp_buf_printf(b, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"%s}", kid, n, e, extra ? extra : "");
    free(n);
    free(e);
}

static void write_file(const char *path, const char *data, size_t len)
{
    char tmp[256];
    FILE *f;

    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0);
}

/* Publishes keys A (always) and optionally B in the JWKS file. */
static void publish(int with_a, int with_b)
{
    kp_buf b = KP_BUF_INIT;

    kp_buf_puts(&b, "{\"keys\":[");
    if (with_a)
        jwk_append(&b, key_a, "kid-a", ",\"alg\":\"RS256\",\"use\":\"sig\"");
    if (with_b)
        jwk_append(&b, key_b, "kid-b", NULL);
    kp_buf_puts(&b, "]}");
    write_file(jwks_path, b.data, b.len);
    kp_buf_free(&b);
}

static void b64_append(kp_buf *b, const void *data, size_t len)
{
    char *s = kp_jwt_b64url_encode(data, len);
    kp_buf_puts(b, s);
    free(s);
}

/* header.payload.signature: RS256 with rsa, else HMAC-SHA256 with hkey. */
static char *mint(const char *header, const json_t *payload, EVP_PKEY *rsa, const void *hkey, size_t hkey_len)
{
    kp_buf b = KP_BUF_INIT;
    char *pj = json_dumps(payload, JSON_COMPACT);
    unsigned char sig[1024];
    size_t sig_len = sizeof sig;

    b64_append(&b, header, strlen(header));
    kp_buf_puts(&b, ".");
    b64_append(&b, pj, strlen(pj));
    free(pj);
    if (rsa) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, rsa), 1);
        assert_int_equal(EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *)b.data, b.len), 1);
        EVP_MD_CTX_free(ctx);
    } else {
        assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, hkey, hkey_len, (const unsigned char *)b.data,
                                  b.len, sig, sizeof sig, &sig_len));
    }
    kp_buf_puts(&b, ".");
    b64_append(&b, sig, sig_len);
    return kp_buf_steal(&b);
}

/* Claims of a valid Cognito id token for CLIENT; tests edit them. */
static json_t *id_claims(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:I}", "iss", ISSUER, "sub",
                     "8c1e2f00-0000-4000-8000-000000000001", "aud", CLIENT, "token_use", "id", "email",
                     "ada@example.com", "email_verified", 1, "iat", (json_int_t)(NOW - 10), "exp",
                     (json_int_t)(NOW + 3600));
}

static json_t *local_claims(void)
{
    return json_pack("{s:s, s:s, s:s, s:I}", "iss", "koumpa", "aud", "koumpa", "sub", "usr_1", "exp",
                     (json_int_t)(NOW + 600));
}

static char *mint_rs(const char *kid, EVP_PKEY *key, json_t *claims)
{
    char header[128];
    char *tok;

    snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"kid\":\"%s\"}", kid);
    tok = mint(header, claims, key, NULL, 0);
    json_decref(claims);
    return tok;
}

static char *mint_local(json_t *claims)
{
    char *tok = mint("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims, NULL, LOCAL_SECRET, strlen(LOCAL_SECRET));
    json_decref(claims);
    return tok;
}

/* ---- fixtures ---- */

/* A verifier; with prefetch, its JWKS fetch (at fake_now) has landed when this returns. */
static kp_auth *new_auth_with(const char *issuer, const char *url, int prefetch)
{
    kp_auth_options o;
    kp_auth *a = NULL;
    kp_err err;

    memset(&o, 0, sizeof o);
    o.hs256_secret = LOCAL_SECRET;
    o.hs256_secret_len = strlen(LOCAL_SECRET);
    o.local_issuer = "koumpa";
    o.issuer = issuer;
    o.audience = CLIENT;
    o.jwks_url = url;
    o.ttl_seconds = 3600;
    o.clock = fake_clock;
    o.jwks_prefetch = prefetch;
    if (kp_auth_new(&o, &a, &err) != KP_OK)
        fail_msg("kp_auth_new: %s", err.msg);
    kp_auth_wait_keys(a);
    return a;
}

static kp_auth *new_auth(const char *issuer, const char *url)
{
    return new_auth_with(issuer, url, 1);
}

static int group_setup(void **state)
{
    (void)state;
    kp_log_set_level(KP_LOG_ERROR); /* fetch logs would drown the report */
    key_a = EVP_RSA_gen(2048);
    key_b = EVP_RSA_gen(2048);
    key_weak = EVP_RSA_gen(1024);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kp-test-auth-XXXXXX");
    if (!key_a || !key_b || !key_weak || !mkdtemp(tmpdir))
        return -1;
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", tmpdir);
    snprintf(jwks_url, sizeof jwks_url, "file://%s", jwks_path);
    return 0;
}

static int group_teardown(void **state)
{
    char path[256];
    (void)state;

    unlink(jwks_path);
    snprintf(path, sizeof path, "%s/.well-known/jwks.json", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/.well-known", tmpdir);
    rmdir(path);
    rmdir(tmpdir);
    EVP_PKEY_free(key_a);
    EVP_PKEY_free(key_b);
    EVP_PKEY_free(key_weak);
    return 0;
}

/* Every test starts at NOW with a JWKS holding key A only and its own kp_auth. */
static int setup(void **state)
{
    fake_now = NOW;
    publish(1, 0);
    *state = new_auth(ISSUER, jwks_url);
    return 0;
}

static int teardown(void **state)
{
    kp_auth_free(*state);
    return 0;
}

/* Verifies token, expecting failure with a message containing want
 * (want NULL: success). Returns the claims. */
static kp_claims verify(kp_auth *a, const char *token, const char *want)
{
    kp_claims c;
    kp_err err;
    kp_status st;

    kp_err_clear(&err);
    st = kp_auth_verify(a, token, &c, &err);
    if (want) {
        if (st != KP_EAUTH)
            fail_msg("expected KP_EAUTH '%s', got %d", want, st);
        if (!strstr(err.msg, want))
            fail_msg("error '%s' does not contain '%s'", err.msg, want);
        assert_string_equal(c.sub, ""); /* nothing leaks out of a refused token */
    } else if (st != KP_OK) {
        fail_msg("expected success, got '%s'", err.msg);
    }
    return c;
}

static void verify_free(kp_auth *a, char *token, const char *want)
{
    verify(a, token, want);
    free(token);
}

/* ---- kp_auth_new ---- */

static void test_new_validates_options(void **state)
{
    kp_auth_options o;
    kp_auth *a = NULL;
    kp_err err;
    (void)state;

    memset(&o, 0, sizeof o);
    o.hs256_secret = "short";
    o.hs256_secret_len = 5;
    assert_int_equal(kp_auth_new(&o, &a, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "at least 32 bytes"));
    assert_null(a);

    o.hs256_secret = LOCAL_SECRET;
    o.hs256_secret_len = strlen(LOCAL_SECRET);
    o.issuer = ISSUER; /* no audience */
    assert_int_equal(kp_auth_new(&o, &a, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "audience"));

    o.audience = CLIENT;
    o.issuer = "koumpa"; /* same as the (default) local issuer */
    assert_int_equal(kp_auth_new(&o, &a, &err), KP_EINVAL);

    o.issuer = ISSUER;
    o.jwks_url = "ftp://example.com/jwks.json";
    assert_int_equal(kp_auth_new(&o, &a, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "JWKS URL"));

    /* local-only, defaults: works and issues "koumpa" tokens */
    memset(&o, 0, sizeof o);
    o.hs256_secret = LOCAL_SECRET;
    o.hs256_secret_len = strlen(LOCAL_SECRET);
    assert_int_equal(kp_auth_new(&o, &a, &err), KP_OK);
    kp_auth_free(a);
    kp_auth_free(NULL);
}

/* ---- local tokens ---- */

static void test_issue_verify_roundtrip(void **state)
{
    kp_auth *a = *state;
    char *tok = NULL;
    int64_t expires = 0;
    kp_claims c;
    kp_err err;
    kp_jwt jwt = KP_JWT_INIT;

    assert_int_equal(kp_auth_issue(a, "usr_0123", "ada@example.com", &tok, &expires, &err), KP_OK);
    assert_int_equal(expires, NOW + 3600);
    c = verify(a, tok, NULL);
    assert_int_equal(c.external, 0);
    assert_string_equal(c.sub, "usr_0123");
    assert_string_equal(c.email, "ada@example.com");
    assert_int_equal(c.admin_group, 0);
    assert_int_equal(c.exp, NOW + 3600);

    /* the token is HS256 with the claims issue and verify agree on */
    assert_int_equal(kp_jwt_parse(tok, &jwt, &err), KP_OK);
    assert_string_equal(kp_jwt_header_string(&jwt, "alg"), "HS256");
    assert_string_equal(kp_jwt_claim_string(&jwt, "iss"), "koumpa");
    assert_string_equal(kp_jwt_claim_string(&jwt, "aud"), "koumpa");
    assert_non_null(kp_jwt_claim_string(&jwt, "jti"));
    kp_jwt_free(&jwt);

    /* valid until exp + leeway */
    fake_now = NOW + 3600 + 59;
    verify(a, tok, NULL);
    fake_now = NOW + 3600 + 60;
    verify(a, tok, "token expired");
    free(tok);

    /* without email */
    fake_now = NOW;
    assert_int_equal(kp_auth_issue(a, "usr_2", NULL, &tok, NULL, &err), KP_OK);
    c = verify(a, tok, NULL);
    assert_string_equal(c.email, "");
    free(tok);

    assert_int_equal(kp_auth_issue(a, "", NULL, &tok, NULL, &err), KP_EINVAL);
    assert_null(tok);
}

static void test_local_token_other_secret(void **state)
{
    kp_auth *a = *state;
    static const char other[] = "another-secret-0123456789abcdef-0123";
    json_t *claims = local_claims();
    char *tok = mint("{\"alg\":\"HS256\"}", claims, NULL, other, strlen(other));

    json_decref(claims);
    verify_free(a, tok, "invalid signature");
}

static void test_local_claims_checked(void **state)
{
    kp_auth *a = *state;
    json_t *c;

    verify_free(a, mint_local(local_claims()), NULL);

    c = local_claims();
    json_object_set_new(c, "aud", json_string("someone-else"));
    verify_free(a, mint_local(c), "wrong token audience");
    c = local_claims();
    json_object_del(c, "aud");
    verify_free(a, mint_local(c), "wrong token audience");
    c = local_claims();
    json_object_del(c, "exp");
    verify_free(a, mint_local(c), "no expiry");
    c = local_claims();
    json_object_del(c, "sub");
    verify_free(a, mint_local(c), "invalid sub claim");
    c = local_claims();
    json_object_set_new(c, "sub", json_integer(7));
    verify_free(a, mint_local(c), "invalid sub claim");
    c = local_claims();
    json_object_set_new(c, "exp", json_integer(NOW - 61));
    verify_free(a, mint_local(c), "token expired");
    c = local_claims();
    json_object_set_new(c, "exp", json_integer(NOW - 30)); /* within leeway */
    verify_free(a, mint_local(c), NULL);
    c = local_claims();
    json_object_set_new(c, "nbf", json_integer(NOW + 120));
    verify_free(a, mint_local(c), "not yet valid");
}

static void test_alg_none(void **state)
{
    kp_auth *a = *state;
    json_t *c = local_claims();
    char *pj = json_dumps(c, JSON_COMPACT);
    char *h = kp_jwt_b64url_encode((const unsigned char *)"{\"alg\":\"none\"}", 14);
    char *p = kp_jwt_b64url_encode((const unsigned char *)pj, strlen(pj));
    kp_buf tok = KP_BUF_INIT;
    char *hs;

    /* the classic unsecured JWS: empty signature */
    kp_buf_printf(&tok, "%s.%s.", h, p);
    verify(a, tok.data, "missing signature");
    /* with something in the signature slot it still is refused for its alg */
    kp_buf_reset(&tok);
    kp_buf_printf(&tok, "%s.%s.AAAA", h, p);
    verify(a, tok.data, "unexpected token algorithm");
    /* alg none, but a genuine HMAC: the header alone decides nothing */
    hs = mint("{\"alg\":\"none\"}", c, NULL, LOCAL_SECRET, strlen(LOCAL_SECRET));
    verify_free(a, hs, "unexpected token algorithm");
    /* no alg at all, and an alg spelled differently */
    hs = mint("{\"typ\":\"JWT\"}", c, NULL, LOCAL_SECRET, strlen(LOCAL_SECRET));
    verify_free(a, hs, "no algorithm");
    hs = mint("{\"alg\":\"hs256\"}", c, NULL, LOCAL_SECRET, strlen(LOCAL_SECRET));
    verify_free(a, hs, "unexpected token algorithm");
    kp_buf_free(&tok);
    free(h);
    free(p);
    free(pj);
    json_decref(c);
}

static void test_crit_header_refused(void **state)
{
    kp_auth *a = *state;
    json_t *c = local_claims();
    char *tok = mint("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", c, NULL, LOCAL_SECRET, strlen(LOCAL_SECRET));

    verify_free(a, tok, "critical header");
    json_decref(c);
    verify_free(a, mint_rs("kid-a", key_a, id_claims()), NULL);
    c = id_claims();
    tok = mint("{\"alg\":\"RS256\",\"kid\":\"kid-a\",\"crit\":[\"b64\"],\"b64\":false}", c, key_a, NULL, 0);
    verify_free(a, tok, "critical header");
    json_decref(c);
}

/* ---- external tokens ---- */

static void test_rs256_id_token(void **state)
{
    kp_auth *a = *state;
    char *tok = mint_rs("kid-a", key_a, id_claims());
    kp_claims c = verify(a, tok, NULL);
    json_t *claims;

    assert_int_equal(c.external, 1);
    assert_string_equal(c.sub, "8c1e2f00-0000-4000-8000-000000000001");
    assert_string_equal(c.email, "ada@example.com");
    assert_int_equal(c.admin_group, 0);
    assert_int_equal(c.exp, NOW + 3600);
    free(tok);

    /* cognito:groups with admin */
    claims = id_claims();
    json_object_set_new(claims, "cognito:groups", json_pack("[s,s]", "users", "admin"));
    tok = mint_rs("kid-a", key_a, claims);
    c = verify(a, tok, NULL);
    assert_int_equal(c.admin_group, 1);
    free(tok);
    claims = id_claims();
    json_object_set_new(claims, "cognito:groups", json_pack("[s]", "administrators"));
    tok = mint_rs("kid-a", key_a, claims);
    c = verify(a, tok, NULL);
    assert_int_equal(c.admin_group, 0);
    free(tok);
    claims = id_claims();
    json_object_set_new(claims, "cognito:groups", json_string("admin")); /* not an array */
    tok = mint_rs("kid-a", key_a, claims);
    c = verify(a, tok, NULL);
    assert_int_equal(c.admin_group, 0);
    free(tok);
}

static void test_rs256_unverified_email_dropped(void **state)
{
    kp_auth *a = *state;
    json_t *claims = id_claims();
    kp_claims c;
    char *tok;

    json_object_set_new(claims, "email_verified", json_false());
    tok = mint_rs("kid-a", key_a, claims);
    c = verify(a, tok, NULL);
    assert_string_equal(c.email, "");
    free(tok);
    claims = id_claims();
    json_object_del(claims, "email_verified");
    tok = mint_rs("kid-a", key_a, claims);
    c = verify(a, tok, NULL);
    assert_string_equal(c.email, "");
    free(tok);
    claims = id_claims();
    json_object_set_new(claims, "email_verified", json_string("true"));
    tok = mint_rs("kid-a", key_a, claims);
    c = verify(a, tok, NULL);
    assert_string_equal(c.email, "ada@example.com");
    free(tok);
}

static void test_rs256_audience(void **state)
{
    kp_auth *a = *state;
    json_t *c;

    c = id_claims();
    json_object_set_new(c, "aud", json_string("other-client"));
    verify_free(a, mint_rs("kid-a", key_a, c), "wrong token audience");
    c = id_claims();
    json_object_del(c, "aud");
    verify_free(a, mint_rs("kid-a", key_a, c), "wrong token audience");
    c = id_claims();
    json_object_set_new(c, "aud", json_pack("[s,s]", "other", CLIENT));
    verify_free(a, mint_rs("kid-a", key_a, c), NULL);
    c = id_claims();
    json_object_set_new(c, "aud", json_pack("[s,i]", "other", 1));
    verify_free(a, mint_rs("kid-a", key_a, c), "wrong token audience");
    c = id_claims();
    json_object_set_new(c, "token_use", json_string("refresh"));
    verify_free(a, mint_rs("kid-a", key_a, c), "unsupported token_use");
}

static void test_rs256_access_token(void **state)
{
    kp_auth *a = *state;
    json_t *c;
    kp_claims out;
    char *tok;

    /* Cognito access token: no aud, client_id names the app client */
    c = id_claims();
    json_object_del(c, "aud");
    json_object_del(c, "email");
    json_object_set_new(c, "token_use", json_string("access"));
    json_object_set_new(c, "client_id", json_string(CLIENT));
    json_object_set_new(c, "cognito:groups", json_pack("[s]", "admin"));
    tok = mint_rs("kid-a", key_a, c);
    out = verify(a, tok, NULL);
    assert_int_equal(out.external, 1);
    assert_string_equal(out.email, "");
    assert_int_equal(out.admin_group, 1);
    free(tok);

    c = id_claims();
    json_object_set_new(c, "token_use", json_string("access"));
    json_object_set_new(c, "client_id", json_string("other-client"));
    verify_free(a, mint_rs("kid-a", key_a, c), "wrong token client_id");
    /* an access token is not accepted on its aud alone */
    c = id_claims();
    json_object_set_new(c, "token_use", json_string("access"));
    verify_free(a, mint_rs("kid-a", key_a, c), "wrong token client_id");
}

static void test_rs256_times(void **state)
{
    kp_auth *a = *state;
    json_t *c;

    c = id_claims();
    json_object_set_new(c, "exp", json_integer(NOW - 61));
    verify_free(a, mint_rs("kid-a", key_a, c), "token expired");
    c = id_claims();
    json_object_set_new(c, "exp", json_integer(NOW - 30));
    verify_free(a, mint_rs("kid-a", key_a, c), NULL);
    c = id_claims();
    json_object_set_new(c, "nbf", json_integer(NOW + 300));
    verify_free(a, mint_rs("kid-a", key_a, c), "not yet valid");
    c = id_claims();
    json_object_set_new(c, "iat", json_integer(NOW + 3000));
    verify_free(a, mint_rs("kid-a", key_a, c), "issued in the future");
    c = id_claims();
    json_object_set_new(c, "exp", json_string("tomorrow"));
    verify_free(a, mint_rs("kid-a", key_a, c), "invalid exp");
}

static void test_issuer_selects_key_and_alg(void **state)
{
    kp_auth *a = *state;
    json_t *c;
    char *tok;

    c = id_claims();
    json_object_set_new(c, "iss", json_string("https://evil.example.com"));
    verify_free(a, mint_rs("kid-a", key_a, c), "unknown token issuer");
    c = id_claims();
    json_object_set_new(c, "iss", json_string(ISSUER "/")); /* exact match only */
    verify_free(a, mint_rs("kid-a", key_a, c), "unknown token issuer");
    c = id_claims();
    json_object_del(c, "iss");
    verify_free(a, mint_rs("kid-a", key_a, c), "no issuer");
    /* an RS256 token claiming to be local is refused for its algorithm */
    c = local_claims();
    verify_free(a, mint_rs("kid-a", key_a, c), "unexpected token algorithm");
    /* an external token without kid */
    c = id_claims();
    tok = mint("{\"alg\":\"RS256\"}", c, key_a, NULL, 0);
    verify_free(a, tok, "no key id");
    json_decref(c);
    /* signed by a key the JWKS does not hold, under A's kid */
    verify_free(a, mint_rs("kid-a", key_b, id_claims()), "invalid signature");

    /* external tokens disabled: the external issuer is just unknown */
    {
        kp_auth *local_only = new_auth(NULL, NULL);
        verify_free(local_only, mint_rs("kid-a", key_a, id_claims()), "unknown token issuer");
        kp_auth_free(local_only);
    }
}

/* RFC 8725 2.1: the provider's public key (which anyone can fetch) used as
 * an HMAC secret must not pass. */
static void test_public_key_as_hmac_secret(void **state)
{
    kp_auth *a = *state;
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL;
    long pem_len;
    json_t *c;

    assert_int_equal(PEM_write_bio_PUBKEY(bio, key_a), 1);
    pem_len = BIO_get_mem_data(bio, &pem);
    assert_true(pem_len > 0);

    /* external issuer + HS256: refused by alg before any key is used */
    c = id_claims();
    verify_free(a, mint("{\"alg\":\"HS256\",\"kid\":\"kid-a\"}", c, NULL, pem, (size_t)pem_len),
                "unexpected token algorithm");
    json_decref(c);
    /* local issuer + HS256 keyed with the PEM: the local secret differs */
    c = local_claims();
    verify_free(a, mint("{\"alg\":\"HS256\"}", c, NULL, pem, (size_t)pem_len), "invalid signature");
    json_decref(c);
    BIO_free(bio);
}

static void test_tampered_and_truncated(void **state)
{
    kp_auth *a = *state;
    char *good = mint_rs("kid-a", key_a, id_claims());
    json_t *c = id_claims();
    char *evil, *pj;
    kp_buf t = KP_BUF_INIT;
    const char *dot1 = strchr(good, '.'), *dot2 = strrchr(good, '.');

    /* same header and signature, payload with admin group added */
    json_object_set_new(c, "cognito:groups", json_pack("[s]", "admin"));
    pj = json_dumps(c, JSON_COMPACT);
    evil = kp_jwt_b64url_encode((const unsigned char *)pj, strlen(pj));
    kp_buf_append(&t, good, (size_t)(dot1 - good) + 1);
    kp_buf_puts(&t, evil);
    kp_buf_puts(&t, dot2);
    verify(a, t.data, "invalid signature");

    /* truncated signature (342 -> 340 characters still decodes, to 255
     * bytes), truncated inside the payload */
    kp_buf_reset(&t);
    kp_buf_append(&t, good, strlen(good) - 2);
    verify(a, t.data, "invalid signature");
    kp_buf_reset(&t);
    kp_buf_append(&t, good, (size_t)(dot1 - good) + 10);
    verify(a, t.data, "3 segments");
    /* the signature of a local token is checked too */
    kp_buf_reset(&t);
    {
        char *loc = mint_local(local_claims());
        kp_buf_puts(&t, loc);
        t.data[t.len - 2] = t.data[t.len - 2] == 'A' ? 'B' : 'A';
        verify(a, t.data, "invalid signature");
        free(loc);
    }
    kp_buf_free(&t);
    free(evil);
    free(pj);
    json_decref(c);
    free(good);
}

static void test_malformed_tokens(void **state)
{
    kp_auth *a = *state;
    char *good = mint_local(local_claims());
    char *big = malloc(64 * 1024 + 1);
    kp_buf t = KP_BUF_INIT;
    const char *dot1 = strchr(good, '.');
    char *hdr;

    verify(a, NULL, "missing token");
    verify(a, "", "missing token");
    /* 64 KiB, refused on length before any decoding */
    memcpy(big, good, strlen(good));
    memset(big + strlen(good), 'A', 64 * 1024 - strlen(good));
    big[64 * 1024] = '\0';
    verify(a, big, "token too long");
    free(big);
    /* 2 and 4 segments */
    kp_buf_append(&t, good, (size_t)(strrchr(good, '.') - good));
    verify(a, t.data, "3 segments");
    kp_buf_printf(&t, ".%s", strrchr(good, '.') + 1);
    kp_buf_puts(&t, ".AAAA");
    verify(a, t.data, "3 segments");
    /* bad base64 in the header (standard alphabet and padding) */
    kp_buf_reset(&t);
    kp_buf_printf(&t, "eyJhbGciOiJIUzI1NiJ9=%s", dot1);
    verify(a, t.data, "not base64url");
    kp_buf_reset(&t);
    kp_buf_printf(&t, "ey+hbGciOiJIUzI1NiJ9%s", dot1);
    verify(a, t.data, "not base64url");
    /* header not JSON */
    hdr = kp_jwt_b64url_encode((const unsigned char *)"{alg:HS256}", 11);
    kp_buf_reset(&t);
    kp_buf_printf(&t, "%s%s", hdr, dot1);
    verify(a, t.data, "header is not a JSON object");
    free(hdr);
    kp_buf_free(&t);
    free(good);
}

/* ---- the JWKS cache through the facade ---- */

/* A token whose kid is not in the cached set asks for a refetch, at most once
 * per refetch interval, and fails at once; the JWKS file changes tell whether
 * a fetch happened. */
static void test_unknown_kid_refetch_rate_limited(void **state)
{
    kp_auth *a = *state;

    verify_free(a, mint_rs("kid-a", key_a, id_claims()), NULL); /* prefetched at NOW */
    fake_now = NOW + 1;
    verify_free(a, mint_rs("kid-b", key_b, id_claims()), "unknown signing key"); /* within 30 s: no fetch */
    fake_now = NOW + 31;
    verify_free(a, mint_rs("kid-b", key_b, id_claims()), "unknown signing key"); /* asks for a refetch */
    kp_auth_wait_keys(a);
    verify_free(a, mint_rs("kid-b", key_b, id_claims()), "unknown signing key"); /* refetched, still unknown */
    publish(1, 1);                                                               /* the provider rotates */
    fake_now = NOW + 40;
    verify_free(a, mint_rs("kid-b", key_b, id_claims()), "unknown signing key"); /* rate-limited: not seen yet */
    verify_free(a, mint_rs("kid-zzz", key_b, id_claims()), "unknown signing key");
    kp_auth_wait_keys(a);
    verify_free(a, mint_rs("kid-b", key_b, id_claims()), "unknown signing key");
    fake_now = NOW + 61;
    verify_free(a, mint_rs("kid-b", key_b, id_claims()), "unknown signing key"); /* asks, answers at once */
    kp_auth_wait_keys(a);
    verify_free(a, mint_rs("kid-b", key_b, id_claims()), NULL); /* refetched: B known */
    verify_free(a, mint_rs("kid-a", key_a, id_claims()), NULL);
    /* B signs only as B */
    verify_free(a, mint_rs("kid-a", key_b, id_claims()), "invalid signature");
}

static void test_jwks_default_url_and_lazy_fetch(void **state)
{
    char dir[160], path[200], issuer[200];
    kp_buf b = KP_BUF_INIT;
    kp_auth *a;
    json_t *c;
    (void)state;

    /* issuer file://dir -> JWKS at file://dir/.well-known/jwks.json */
    snprintf(dir, sizeof dir, "%s/.well-known", tmpdir);
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    snprintf(issuer, sizeof issuer, "file://%s", tmpdir);
    a = new_auth_with(issuer, NULL, 0); /* nothing there yet: creation must not fetch */
    assert_int_equal(mkdir(dir, 0700), 0);
    kp_buf_puts(&b, "{\"keys\":[");
    jwk_append(&b, key_b, "kid-b", NULL);
    kp_buf_puts(&b, "]}");
    write_file(path, b.data, b.len);
    c = id_claims();
    json_object_set_new(c, "iss", json_string(issuer));
    char *tok = mint_rs("kid-b", key_b, c);
    verify(a, tok, "signing keys unavailable"); /* the first token asks for the keys */
    kp_auth_wait_keys(a);
    verify_free(a, tok, NULL);
    kp_auth_free(a);
    kp_buf_free(&b);
}

static void test_jwks_unavailable(void **state)
{
    char missing[200];
    kp_auth *m, *a;
    (void)state;

    /* the provider is down at start-up */
    unlink(jwks_path);
    a = new_auth(ISSUER, jwks_url);
    verify_free(a, mint_rs("kid-a", key_a, id_claims()), "signing keys unavailable");
    publish(1, 0);
    fake_now = NOW + 10; /* a failed fetch also starts the interval */
    verify_free(a, mint_rs("kid-a", key_a, id_claims()), "signing keys unavailable");
    kp_auth_wait_keys(a);
    verify_free(a, mint_rs("kid-a", key_a, id_claims()), "signing keys unavailable");
    fake_now = NOW + 30;
    verify_free(a, mint_rs("kid-a", key_a, id_claims()), "signing keys unavailable"); /* asks */
    kp_auth_wait_keys(a);
    verify_free(a, mint_rs("kid-a", key_a, id_claims()), NULL);
    kp_auth_free(a);

    /* a URL that never works, and local tokens keep working meanwhile */
    snprintf(missing, sizeof missing, "file://%s/nope.json", tmpdir);
    m = new_auth(ISSUER, missing);
    verify_free(m, mint_rs("kid-a", key_a, id_claims()), "signing keys unavailable");
    verify_free(m, mint_local(local_claims()), NULL);
    kp_auth_free(m);
}

static void test_jwks_key_filter(void **state)
{
    kp_auth *a = *state;
    kp_buf b = KP_BUF_INIT;

    kp_buf_puts(&b, "{\"keys\":[");
    jwk_append(&b, key_weak, "weak", ",\"alg\":\"RS256\"");
    jwk_append(&b, key_a, "rs384", ",\"alg\":\"RS384\"");
    jwk_append(&b, key_a, "enc", ",\"use\":\"enc\"");
    kp_buf_puts(&b, ",{\"kty\":\"EC\",\"kid\":\"ec\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}");
    kp_buf_puts(&b, ",{\"kty\":\"RSA\",\"kid\":\"bad-n\",\"n\":\"not base64!\",\"e\":\"AQAB\"}");
    kp_buf_puts(&b, ",{\"kty\":\"RSA\",\"kid\":\"e-one\",\"n\":\"");
    {
        char *n = bn_param_b64(key_a, OSSL_PKEY_PARAM_RSA_N);
        kp_buf_puts(&b, n);
        free(n);
    }
    kp_buf_puts(&b, "\",\"e\":\"AQ\"}"); /* e = 1: the signature would be the message */
    jwk_append(&b, key_a, "good", ",\"alg\":\"RS256\",\"use\":\"sig\"");
    kp_buf_puts(&b, "]}");
    write_file(jwks_path, b.data, b.len);
    kp_buf_free(&b);
    fake_now = NOW + 30;
    verify_free(a, mint_rs("weak", key_weak, id_claims()), "unknown signing key"); /* asks for the new set */
    kp_auth_wait_keys(a);

    verify_free(a, mint_rs("weak", key_weak, id_claims()), "shorter than 2048 bits");
    verify_free(a, mint_rs("rs384", key_a, id_claims()), "not RS256");
    verify_free(a, mint_rs("enc", key_a, id_claims()), "not for signatures");
    verify_free(a, mint_rs("ec", key_a, id_claims()), "not an RSA key");
    verify_free(a, mint_rs("bad-n", key_a, id_claims()), "malformed RSA key");
    verify_free(a, mint_rs("e-one", key_a, id_claims()), "invalid RSA key");
    verify_free(a, mint_rs("good", key_a, id_claims()), NULL);
}

/* ---- kp_jwks directly ---- */

static kp_jwks *new_jwks(const char *url, long max_age)
{
    kp_jwks_options o;
    kp_jwks *j = NULL;
    kp_err err;

    memset(&o, 0, sizeof o);
    o.url = url;
    o.max_age_s = max_age;
    o.clock = fake_clock;
    assert_int_equal(kp_jwks_new(&o, &j, &err), KP_OK);
    return j;
}

static kp_status jwks_get(kp_jwks *j, const char *kid)
{
    EVP_PKEY *k = NULL;
    kp_err err;
    kp_status st = kp_jwks_get(j, kid, &k, &err);

    if (st == KP_OK) {
        assert_non_null(k);
        EVP_PKEY_free(k);
    } else {
        assert_null(k);
    }
    return st;
}

static void test_jwks_fetch_counts(void **state)
{
    kp_jwks *j = new_jwks(jwks_url, 0);
    (void)state;

    assert_int_equal(kp_jwks_fetch_count(j), 0);      /* lazy */
    assert_int_equal(jwks_get(j, "kid-a"), KP_EAUTH); /* asks, answers at once */
    assert_int_equal(kp_jwks_fetch_count(j), 1);
    kp_jwks_wait_idle(j);
    assert_int_equal(jwks_get(j, "kid-a"), KP_OK);
    assert_int_equal(jwks_get(j, "kid-a"), KP_OK);
    assert_int_equal(kp_jwks_fetch_count(j), 1);
    /* a burst of forged kids costs nothing */
    for (int i = 0; i < 100; i++) {
        char kid[32];
        snprintf(kid, sizeof kid, "forged-%d", i);
        assert_int_equal(jwks_get(j, kid), KP_EAUTH);
    }
    assert_int_equal(kp_jwks_fetch_count(j), 1);
    fake_now = NOW + 30;
    assert_int_equal(jwks_get(j, "forged"), KP_EAUTH);
    kp_jwks_wait_idle(j);
    assert_int_equal(jwks_get(j, "forged"), KP_EAUTH);
    assert_int_equal(kp_jwks_fetch_count(j), 2);
    assert_int_equal(jwks_get(j, ""), KP_EAUTH);
    assert_int_equal(jwks_get(j, NULL), KP_EAUTH);
    assert_int_equal(kp_jwks_fetch_count(j), 2);
    kp_jwks_free(j);
}

/* A set older than max age is refreshed on use; a failed refresh keeps the
 * old keys; a successful one drops keys the provider removed. */
static void test_jwks_max_age(void **state)
{
    kp_jwks *j = new_jwks(jwks_url, 300);
    (void)state;

    kp_jwks_prefetch(j);
    kp_jwks_wait_idle(j);
    assert_int_equal(jwks_get(j, "kid-a"), KP_OK);
    unlink(jwks_path);
    fake_now = NOW + 299;
    assert_int_equal(jwks_get(j, "kid-a"), KP_OK);
    assert_int_equal(kp_jwks_fetch_count(j), 1);
    fake_now = NOW + 300;
    assert_int_equal(jwks_get(j, "kid-a"), KP_OK); /* stale: served while a refresh is asked for */
    assert_int_equal(kp_jwks_fetch_count(j), 2);
    kp_jwks_wait_idle(j);
    assert_int_equal(jwks_get(j, "kid-a"), KP_OK); /* refresh failed: stale keys serve */
    publish(0, 1);
    fake_now = NOW + 330;
    assert_int_equal(jwks_get(j, "kid-a"), KP_OK); /* asks again */
    kp_jwks_wait_idle(j);
    assert_int_equal(jwks_get(j, "kid-a"), KP_EAUTH); /* refreshed: A revoked */
    assert_int_equal(jwks_get(j, "kid-b"), KP_OK);
    assert_int_equal(kp_jwks_fetch_count(j), 3);
    kp_jwks_free(j);
}

static void test_jwks_bad_documents(void **state)
{
    char big_path[200], big_url[220];
    char *big;
    kp_jwks *j;
    kp_jwks_keyset *ks = NULL;
    kp_err err;
    (void)state;

    assert_int_equal(kp_jwks_parse("[]", 2, &ks, &err), KP_EINVAL);
    assert_int_equal(kp_jwks_parse("{\"keys\":{}}", 11, &ks, &err), KP_EINVAL);
    assert_int_equal(kp_jwks_parse("{\"keys\":[1,\"x\",{}]}", 19, &ks, &err), KP_OK);
    assert_int_equal(kp_jwks_keyset_usable(ks), 0);
    assert_null(kp_jwks_keyset_find(ks, "x", NULL));
    kp_jwks_keyset_free(ks);

    write_file(jwks_path, "{\"keys\":", 8);
    j = new_jwks(jwks_url, 0);
    assert_int_equal(jwks_get(j, "kid-a"), KP_EAUTH);
    kp_jwks_free(j);

    /* larger than 1 MiB: refused even though it would parse */
    snprintf(big_path, sizeof big_path, "%s/big.json", tmpdir);
    snprintf(big_url, sizeof big_url, "file://%s", big_path);
    big = malloc(KP_JWKS_MAX_BYTES + 100);
    memset(big, ' ', KP_JWKS_MAX_BYTES + 100);
    memcpy(big, "{\"keys\":[]}", 11);
    write_file(big_path, big, KP_JWKS_MAX_BYTES + 100);
    free(big);
    j = new_jwks(big_url, 0);
    assert_int_equal(jwks_get(j, "kid-a"), KP_EAUTH);
    assert_int_equal(kp_jwks_fetch_count(j), 1);
    kp_jwks_free(j);
    unlink(big_path);
}

/* Many threads hit a cold cache at once: one fetch, every lookup succeeds. */
typedef struct race_arg {
    kp_auth *auth;
    const char *token;
    pthread_barrier_t *start;
    int ok;
} race_arg;

static void *race_verify(void *p)
{
    race_arg *r = p;
    kp_claims c;
    kp_err err;

    pthread_barrier_wait(r->start);
    r->ok = 1;
    for (int i = 0; i < 20; i++)
        if (kp_auth_verify(r->auth, r->token, &c, &err) != KP_OK || strcmp(c.sub, "u-race") != 0)
            r->ok = 0;
    return NULL;
}

static void test_concurrent_verification(void **state)
{
    enum { N = 8 };
    kp_auth *a = *state;
    pthread_t th[N];
    race_arg args[N];
    pthread_barrier_t start;
    json_t *c = id_claims();
    char *tok;
    int i;

    json_object_set_new(c, "sub", json_string("u-race"));
    tok = mint_rs("kid-a", key_a, c);
    pthread_barrier_init(&start, NULL, N);
    for (i = 0; i < N; i++) {
        args[i] = (race_arg){a, tok, &start, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race_verify, &args[i]), 0);
    }
    for (i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_true(args[i].ok);
    }
    pthread_barrier_destroy(&start);
    free(tok);
}

typedef struct jwks_race_arg {
    kp_jwks *jwks;
    pthread_barrier_t *start;
    int ok;
} jwks_race_arg;

static void *race_get(void *p)
{
    jwks_race_arg *r = p;
    EVP_PKEY *k = NULL;
    kp_err err;

    pthread_barrier_wait(r->start);
    r->ok = kp_jwks_get(r->jwks, "kid-a", &k, &err) == KP_OK && k != NULL;
    EVP_PKEY_free(k);
    return NULL;
}

/* Threads racing on a cold cache: every one is answered at once (none waits
 * for the network), and the set is fetched once; then every one gets the key. */
static void test_jwks_concurrent_cold_fetch(void **state)
{
    enum { N = 16 };
    kp_jwks *j = new_jwks(jwks_url, 0);
    pthread_t th[N];
    jwks_race_arg args[N];
    pthread_barrier_t start;
    int i;
    (void)state;

    for (int round = 0; round < 2; round++) {
        pthread_barrier_init(&start, NULL, N);
        for (i = 0; i < N; i++) {
            args[i] = (jwks_race_arg){j, &start, 0};
            assert_int_equal(pthread_create(&th[i], NULL, race_get, &args[i]), 0);
        }
        for (i = 0; i < N; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&start);
        kp_jwks_wait_idle(j); /* the one fetch the first round asked for */
        int ok = 0;
        for (i = 0; i < N; i++)
            ok += args[i].ok;
        assert_int_equal(kp_jwks_fetch_count(j), 1);
        if (round == 1)
            assert_int_equal(ok, N);
    }
    kp_jwks_free(j);
}

/* ---- a provider that does not answer ---- */

/* A listening socket on 127.0.0.1 (any port); its URL into url. */
static int hanging_listener(char *url, size_t n)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    snprintf(url, n, "http://127.0.0.1:%d/jwks.json", ntohs(sa.sin_port));
    return fd;
}

/* Accepts the fetch's connection and reads its request head. */
static int accept_request(int listener)
{
    char buf[4096];
    size_t got = 0;
    int c = accept(listener, NULL, NULL);
    assert_true(c >= 0);
    while (got < sizeof buf - 1) {
        ssize_t r = recv(c, buf + got, sizeof buf - 1 - got, 0);
        assert_true(r > 0);
        got += (size_t)r;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    return c;
}

/* Issue 9, item 9: lookups are answered while the provider hangs (the fetch
 * runs on the refresher thread, not the caller's); once it answers, the key
 * is found. Shown by order, not by timing: the lookups return while the
 * fetch's connection is still open and unanswered. */
static void test_jwks_lookup_never_waits_for_the_network(void **state)
{
    char url[128], kid[32];
    kp_jwks_options o;
    kp_jwks *j = NULL;
    kp_err err;
    kp_buf doc = KP_BUF_INIT, http = KP_BUF_INIT;
    (void)state;

    int listener = hanging_listener(url, sizeof url);
    memset(&o, 0, sizeof o);
    o.url = url;
    o.timeout_s = 600; /* before the fix, a lookup below waited this long; free() must not */
    o.clock = fake_clock;
    assert_int_equal(kp_jwks_new(&o, &j, &err), KP_OK);

    for (int i = 0; i < 4; i++) { /* forged kids while the provider hangs */
        snprintf(kid, sizeof kid, "forged-%d", i);
        assert_int_equal(jwks_get(j, kid), KP_EAUTH);
    }
    int conn = accept_request(listener);
    char probe;
    assert_int_equal(recv(conn, &probe, 1, MSG_DONTWAIT), -1); /* still open: the fetch is in flight */
    assert_int_equal(jwks_get(j, "kid-a"), KP_EAUTH);
    assert_int_equal(kp_jwks_fetch_count(j), 1); /* and only one */

    /* the provider answers at last */
    kp_buf_puts(&doc, "{\"keys\":[");
    jwk_append(&doc, key_a, "kid-a", NULL);
    kp_buf_puts(&doc, "]}");
    kp_buf_printf(&http,
                  "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                  "Connection: close\r\n\r\n%s",
                  doc.len, doc.data);
    assert_int_equal(send(conn, http.data, http.len, MSG_NOSIGNAL), (ssize_t)http.len);
    kp_jwks_wait_idle(j);
    assert_int_equal(jwks_get(j, "kid-a"), KP_OK);
    close(conn);

    /* a fetch that hangs at shutdown is aborted: free returns */
    fake_now = NOW + 30;
    assert_int_equal(jwks_get(j, "kid-new"), KP_EAUTH);
    conn = accept_request(listener);
    kp_jwks_free(j);
    close(conn);
    close(listener);
    kp_buf_free(&doc);
    kp_buf_free(&http);
}

/* ---- the verified-token cache ---- */

/* A cached verification still honours expiry, belongs to its verifier only,
 * and failures are never cached. */
static void test_verified_token_cache(void **state)
{
    kp_auth *a = *state;
    json_t *claims = id_claims();
    json_object_set_new(claims, "exp", json_integer(NOW + 100));
    char *tok = mint_rs("kid-a", key_a, claims);

    verify(a, tok, NULL);
    verify(a, tok, NULL); /* a hit */
    /* another verifier (its own keys and rules) does not see a's cache */
    kp_auth *other = new_auth("https://other-issuer.example", jwks_url);
    verify(other, tok, "issuer");
    kp_auth_free(other);

    /* expiry is checked on every hit, with the same leeway as a full check */
    kp_auth *b = new_auth(ISSUER, jwks_url);
    fake_now = NOW + 150;
    verify(b, tok, NULL);
    fake_now = NOW + 159;
    verify(b, tok, NULL);
    fake_now = NOW + 160;
    verify(b, tok, "expired");
    kp_auth_free(b);
    free(tok);

    /* a failure is never cached: the same bad token fails the same way twice */
    char *bad = mint_local(local_claims());
    bad[strlen(bad) - 2] ^= 1;
    verify(a, bad, "signature");
    verify(a, bad, "signature");
    free(bad);
}

/* ---- the local secret from the secrets service (issue 10) ---- */

#define SECRET_A "rotating-secret-A-0123456789abcdef-0123"
#define SECRET_B "rotating-secret-B-0123456789abcdef-0123"

static char *issue(kp_auth *a)
{
    char *tok = NULL;
    kp_err err;
    if (kp_auth_issue(a, "usr_1", "ada@example.com", &tok, NULL, &err) != KP_OK)
        fail_msg("kp_auth_issue: %s", err.msg);
    return tok;
}

/* A verifier reading its secret from *fs (a new table holding SECRET_A), and
 * a token it issued and has verified, so cached on this thread, in *tok. */
static kp_auth *rotation_fixture(kp_fake_secrets **fs, char **tok)
{
    kp_auth_options o;
    kp_auth *a = NULL;
    kp_err err;

    fake_now = NOW;
    *fs = kp_fake_secrets_new();
    kp_fake_secrets_put(*fs, "KOUMPA_JWT_SECRET", SECRET_A);
    memset(&o, 0, sizeof o);
    o.secrets = kp_fake_secrets_service(*fs);
    o.clock = fake_clock;
    if (kp_auth_new(&o, &a, &err) != KP_OK)
        fail_msg("kp_auth_new: %s", err.msg);
    *tok = issue(a);
    verify(a, *tok, NULL);
    return a;
}

static void test_service_secret_checked_at_new(void **state)
{
    kp_auth_options o;
    kp_auth *a = NULL;
    kp_err err;
    kp_fake_secrets *fs = kp_fake_secrets_new();
    (void)state;

    memset(&o, 0, sizeof o);
    o.secrets = kp_fake_secrets_service(fs);
    assert_int_equal(kp_auth_new(&o, &a, &err), KP_ENOTFOUND);
    assert_non_null(strstr(err.msg, "KOUMPA_JWT_SECRET"));
    assert_null(a);
    kp_fake_secrets_put(fs, "KOUMPA_JWT_SECRET", "tooshort-secret-31-characters!!");
    assert_int_equal(kp_auth_new(&o, &a, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "KOUMPA_JWT_SECRET"));
    assert_non_null(strstr(err.msg, "at least 32 bytes"));
    assert_null(strstr(err.msg, "tooshort"));
    assert_null(a);
    kp_fake_secrets_put(fs, "KOUMPA_JWT_SECRET", "0123456789abcdef0123456789abcdef"); /* 32 is enough */
    assert_int_equal(kp_auth_new(&o, &a, &err), KP_OK);
    kp_auth_free(a);
    kp_fake_secrets_free(fs);
}

/* A token verified (and cached on this thread) under the old secret is
 * refused once the secret rotates; tokens of the new one are accepted. */
static void test_rotated_secret_refuses_old_tokens_even_cached(void **state)
{
    kp_fake_secrets *fs;
    char *old;
    kp_auth *a = rotation_fixture(&fs, &old);
    (void)state;

    verify(a, old, NULL); /* a cache hit */

    kp_fake_secrets_put(fs, "KOUMPA_JWT_SECRET", SECRET_B);
    verify(a, old, "signature");
    char *fresh = issue(a);
    verify(a, fresh, NULL);
    json_t *claims = local_claims();
    char *minted = mint("{\"alg\":\"HS256\"}", claims, NULL, SECRET_B, strlen(SECRET_B));
    json_decref(claims);
    verify(a, minted, NULL);
    verify(a, old, "signature"); /* still, after the new ones were cached */

    /* back to A (an operator undoing a rotation): A's tokens work again, B's do not */
    kp_fake_secrets_put(fs, "KOUMPA_JWT_SECRET", SECRET_A);
    verify(a, old, NULL);
    verify(a, fresh, "signature");
    free(old);
    free(fresh);
    free(minted);
    kp_auth_free(a);
    kp_fake_secrets_free(fs);
}

/* Rotated to a secret too short to use: local tokens get 503, not a weak key. */
static void test_rotated_to_short_secret_is_unavailable(void **state)
{
    kp_fake_secrets *fs;
    kp_claims c;
    kp_err err;
    char *tok = NULL, *old;
    kp_auth *a = rotation_fixture(&fs, &old);
    (void)state;

    kp_fake_secrets_put(fs, "KOUMPA_JWT_SECRET", "short");
    assert_int_equal(kp_auth_verify(a, old, &c, &err), KP_EUNAVAILABLE);
    assert_string_equal(c.sub, "");
    assert_null(strstr(err.msg, "short"));
    assert_int_equal(kp_auth_issue(a, "usr_1", NULL, &tok, NULL, &err), KP_EUNAVAILABLE);
    assert_null(tok);
    free(old);
    kp_auth_free(a);
    kp_fake_secrets_free(fs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_validates_options),
        cmocka_unit_test(test_service_secret_checked_at_new),
        cmocka_unit_test(test_rotated_secret_refuses_old_tokens_even_cached),
        cmocka_unit_test(test_rotated_to_short_secret_is_unavailable),
        cmocka_unit_test_setup_teardown(test_issue_verify_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_token_other_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_claims_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alg_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crit_header_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rs256_id_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rs256_unverified_email_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rs256_audience, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rs256_access_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rs256_times, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issuer_selects_key_and_alg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_public_key_as_hmac_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered_and_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_kid_refetch_rate_limited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_default_url_and_lazy_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_key_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_fetch_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_max_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_bad_documents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_verification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_concurrent_cold_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_lookup_never_waits_for_the_network, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verified_token_cache, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
