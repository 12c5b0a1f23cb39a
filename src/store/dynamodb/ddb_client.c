/*
 * ddb_client.c - DynamoDB JSON 1.0 calls over the AWS plumbing, and the
 * attribute-value helpers (see ddb_client.h).
 */
#include "store/dynamodb/ddb_client.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"

kp_status kp_ddb_open(kp_ddb *d, const char *prefix, kp_err *err)
{
    const char *region = kp_aws_region();
    if (!region || !*region)
        return kp_err_set(err, KP_EINVAL, "KOUMPA_DB=dynamodb needs AWS_REGION (or AWS_DEFAULT_REGION)");
    if (strlen(region) >= sizeof d->region)
        return kp_err_set(err, KP_EINVAL, "AWS_REGION too long");
    if (snprintf(d->table, sizeof d->table, "%skoumpa", prefix ? prefix : "") >= (int)sizeof d->table)
        return kp_err_set(err, KP_EINVAL, "KOUMPA_DYNAMODB_TABLE_PREFIX too long");
    memcpy(d->region, region, strlen(region) + 1);
    kp_status rc = kp_aws_credentials_shared_acquire(&d->credentials, err);
    if (rc == KP_OK)
        rc = kp_aws_fetch_pool_new(&d->pool, err);
    if (rc != KP_OK) {
        kp_ddb_close(d);
        return rc;
    }
    d->client.credentials = d->credentials;
    d->client.region = d->region;
    d->client.pool = d->pool;
    return KP_OK;
}

void kp_ddb_close(kp_ddb *d)
{
    json_decref(d->cancelled);
    d->cancelled = NULL;
    if (d->pool)
        kp_aws_fetch_pool_free(d->pool);
    if (d->credentials)
        kp_aws_credentials_shared_release(d->credentials);
    d->pool = NULL;
    d->credentials = NULL;
}

/* Keeps a TransactionCanceledException's CancellationReasons codes. */
static void keep_reasons(kp_ddb *d, const kp_aws_response *resp)
{
    json_t *body = resp->http.body.data ? json_loadb(resp->http.body.data, resp->http.body.len, 0, NULL) : NULL;
    d->cancelled = body;
    json_t *reasons = json_object_get(body, "CancellationReasons");
    size_t i;
    json_t *r;
    d->n_reasons = 0;
    json_array_foreach(reasons, i, r)
    {
        if (i >= KP_DDB_MAX_REASONS)
            break;
        const char *code = json_string_value(json_object_get(r, "Code"));
        snprintf(d->reasons[i], sizeof d->reasons[i], "%s", code ? code : "None");
        d->n_reasons = i + 1;
    }
}

json_t *kp_ddb_reason_item(const kp_ddb *d, size_t i)
{
    if (!kp_ddb_reason_failed(d, i))
        return NULL;
    return json_object_get(json_array_get(json_object_get(d->cancelled, "CancellationReasons"), i), "Item");
}

int kp_ddb_reason_failed(const kp_ddb *d, size_t i)
{
    return i < d->n_reasons && strcmp(d->reasons[i], "ConditionalCheckFailed") == 0;
}

static kp_status map_error(kp_ddb *d, const char *op, kp_status st, const kp_aws_response *resp, kp_err *err)
{
    const char *code = resp->error_code;
    if (strcmp(code, "ResourceNotFoundException") == 0)
        return kp_err_set(err, KP_EUNAVAILABLE,
                          "DynamoDB table %s not found (request id %s): run koumpa migrate with KOUMPA_DB=dynamodb",
                          d->table, resp->request_id);
    if (strcmp(code, "ConditionalCheckFailedException") == 0)
        return kp_err_set(err, KP_ECONFLICT, "DynamoDB %s: condition failed", op);
    if (strcmp(code, "TransactionCanceledException") == 0) {
        keep_reasons(d, resp);
        return kp_err_set(err, KP_ECONFLICT, "DynamoDB %s: transaction cancelled (%zu reasons)", op, d->n_reasons);
    }
    return st;
}

kp_status kp_ddb_call(kp_ddb *d, const char *op, json_t *req, json_t **out, kp_err *err)
{
    char target[96];
    kp_buf url = {0};
    kp_aws_response resp = {0};
    char *text = json_dumps(req, JSON_COMPACT);
    kp_status rc = KP_OK;
    if (out)
        *out = NULL;
    d->n_reasons = 0;
    json_decref(d->cancelled);
    d->cancelled = NULL;
    snprintf(target, sizeof target, "DynamoDB_20120810.%s", op);
    if (!text) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kp_aws_endpoint(KP_AWS_DYNAMODB, d->region, &url, err);
    if (rc == KP_OK && kp_buf_puts(&url, "/") != 0)
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    if (rc != KP_OK)
        goto cleanup;
    kp_aws_header h[] = {{"Content-Type", "application/x-amz-json-1.0"}, {"X-Amz-Target", target}};
    kp_aws_request r = {KP_AWS_DYNAMODB, "POST", url.data, h, 2, text, strlen(text), 0};
    d->requests++;
    rc = kp_aws_call(&d->client, &r, &resp, err);
    snprintf(d->last_code, sizeof d->last_code, "%s", resp.error_code);
    if (rc != KP_OK) {
        rc = map_error(d, op, rc, &resp, err);
        /* conditions are answers, not faults; a missing table is what DescribeTable asks (migrate) */
        if (rc != KP_ECONFLICT && strcmp(op, "DescribeTable") != 0)
            kp_log(KP_LOG_WARN, "dynamodb %s failed: %s%s%s", op, err ? err->msg : "",
                   err && strstr(err->msg, resp.request_id) ? "" : " request id ",
                   err && strstr(err->msg, resp.request_id) ? "" : resp.request_id);
        goto cleanup;
    }
    kp_log(KP_LOG_DEBUG, "dynamodb %s ok (request id %s, %d attempt%s)", op, resp.request_id, resp.attempts,
           resp.attempts == 1 ? "" : "s");
    if (out) {
        *out = json_loadb(resp.http.body.data ? resp.http.body.data : "{}",
                          resp.http.body.data ? resp.http.body.len : 2, 0, NULL);
        if (!*out)
            rc = kp_err_set(err, KP_EIO, "DynamoDB %s: unreadable answer (request id %s)", op, resp.request_id);
    }
cleanup:
    kp_aws_response_free(&resp);
    kp_buf_free(&url);
    free(text);
    return rc;
}

json_t *kp_ddb_s(const char *s)
{
    return json_pack("{s:s}", "S", s ? s : "");
}

json_t *kp_ddb_n(int64_t n)
{
    char num[32];
    snprintf(num, sizeof num, "%" PRId64, n);
    return json_pack("{s:s}", "N", num);
}

json_t *kp_ddb_bool(int b)
{
    return json_pack("{s:b}", "BOOL", b != 0);
}

void kp_ddb_get_s(const json_t *item, const char *name, char *out, size_t cap)
{
    const char *v = json_string_value(json_object_get(json_object_get(item, name), "S"));
    snprintf(out, cap, "%s", v ? v : "");
}

int64_t kp_ddb_get_n(const json_t *item, const char *name)
{
    const char *v = json_string_value(json_object_get(json_object_get(item, name), "N"));
    return v ? strtoll(v, NULL, 10) : 0;
}

int kp_ddb_get_bool(const json_t *item, const char *name)
{
    return json_is_true(json_object_get(json_object_get(item, name), "BOOL"));
}
