/*
 * ddb_client.h - the DynamoDB JSON client under the DynamoDB store backend:
 * one operation (X-Amz-Target DynamoDB_20120810.<Op>) through kp_aws_call
 * (src/aws: credentials, SigV4, retries with full jitter, error mapping),
 * AWS's request id in the log, and the attribute-value marshalling helpers
 * ({"S": ...}, {"N": "..."}, {"BOOL": ...}, M, L) between jansson and C.
 *
 * Errors on top of aws_http.h's mapping:
 *   ConditionalCheckFailedException -> KP_ECONFLICT
 *   TransactionCanceledException    -> KP_ECONFLICT, its CancellationReasons
 *                                      (one code per item, "None" for items
 *                                      that passed) kept for the caller
 *   ResourceNotFoundException       -> KP_EUNAVAILABLE "... run koumpa migrate"
 *
 * Ownership: a kp_ddb owns its credentials provider and connection pool;
 * one thread at a time (store.h's rule). json_t results are new references
 * the caller decrefs.
 */
#ifndef KP_DDB_CLIENT_H
#define KP_DDB_CLIENT_H

#include <jansson.h>
#include <stdint.h>

#include "aws/aws_http.h"
#include "core/err.h"

#define KP_DDB_TABLE_MAX 256
#define KP_DDB_MAX_REASONS 100 /* TransactWriteItems takes at most 100 items */

typedef struct kp_ddb {
    kp_aws_client client;
    kp_aws_credentials_provider *credentials;
    kp_aws_fetch_pool *pool;
    char region[64];
    char table[KP_DDB_TABLE_MAX]; /* {prefix}koumpa */
    unsigned long requests;       /* operations sent (the request budget's counter, for tests) */
    char last_code[96];           /* the last call's AWS error code, "" on success */
    /* the last TransactionCanceledException: one code per item ("None", "ConditionalCheckFailed", ...) */
    size_t n_reasons;
    char reasons[KP_DDB_MAX_REASONS][40];
    json_t *cancelled; /* that answer's body (its reasons' Items), until the next call */
} kp_ddb;

/* Fills d (zero it first): region from AWS_REGION/AWS_DEFAULT_REGION (KP_EINVAL when unset), the table
 * name from prefix (may be NULL). Free with kp_ddb_close(). */
kp_status kp_ddb_open(kp_ddb *d, const char *prefix, kp_err *err);
void kp_ddb_close(kp_ddb *d);

/* Sends one operation ("GetItem", "TransactWriteItems", ...) with body req (borrowed). *out (may be NULL)
 * receives the parsed answer. Errors as above. */
kp_status kp_ddb_call(kp_ddb *d, const char *op, json_t *req, json_t **out, kp_err *err);

/* Whether item i of the last cancelled transaction failed its condition. */
int kp_ddb_reason_failed(const kp_ddb *d, size_t i);
/* The item as it was when item i's condition failed (borrowed; NULL unless that item asked for
 * "ReturnValuesOnConditionCheckFailure": "ALL_OLD"). */
json_t *kp_ddb_reason_item(const kp_ddb *d, size_t i);

/* ---- attribute values ---- */
json_t *kp_ddb_s(const char *s); /* {"S": s} */
json_t *kp_ddb_n(int64_t n);     /* {"N": "n"} */
json_t *kp_ddb_bool(int b);      /* {"BOOL": b} */
/* From an item (an object of attribute values); missing or mistyped attributes give "" / 0 / 0. */
void kp_ddb_get_s(const json_t *item, const char *name, char *out, size_t cap);
int64_t kp_ddb_get_n(const json_t *item, const char *name);
int kp_ddb_get_bool(const json_t *item, const char *name);

#endif
