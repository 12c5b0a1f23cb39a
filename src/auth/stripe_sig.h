/*
 * stripe_sig.h - verification of Stripe's webhook signatures (the
 * Stripe-Signature header), over the exact bytes of a request body, before
 * anything parses that body.
 *
 * The header is a comma-separated list of key=value elements:
 *   t=1492774577,v1=5257a869e7ec...,v1=...,v0=6ffbb59b2300...
 * t is the Unix time Stripe signed at; each v1 is a hex HMAC-SHA256 of
 * "{t}.{raw body}" under an endpoint's signing secret (several while Stripe
 * rolls a secret). v0 and other schemes are ignored, as Stripe's libraries
 * do. An event is accepted when t is within tolerance seconds of now (either
 * way: a timestamp from the future is refused too) and one v1 is the HMAC of
 * one of our secrets (a comma-separated list, so that we can roll ours).
 *
 * Pure: no clock, no I/O, no allocation. MACs come from libsodium and are
 * compared in constant time (sodium_memcmp). The reasons and details returned
 * are static text fit for a log line; they never hold a secret or a
 * signature.
 */
#ifndef KP_STRIPE_SIG_H
#define KP_STRIPE_SIG_H

#include <stddef.h>
#include <stdint.h>

#define KP_STRIPE_SIG_LEN 32          /* an HMAC-SHA256 */
#define KP_STRIPE_SIG_MAX_V1 8        /* more v1 elements than this: malformed */
#define KP_STRIPE_SIG_HEADER_MAX 4096 /* a longer header: malformed */

typedef enum kp_stripe_sig_status {
    KP_STRIPE_SIG_OK = 0,
    KP_STRIPE_SIG_MISSING,   /* no header, or an empty one */
    KP_STRIPE_SIG_MALFORMED, /* not key=value elements, no or a bad t=, a v1 that is not 64 hex digits, too long */
    KP_STRIPE_SIG_NO_V1,     /* no v1 element (only v0 or other schemes) */
    KP_STRIPE_SIG_STALE,     /* t more than tolerance seconds before now */
    KP_STRIPE_SIG_FUTURE,    /* t more than tolerance seconds after now */
    KP_STRIPE_SIG_NO_MATCH,  /* no v1 is the HMAC of the body under any of the secrets */
    KP_STRIPE_SIG_NO_SECRET  /* the list of secrets holds none (the caller's configuration) */
} kp_stripe_sig_status;

/* A parsed header. */
typedef struct kp_stripe_sig_header {
    int64_t timestamp; /* t=: at most 12 digits */
    size_t n_v1;
    unsigned char v1[KP_STRIPE_SIG_MAX_V1][KP_STRIPE_SIG_LEN];
} kp_stripe_sig_header;

/* Parses a Stripe-Signature header (NUL-terminated; NULL means absent).
 * KP_STRIPE_SIG_OK, MISSING, MALFORMED or NO_V1. *detail (may be NULL)
 * receives static text saying what exactly was wrong ("" when OK). */
kp_stripe_sig_status kp_stripe_sig_parse(const char *header, kp_stripe_sig_header *out, const char **detail);

/* Verifies header against body (body_len bytes, exactly as received) with
 * secrets, a comma-separated list (spaces around each are ignored), at time
 * now (Unix seconds, >= 0) with tolerance_s (>= 0) seconds of clock skew
 * either way. Checks in this order: the header's shape, the timestamp, the
 * signatures. *detail (may be NULL) as for kp_stripe_sig_parse. */
kp_stripe_sig_status kp_stripe_sig_verify(const char *header, const void *body, size_t body_len, const char *secrets,
                                          int64_t now, int64_t tolerance_s, const char **detail);

/* A stable snake_case name of a status for logs: "ok", "missing_header",
 * "malformed_header", "no_v1_signature", "timestamp_too_old",
 * "timestamp_in_future", "no_matching_signature", "no_secret". */
const char *kp_stripe_sig_reason(kp_stripe_sig_status st);

#endif
