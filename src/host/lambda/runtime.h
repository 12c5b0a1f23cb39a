/*
 * runtime.h - the client of the Lambda Runtime API (AWS's HTTP endpoint at
 * AWS_LAMBDA_RUNTIME_API, "host:port"), over libcurl: fetch the next
 * invocation, post its response or its error, report an init error.
 * https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html
 *
 * One invocation at a time, on one thread. The `next` request waits as long
 * as Lambda keeps the environment frozen (no timeout); kp_lambda_runtime_stop
 * (signal-safe) makes a waiting call give up within about a second.
 *
 * Ownership: a kp_lambda_runtime owns its curl handle; an invocation owns its
 * payload (kp_lambda_invocation_free).
 */
#ifndef KP_LAMBDA_RUNTIME_H
#define KP_LAMBDA_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

typedef struct kp_lambda_runtime kp_lambda_runtime;

#define KP_LAMBDA_ID_MAX 128

typedef struct kp_lambda_invocation {
    char request_id[KP_LAMBDA_ID_MAX]; /* Lambda-Runtime-Aws-Request-Id */
    int64_t deadline_ms;               /* Lambda-Runtime-Deadline-Ms: epoch milliseconds (0: none given) */
    char function_arn[256];            /* Lambda-Runtime-Invoked-Function-Arn */
    char trace_id[256];                /* Lambda-Runtime-Trace-Id ("" when absent) */
    kp_buf payload;                    /* the event, as sent */
} kp_lambda_invocation;

/* api: "host:port" (AWS_LAMBDA_RUNTIME_API). KP_EINVAL when missing. */
kp_status kp_lambda_runtime_new(const char *api, kp_lambda_runtime **out, kp_err *err);
void kp_lambda_runtime_free(kp_lambda_runtime *rt);
/* Makes a waiting or later call fail with KP_EUNAVAILABLE ("stopping"); async-signal-safe. */
void kp_lambda_runtime_stop(kp_lambda_runtime *rt);

/* Waits for the next invocation and fills inv (freed first). A request
 * without a request id is an error (KP_EINTERNAL). */
kp_status kp_lambda_next(kp_lambda_runtime *rt, kp_lambda_invocation *inv, kp_err *err);
/* Posts the invocation's response. KP_ETOOLARGE when the runtime refuses it as
 * too large (413), with its message. */
kp_status kp_lambda_respond(kp_lambda_runtime *rt, const char *request_id, const char *body, size_t len, kp_err *err);
/* Posts an invocation error (request_id) or, request_id NULL, an init error:
 * {"errorMessage","errorType","stackTrace":[]} with Lambda-Runtime-Function-Error-Type. */
kp_status kp_lambda_fail(kp_lambda_runtime *rt, const char *request_id, const char *type, const char *message,
                         kp_err *err);

void kp_lambda_invocation_free(kp_lambda_invocation *inv);

#endif
