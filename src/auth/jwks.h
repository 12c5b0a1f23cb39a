/*
 * jwks.h - the signing keys of an external identity provider, fetched from
 * its JSON Web Key Set URL (RFC 7517) and cached.
 *
 * Fetches run on the cache's own refresher thread, never on the caller's: a
 * lookup never waits for the network. The first fetch happens on the first
 * lookup or kp_jwks_prefetch(), so start-up never depends on the provider. A
 * lookup of an unknown kid asks for a refetch (key rotation) and fails at
 * once (KP_EAUTH) with the keys known so far; once the fetch has landed, the
 * next lookup finds the new key. At most one fetch per refetch interval
 * whatever the tokens say, so forged kids cannot make the server hammer the
 * provider. A set older than max age is still used while a refresh is asked
 * for; if that refresh fails the old keys stay. Intervals and ages are
 * measured on the monotonic clock, so a wall-clock step neither freezes nor
 * floods refreshes.
 *
 * Only keys usable for RS256 are loaded: kty "RSA", alg absent or "RS256",
 * use absent or "sig", a kid, valid n/e (OpenSSL's public key check) and at
 * least 2048 bits. Other entries are remembered as unusable, so a token naming
 * them gets a precise refusal without triggering refetches.
 *
 * Thread-safe: lookups may run on any number of threads. The lock is never
 * held during the HTTP fetch. kp_jwks_free aborts a fetch in flight.
 */
#ifndef KP_JWKS_H
#define KP_JWKS_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define KP_JWKS_MAX_BYTES (1024 * 1024) /* larger responses are refused */
#define KP_JWKS_MAX_KEYS 64             /* entries beyond this are ignored */

typedef struct kp_jwks kp_jwks;

typedef struct kp_jwks_options {
    const char *url;             /* https://, http:// or file:// (copied) */
    long refetch_interval_s;     /* minimum seconds between fetches (<= 0: 30) */
    long max_age_s;              /* refresh a set older than this on use (<= 0: 3600) */
    long connect_timeout_s;      /* <= 0: 5 */
    long timeout_s;              /* whole transfer, <= 0: 10 */
    int64_t (*clock)(void *arg); /* seconds; NULL: the monotonic clock (tests pass a fake) */
    void *clock_arg;
} kp_jwks_options;

/* Creates an empty cache; fetches nothing. Fails (KP_EINVAL) on a missing or
 * unsupported URL. Release with kp_jwks_free(). */
kp_status kp_jwks_new(const kp_jwks_options *opt, kp_jwks **out, kp_err *err);

/* Finds the key named kid in the keys fetched so far; never blocks on the
 * network. An unknown kid or a stale set asks the refresher for a fetch (if
 * the refetch interval allows). On success *key_out holds a new reference the
 * caller releases with EVP_PKEY_free(). KP_EAUTH: unknown kid, unusable key,
 * or keys unavailable (not fetched yet, or every fetch failed). */
kp_status kp_jwks_get(kp_jwks *j, const char *kid, EVP_PKEY **key_out, kp_err *err);

/* Asks for a fetch now (e.g. at start-up, so the first token finds keys),
 * if the refetch interval allows; returns at once. */
void kp_jwks_prefetch(kp_jwks *j);

/* Blocks until no fetch is requested or in flight (tests, and callers that
 * can afford to wait). */
void kp_jwks_wait_idle(kp_jwks *j);

/* How many fetches have been requested (for tests and metrics). */
unsigned long kp_jwks_fetch_count(kp_jwks *j);

/* Stops the refresher (aborting a fetch in flight). NULL-safe. No lookup may be running. */
void kp_jwks_free(kp_jwks *j);

/* A parsed key set, immutable once built. */
typedef struct kp_jwks_keyset kp_jwks_keyset;

/* Parses a JWKS document. KP_EINVAL if it is not a JSON object with a "keys"
 * array; individual bad keys are kept as unusable entries, not errors.
 * Release with kp_jwks_keyset_free(). */
kp_status kp_jwks_parse(const char *json, size_t len, kp_jwks_keyset **out, kp_err *err);

/* The usable key named kid (borrowed from ks), or NULL; when NULL and
 * *why_unusable is set (non-NULL), the kid exists but cannot be used, and
 * *why_unusable says why (static string). why_unusable may be NULL. */
EVP_PKEY *kp_jwks_keyset_find(const kp_jwks_keyset *ks, const char *kid, const char **why_unusable);

/* Number of usable keys. */
size_t kp_jwks_keyset_usable(const kp_jwks_keyset *ks);

void kp_jwks_keyset_free(kp_jwks_keyset *ks);

#endif
