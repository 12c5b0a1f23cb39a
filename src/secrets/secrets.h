/*
 * secrets.h - the secrets service: API keys, signing secrets and the like,
 * read from a source (secrets_env.c: the environment and *_FILE files;
 * secrets_aws.c: AWS Secrets Manager, KOUMPA_SECRETS=aws) and cached.
 *
 * A source is a struct of function pointers (kp_secrets_source_ops), one per
 * backend. The service (kp_secrets) wraps one source with a cache: a value
 * is read once, kept for ttl seconds (KOUMPA_SECRETS_TTL, default 3600) and
 * read again after, so a rotated file or secret is picked up without a
 * restart. Values are never logged; cached copies are wiped
 * (sodium_memzero) when replaced or freed.
 *
 * Thread-safe: every HTTP, pool and loop thread may call kp_secrets_get.
 *
 * Ownership: kp_secrets_get hands the caller its own copy of the value,
 * released (wiped, then freed) with kp_secrets_value_free.
 *
 * Cache rules (secrets.c):
 *  - "not set" (KP_ENOTFOUND from the source) is cached for ttl seconds too,
 *    so asking for an unset secret on every request costs no read;
 *  - a read that fails while a value is cached (a file being rewritten, a
 *    permission changed, the AWS API down) keeps the cached value: the
 *    service logs a warning naming the secret and the reason (never the
 *    value) and reads again after another ttl. A secret once read is thus
 *    never lost to a failing source; to revoke one, write a new value;
 *  - a read that fails with nothing cached is returned to the caller (err
 *    names the secret and why) and not cached: the next call reads again;
 *  - reads of one name are serialised (one lock per name), so an expired
 *    value is read once, not by every thread at once; other names go on;
 *  - with kp_secrets_refresh_in_background (serve does it for Secrets
 *    Manager), an expired name that has an answer cached is read again by a
 *    background thread while callers keep getting the cached answer at once:
 *    only a name's first read waits for the source. A background read that
 *    fails keeps the cached answer (logged) and is tried again a TTL later.
 */
#ifndef KP_SECRETS_H
#define KP_SECRETS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* The names the server reads (each also as NAME_FILE in the env source). */
#define KP_SECRET_ANTHROPIC_API_KEY "ANTHROPIC_API_KEY"
#define KP_SECRET_JWT_SECRET "KOUMPA_JWT_SECRET"
#define KP_SECRET_STRIPE_SECRET_KEY "STRIPE_SECRET_KEY"
#define KP_SECRET_STRIPE_WEBHOOK_SECRET "STRIPE_WEBHOOK_SECRET"

typedef struct kp_secrets_source_ops {
    /* Reads the current value of name: *out is malloc'd and NUL-terminated,
     * *len its length. KP_ENOTFOUND when the source has no such secret;
     * another status (err says why, never the value) when it could not be read. */
    kp_status (*read)(void *impl, const char *name, char **out, size_t *len, kp_err *err);
    /* Releases the source. */
    void (*close)(void *impl);
} kp_secrets_source_ops;

typedef struct kp_secrets_source {
    const kp_secrets_source_ops *ops;
    void *impl;
} kp_secrets_source;

typedef struct kp_secrets kp_secrets;

/* Wraps source (taken: closed by kp_secrets_free) with a cache of ttl_s
 * seconds (>= 1). */
kp_status kp_secrets_new(kp_secrets_source source, long ttl_s, kp_secrets **out, kp_err *err);

/* From now on, expired names with an answer cached are read again on a
 * thread of the service's own (see the rules above), so no caller waits on a
 * slow source after the first read. KP_ENOMEM only. kp_secrets_free waits
 * for a read in progress. */
kp_status kp_secrets_refresh_in_background(kp_secrets *s, kp_err *err);

/* A copy of the value of name, from the cache or read from the source.
 * KP_ENOTFOUND when it is not set (err names the secret, never a value). */
kp_status kp_secrets_get(kp_secrets *s, const char *name, char **out, size_t *len, kp_err *err);

/* 1 when name has a value (for the start-up summary: "(set)"). */
int kp_secrets_has(kp_secrets *s, const char *name);

/* Adds "NAME": "(set)" to summary (a JSON object) for each of the names
 * above that has a value; never a value (the start-up config summary). */
void kp_secrets_describe(kp_secrets *s, json_t *summary);

/* Wipes and frees a value from kp_secrets_get (NULL is fine). */
void kp_secrets_value_free(char *value, size_t len);

void kp_secrets_free(kp_secrets *s);

/* Tests: replaces the monotonic clock (core/clock.h) the TTL is measured
 * with; call before the first kp_secrets_get. */
void kp_secrets_set_clock(kp_secrets *s, int64_t (*clock)(void *arg), void *arg);

#endif
