/*
 * aws_fetch.h - one blocking HTTP exchange over a libcurl easy handle, the
 * transport under every AWS call: the signed requests of aws_http.h and the
 * unsigned ones of the credential chain (ECS container endpoint, IMDSv2).
 *
 * It sends exactly the headers it is given (plus what libcurl always adds:
 * Accept, Content-Length, User-Agent) and never an "Expect: 100-continue"
 * wait; redirects are not followed; the response body is buffered up to a
 * limit. Runs on the caller's thread (the AWS clients call it from worker
 * threads, never from the event loop).
 *
 * Connections: without a pool each exchange opens its own. A pool
 * (kp_aws_fetch_pool) keeps up to KP_AWS_FETCH_POOL_IDLE idle libcurl handles,
 * each with its open connections; an exchange borrows one and gives it back,
 * so consecutive calls to one endpoint reuse a connection (and its TLS
 * session). Thread-safe: a handle serves one exchange at a time, the pool's
 * list is behind a mutex (libcurl does not support sharing one connection
 * cache between concurrent threads, so handles are pooled, not connections).
 */
#ifndef KP_AWS_FETCH_H
#define KP_AWS_FETCH_H

#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"

#define KP_AWS_FETCH_TIMEOUT_MS 30000L
#define KP_AWS_FETCH_CONNECT_TIMEOUT_MS 5000L
#define KP_AWS_FETCH_MAX_BODY ((size_t)64 * 1024 * 1024)
#define KP_AWS_FETCH_POOL_IDLE 16

typedef struct kp_aws_fetch_pool kp_aws_fetch_pool;

/* A pool of idle handles; free with kp_aws_fetch_pool_free() once no
 * exchange uses it. KP_ENOMEM only. */
kp_status kp_aws_fetch_pool_new(kp_aws_fetch_pool **out, kp_err *err);
void kp_aws_fetch_pool_free(kp_aws_fetch_pool *pool);

typedef struct kp_aws_fetch_request {
    const char *method;         /* "GET", "HEAD", "PUT", "POST", "DELETE" */
    const char *url;            /* http:// or https:// */
    const char *const *headers; /* "Name: value" lines, NULL-terminated (may be NULL) */
    const void *body;           /* sent for PUT and POST (may be NULL with body_len 0) */
    size_t body_len;
    long timeout_ms;         /* whole exchange; 0: KP_AWS_FETCH_TIMEOUT_MS */
    long connect_timeout_ms; /* 0: KP_AWS_FETCH_CONNECT_TIMEOUT_MS */
    size_t max_body;         /* 0: KP_AWS_FETCH_MAX_BODY */
    kp_aws_fetch_pool *pool; /* NULL: a new connection for this exchange */
} kp_aws_fetch_request;

/* Zero-initialise; free with kp_aws_fetch_response_free(). */
typedef struct kp_aws_fetch_response {
    long status;    /* the final response's HTTP status */
    kp_buf headers; /* its header lines, "Name: value\r\n" each */
    kp_buf body;
} kp_aws_fetch_response;

/* Performs the exchange. KP_OK whenever a response came, whatever its status;
 * KP_EUNAVAILABLE when nothing came (cannot connect, timeout, connection lost:
 * the message says which), KP_ETOOLARGE beyond max_body, KP_EINVAL for a bad
 * request, KP_ENOMEM. resp is reset first. */
kp_status kp_aws_fetch(const kp_aws_fetch_request *req, kp_aws_fetch_response *resp, kp_err *err);

/* Copies the value of response header name (case-insensitive, first one,
 * trimmed) into out (reset first); returns 1 if present, 0 if not. */
int kp_aws_fetch_header(const kp_aws_fetch_response *resp, const char *name, kp_buf *out);

void kp_aws_fetch_response_free(kp_aws_fetch_response *resp);

#endif
