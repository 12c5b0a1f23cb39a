/*
 * stripe_api.h - a client of Stripe's API (https://docs.stripe.com/api): one
 * call is one POST or GET, made with a libcurl easy handle on the calling
 * thread, so it blocks: callers run it on a pool (api/offload.h), never on
 * an HTTP or loop thread.
 *
 * What every call carries, as Stripe's API documents it:
 *   - a form-encoded body (application/x-www-form-urlencoded) in Stripe's
 *     bracket notation, built from a flat list of key/value pairs such as
 *     {"line_items[0][price]", "price_123"} (kp_stripe_form_encode);
 *   - Authorization: Bearer <STRIPE_SECRET_KEY>, read through the secrets
 *     service for each call (so a rotated key is picked up) and wiped after;
 *   - Stripe-Version pinned (KOUMPA_STRIPE_API_VERSION);
 *   - on a POST, an Idempotency-Key: random for each call, the SAME on each
 *     of its retries, so a retried request never creates a second object.
 *
 * Retries: a timeout, a connection error, a 5xx or a 429 is retried up to
 * max_retries times with exponential backoff and jitter; other 4xx are not.
 * Stripe's `Stripe-Should-Retry` response header, when present, decides
 * instead (Stripe sets it, e.g., on a 409 for a lock that was busy). Each attempt is bounded by a connect and a total
 * timeout.
 *
 * Errors: Stripe's error body {"error":{"type","code","message"}} becomes a
 * kp_err whose message is "Stripe: <Stripe's message>"; the details (HTTP
 * status, type, code) are in a kp_stripe_result. The message never holds
 * the key.
 *
 * Thread-safe: any number of threads may call at once.
 */
#ifndef KP_STRIPE_API_H
#define KP_STRIPE_API_H

#include <jansson.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"
#include "secrets/secrets.h"

#define KP_STRIPE_DEFAULT_BASE "https://api.stripe.com"
#define KP_STRIPE_DEFAULT_VERSION "2026-10-28.endive"
#define KP_STRIPE_MAX_RESPONSE (1024 * 1024) /* larger answers are refused */

/* One form field: key in bracket notation ("metadata[koumpa_user_id]"),
 * value as text. Both borrowed. */
typedef struct kp_stripe_param {
    const char *key;
    const char *value;
} kp_stripe_param;

typedef struct kp_stripe_options {
    const char *api_base;    /* e.g. "https://api.stripe.com" (copied; a trailing '/' is dropped) */
    const char *api_version; /* Stripe-Version (copied) */
    kp_secrets *secrets;     /* where STRIPE_SECRET_KEY is read (borrowed; outlives the client) */
    long connect_timeout_s;  /* per attempt, >= 1 */
    long timeout_s;          /* per attempt, the whole transfer, >= 1 */
    int max_retries;         /* attempts after the first, >= 0 */
    long backoff_ms;         /* the first retry's wait (doubles each time, with jitter); 0: 500 ms */
} kp_stripe_options;

/* What happened on the wire, for callers and logs. */
typedef struct kp_stripe_result {
    long http_status;         /* the last answer's HTTP status; 0: no answer (timeout, connection error) */
    int attempts;             /* how many requests were sent (1 + retries) */
    char error_type[64];      /* Stripe's error.type ("invalid_request_error", ...); "" when none */
    char error_code[64];      /* Stripe's error.code ("resource_missing", ...); "" when none */
    char request_id[64];      /* Stripe's Request-Id header of the last answer; "" when none */
    char idempotency_key[64]; /* the key sent with a POST; "" for a GET */
} kp_stripe_result;

typedef struct kp_stripe kp_stripe;

/* A client; free with kp_stripe_free(). */
kp_status kp_stripe_new(const kp_stripe_options *o, kp_stripe **out, kp_err *err);

/* 1 when STRIPE_SECRET_KEY is set (without it every call is KP_EUNAVAILABLE). */
int kp_stripe_configured(kp_stripe *s);

/*
 * One call: method "POST" (params as the form body) or "GET" (params as the
 * query), path such as "/v1/checkout/sessions". On a 2xx, *out is Stripe's
 * JSON object (caller decrefs). Else:
 *   KP_EUNAVAILABLE  no STRIPE_SECRET_KEY (err names it), or kp_stripe_stop was called;
 *   KP_EIO           Stripe answered with an error (err: "Stripe: <message>"),
 *                    or gave no usable answer after every attempt (err says why).
 * res (may be NULL) receives the details either way.
 */
kp_status kp_stripe_call(kp_stripe *s, const char *method, const char *path, const kp_stripe_param *params,
                         size_t nparams, json_t **out, kp_stripe_result *res, kp_err *err);

/* Makes calls in progress and to come end at once (KP_EUNAVAILABLE): for
 * shutdown, before the pool that runs them is joined. Thread-safe. */
void kp_stripe_stop(kp_stripe *s);

/* NULL is fine. No call may be in progress. */
void kp_stripe_free(kp_stripe *s);

/* ---- the objects Koumpa creates ---- */

/* A Checkout Session in subscription mode for one price (quantity 1). */
typedef struct kp_stripe_checkout {
    const char *price_id;       /* the plan's stripe_price_id */
    const char *user_id;        /* client_reference_id, metadata and subscription_data metadata */
    const char *customer_id;    /* the user's Stripe customer, or NULL/"" ... */
    const char *customer_email; /* ... then this (NULL/"": neither is sent) */
    const char *success_url;
    const char *cancel_url;
} kp_stripe_checkout;

/* POST /v1/checkout/sessions; *url (malloc'd, caller frees) is where to send the user. */
kp_status kp_stripe_checkout_create(kp_stripe *s, const kp_stripe_checkout *c, char **url, kp_stripe_result *res,
                                    kp_err *err);

/* POST /v1/billing_portal/sessions for customer_id; *url as above. */
kp_status kp_stripe_portal_create(kp_stripe *s, const char *customer_id, const char *return_url, char **url,
                                  kp_stripe_result *res, kp_err *err);

/* ---- exposed for tests ---- */

/* Appends params to out as key=value&key=value, each key and value
 * percent-encoded (curl_easy_escape: all but A-Z a-z 0-9 - . _ ~).
 * KP_ENOMEM; KP_EINVAL for a NULL key or value. */
kp_status kp_stripe_form_encode(const kp_stripe_param *params, size_t nparams, kp_buf *out, kp_err *err);

/* Turns a non-2xx answer into err (KP_EIO, "Stripe: <message>") and fills
 * res's error_type / error_code; a body that is not Stripe's error shape
 * gives "Stripe answered HTTP <status>". Returns KP_EIO. */
kp_status kp_stripe_error_from_response(long http_status, const char *body, size_t len, kp_stripe_result *res,
                                        kp_err *err);

/* Whether an answer should be retried: http_status 0 (no answer), 429 and
 * 5xx yes, other statuses no; should_retry ("true"/"false", Stripe's
 * header, or NULL) decides when given. */
int kp_stripe_should_retry(long http_status, const char *should_retry);

#endif
