/*
 * secrets_aws.h - the AWS Secrets Manager source of the secrets service
 * (secrets/secrets.h), chosen with KOUMPA_SECRETS=aws.
 *
 * Each name the server reads is served by one secret, named by a setting:
 *
 *   ANTHROPIC_API_KEY       KOUMPA_SECRET_ID_ANTHROPIC
 *   STRIPE_SECRET_KEY       KOUMPA_SECRET_ID_STRIPE   (one secret for both
 *   STRIPE_WEBHOOK_SECRET   KOUMPA_SECRET_ID_STRIPE    Stripe names)
 *   KOUMPA_JWT_SECRET       KOUMPA_SECRET_ID_JWT
 *
 * A name is read with GetSecretValue (JSON protocol: POST /, X-Amz-Target
 * secretsmanager.GetSecretValue, application/x-amz-json-1.1) through the AWS
 * plumbing (aws/aws_http.h: the credential chain, AWS_REGION, the endpoint
 * AWS_ENDPOINT_URL_SECRETS_MANAGER or AWS_ENDPOINT_URL, SigV4, retries).
 * The secret's SecretString is either
 *   - plain text: the value of the secret's first name (ANTHROPIC_API_KEY,
 *     STRIPE_SECRET_KEY, KOUMPA_JWT_SECRET), one trailing "\n" or "\r\n"
 *     stripped (what `--secret-string file://key.txt` leaves); the other
 *     names of that secret (STRIPE_WEBHOOK_SECRET) are then "not set"; or
 *   - a JSON object (its first non-blank character is '{'), each name under
 *     its own key or a lower-case alias: {"STRIPE_SECRET_KEY": "sk_...",
 *     "STRIPE_WEBHOOK_SECRET": "whsec_..."}, or "secret_key" /
 *     "webhook_secret"; "api_key" for ANTHROPIC_API_KEY, "jwt_secret" for
 *     KOUMPA_JWT_SECRET. The exact name wins over the alias. A key that is
 *     absent, or an empty string, is "not set"; a value that is not a string
 *     is an error. A SecretString that starts with '{' but is not a JSON
 *     object is an error (no API key starts with '{').
 * SecretBinary is not read: a secret holding one is an error saying so.
 *
 * Names without a secret id go to the fallback source (serve gives the
 * environment source: "Secrets Manager, then the environment"), so
 * KOUMPA_JWT_SECRET keeps its generated {data_dir}/jwt_secret file unless
 * KOUMPA_SECRET_ID_JWT is set; without a fallback they are "not set"
 * (KP_ENOTFOUND). A configured secret that AWS does not have
 * (ResourceNotFoundException) is an error, not "not set": it is a mistake
 * to report, not a feature to switch off.
 *
 * Errors name the secret id and its setting, and carry the AWS plumbing's
 * message (the AWS error code, what to check for a refused signature or
 * key, the request id); never a value. Status: KP_EUNAVAILABLE for what
 * AWS answered or did not (refused credentials, missing secret, no answer)
 * and for a secret that cannot be used (SecretBinary, a bad JSON object);
 * KP_ENOMEM.
 *
 * Wiping: the response body and jansson's copies of the values (every string
 * of the parsed trees) are wiped (sodium_memzero) before they are freed.
 * Not wiped, because no API reaches them: jansson's lexer buffer (it holds
 * each string token while parsing and grows by copying), libcurl's receive
 * buffer, and the earlier blocks of a response body that arrived in more
 * than one piece (kp_buf grows by realloc).
 *
 * Thread-safe: the service calls read for different names at once; the AWS
 * client is shared (the credential provider and connection pool lock).
 * Reads block (one HTTPS round trip, at most max_attempts attempts of
 * timeout_ms each): the service's cache makes that once per TTL per name.
 */
#ifndef KP_SECRETS_AWS_H
#define KP_SECRETS_AWS_H

#include <stddef.h>

#include "core/err.h"
#include "secrets/secrets.h"

#define KP_SECRETS_AWS_TIMEOUT_MS 5000L /* one attempt (Secrets Manager answers in milliseconds) */
#define KP_SECRETS_AWS_MAX_ATTEMPTS 3

typedef struct kp_secrets_aws_options {
    const char *anthropic_id; /* KOUMPA_SECRET_ID_ANTHROPIC; NULL or "": ANTHROPIC_API_KEY from the fallback */
    const char *stripe_id;    /* KOUMPA_SECRET_ID_STRIPE: STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET */
    const char *jwt_id;       /* KOUMPA_SECRET_ID_JWT: KOUMPA_JWT_SECRET */
    long timeout_ms;          /* per attempt; 0: KP_SECRETS_AWS_TIMEOUT_MS */
    int max_attempts;         /* 0: KP_SECRETS_AWS_MAX_ATTEMPTS */
} kp_secrets_aws_options;

/* A Secrets Manager source (ids copied). fallback (taken: closed with the
 * source, also on failure; ops NULL for none) answers the names without a
 * secret id. Reads AWS_REGION (or AWS_DEFAULT_REGION) and the endpoint now:
 * KP_EINVAL naming what to set when there is no region or the endpoint
 * override is not an http(s) URL. Credentials are found at the first read.
 * Hand it to kp_secrets_new, which closes it. */
kp_status kp_secrets_aws_new(const kp_secrets_aws_options *o, kp_secrets_source fallback, kp_secrets_source *out,
                             kp_err *err);

/* Reads once, through s (so the values are cached), every name o gives a
 * secret id: the first failure other than "not set" is returned (err names
 * the secret and why). Start-up calls it so that wrong credentials or a
 * missing secret stop the server before it answers. A name whose secret has
 * no value for it is logged as a warning. */
kp_status kp_secrets_aws_preload(kp_secrets *s, const kp_secrets_aws_options *o, kp_err *err);

/* The value of name in a GetSecretValue answer (body: the JSON response),
 * by the rules above; secret_id is for messages. *out is malloc'd and
 * NUL-terminated (release with kp_secrets_value_free), *len its length.
 * KP_ENOTFOUND when the secret has no value for name, or name is not one of
 * the four. Exposed for tests. */
kp_status kp_secrets_aws_parse(const char *body, size_t body_len, const char *secret_id, const char *name, char **out,
                               size_t *len, kp_err *err);

#endif
