/* verify.c - see verify.h. */
#include "domain/verify.h"

#include <sodium.h>
#include <string.h>
#include <time.h>

#include "domain/credits.h"

#define TOKEN_BYTES 32

/* Hex of BLAKE2b-256(token): what the database keeps. */
static void token_hash(const char *token, char hex[2 * crypto_generichash_BYTES + 1])
{
    unsigned char h[crypto_generichash_BYTES];
    crypto_generichash(h, sizeof h, (const unsigned char *)token, strlen(token), NULL, 0);
    sodium_bin2hex(hex, 2 * crypto_generichash_BYTES + 1, h, sizeof h);
}

kp_status kp_verify_issue(kp_store *s, const char *user_id, int64_t ttl_s, char token[KP_VERIFY_TOKEN_MAX], kp_err *err)
{
    unsigned char raw[TOKEN_BYTES];
    char hex[2 * crypto_generichash_BYTES + 1];
    kp_verification v;
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(token, KP_VERIFY_TOKEN_MAX, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    token_hash(token, hex);
    memset(&v, 0, sizeof v);
    snprintf(v.user_id, sizeof v.user_id, "%s", user_id);
    v.created_at = (int64_t)time(NULL);
    v.expires_at = v.created_at + ttl_s;
    return s->ops->verification_create(s, hex, &v, err);
}

/* A token as issued: 43 base64url characters. */
static int token_shape_ok(const char *token)
{
    size_t n = token ? strlen(token) : 0;
    if (n < 40 || n >= KP_VERIFY_TOKEN_MAX)
        return 0;
    return strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == n;
}

kp_status kp_verify_consume(kp_store *s, const char *token, int64_t now, kp_verify_outcome *outcome, kp_user *user,
                            kp_err *err)
{
    char hex[2 * crypto_generichash_BYTES + 1];
    kp_verification v;
    kp_user u;
    *outcome = KP_VERIFY_UNKNOWN;
    if (!token_shape_ok(token))
        return KP_OK;
    token_hash(token, hex);
    kp_status rc = s->ops->verification_consume(s, hex, now, &v, err);
    if (rc == KP_ENOTFOUND || rc == KP_ECONFLICT) {
        kp_err_clear(err);
        if (rc == KP_ECONFLICT)
            *outcome = v.used_at ? KP_VERIFY_USED : KP_VERIFY_EXPIRED;
        return KP_OK;
    }
    if (rc == KP_OK)
        rc = s->ops->user_get(s, v.user_id, &u, err);
    /* the day's bonus was waiting for this address (same key as the daily run: never twice) */
    if (rc == KP_OK && u.verification_required)
        rc = kp_credits_welcome(s, u.id, err);
    if (rc != KP_OK)
        return rc;
    *outcome = KP_VERIFY_DONE;
    if (user) {
        sodium_memzero(u.password_hash, sizeof u.password_hash);
        *user = u;
    }
    return KP_OK;
}

int kp_verify_mail(const kp_config *cfg, const char *token, kp_buf *subject, kp_buf *body)
{
    long hours = cfg->verify_ttl_s / 3600;
    int rc = kp_buf_puts(subject, "Confirm your e-mail address for Koumpa");
    rc |= kp_buf_printf(
        body,
        "Hello,\n\n"
        "Please confirm your e-mail address by opening this link:\n\n"
        "%s%stoken=%s\n\n"
        "The link works once, for %ld hour%s. If you did not sign up for Koumpa, ignore this message.\n",
        cfg->verify_url, strchr(cfg->verify_url, '?') ? "&" : "?", token, hours ? hours : 1, hours == 1 ? "" : "s");
    return rc;
}
