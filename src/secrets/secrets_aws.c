/*
 * secrets_aws.c - see secrets_aws.h. One GetSecretValue per read (the
 * service caches); the answer is parsed twice when the secret is a JSON
 * object (the response, then its SecretString), and every string of both
 * jansson trees is wiped before the trees are freed, as is the response
 * body.
 */
#include "secrets/secrets_aws.h"

#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "aws/aws_credentials.h"
#include "aws/aws_fetch.h"
#include "aws/aws_http.h"
#include "core/buf.h"
#include "core/log.h"

#define ID_FMT "%.80s" /* a secret id in messages (ARNs are long; messages are 256 bytes) */

/* Which setting names a route's secret. */
typedef enum { ID_ANTHROPIC, ID_STRIPE, ID_JWT } secret_id_kind;

/* Where one name comes from. */
typedef struct secret_route {
    const char *name;  /* the service's name, also its key in a JSON object secret */
    const char *alias; /* the lower-case key also accepted */
    secret_id_kind id;
    int plain; /* a plain-text secret is this name's value */
} secret_route;

static const secret_route routes[] = {
    {KP_SECRET_ANTHROPIC_API_KEY, "api_key", ID_ANTHROPIC, 1},
    {KP_SECRET_STRIPE_SECRET_KEY, "secret_key", ID_STRIPE, 1},
    {KP_SECRET_STRIPE_WEBHOOK_SECRET, "webhook_secret", ID_STRIPE, 0},
    {KP_SECRET_JWT_SECRET, "jwt_secret", ID_JWT, 1},
};

#define N_ROUTES (sizeof routes / sizeof routes[0])

static const char *const id_settings[] = {"KOUMPA_SECRET_ID_ANTHROPIC", "KOUMPA_SECRET_ID_STRIPE",
                                          "KOUMPA_SECRET_ID_JWT"};

typedef struct aws_source {
    kp_aws_client client;
    kp_aws_credentials_provider *credentials;
    kp_aws_fetch_pool *pool;
    char *region;
    char *url;                  /* the endpoint + "/" */
    char *ids[ID_JWT + 1];      /* by secret_id_kind; NULL: not configured */
    kp_secrets_source fallback; /* ops NULL: none */
    long timeout_ms;
} aws_source;

static const secret_route *find_route(const char *name)
{
    for (size_t i = 0; i < N_ROUTES; i++)
        if (strcmp(routes[i].name, name) == 0)
            return &routes[i];
    return NULL;
}

static const char *option_id(const kp_secrets_aws_options *o, secret_id_kind kind)
{
    const char *id = kind == ID_ANTHROPIC ? o->anthropic_id : kind == ID_STRIPE ? o->stripe_id : o->jwt_id;
    return id && *id ? id : NULL;
}

/* ---- parsing ---- */

/* Wipes every string value in j (object keys are names, not secrets). */
static void wipe_json(json_t *j)
{
    const char *key;
    json_t *v;
    size_t i;
    if (json_is_string(j))
        sodium_memzero((char *)json_string_value(j), json_string_length(j));
    json_object_foreach(j, key, v)
    {
        wipe_json(v);
    }
    json_array_foreach(j, i, v)
    {
        wipe_json(v);
    }
}

static void json_wipe_free(json_t *j)
{
    wipe_json(j);
    json_decref(j);
}

/* A copy of value (len bytes); "not set" when empty. */
static kp_status copy_value(const char *name, const char *secret_id, const char *value, size_t len, char **out,
                            size_t *out_len, kp_err *err)
{
    if (len == 0)
        return kp_err_set(err, KP_ENOTFOUND, "%s is not set (it is empty in secret " ID_FMT ")", name, secret_id);
    *out = malloc(len + 1);
    if (!*out)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    memcpy(*out, value, len);
    (*out)[len] = '\0';
    *out_len = len;
    return KP_OK;
}

static int looks_like_object(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i < n && s[i] == '{';
}

/* A plain-text secret: the value of its first name, one trailing newline stripped. */
static kp_status value_from_text(const secret_route *r, const char *secret_id, const char *s, size_t n, char **out,
                                 size_t *len, kp_err *err)
{
    if (!r->plain)
        return kp_err_set(err, KP_ENOTFOUND,
                          "%s is not set: secret " ID_FMT " is plain text (a JSON object holds %s, key %s)", r->name,
                          secret_id, r->name, r->name);
    if (n && s[n - 1] == '\n')
        n -= n > 1 && s[n - 2] == '\r' ? 2 : 1;
    return copy_value(r->name, secret_id, s, n, out, len, err);
}

/* A JSON object secret: the value under r's name or alias. The parsed
 * object goes to *tree for the caller to wipe, whatever happens. */
static kp_status value_from_object(const secret_route *r, const char *secret_id, const char *s, size_t n, json_t **tree,
                                   char **out, size_t *len, kp_err *err)
{
    json_error_t jerr;
    *tree = json_loadb(s, n, JSON_REJECT_DUPLICATES, &jerr);
    /* jansson's message may quote the text near the error: only its position is given */
    if (!json_is_object(*tree))
        return kp_err_set(err, KP_EUNAVAILABLE,
                          "secret " ID_FMT " starts with '{' but is not a JSON object (at line %d, column %d)",
                          secret_id, jerr.line, jerr.column);
    json_t *v = json_object_get(*tree, r->name);
    if (!v)
        v = json_object_get(*tree, r->alias);
    if (!v)
        return kp_err_set(err, KP_ENOTFOUND, "%s is not set: secret " ID_FMT " has no key %s (nor %s)", r->name,
                          secret_id, r->name, r->alias);
    if (!json_is_string(v))
        return kp_err_set(err, KP_EUNAVAILABLE, "secret " ID_FMT ": the value of %s is not a string", secret_id,
                          r->name);
    return copy_value(r->name, secret_id, json_string_value(v), json_string_length(v), out, len, err);
}

kp_status kp_secrets_aws_parse(const char *body, size_t body_len, const char *secret_id, const char *name, char **out,
                               size_t *len, kp_err *err)
{
    json_t *answer = NULL, *inner = NULL;
    json_error_t jerr;
    kp_status rc;
    *out = NULL;
    *len = 0;
    const secret_route *r = find_route(name);
    if (!r)
        return kp_err_set(err, KP_ENOTFOUND, "%s is not read from Secrets Manager", name);
    answer = body ? json_loadb(body, body_len, 0, &jerr) : NULL;
    if (!json_is_object(answer)) {
        rc = kp_err_set(err, KP_EUNAVAILABLE,
                        "secret " ID_FMT ": GetSecretValue answered with a body that is not a JSON object", secret_id);
        goto cleanup;
    }
    json_t *text = json_object_get(answer, "SecretString");
    if (!json_is_string(text)) {
        if (json_object_get(answer, "SecretBinary"))
            rc = kp_err_set(err, KP_EUNAVAILABLE,
                            "secret " ID_FMT " holds a SecretBinary: Koumpa reads SecretString only (store it as text)",
                            secret_id);
        else
            rc = kp_err_set(err, KP_EUNAVAILABLE, "secret " ID_FMT ": GetSecretValue answered without a SecretString",
                            secret_id);
        goto cleanup;
    }
    const char *s = json_string_value(text);
    size_t n = json_string_length(text);
    if (looks_like_object(s, n))
        rc = value_from_object(r, secret_id, s, n, &inner, out, len, err);
    else
        rc = value_from_text(r, secret_id, s, n, out, len, err);

cleanup:
    json_wipe_free(inner);
    json_wipe_free(answer);
    return rc;
}

/* ---- the source ---- */

static void wipe_response(kp_aws_response *resp)
{
    if (resp->http.body.data)
        sodium_memzero(resp->http.body.data, resp->http.body.cap);
    kp_aws_response_free(resp);
}

/* POST GetSecretValue for id; the answer (a secret) in resp. */
static kp_status get_secret_value(const aws_source *src, const char *id, const char *setting, kp_aws_response *resp,
                                  kp_err *err)
{
    const kp_aws_header headers[] = {{"Content-Type", "application/x-amz-json-1.1"},
                                     {"X-Amz-Target", "secretsmanager.GetSecretValue"}};
    json_t *body = json_pack("{s:s}", "SecretId", id);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    kp_err why = {0};
    kp_status rc;
    json_decref(body);
    if (!text)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_aws_request req = {.service = KP_AWS_SECRETS_MANAGER,
                          .method = "POST",
                          .url = src->url,
                          .headers = headers,
                          .n_headers = sizeof headers / sizeof headers[0],
                          .body = text,
                          .body_len = strlen(text),
                          .timeout_ms = src->timeout_ms};
    rc = kp_aws_call(&src->client, &req, resp, &why);
    free(text);
    if (rc == KP_ENOMEM)
        *err = why;
    else if (rc != KP_OK) /* not found included: a configured secret that is missing is a mistake */
        rc = kp_err_set(err, KP_EUNAVAILABLE, "secret " ID_FMT " (%s): %s", id, setting, why.msg);
    return rc;
}

static kp_status aws_read(void *impl, const char *name, char **out, size_t *len, kp_err *err)
{
    aws_source *src = impl;
    kp_aws_response resp = {0};
    *out = NULL;
    *len = 0;
    const secret_route *r = find_route(name);
    const char *id = r ? src->ids[r->id] : NULL;
    if (!id && src->fallback.ops)
        return src->fallback.ops->read(src->fallback.impl, name, out, len, err);
    if (!id)
        return kp_err_set(err, KP_ENOTFOUND, "%s is not set (%s is not set)", name,
                          r ? id_settings[r->id] : "no secret id");
    kp_status rc = get_secret_value(src, id, id_settings[r->id], &resp, err);
    if (rc == KP_OK)
        rc = kp_secrets_aws_parse(resp.http.body.data, resp.http.body.len, id, name, out, len, err);
    if (rc == KP_OK)
        kp_log_json(KP_LOG_DEBUG, "secret read from Secrets Manager",
                    json_pack("{s:s,s:s,s:s}", "secret", name, "secret_id", id, "request_id", resp.request_id));
    wipe_response(&resp);
    return rc;
}

static void aws_close(void *impl)
{
    aws_source *src = impl;
    if (!src)
        return;
    if (src->fallback.ops && src->fallback.ops->close)
        src->fallback.ops->close(src->fallback.impl);
    kp_aws_fetch_pool_free(src->pool);
    kp_aws_credentials_shared_release(src->credentials);
    for (size_t i = 0; i < sizeof src->ids / sizeof src->ids[0]; i++)
        free(src->ids[i]);
    free(src->url);
    free(src->region);
    free(src);
}

static const kp_secrets_source_ops aws_ops = {.read = aws_read, .close = aws_close};

/* The region, the endpoint URL and the ids, copied into src. */
static kp_status configure(aws_source *src, const kp_secrets_aws_options *o, kp_err *err)
{
    const char *region = kp_aws_region();
    kp_buf url = KP_BUF_INIT;
    if (!region || !*region)
        return kp_err_set(err, KP_EINVAL, "KOUMPA_SECRETS=aws needs AWS_REGION (or AWS_DEFAULT_REGION)");
    kp_err why = {0};
    kp_status rc = kp_aws_endpoint(KP_AWS_SECRETS_MANAGER, region, &url, &why);
    if (rc != KP_OK) {
        kp_buf_free(&url);
        return kp_err_set(err, rc, "KOUMPA_SECRETS=aws: %s (AWS_ENDPOINT_URL_SECRETS_MANAGER, else AWS_ENDPOINT_URL)",
                          why.msg);
    }
    if (kp_buf_puts(&url, "/") != 0) {
        kp_buf_free(&url);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    src->url = kp_buf_steal(&url);
    src->region = strdup(region);
    int oom = !src->url || !src->region;
    for (secret_id_kind k = ID_ANTHROPIC; k <= ID_JWT; k++) {
        const char *id = option_id(o, k);
        if (id && !(src->ids[k] = strdup(id)))
            oom = 1;
    }
    return oom ? kp_err_set(err, KP_ENOMEM, "out of memory") : KP_OK;
}

kp_status kp_secrets_aws_new(const kp_secrets_aws_options *o, kp_secrets_source fallback, kp_secrets_source *out,
                             kp_err *err)
{
    aws_source *src = calloc(1, sizeof *src);
    kp_status rc;
    if (!src) {
        if (fallback.ops && fallback.ops->close)
            fallback.ops->close(fallback.impl);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    src->fallback = fallback;
    src->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : KP_SECRETS_AWS_TIMEOUT_MS;
    rc = configure(src, o, err);
    if (rc == KP_OK)
        rc = kp_aws_credentials_shared_acquire(&src->credentials, err);
    if (rc == KP_OK)
        rc = kp_aws_fetch_pool_new(&src->pool, err);
    if (rc != KP_OK) {
        aws_close(src);
        return rc;
    }
    src->client = (kp_aws_client){.credentials = src->credentials,
                                  .region = src->region,
                                  .max_attempts = o->max_attempts > 0 ? o->max_attempts : KP_SECRETS_AWS_MAX_ATTEMPTS,
                                  .pool = src->pool};
    out->ops = &aws_ops;
    out->impl = src;
    return KP_OK;
}

kp_status kp_secrets_aws_preload(kp_secrets *s, const kp_secrets_aws_options *o, kp_err *err)
{
    for (size_t i = 0; i < N_ROUTES; i++) {
        const char *id = option_id(o, routes[i].id);
        char *value = NULL;
        size_t len = 0;
        kp_err why = {0};
        if (!id)
            continue;
        kp_status rc = kp_secrets_get(s, routes[i].name, &value, &len, &why);
        kp_secrets_value_free(value, len);
        if (rc == KP_ENOTFOUND)
            kp_log_json(KP_LOG_WARN, "a secret in Secrets Manager has no value for a name: it is not set",
                        json_pack("{s:s,s:s,s:s,s:s}", "secret", routes[i].name, "secret_id", id, "setting",
                                  id_settings[routes[i].id], "expected",
                                  routes[i].plain ? "plain text, or a JSON object with this key"
                                                  : "a JSON object with this key"));
        else if (rc != KP_OK) {
            *err = why;
            return rc;
        }
    }
    return KP_OK;
}
