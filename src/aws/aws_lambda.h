/*
 * aws_lambda.h - the one AWS Lambda API call Koumpa makes: Invoke with
 * InvocationType Event (an asynchronous invocation), which generate-app uses
 * to start a generation it admitted in a new invocation of itself
 * (host/lambda/worker.h).
 *
 *   POST {endpoint}/2015-03-31/functions/{FunctionName}/invocations
 *   X-Amz-Invocation-Type: Event          body: the event (JSON)
 *
 * Lambda queues the event and answers 202 with an empty body; the
 * invocation runs later, and is retried by Lambda (twice) when it fails.
 * Signed with SigV4 (service "lambda") and retried with jitter by
 * aws_http.h; the endpoint is AWS_ENDPOINT_URL_LAMBDA, else
 * AWS_ENDPOINT_URL, else https://lambda.{region}.amazonaws.com. Errors as
 * aws_http.h maps them, the message naming AWS's error type (from
 * x-amzn-ErrorType: ResourceNotFoundException, AccessDeniedException,
 * TooManyRequestsException...) and the request id.
 *
 * Thread-safe (one exchange per call, connections pooled). Ownership: the
 * client owns its copies of the region and endpoint.
 */
#ifndef KP_AWS_LAMBDA_H
#define KP_AWS_LAMBDA_H

#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"

#define KP_AWS_LAMBDA_TIMEOUT_MS 5000L /* per attempt */
#define KP_AWS_LAMBDA_MAX_ATTEMPTS 3

typedef struct kp_aws_lambda kp_aws_lambda;

typedef struct kp_aws_lambda_options {
    const char *region; /* NULL: kp_aws_region() (AWS_REGION, which Lambda sets) */
    long timeout_ms;    /* per attempt; 0: KP_AWS_LAMBDA_TIMEOUT_MS */
    int max_attempts;   /* 0: KP_AWS_LAMBDA_MAX_ATTEMPTS */
} kp_aws_lambda_options;

/* A client. KP_EINVAL without a region (and no endpoint override) or with a
 * bad endpoint URL, KP_ENOMEM. */
kp_status kp_aws_lambda_new(const kp_aws_lambda_options *o, kp_aws_lambda **out, kp_err *err);
void kp_aws_lambda_free(kp_aws_lambda *l);

/* Invokes function (a name, or a function ARN, optionally qualified)
 * asynchronously with payload (len bytes of JSON). KP_OK once Lambda
 * accepted the event (202); else aws_http.h's statuses (KP_ENOTFOUND: no
 * such function; KP_EUNAVAILABLE: refused credentials, throttled or no
 * answer after the retries; KP_EIO: anything else). */
kp_status kp_aws_lambda_invoke_event(kp_aws_lambda *l, const char *function, const char *payload, size_t len,
                                     kp_err *err);

/* The request path of an invocation: "/2015-03-31/functions/{function, encoded}/invocations" appended to out.
 * Returns 0, or -1 when out of memory. */
int kp_aws_lambda_invoke_path(kp_buf *out, const char *function);

#endif
