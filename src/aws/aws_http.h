/*
 * aws_http.h - one signed AWS request: credentials from the chain, SigV4
 * (aws_sigv4.h), the exchange (aws_fetch.h), retries with full-jitter
 * backoff, and AWS's error answers mapped to a kp_err.
 *
 * What every AWS client (DynamoDB, S3, Secrets Manager) calls. The caller
 * builds the URL (endpoint from kp_aws_endpoint(), S3 keys encoded with
 * kp_aws_sigv4_encode_key(); the query in any order) and the service-specific
 * headers (Content-Type, X-Amz-Target, ...); this adds and signs Host,
 * X-Amz-Date, X-Amz-Content-Sha256 (every service: S3 requires it, the others
 * accept it) and X-Amz-Security-Token, and sends exactly those headers.
 *
 * Retried (up to max_attempts in all, sleeping a random 0..min(max_delay,
 * base_delay * 2^n) ms before retry n, "full jitter"): no response at all,
 * 429, 5xx, and 400s whose code says throttling (ThrottlingException,
 * ProvisionedThroughputExceededException, RequestLimitExceeded, ...). Not
 * retried: everything else, so a failed condition is answered at once.
 * ExpiredToken on remote (ECS, IMDS) credentials: they are dropped, new ones
 * fetched and the request sent again at once, once per call.
 *
 * Errors (the message always names the service, the AWS error code and the
 * request id when AWS gave them; never a secret):
 *   conditions and conflicts (ConditionalCheckFailedException,
 *     TransactionCanceledException, ResourceInUse/Exists...)  -> KP_ECONFLICT
 *   not found (404, ResourceNotFoundException, NoSuchKey/Bucket) -> KP_ENOTFOUND
 *   refused credentials or signature (403, SignatureDoesNotMatch,
 *     InvalidClientTokenId, ExpiredToken, UnrecognizedClient,
 *     InvalidAccessKeyId, AccessDenied) -> KP_EUNAVAILABLE, the message
 *     saying which check failed
 *   throttling or 5xx still failing after the last attempt, no response
 *                                                             -> KP_EUNAVAILABLE
 *   anything else (ValidationException, ...)                  -> KP_EIO
 * The response (status, headers, body) and the parsed code stay available
 * in kp_aws_response whatever the outcome, for callers that look deeper
 * (DynamoDB's CancellationReasons, S3's 304).
 */
#ifndef KP_AWS_HTTP_H
#define KP_AWS_HTTP_H

#include <stddef.h>

#include "aws/aws_credentials.h"
#include "aws/aws_fetch.h"
#include "aws/aws_sigv4.h"
#include "core/err.h"

#define KP_AWS_MAX_ATTEMPTS 5
#define KP_AWS_BASE_DELAY_MS 25L
#define KP_AWS_MAX_DELAY_MS 2000L

/* Where and as whom requests go. Fields are borrowed for the client's life. */
typedef struct kp_aws_client {
    kp_aws_credentials_provider *credentials;
    const char *region;
    int max_attempts;        /* 0: KP_AWS_MAX_ATTEMPTS */
    long base_delay_ms;      /* 0: KP_AWS_BASE_DELAY_MS */
    long max_delay_ms;       /* 0: KP_AWS_MAX_DELAY_MS */
    kp_aws_fetch_pool *pool; /* connections kept between calls; NULL: one per call */
} kp_aws_client;

typedef struct kp_aws_request {
    kp_aws_service service;
    const char *method;           /* "GET", "PUT", "POST", "DELETE", "HEAD" */
    const char *url;              /* endpoint + encoded path [+ '?' + query] */
    const kp_aws_header *headers; /* extra headers to sign and send; no CR/LF in values */
    size_t n_headers;
    const void *body; /* may be NULL */
    size_t body_len;
    long timeout_ms; /* per attempt; 0: KP_AWS_FETCH_TIMEOUT_MS */
} kp_aws_request;

/* Zero-initialise; free with kp_aws_response_free(). */
typedef struct kp_aws_response {
    kp_aws_fetch_response http; /* the last attempt's answer */
    char error_code[96];        /* "" on success, e.g. "ConditionalCheckFailedException" */
    char error_message[160];
    char request_id[96];
    int attempts;
} kp_aws_response;

/* Sends req (signed, retried as above). KP_OK for a status below 400. */
kp_status kp_aws_call(const kp_aws_client *client, const kp_aws_request *req, kp_aws_response *resp, kp_err *err);

void kp_aws_response_free(kp_aws_response *resp);

/* Fills code/message from an AWS error body: JSON {"__type": "ns#Code",
 * "message"} (or the x-amzn-ErrorType header), or S3's XML <Error><Code>.
 * Exposed for tests. */
void kp_aws_parse_error(const kp_aws_fetch_response *http, char *code, size_t code_cap, char *message,
                        size_t message_cap);

/* Whether an answer with this status and error code is worth retrying. */
int kp_aws_retryable(long status, const char *code);

#endif
