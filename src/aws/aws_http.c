/*
 * aws_http.c - one signed, retried AWS request (see aws_http.h).
 *
 * Each attempt takes the credentials anew (the chain refreshes them when
 * they near expiry) and signs at the current time, so a retry after a long
 * backoff never carries a stale X-Amz-Date. The headers sent are exactly the
 * signed ones plus Authorization.
 */
#include "aws/aws_http.h"

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"

#define MAX_HEADERS 24
#define KP_AWS_KEY_ID_CAP sizeof(((kp_aws_credentials *)0)->access_key_id)

/* ---- error bodies ---- */

static void copy_bounded(char *dst, size_t cap, const char *src, size_t len)
{
    if (cap == 0)
        return;
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* "com.amazonaws.dynamodb.v20120810#Code" or "Code:http://..." -> "Code" */
static void copy_code(char *dst, size_t cap, const char *s)
{
    const char *hash = strrchr(s, '#');
    if (hash)
        s = hash + 1;
    copy_bounded(dst, cap, s, strcspn(s, ":"));
}

/* The text of the first <tag>...</tag> in a flat XML document. */
static int xml_text(const char *body, const char *tag, char *dst, size_t cap)
{
    char open[48], close[48];
    const char *a, *b;

    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    a = strstr(body, open);
    if (!a)
        return 0;
    a += strlen(open);
    b = strstr(a, close);
    if (!b)
        return 0;
    copy_bounded(dst, cap, a, (size_t)(b - a));
    return 1;
}

void kp_aws_parse_error(const kp_aws_fetch_response *http, char *code, size_t code_cap, char *message,
                        size_t message_cap)
{
    const char *body = http->body.data ? http->body.data : "";
    kp_buf header = KP_BUF_INIT;
    json_t *root;

    code[0] = '\0';
    message[0] = '\0';
    root = body[0] == '{' ? json_loads(body, 0, NULL) : NULL;
    if (root) {
        const char *type = json_string_value(json_object_get(root, "__type"));
        const char *msg = json_string_value(json_object_get(root, "message"));
        if (!msg)
            msg = json_string_value(json_object_get(root, "Message"));
        if (type)
            copy_code(code, code_cap, type);
        if (msg)
            copy_bounded(message, message_cap, msg, strlen(msg));
        json_decref(root);
    } else if (strstr(body, "<Error>")) {
        xml_text(body, "Code", code, code_cap);
        xml_text(body, "Message", message, message_cap);
    }
    if (!code[0] && kp_aws_fetch_header(http, "x-amzn-ErrorType", &header))
        copy_code(code, code_cap, header.data);
    kp_buf_free(&header);
}

static int code_in(const char *code, const char *const *list)
{
    for (size_t i = 0; list[i]; i++) {
        if (strcmp(code, list[i]) == 0)
            return 1;
    }
    return 0;
}

static const char *const THROTTLING[] = {"ThrottlingException",
                                         "Throttling",
                                         "ThrottledException",
                                         "ProvisionedThroughputExceededException",
                                         "RequestLimitExceeded",
                                         "RequestThrottled",
                                         "RequestThrottledException",
                                         "TooManyRequestsException",
                                         "SlowDown",
                                         "TransactionInProgressException",
                                         "LimitExceededException",
                                         NULL};
static const char *const CREDENTIAL_ERRORS[] = {"SignatureDoesNotMatch",
                                                "InvalidSignatureException",
                                                "InvalidClientTokenId",
                                                "ExpiredToken",
                                                "ExpiredTokenException",
                                                "UnrecognizedClientException",
                                                "InvalidAccessKeyId",
                                                "IncompleteSignature",
                                                "MissingAuthenticationToken",
                                                "AccessDenied",
                                                "AccessDeniedException",
                                                "RequestTimeTooSkewed",
                                                NULL};
static const char *const EXPIRED[] = {"ExpiredToken", "ExpiredTokenException", NULL};
static const char *const CONFLICTS[] = {"ConditionalCheckFailedException",
                                        "TransactionCanceledException",
                                        "TransactionConflictException",
                                        "ResourceInUseException",
                                        "ResourceExistsException",
                                        "BucketAlreadyOwnedByYou",
                                        "BucketAlreadyExists",
                                        "PreconditionFailed",
                                        NULL};
static const char *const NOT_FOUND[] = {"ResourceNotFoundException", "NoSuchKey", "NoSuchBucket", "NotFound", NULL};

int kp_aws_retryable(long status, const char *code)
{
    if (status == 0 || status == 429 || status >= 500)
        return 1;
    return status == 400 && code && code_in(code, THROTTLING);
}

static kp_status status_for(long status, const char *code)
{
    if (code_in(code, CREDENTIAL_ERRORS) || status == 401 || status == 403)
        return KP_EUNAVAILABLE;
    if (code_in(code, CONFLICTS) || status == 409 || status == 412)
        return KP_ECONFLICT;
    if (code_in(code, NOT_FOUND) || status == 404)
        return KP_ENOTFOUND;
    if (kp_aws_retryable(status, code))
        return KP_EUNAVAILABLE;
    return KP_EIO;
}

/* What to tell the operator about a refused signature or credential. */
static const char *credential_hint(const char *code)
{
    if (strcmp(code, "SignatureDoesNotMatch") == 0 || strcmp(code, "InvalidSignatureException") == 0)
        return "the request signature does not match: check AWS_SECRET_ACCESS_KEY";
    if (strcmp(code, "InvalidClientTokenId") == 0 || strcmp(code, "InvalidAccessKeyId") == 0 ||
        strcmp(code, "UnrecognizedClientException") == 0)
        return "the access key id is not known to AWS: check AWS_ACCESS_KEY_ID";
    if (strcmp(code, "ExpiredToken") == 0 || strcmp(code, "ExpiredTokenException") == 0)
        return "the session token has expired";
    if (strcmp(code, "RequestTimeTooSkewed") == 0)
        return "this machine's clock is too far from AWS's";
    return "the credentials were refused";
}

static kp_status map_error(const kp_aws_request *req, kp_aws_response *resp, kp_err *err)
{
    const char *svc = kp_aws_service_signing_name(req->service);
    const char *code = resp->error_code[0] ? resp->error_code : "no error code";
    kp_status st = status_for(resp->http.status, resp->error_code);

    if (code_in(resp->error_code, CREDENTIAL_ERRORS) || resp->http.status == 403)
        return kp_err_set(err, st, "%s: %s (HTTP %ld %s; request id %s)", svc, credential_hint(resp->error_code),
                          resp->http.status, code, resp->request_id[0] ? resp->request_id : "none");
    return kp_err_set(err, st, "%s: HTTP %ld %s%s%.120s%s (request id %s, %d attempt%s)", svc, resp->http.status, code,
                      resp->error_message[0] ? ": " : "", resp->error_message,
                      kp_aws_retryable(resp->http.status, resp->error_code) ? ", retries exhausted" : "",
                      resp->request_id[0] ? resp->request_id : "none", resp->attempts, resp->attempts == 1 ? "" : "s");
}

/* ---- signing one attempt ---- */

typedef struct url_parts {
    char *host; /* with ":port" when the URL names one */
    char *path;
    char *query;
} url_parts;

static void url_parts_free(url_parts *u)
{
    free(u->host);
    curl_free(u->path);
    curl_free(u->query);
    memset(u, 0, sizeof *u);
}

static kp_status split_url(const char *url, url_parts *out, kp_err *err)
{
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL;
    kp_buf h = KP_BUF_INIT;
    kp_status st = KP_OK;

    memset(out, 0, sizeof *out);
    if (!u)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_PATH_AS_IS) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &out->path, 0) != CURLUE_OK) {
        st = kp_err_set(err, KP_EINVAL, "aws: bad request URL");
        goto cleanup;
    }
    curl_url_get(u, CURLUPART_PORT, &port, 0);        /* absent: none */
    curl_url_get(u, CURLUPART_QUERY, &out->query, 0); /* absent: none */
    if (kp_buf_printf(&h, "%s%s%s", host, port ? ":" : "", port ? port : "") != 0)
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
    else
        out->host = kp_buf_steal(&h);
cleanup:
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    if (st != KP_OK)
        url_parts_free(out);
    return st;
}

/* The headers of one attempt: the signed ones, then Authorization. */
typedef struct attempt_headers {
    kp_aws_header signed_h[MAX_HEADERS];
    size_t n;
    char amz_date[KP_AWS_AMZ_DATE_LEN + 1];
    char payload_hash[KP_AWS_SHA256_HEX_LEN + 1];
    kp_buf lines[MAX_HEADERS + 1];
    const char *line_ptrs[MAX_HEADERS + 2];
} attempt_headers;

static void attempt_headers_free(attempt_headers *a)
{
    for (size_t i = 0; i < MAX_HEADERS + 1; i++) {
        if (a->lines[i].data)
            sodium_memzero(a->lines[i].data, a->lines[i].len);
        kp_buf_free(&a->lines[i]);
    }
}

static kp_status check_header(const kp_aws_header *h, kp_err *err)
{
    if (!h->name || !h->value || strpbrk(h->name, "\r\n:") || strpbrk(h->value, "\r\n"))
        return kp_err_set(err, KP_EINVAL, "aws: header %.40s has a bad name or value", h->name ? h->name : "?");
    return KP_OK;
}

static kp_status sign_attempt(const kp_aws_request *req, const url_parts *u, const kp_aws_credentials *c,
                              const char *region, attempt_headers *a, kp_err *err)
{
    int s3 = req->service == KP_AWS_S3;
    kp_aws_sigv4_params p = {c->access_key_id,
                             c->secret_access_key,
                             region,
                             kp_aws_service_signing_name(req->service),
                             time(NULL),
                             !s3,
                             !s3};
    kp_aws_sigv4_result res;
    kp_status st;

    if (req->n_headers > MAX_HEADERS - 4)
        return kp_err_set(err, KP_EINVAL, "aws: too many headers");
    kp_aws_sigv4_amz_date(p.when, a->amz_date);
    kp_aws_sigv4_sha256_hex(req->body ? req->body : "", req->body_len, a->payload_hash);
    a->n = 0;
    a->signed_h[a->n++] = (kp_aws_header){"Host", u->host};
    a->signed_h[a->n++] = (kp_aws_header){"X-Amz-Date", a->amz_date};
    a->signed_h[a->n++] = (kp_aws_header){"X-Amz-Content-Sha256", a->payload_hash};
    if (c->session_token[0])
        a->signed_h[a->n++] = (kp_aws_header){"X-Amz-Security-Token", c->session_token};
    for (size_t i = 0; i < req->n_headers; i++) {
        st = check_header(&req->headers[i], err);
        if (st != KP_OK)
            return st;
        a->signed_h[a->n++] = req->headers[i];
    }
    kp_aws_sigv4_request sr = {req->method, u->path, u->query, a->signed_h, a->n, a->payload_hash};
    st = kp_aws_sigv4_sign(&sr, &p, &res, err);
    if (st != KP_OK)
        return st;
    for (size_t i = 0; i <= a->n; i++) {
        int rc = i < a->n ? kp_buf_printf(&a->lines[i], "%s: %s", a->signed_h[i].name, a->signed_h[i].value)
                          : kp_buf_printf(&a->lines[i], "Authorization: %s", res.authorization.data);
        if (rc != 0) {
            kp_aws_sigv4_result_free(&res);
            return kp_err_set(err, KP_ENOMEM, "out of memory");
        }
        a->line_ptrs[i] = a->lines[i].data;
    }
    a->line_ptrs[a->n + 1] = NULL;
    kp_aws_sigv4_result_free(&res);
    return KP_OK;
}

/* One signed exchange. KP_OK when a response came (any status). */
static kp_status attempt(const kp_aws_client *client, const kp_aws_request *req, const url_parts *u,
                         kp_aws_response *resp, char used_key_id[KP_AWS_KEY_ID_CAP], kp_err *err)
{
    kp_aws_credentials c;
    attempt_headers a;
    kp_status st;

    memset(&a, 0, sizeof a);
    st = kp_aws_credentials_get(client->credentials, &c, err);
    if (st == KP_OK) {
        memcpy(used_key_id, c.access_key_id, KP_AWS_KEY_ID_CAP);
        st = sign_attempt(req, u, &c, client->region, &a, err);
    }
    kp_aws_credentials_wipe(&c);
    if (st == KP_OK) {
        kp_aws_fetch_request fr = {.method = req->method,
                                   .url = req->url,
                                   .headers = a.line_ptrs,
                                   .body = req->body,
                                   .body_len = req->body_len,
                                   .timeout_ms = req->timeout_ms,
                                   .pool = client->pool};
        st = kp_aws_fetch(&fr, &resp->http, err);
    }
    attempt_headers_free(&a);
    return st;
}

static void read_answer(kp_aws_response *resp)
{
    kp_buf id = KP_BUF_INIT;

    resp->error_code[0] = resp->error_message[0] = resp->request_id[0] = '\0';
    if (kp_aws_fetch_header(&resp->http, "x-amzn-RequestId", &id) ||
        kp_aws_fetch_header(&resp->http, "x-amz-request-id", &id))
        copy_bounded(resp->request_id, sizeof resp->request_id, id.data, id.len);
    kp_buf_free(&id);
    if (resp->http.status >= 400)
        kp_aws_parse_error(&resp->http, resp->error_code, sizeof resp->error_code, resp->error_message,
                           sizeof resp->error_message);
}

/* Full jitter: a random 0..min(max, base * 2^n) ms. */
static void backoff(const kp_aws_client *client, int n)
{
    long base = client->base_delay_ms > 0 ? client->base_delay_ms : KP_AWS_BASE_DELAY_MS;
    long cap = client->max_delay_ms > 0 ? client->max_delay_ms : KP_AWS_MAX_DELAY_MS;
    long ceiling = base;
    long ms;

    for (int i = 0; i < n && ceiling < cap; i++)
        ceiling *= 2;
    if (ceiling > cap)
        ceiling = cap;
    ms = (long)randombytes_uniform((uint32_t)ceiling + 1);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

kp_status kp_aws_call(const kp_aws_client *client, const kp_aws_request *req, kp_aws_response *resp, kp_err *err)
{
    int max = client->max_attempts > 0 ? client->max_attempts : KP_AWS_MAX_ATTEMPTS;
    char used_key_id[KP_AWS_KEY_ID_CAP];
    int renewed = 0;
    kp_err local;
    url_parts u;
    kp_status st;

    if (!err)
        err = &local;
    kp_aws_response_free(resp);
    if (!client->credentials || !client->region || !*client->region)
        return kp_err_set(err, KP_EINVAL, "aws: no credentials provider or region");
    st = split_url(req->url, &u, err);
    if (st != KP_OK)
        return st;
    for (resp->attempts = 1;; resp->attempts++) {
        st = attempt(client, req, &u, resp, used_key_id, err);
        if (st == KP_OK)
            read_answer(resp);
        /* remote credentials refused as expired (revoked, clock skew): fetch new ones once, retry at once */
        int renew = st == KP_OK && !renewed && code_in(resp->error_code, EXPIRED) &&
                    kp_aws_credentials_refused(client->credentials, used_key_id);
        int again =
            renew || st == KP_EUNAVAILABLE || (st == KP_OK && kp_aws_retryable(resp->http.status, resp->error_code));
        if (!again || resp->attempts >= max)
            break;
        if (renew) {
            renewed = 1;
            continue;
        }
        kp_log(KP_LOG_DEBUG, "aws %s: retrying after %s (attempt %d of %d)", kp_aws_service_signing_name(req->service),
               st == KP_OK ? (resp->error_code[0] ? resp->error_code : "a 5xx") : "no response", resp->attempts, max);
        backoff(client, resp->attempts - 1);
    }
    url_parts_free(&u);
    if (st == KP_EUNAVAILABLE) { /* no response, even after retries */
        kp_err why = *err;
        return kp_err_set(err, st, "%s: no answer after %d attempt%s: %.180s",
                          kp_aws_service_signing_name(req->service), resp->attempts, resp->attempts == 1 ? "" : "s",
                          why.msg);
    }
    if (st != KP_OK)
        return st;
    if (resp->http.status < 400)
        return KP_OK;
    return map_error(req, resp, err);
}

void kp_aws_response_free(kp_aws_response *resp)
{
    if (!resp)
        return;
    kp_aws_fetch_response_free(&resp->http);
    memset(resp, 0, sizeof *resp);
}
