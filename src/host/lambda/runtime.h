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

/*
 * A response body produced while it is sent (kp_lambda_respond_stream). The
 * callbacks run on the thread that called kp_lambda_respond_stream.
 */
typedef struct kp_lambda_body {
    /* Copies up to cap bytes of the body into buf: the count, 0 at the body's
     * end, or -1 to abort the response (its connection is dropped). May wait
     * for bytes, but comes back about once a second when
     * kp_lambda_runtime_stopping() says so. */
    long (*read)(void *ud, char *buf, size_t cap);
    /* Once read gave the end: the error type to declare in the trailers
     * (*message its message; both valid until the response is sent), or
     * NULL when the body ended well. */
    const char *(*failure)(void *ud, const char **message);
    /* Asked about once a second while the Runtime API is not taking bytes,
     * and while its answer is awaited: 1 aborts the response. May be NULL. */
    int (*abandon)(void *ud);
    void *ud;
} kp_lambda_body;

/*
 * Posts the invocation's response in streaming mode: a chunked POST with
 * Lambda-Runtime-Function-Response-Mode: streaming, Content-Type
 * content_type (application/vnd.awslambda.http-integration-response: the
 * body starts with a function URL's prelude) and the two error trailers
 * declared (Trailer:), whose values are sent when body->failure() names
 * one: Lambda-Runtime-Function-Error-Type, and
 * Lambda-Runtime-Function-Error-Body, the base64 of {errorMessage,
 * errorType, stackTrace}. KP_EUNAVAILABLE "stopping" when
 * kp_lambda_runtime_stop came before the body's end; KP_EIO when the body
 * aborted or abandoned the response (the next invocation can follow);
 * KP_EUNAVAILABLE when the Runtime API fails or answers other than 202.
 * https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html#runtimes-custom-response-streaming
 */
kp_status kp_lambda_respond_stream(kp_lambda_runtime *rt, const char *request_id, const char *content_type,
                                   const kp_lambda_body *body, kp_err *err);
/* 1 once kp_lambda_runtime_stop was called (a body's read stops waiting then). */
int kp_lambda_runtime_stopping(const kp_lambda_runtime *rt);

void kp_lambda_invocation_free(kp_lambda_invocation *inv);

#endif
