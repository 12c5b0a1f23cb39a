/*
 * lambda_host.h - the Lambda host: turns each invocation of one of the six
 * functions (functions.h) into the router's request and the router's
 * response into the invocation's result, one invocation at a time.
 *
 * An API Gateway 2.0 event (apigw.h) goes through the same per-request work
 * as on the evhttp host (api/exchange.h: request id, body limit, the handler
 * check, HEAD, the "request" log line, metrics) and kp_router_dispatch;
 * the claims the gateway's JWT authorizer verified authenticate the caller
 * (kp_req.verified_claims); a route the invoked function does not own is a
 * 404 naming its owner. An EventBridge scheduled event invokes daily-bonus:
 * the daily bonus for the event's UTC date, then the recovery of generations
 * whose lease expired; the recovery schedule's {"koumpa":"recover"} (every
 * few minutes) runs the recovery alone. Behind the HTTP API a request is
 * marked kp_req.cannot_stream, so a generation asked for as a stream there is
 * dispatched and answered 202. generate-app also takes its own worker event (a
 * generation it dispatched to itself, worker.h). Anything else is an
 * invocation error.
 *
 * An event from generate-app's function URL (RESPONSE_STREAM mode; no
 * authorizer: the router verifies the bearer token, once the JWKS fetch
 * started at init has landed) is answered in streaming mode (stream.h):
 * the prelude, then the body or the stream as it is produced. Through the
 * HTTP API a stream cannot be carried: 501 naming the function URL.
 *
 * Ownership: the host borrows app, store and blob; they outlive it.
 */
#ifndef KP_LAMBDA_HOST_H
#define KP_LAMBDA_HOST_H

#include <stdint.h>

#include "api/exchange.h"
#include "api/router.h"
#include "blob/blob.h"
#include "core/err.h"
#include "host/lambda/runtime.h"

typedef struct kp_lambda_host {
    const char *function;      /* one of kp_lambda_function_names */
    kp_ctx ctx;                /* app and the one store handle */
    kp_blob *blob;             /* daily-bonus: the recovery of expired leases (may be NULL elsewhere) */
    kp_exchange_ids ids;       /* for events without a usable request id */
    const char *invocation_id; /* the invocation being handled (Lambda's request id), or NULL */
} kp_lambda_host;

/* A function URL's answer, sent in streaming mode (stream.h) by kp_lambda_serve. */
typedef struct kp_lambda_streamed {
    char *prelude;      /* {"statusCode","headers","cookies"} (free()) */
    kp_buf body;        /* a complete body, or */
    kp_stream *stream;  /* a stream (owned until sent) */
    int ran_generation; /* outcome.h: this invocation started the generation it streams */
    int64_t deadline_ms;
    kp_req_summary sum; /* logged and counted once the answer is over */
} kp_lambda_streamed;

/* What one invocation answers: a payload, a streamed answer, or an invocation error. */
typedef struct kp_lambda_result {
    char *payload;                /* new JSON string (free()), or NULL */
    kp_lambda_streamed *streamed; /* a function URL's answer, or NULL */
    const char *error_type;       /* neither: static: "Runtime.InvalidEvent", ... */
    kp_err err;                   /* the error's message */
} kp_lambda_result;

/* Frees what a result holds (a streamed answer not sent: its stream released). */
void kp_lambda_result_free(kp_lambda_result *res);

/* Handles one event (len bytes of JSON); deadline_ms: epoch milliseconds, 0 when unknown. */
void kp_lambda_handle(kp_lambda_host *h, const char *event, size_t len, int64_t deadline_ms, kp_lambda_result *out);

/* The invocation loop: next, handle, response or error, until the runtime
 * stops (KP_EUNAVAILABLE "stopping", after kp_lambda_runtime_stop) or fails. */
kp_status kp_lambda_serve(kp_lambda_host *h, kp_lambda_runtime *rt, kp_err *err);

#endif
