/*
 * apigw.h - API Gateway HTTP API events (payload format 2.0) in, and their
 * responses out: the one translation between the gateway's JSON and the
 * router's kp_req / kp_resp.
 * https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
 *
 * In: rawPath (percent-decoded; a NUL refused), rawQueryString (decoded like
 * the evhttp host: '+' is a space, pairs without '=' skipped), the lower-case
 * headers (values the gateway joined with commas stay joined), cookies
 * (joined into one "cookie" header), body (decoded from base64 when
 * isBase64Encoded: the Stripe webhook checks its signature on these exact
 * bytes), requestContext.requestId, .http.method, .http.sourceIp, and the
 * claims of the JWT the gateway's authorizer verified
 * (requestContext.authorizer.jwt.claims), which arrive as strings, arrays
 * flattened to "[a b]".
 *
 * A Lambda function URL sends the same format (routeKey "$default",
 * requestContext.domainName "<url-id>.lambda-url.<region>.on.aws"): such an
 * event is flagged function_url, and any authorizer claims in it are
 * ignored (a function URL with auth type NONE has no authorizer: the router
 * verifies the bearer token itself).
 *
 * Out: {"statusCode","headers","cookies","body","isBase64Encoded"}: the
 * response's headers (Set-Cookie into cookies; repeated names joined with
 * ", "), the default headers it does not set and X-Request-Id; a body that
 * is not UTF-8 text (a zip download) base64-encoded; none for HEAD, 204, 304.
 *
 * Ownership: a kp_apigw_event owns everything its req points to (free with
 * kp_apigw_event_free); kp_apigw_response returns a new string.
 */
#ifndef KP_APIGW_H
#define KP_APIGW_H

#include <jansson.h>

#include "api/http.h"
#include "auth/auth.h"
#include "core/err.h"

typedef struct kp_apigw_event {
    kp_req req;          /* method, path, headers, query, body, request_id, remote_addr */
    int has_claims;      /* the authorizer verified a JWT: claims holds it */
    int function_url;    /* the event came through a function URL (kp_apigw_is_function_url) */
    kp_claims claims;    /* external = 1; email only when email_verified is "true" */
    char issuer[256];    /* the token's iss claim */
    char *method, *path; /* owned */
    char *request_id;    /* owned */
    char *source_ip;     /* owned */
    unsigned char *body; /* owned, decoded; NUL-terminated */
} kp_apigw_event;

/* 1 when doc looks like a payload format 2.0 event (version "2.0" and requestContext.http). */
int kp_apigw_is_http_event(const json_t *doc);
/* 1 when a 2.0 event came through a Lambda function URL (its requestContext.domainName). */
int kp_apigw_is_function_url(const json_t *doc);
/* Fills out from a 2.0 event. KP_EINVAL names what is malformed (the host
 * answers 400 with it). out is always safe to free. */
kp_status kp_apigw_parse(const json_t *doc, kp_apigw_event *out, kp_err *err);
void kp_apigw_event_free(kp_apigw_event *ev);

/* Reads the flattened authorizer claims into out (external = 1) and the
 * issuer; KP_EAUTH when sub is missing. */
kp_status kp_apigw_claims(const json_t *claims, kp_claims *out, char *issuer, size_t issuer_len, kp_err *err);
/* 1 when a flattened list ("[admin users]", or one bare name) holds name. */
int kp_apigw_list_contains(const char *flattened, const char *name);

/* The 2.0 response for resp to a request of method: a new JSON string
 * (free()). default_headers: name, value, ..., NULL (may be NULL). A file
 * body is read here. NULL with err on failure. */
char *kp_apigw_response(const kp_resp *resp, const char *method, const char *const *default_headers,
                        const char *request_id, kp_err *err);

/* A function URL's streamed answer (RESPONSE_STREAM) starts with this
 * prelude: {"statusCode","headers","cookies"} as in kp_apigw_response,
 * without a body. A new JSON string (free()), or NULL with err. */
char *kp_apigw_prelude(const kp_resp *resp, const char *const *default_headers, const char *request_id, kp_err *err);
/* The raw bytes of resp's body (or file) appended to out, for a response
 * sent after a prelude; nothing for HEAD, 204, 304 or a stream. */
kp_status kp_apigw_body(const kp_resp *resp, const char *method, kp_buf *out, kp_err *err);

#endif
