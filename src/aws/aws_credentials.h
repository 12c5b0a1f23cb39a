/*
 * aws_credentials.h - AWS credentials found as the AWS SDKs find them, the
 * region, and the endpoint of each service Koumpa calls.
 *
 * The chain, first match wins (decided once, at the first get):
 *   1. environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ optional
 *      AWS_SESSION_TOKEN) - what Lambda sets. Never refreshed.
 *   2. the ECS container endpoint: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI on
 *      http://169.254.170.2, else AWS_CONTAINER_CREDENTIALS_FULL_URI (http
 *      only to a loopback or ECS/EKS link-local host; https anywhere); the
 *      Authorization header from the file AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
 *      names, else from AWS_CONTAINER_AUTHORIZATION_TOKEN.
 *   3. EC2 IMDSv2 (unless AWS_EC2_METADATA_DISABLED=true): PUT
 *      /latest/api/token, then GET /latest/meta-data/iam/security-credentials/
 *      (the role) and .../{role}; the endpoint is http://169.254.169.254 or
 *      AWS_EC2_METADATA_SERVICE_ENDPOINT.
 * Credentials from 2 and 3 carry an Expiration; they are fetched again once
 * less than KP_AWS_CREDENTIALS_REFRESH_S remain. If that refresh fails while
 * the old ones are still valid, the old ones are returned (and the failure
 * logged); once expired, the failure is returned.
 *
 * Thread-safe: one mutex; a fetch happens under it, so concurrent callers
 * wait for the one fetch rather than all fetching. Callers get a copy
 * (kp_aws_credentials, fixed-size, no pointers) that they wipe with
 * kp_aws_credentials_wipe() (sodium_memzero) when done. Nothing here logs a
 * secret: only the source, the access key id's last 4 characters and the
 * expiration.
 */
#ifndef KP_AWS_CREDENTIALS_H
#define KP_AWS_CREDENTIALS_H

#include <stddef.h>
#include <time.h>

#include "core/buf.h"
#include "core/err.h"

#define KP_AWS_CREDENTIALS_REFRESH_S 300 /* fetch again 5 minutes before Expiration */
#define KP_AWS_ECS_HOST "169.254.170.2"
#define KP_AWS_IMDS_ENDPOINT "http://169.254.169.254"

typedef struct kp_aws_credentials {
    char access_key_id[128];
    char secret_access_key[128];
    char session_token[4096]; /* "" when none */
    time_t expiration;        /* 0: does not expire */
    char source[8];           /* "env", "ecs", "imds" */
} kp_aws_credentials;

typedef struct kp_aws_credentials_provider kp_aws_credentials_provider;

/* A provider reading the process environment (at each first resolution, not
 * here). Free with kp_aws_credentials_provider_free(). KP_ENOMEM only. */
kp_status kp_aws_credentials_provider_new(kp_aws_credentials_provider **out, kp_err *err);
void kp_aws_credentials_provider_free(kp_aws_credentials_provider *p);

/* The process's one provider, shared by every AWS client (the S3 blob store,
 * the DynamoDB store, the Secrets Manager source), so the chain is resolved
 * and remote credentials are fetched and refreshed once for all of them, not
 * once per client. Reference-counted: each acquire takes a reference, each
 * release drops one, and the last release frees the provider (the next
 * acquire starts afresh, reading the environment again). Thread-safe.
 * KP_ENOMEM only. */
kp_status kp_aws_credentials_shared_acquire(kp_aws_credentials_provider **out, kp_err *err);
void kp_aws_credentials_shared_release(kp_aws_credentials_provider *p);

/* Copies valid credentials into *out (fetching or refreshing them first if
 * needed). KP_EAUTH when no source has credentials or a source refuses (the
 * message names the source, never a secret), KP_EUNAVAILABLE when the source
 * cannot be reached. out is wiped on failure. */
kp_status kp_aws_credentials_get(kp_aws_credentials_provider *p, kp_aws_credentials *out, kp_err *err);

/* AWS answered ExpiredToken for requests signed with access_key_id: if those
 * are the cached remote credentials, the next get fetches new ones (and
 * does not fall back on these). Returns 1 if a new fetch is due, 0 if not
 * (environment credentials, or already replaced). */
int kp_aws_credentials_refused(kp_aws_credentials_provider *p, const char *access_key_id);

/* How many times the provider fetched from a remote source (tests, metrics). */
unsigned kp_aws_credentials_fetches(kp_aws_credentials_provider *p);

/* Wipes c (sodium_memzero). */
void kp_aws_credentials_wipe(kp_aws_credentials *c);

/* AWS_REGION, else AWS_DEFAULT_REGION, else NULL. */
const char *kp_aws_region(void);

/* ---- endpoints ---- */

typedef enum kp_aws_service { KP_AWS_DYNAMODB = 0, KP_AWS_S3, KP_AWS_SECRETS_MANAGER, KP_AWS_LAMBDA } kp_aws_service;

/* The SigV4 signing name: "dynamodb", "s3", "secretsmanager", "lambda". */
const char *kp_aws_service_signing_name(kp_aws_service svc);

/* Appends the service's base URL (no trailing '/'): AWS_ENDPOINT_URL_<SERVICE>
 * (DYNAMODB, S3, SECRETS_MANAGER, LAMBDA), else AWS_ENDPOINT_URL, else
 * https://{dynamodb|s3|secretsmanager|lambda}.{region}.amazonaws.com. KP_EINVAL when
 * the default is needed and region is NULL or empty, or an override is not an
 * http(s) URL. */
kp_status kp_aws_endpoint(kp_aws_service svc, const char *region, kp_buf *out, kp_err *err);

/* Appends the URL of an S3 object (key "" = the bucket itself) under the
 * endpoint from kp_aws_endpoint(): path style {endpoint}/{bucket}/{key}, or
 * virtual-host style {scheme}://{bucket}.{host}/{key}. The key is encoded
 * with kp_aws_sigv4_encode_key(). KP_EINVAL for a bad endpoint or bucket. */
kp_status kp_aws_s3_url(const char *endpoint, const char *bucket, const char *key, int path_style, kp_buf *out,
                        kp_err *err);

#endif
