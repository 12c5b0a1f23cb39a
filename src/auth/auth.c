/*
 * auth.c - the token policy: which key and algorithm a token is checked
 * with, and which claims it must carry. Parsing and signatures are in jwt.c,
 * the identity provider's keys in jwks.c.
 *
 * Order of checks for a token: size and shape (kp_jwt_parse), header (no
 * "crit", alg present), issuer -> expected algorithm and key, signature, then
 * claims. Nothing from the payload is used before the signature holds except
 * "iss", and only to choose the key.
 */
#include "auth/auth.h"

#include <assert.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/jwks.h"
#include "auth/jwt.h"
#include "core/buf.h"
#include "core/log.h"
#include "secrets/secrets.h"

#define DEFAULT_LOCAL_ISSUER "koumpa"
#define DEFAULT_TTL_S 86400
#define JWKS_WELL_KNOWN "/.well-known/jwks.json"

struct kp_auth {
    kp_secrets *secrets;   /* the local secret's source; NULL: the fixed secret below */
    unsigned char *secret; /* fixed secret (NULL with a service) */
    size_t secret_len;
    char *local_issuer; /* also the aud of local tokens */
    char *issuer;       /* NULL: external tokens disabled */
    char *audience;
    kp_jwks *jwks; /* NULL when external tokens are disabled */
    long ttl_s;
    int64_t (*clock)(void *arg);
    void *clock_arg;
    uint64_t generation; /* unique per verifier, for the token cache */
};

static int64_t system_clock(void *arg)
{
    (void)arg;
    return (int64_t)time(NULL);
}

static int64_t auth_now(const kp_auth *a)
{
    return a->clock(a->clock_arg);
}

/* ---- the local secret ---- */

/* The HS256 key in use now, for one sign or verify: the service's current
 * value (a copy, wiped by release_secret) or the fixed secret. */
typedef struct local_key {
    unsigned char *bytes;
    size_t len;
    kp_status status; /* KP_OK, or why there is no key (err below) */
    kp_err err;
} local_key;

static kp_status unusable_secret(local_key *k, const char *why)
{
    kp_log_json(KP_LOG_WARN, "the token secret is not usable",
                json_pack("{s:s,s:s}", "secret", KP_SECRET_JWT_SECRET, "error", why));
    return kp_err_set(&k->err, KP_EUNAVAILABLE, "the token signing secret is not available");
}

static void get_secret(kp_auth *a, local_key *k)
{
    char *value = NULL;
    size_t len = 0;
    kp_err why = {0};

    memset(k, 0, sizeof *k);
    if (!a->secrets) {
        k->bytes = a->secret;
        k->len = a->secret_len;
        return;
    }
    if (kp_secrets_get(a->secrets, KP_SECRET_JWT_SECRET, &value, &len, &why) != KP_OK) {
        k->status = unusable_secret(k, why.msg);
        return;
    }
    if (len < KP_AUTH_MIN_SECRET) {
        kp_secrets_value_free(value, len);
        k->status = unusable_secret(k, "shorter than 32 bytes");
        return;
    }
    k->bytes = (unsigned char *)value;
    k->len = len;
}

static void release_secret(const kp_auth *a, local_key *k)
{
    if (a->secrets)
        kp_secrets_value_free((char *)k->bytes, k->len);
    k->bytes = NULL;
    k->len = 0;
}

/* ---- claim helpers ---- */

static int string_is(const char *s, const char *expected)
{
    return s && expected && strcmp(s, expected) == 0;
}

/* aud is a string equal to want, or an array with a string equal to want. */
static int audience_matches(const json_t *aud, const char *want)
{
    size_t i;

    if (json_is_string(aud))
        return string_is(json_string_value(aud), want);
    if (!json_is_array(aud))
        return 0;
    for (i = 0; i < json_array_size(aud); i++)
        if (string_is(json_string_value(json_array_get(aud, i)), want))
            return 1;
    return 0;
}

/* Copies a string claim into dst (size dstsz). Absent is fine unless
 * required; non-string, empty-when-required or too long is refused. */
static kp_status copy_claim(const kp_jwt *jwt, const char *name, int required, char *dst, size_t dstsz, kp_err *err)
{
    const json_t *v = json_object_get(jwt->payload, name);
    const char *s = json_string_value(v);
    size_t len;

    dst[0] = '\0';
    if (!v && !required)
        return KP_OK;
    if (!s || (required && !*s))
        return kp_err_set(err, KP_EAUTH, "invalid %s claim", name);
    len = strlen(s);
    if (len >= dstsz)
        return kp_err_set(err, KP_EAUTH, "%s claim too long", name);
    memcpy(dst, s, len + 1);
    return KP_OK;
}

static int group_contains(const json_t *groups, const char *name)
{
    size_t i;

    for (i = 0; json_is_array(groups) && i < json_array_size(groups); i++)
        if (string_is(json_string_value(json_array_get(groups, i)), name))
            return 1;
    return 0;
}

/* email_verified may be a JSON boolean or (some providers) the string "true". */
static int email_verified(const kp_jwt *jwt)
{
    const json_t *v = json_object_get(jwt->payload, "email_verified");

    return json_is_true(v) || string_is(json_string_value(v), "true");
}

/* ---- verification ---- */

static kp_status check_header(const kp_jwt *jwt, const char *expected_alg, kp_err *err)
{
    const char *alg = kp_jwt_header_string(jwt, "alg");

    /* We understand no extension, so any "crit" makes the token unusable
     * (RFC 7515 4.1.11). */
    if (json_object_get(jwt->header, "crit"))
        return kp_err_set(err, KP_EAUTH, "unsupported critical header");
    if (!alg)
        return kp_err_set(err, KP_EAUTH, "token has no algorithm");
    if (strcmp(alg, expected_alg) != 0)
        return kp_err_set(err, KP_EAUTH, "unexpected token algorithm");
    return KP_OK;
}

static kp_status verify_local(kp_auth *a, const kp_jwt *jwt, const local_key *key, kp_claims *out, kp_err *err)
{
    kp_status st;

    if ((st = check_header(jwt, "HS256", err)) != KP_OK)
        return st;
    if (key->status != KP_OK) {
        *err = key->err;
        return key->status;
    }
    if ((st = kp_jwt_verify_hs256(jwt, key->bytes, key->len, err)) != KP_OK)
        return st;
    if ((st = kp_jwt_check_times(jwt, auth_now(a), KP_AUTH_LEEWAY_S, &out->exp, err)) != KP_OK)
        return st;
    if (!audience_matches(json_object_get(jwt->payload, "aud"), a->local_issuer))
        return kp_err_set(err, KP_EAUTH, "wrong token audience");
    if ((st = copy_claim(jwt, "sub", 1, out->sub, sizeof out->sub, err)) != KP_OK)
        return st;
    if ((st = copy_claim(jwt, "email", 0, out->email, sizeof out->email, err)) != KP_OK)
        return st;
    out->external = 0;
    out->admin_group = 0;
    return KP_OK;
}

/* Cognito: access tokens name the app client in client_id, id tokens in aud. */
static kp_status check_external_audience(const kp_auth *a, const kp_jwt *jwt, kp_err *err)
{
    const json_t *use = json_object_get(jwt->payload, "token_use");
    const char *use_s = json_string_value(use);

    if (use && !string_is(use_s, "access") && !string_is(use_s, "id"))
        return kp_err_set(err, KP_EAUTH, "unsupported token_use");
    if (string_is(use_s, "access")) {
        if (!string_is(kp_jwt_claim_string(jwt, "client_id"), a->audience))
            return kp_err_set(err, KP_EAUTH, "wrong token client_id");
        return KP_OK;
    }
    if (!audience_matches(json_object_get(jwt->payload, "aud"), a->audience))
        return kp_err_set(err, KP_EAUTH, "wrong token audience");
    return KP_OK;
}

static kp_status verify_external(kp_auth *a, const kp_jwt *jwt, kp_claims *out, kp_err *err)
{
    EVP_PKEY *key = NULL;
    kp_status st;

    if ((st = check_header(jwt, "RS256", err)) != KP_OK)
        goto cleanup;
    if ((st = kp_jwks_get(a->jwks, kp_jwt_header_string(jwt, "kid"), &key, err)) != KP_OK)
        goto cleanup;
    if ((st = kp_jwt_verify_rs256(jwt, key, err)) != KP_OK)
        goto cleanup;
    if ((st = kp_jwt_check_times(jwt, auth_now(a), KP_AUTH_LEEWAY_S, &out->exp, err)) != KP_OK)
        goto cleanup;
    if ((st = check_external_audience(a, jwt, err)) != KP_OK)
        goto cleanup;
    if ((st = copy_claim(jwt, "sub", 1, out->sub, sizeof out->sub, err)) != KP_OK)
        goto cleanup;
    if ((st = copy_claim(jwt, "email", 0, out->email, sizeof out->email, err)) != KP_OK)
        goto cleanup;
    /* An unverified address is anyone's claim: it must not match an admin email. */
    if (!email_verified(jwt))
        out->email[0] = '\0';
    out->admin_group = group_contains(json_object_get(jwt->payload, "cognito:groups"), "admin");
    out->external = 1;

cleanup:
    EVP_PKEY_free(key);
    return st;
}

/*
 * Verified-token cache. A client sends the same token with every request, so
 * each thread remembers its last verifications, keyed by a BLAKE2b-128 hash
 * of the whole token (never by a part of it: a signature alone does not bind
 * the payload), of the local secret in use (a rotation makes every entry
 * verified under the old one unreachable) and of the verifier (its unique
 * generation, not its address, which may be reused). A hit skips decoding, parsing and the signature, but
 * not time: it holds only while the token is unexpired (same rule and leeway
 * as a full check) and for at most CACHE_TTL_S after the full verification.
 * Failures are never cached.
 */
#define CACHE_SLOTS 64
#define CACHE_TTL_S 30

typedef struct cached_token {
    uint64_t owner; /* kp_auth generation; 0: empty */
    unsigned char hash[16];
    int64_t verified_at;
    kp_claims claims;
} cached_token;

static __thread cached_token token_cache[CACHE_SLOTS];
static _Atomic uint64_t auth_generations;

static cached_token *cache_slot(const kp_auth *a, const local_key *key, const char *token, unsigned char hash[16])
{
    crypto_generichash_state st;
    uint64_t key_len = key->len; /* the boundary between secret and token */
    crypto_generichash_init(&st, (const unsigned char *)&a->generation, sizeof a->generation, 16);
    crypto_generichash_update(&st, (const unsigned char *)&key_len, sizeof key_len);
    if (key->bytes)
        crypto_generichash_update(&st, key->bytes, key->len);
    crypto_generichash_update(&st, (const unsigned char *)token, strlen(token));
    crypto_generichash_final(&st, hash, 16);
    return &token_cache[hash[0] % CACHE_SLOTS];
}

static int cache_lookup(const kp_auth *a, const local_key *key, const char *token, int64_t now, kp_claims *out)
{
    unsigned char hash[16];
    cached_token *c = cache_slot(a, key, token, hash);
    if (c->owner != a->generation || sodium_memcmp(c->hash, hash, sizeof hash) != 0)
        return 0;
    if (now < c->verified_at || now >= c->verified_at + CACHE_TTL_S || now - KP_AUTH_LEEWAY_S >= c->claims.exp) {
        c->owner = 0;
        return 0;
    }
    *out = c->claims;
    return 1;
}

static void cache_store(const kp_auth *a, const local_key *key, const char *token, int64_t now, const kp_claims *claims)
{
    unsigned char hash[16];
    cached_token *c = cache_slot(a, key, token, hash);
    c->owner = a->generation;
    memcpy(c->hash, hash, sizeof hash);
    c->verified_at = now;
    c->claims = *claims;
}

kp_status kp_auth_verify(kp_auth *a, const char *token, kp_claims *out, kp_err *err)
{
    kp_jwt jwt = KP_JWT_INIT;
    const char *iss;
    kp_status st;
    int64_t now = auth_now(a);
    local_key key;

    memset(out, 0, sizeof *out);
    get_secret(a, &key);
    if (token && strlen(token) <= KP_JWT_MAX_LEN && cache_lookup(a, &key, token, now, out)) {
        st = KP_OK;
        goto done;
    }
    if ((st = kp_jwt_parse(token, &jwt, err)) != KP_OK)
        goto cleanup;
    iss = kp_jwt_claim_string(&jwt, "iss");
    if (!iss)
        st = kp_err_set(err, KP_EAUTH, "token has no issuer");
    else if (strcmp(iss, a->local_issuer) == 0)
        st = verify_local(a, &jwt, &key, out, err);
    else if (a->issuer && strcmp(iss, a->issuer) == 0)
        st = verify_external(a, &jwt, out, err);
    else
        st = kp_err_set(err, KP_EAUTH, "unknown token issuer");

cleanup:
    if (st != KP_OK) {
        memset(out, 0, sizeof *out);
    } else {
        /* kp_jwt_parse refuses a NULL token (clang-tidy cannot see that in jwt.c
         * and reports a NULL passed on to strlen) */
        assert(token != NULL);
        cache_store(a, &key, token, now, out);
    }
    kp_jwt_free(&jwt);
done:
    release_secret(a, &key);
    return st;
}

/* ---- issuing ---- */

/* 128 random bits, base64url: a unique token id (jti). */
static char *new_token_id(void)
{
    unsigned char raw[16];

    if (RAND_bytes(raw, sizeof raw) != 1)
        return NULL;
    return kp_jwt_b64url_encode(raw, sizeof raw);
}

kp_status kp_auth_issue(kp_auth *a, const char *user_id, const char *email, char **token_out, int64_t *expires_at,
                        kp_err *err)
{
    json_t *payload = NULL;
    char *jti = NULL;
    int64_t now = auth_now(a), exp = now + a->ttl_s;
    kp_status st;
    int rc = 0;
    local_key key = {0};

    *token_out = NULL;
    if (!user_id || !*user_id || strlen(user_id) >= sizeof((kp_claims *)0)->sub)
        return kp_err_set(err, KP_EINVAL, "invalid user id");
    if (email && strlen(email) >= sizeof((kp_claims *)0)->email)
        return kp_err_set(err, KP_EINVAL, "email too long");
    jti = new_token_id();
    payload = json_object();
    if (!jti || !payload) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc |= json_object_set_new(payload, "iss", json_string(a->local_issuer));
    rc |= json_object_set_new(payload, "aud", json_string(a->local_issuer));
    rc |= json_object_set_new(payload, "sub", json_string(user_id));
    if (email && *email)
        rc |= json_object_set_new(payload, "email", json_string(email));
    rc |= json_object_set_new(payload, "iat", json_integer((json_int_t)now));
    rc |= json_object_set_new(payload, "exp", json_integer((json_int_t)exp));
    rc |= json_object_set_new(payload, "jti", json_string(jti));
    if (rc != 0) {
        /* also a string that is not UTF-8 (json_string returns NULL) */
        st = kp_err_set(err, KP_EINVAL, "cannot build token claims");
        goto cleanup;
    }
    get_secret(a, &key);
    if (key.status != KP_OK) {
        *err = key.err;
        st = key.status;
        goto cleanup;
    }
    st = kp_jwt_sign_hs256(payload, key.bytes, key.len, token_out, err);
    if (st == KP_OK && expires_at)
        *expires_at = exp;

cleanup:
    release_secret(a, &key);
    json_decref(payload);
    free(jti);
    return st;
}

/* ---- lifecycle ---- */

static char *default_jwks_url(const char *issuer)
{
    kp_buf b = KP_BUF_INIT;
    size_t len = strlen(issuer);

    while (len > 0 && issuer[len - 1] == '/')
        len--;
    if (kp_buf_append(&b, issuer, len) != 0 || kp_buf_puts(&b, JWKS_WELL_KNOWN) != 0) {
        kp_buf_free(&b);
        return NULL;
    }
    return kp_buf_steal(&b);
}

static kp_status setup_external(kp_auth *a, const kp_auth_options *opt, kp_err *err)
{
    kp_jwks_options jo;
    char *url = NULL;
    kp_status st;

    if (!opt->audience || !*opt->audience)
        return kp_err_set(err, KP_EINVAL, "an external issuer needs an audience (KOUMPA_JWT_AUDIENCE)");
    if (strcmp(opt->issuer, a->local_issuer) == 0)
        return kp_err_set(err, KP_EINVAL, "the external issuer must differ from the local issuer");
    a->issuer = strdup(opt->issuer);
    a->audience = strdup(opt->audience);
    url = opt->jwks_url && *opt->jwks_url ? strdup(opt->jwks_url) : default_jwks_url(opt->issuer);
    if (!a->issuer || !a->audience || !url) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    memset(&jo, 0, sizeof jo);
    jo.url = url;
    jo.refetch_interval_s = opt->jwks_refetch_interval_s;
    jo.timeout_s = opt->jwks_timeout_s;
    /* a test's fake clock drives both; else tokens use the wall clock and the
     * JWKS throttle the monotonic one */
    jo.clock = opt->clock;
    jo.clock_arg = opt->clock_arg;
    st = kp_jwks_new(&jo, &a->jwks, err);
    if (st == KP_OK && opt->jwks_prefetch)
        kp_jwks_prefetch(a->jwks);

cleanup:
    free(url);
    return st;
}

/* The service's secret is readable and long enough (checked once, at start). */
static kp_status check_service_secret(kp_secrets *secrets, kp_err *err)
{
    char *value = NULL;
    size_t len = 0;
    kp_status st = kp_secrets_get(secrets, KP_SECRET_JWT_SECRET, &value, &len, err);
    if (st == KP_OK && len < KP_AUTH_MIN_SECRET)
        st = kp_err_set(err, KP_EINVAL, "invalid %s: must be at least %d bytes", KP_SECRET_JWT_SECRET,
                        KP_AUTH_MIN_SECRET);
    kp_secrets_value_free(value, len);
    return st;
}

kp_status kp_auth_new(const kp_auth_options *opt, kp_auth **out, kp_err *err)
{
    kp_auth *a = NULL;
    kp_status st;

    *out = NULL;
    if (opt && opt->secrets) {
        if ((st = check_service_secret(opt->secrets, err)) != KP_OK)
            return st;
    } else if (!opt || !opt->hs256_secret || opt->hs256_secret_len < KP_AUTH_MIN_SECRET) {
        return kp_err_set(err, KP_EINVAL, "the JWT secret must be at least %d bytes", KP_AUTH_MIN_SECRET);
    }
    a = calloc(1, sizeof *a);
    if (!a)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    a->generation = ++auth_generations;
    a->clock = opt->clock ? opt->clock : system_clock;
    a->clock_arg = opt->clock ? opt->clock_arg : NULL;
    a->ttl_s = opt->ttl_seconds > 0 ? opt->ttl_seconds : DEFAULT_TTL_S;
    a->secrets = opt->secrets;
    if (!a->secrets)
        a->secret = malloc(opt->hs256_secret_len);
    a->local_issuer = strdup(opt->local_issuer && *opt->local_issuer ? opt->local_issuer : DEFAULT_LOCAL_ISSUER);
    if ((!a->secrets && !a->secret) || !a->local_issuer) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (!a->secrets) {
        memcpy(a->secret, opt->hs256_secret, opt->hs256_secret_len);
        a->secret_len = opt->hs256_secret_len;
    }
    st = KP_OK;
    if (opt->issuer && *opt->issuer)
        st = setup_external(a, opt, err);

cleanup:
    if (st != KP_OK) {
        kp_auth_free(a);
        return st;
    }
    *out = a;
    return KP_OK;
}

void kp_auth_wait_keys(kp_auth *a)
{
    if (a && a->jwks)
        kp_jwks_wait_idle(a->jwks);
}

void kp_auth_free(kp_auth *a)
{
    if (!a)
        return;
    if (a->secret)
        OPENSSL_cleanse(a->secret, a->secret_len);
    free(a->secret);
    free(a->local_issuer);
    free(a->issuer);
    free(a->audience);
    kp_jwks_free(a->jwks);
    free(a);
}
