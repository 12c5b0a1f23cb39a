/*
 * aws_lambda.c - see aws_lambda.h. The function name is one path segment:
 * RFC 3986-encoded ("arn:aws:lambda:..." becomes "arn%3Aaws%3Alambda..."), as
 * the AWS SDKs send it; aws_http.h signs it encoded once more, as SigV4 wants
 * for every service but S3.
 */
#include "aws/aws_lambda.h"

#include <stdlib.h>
#include <string.h>

#include "aws/aws_credentials.h"
#include "aws/aws_fetch.h"
#include "aws/aws_http.h"
#include "core/buf.h"

struct kp_aws_lambda {
    kp_aws_client client;
    kp_aws_credentials_provider *credentials;
    kp_aws_fetch_pool *pool;
    char *region;
    char *endpoint; /* no trailing '/' */
    long timeout_ms;
};

void kp_aws_lambda_free(kp_aws_lambda *l)
{
    if (!l)
        return;
    kp_aws_fetch_pool_free(l->pool);
    kp_aws_credentials_shared_release(l->credentials);
    free(l->region);
    free(l->endpoint);
    free(l);
}

kp_status kp_aws_lambda_new(const kp_aws_lambda_options *o, kp_aws_lambda **out, kp_err *err)
{
    kp_aws_lambda_options none = {0};
    kp_buf url = KP_BUF_INIT;
    kp_aws_lambda *l = calloc(1, sizeof *l);
    kp_status rc = KP_OK;
    if (!o)
        o = &none;
    *out = NULL;
    if (!l)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    const char *region = o->region && *o->region ? o->region : kp_aws_region();
    rc = kp_aws_endpoint(KP_AWS_LAMBDA, region, &url, err);
    if (rc != KP_OK)
        goto cleanup;
    l->endpoint = kp_buf_steal(&url);
    l->region = strdup(region && *region ? region : "us-east-1"); /* signing only: an endpoint was given */
    if (!l->endpoint || !l->region) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kp_aws_credentials_shared_acquire(&l->credentials, err);
    if (rc == KP_OK)
        rc = kp_aws_fetch_pool_new(&l->pool, err);
    if (rc != KP_OK)
        goto cleanup;
    l->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : KP_AWS_LAMBDA_TIMEOUT_MS;
    l->client = (kp_aws_client){.credentials = l->credentials,
                                .region = l->region,
                                .max_attempts = o->max_attempts > 0 ? o->max_attempts : KP_AWS_LAMBDA_MAX_ATTEMPTS,
                                .pool = l->pool};
    *out = l;
    l = NULL;
cleanup:
    kp_buf_free(&url);
    kp_aws_lambda_free(l);
    return rc;
}

int kp_aws_lambda_invoke_path(kp_buf *out, const char *function)
{
    kp_buf name = KP_BUF_INIT;
    int rc = kp_aws_sigv4_uri_encode(&name, function, strlen(function), 0) != 0 ||
                     kp_buf_printf(out, "/2015-03-31/functions/%s/invocations", kp_buf_cstr(&name)) != 0
                 ? -1
                 : 0;
    kp_buf_free(&name);
    return rc;
}

kp_status kp_aws_lambda_invoke_event(kp_aws_lambda *l, const char *function, const char *payload, size_t len,
                                     kp_err *err)
{
    static const kp_aws_header headers[] = {{"Content-Type", "application/json"}, {"X-Amz-Invocation-Type", "Event"}};
    kp_buf url = KP_BUF_INIT;
    kp_aws_response resp;
    memset(&resp, 0, sizeof resp);
    if (!function || !*function)
        return kp_err_set(err, KP_EINVAL, "lambda: no function to invoke");
    if (kp_buf_puts(&url, l->endpoint) != 0 || kp_aws_lambda_invoke_path(&url, function) != 0) {
        kp_buf_free(&url);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    kp_aws_request req = {.service = KP_AWS_LAMBDA,
                          .method = "POST",
                          .url = url.data,
                          .headers = headers,
                          .n_headers = sizeof headers / sizeof headers[0],
                          .body = payload,
                          .body_len = len,
                          .timeout_ms = l->timeout_ms};
    kp_status rc = kp_aws_call(&l->client, &req, &resp, err);
    if (rc == KP_OK && resp.http.status != 202)
        rc = kp_err_set(err, KP_EIO, "lambda: Invoke answered HTTP %ld, not 202 (request id %s)", resp.http.status,
                        resp.request_id[0] ? resp.request_id : "none");
    kp_aws_response_free(&resp);
    kp_buf_free(&url);
    return rc;
}
