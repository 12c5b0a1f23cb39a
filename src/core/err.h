/*
 * err.h - Koumpa's error model.
 *
 * Every fallible function returns a kp_status and, when it fails, fills a
 * caller-provided kp_err with a human-readable message (which may be shown to
 * API clients for 4xx errors, so it never holds secrets or internals). The
 * status decides the HTTP mapping in one place (kp_status_http).
 */
#ifndef KP_ERR_H
#define KP_ERR_H

#include <stdarg.h>

typedef enum kp_status {
    KP_OK = 0,
    KP_EINVAL,       /* bad input from a caller: 400 */
    KP_EAUTH,        /* not authenticated: 401 */
    KP_ECREDITS,     /* not enough credits: 402 */
    KP_EFORBIDDEN,   /* authenticated but not allowed: 403 */
    KP_ENOTFOUND,    /* no such thing (or not yours): 404 */
    KP_ECONFLICT,    /* duplicate / version mismatch: 409 */
    KP_EDUPLICATE,   /* idempotency key already used: a no-op, not a failure for callers that expect it */
    KP_ETOOLARGE,    /* 413 */
    KP_ERATE,        /* rate-limited / too many at once: 429 */
    KP_EUNAVAILABLE, /* dependency not configured or down: 503 */
    KP_EIO,          /* file or network I/O failure: 500 */
    KP_EDB,          /* database failure: 500 */
    KP_ENOMEM,       /* out of memory: 500 */
    KP_EINTERNAL     /* bug or unexpected state: 500 */
} kp_status;

typedef struct kp_err {
    kp_status status;
    char msg[256];
} kp_err;

/* Sets err (if non-NULL) to status + formatted message; returns status. */
kp_status kp_err_set(kp_err *err, kp_status status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Clears err to KP_OK with an empty message. */
void kp_err_clear(kp_err *err);

/* Stable lower-case name of a status, e.g. "not_found". */
const char *kp_status_name(kp_status status);

/* The HTTP status code a status maps to. */
int kp_status_http(kp_status status);

#endif
