/*
 * auth.h - bearer token authentication: the one entry point the rest of
 * Koumpa uses to verify and issue tokens.
 *
 * Two kinds of tokens are accepted, told apart by their "iss" claim, and the
 * key decides the algorithm (RFC 8725), never the token's header:
 *
 *   local     iss == local_issuer: HS256 with the local secret only;
 *             aud must be local_issuer too. Issued by kp_auth_issue().
 *   external  iss == issuer (e.g. an AWS Cognito user pool): RS256 only, with
 *             the key the header's "kid" names in the provider's JWKS
 *             (fetched in the background, cached; see auth/jwks.h: a kid
 *             not fetched yet is a 401 at once, never a wait). An access token
 *             (token_use "access") must have client_id == audience, any other
 *             token aud == audience (string, or array containing it).
 *
 * Both: alg must be exactly the expected one, a "crit" header is refused,
 * exp is required, exp and nbf are checked with 60 s of leeway, iat may not
 * be more than 60 s in the future, sub must be a non-empty string, and
 * tokens longer than 8 KiB are refused before anything is decoded.
 *
 * A kp_auth is immutable after kp_auth_new except for the JWKS cache, which
 * has its own lock: kp_auth_verify and kp_auth_issue may run on many threads.
 *
 * Rotation of the local secret (secrets service): a token is accepted only
 * under the secret current at verification time; the per-thread cache of
 * verified tokens is keyed by the secret too, so a token verified under the
 * old secret is not accepted from the cache after the rotation. Tokens issued
 * before a rotation stop working with it (users log in again).
 */
#ifndef KP_AUTH_H
#define KP_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct kp_auth kp_auth;

#define KP_AUTH_MIN_SECRET 32 /* bytes: RFC 7518 3.2, a key at least as long as the hash */
#define KP_AUTH_LEEWAY_S 60   /* clock skew tolerated on exp / nbf / iat */

typedef struct kp_secrets kp_secrets; /* secrets/secrets.h */

typedef struct kp_auth_options {
    /* The local signing secret: KP_SECRET_JWT_SECRET read from secrets (not
     * owned; it must outlive the kp_auth) at every sign and verify, so a
     * rotated secret is used once the service re-reads it; or, when secrets
     * is NULL, a fixed hs256_secret (bytes as given, copied). Either way at
     * least KP_AUTH_MIN_SECRET bytes. */
    kp_secrets *secrets;
    const char *hs256_secret;
    size_t hs256_secret_len;
    const char *local_issuer; /* iss (and aud) of locally issued tokens; NULL: "koumpa" */
    const char *issuer;       /* external issuer (NULL or "": external tokens disabled) */
    const char *audience;     /* required aud (id token) or client_id (access token) of external
                                 tokens; required when issuer is set */
    const char *jwks_url;     /* NULL: {issuer}/.well-known/jwks.json; https://, http:// or file:// */
    long ttl_seconds;         /* local token lifetime; <= 0: 86400 */

    /* Mostly for tests; zero / NULL means the default. */
    long jwks_refetch_interval_s; /* minimum seconds between JWKS fetches (default 30) */
    int jwks_prefetch;            /* fetch the JWKS in the background at once (serve) */
    long jwks_timeout_s;          /* a fetch's whole transfer (default 10) */
    int64_t (*clock)(void *arg);  /* seconds since the epoch (default time(NULL)) */
    void *clock_arg;
} kp_auth_options;

typedef struct kp_claims {
    int external;    /* 0: local token, 1: identity-provider token */
    char sub[256];   /* local: user id; external: the provider's sub */
    char email[256]; /* "" if absent; external: only when email_verified is true */
    int admin_group; /* external: cognito:groups contains "admin"; local: 0 */
    int64_t exp;
} kp_claims;

/* Validates the options and copies them (the caller's strings may go away).
 * KP_EINVAL names the problem (short secret, issuer without audience, bad
 * JWKS URL, ...); with a secrets service, the secret is read once to check
 * it (its error when it cannot be read). Fetches nothing. Release with
 * kp_auth_free(). */
kp_status kp_auth_new(const kp_auth_options *opt, kp_auth **out, kp_err *err);

/* Verifies a bearer token (without the "Bearer " prefix) and fills *out.
 * KP_EAUTH on any token problem, with a message fit for the 401 body (e.g.
 * "token expired"); KP_EUNAVAILABLE for a local token when the secret cannot
 * be read (or was rotated to one too short: logged); out is zeroed on
 * failure. */
kp_status kp_auth_verify(kp_auth *a, const char *token, kp_claims *out, kp_err *err);

/* Issues a local HS256 token for user_id (non-empty, < 256 bytes) with email
 * (may be NULL or ""), valid for ttl_seconds. *token_out is a new heap string
 * the caller frees with free(); *expires_at (may be NULL) its exp. */
kp_status kp_auth_issue(kp_auth *a, const char *user_id, const char *email, char **token_out, int64_t *expires_at,
                        kp_err *err);

/* Blocks until no JWKS fetch is requested or in flight (tests). NULL-safe. */
void kp_auth_wait_keys(kp_auth *a);

/* NULL-safe. Wipes the secret. */
void kp_auth_free(kp_auth *a);

#endif
