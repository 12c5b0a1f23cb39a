/*
 * aws_credentials.c - the SDKs' credential chain, the region and the service
 * endpoints (see aws_credentials.h for the order and the refresh rule).
 *
 * The ECS endpoint and IMDS answer the same JSON shape (AccessKeyId,
 * SecretAccessKey, Token, Expiration; IMDS adds "Code": "Success"), so one
 * parser serves both. Fetches use short timeouts (1 s to connect, 5 s in all),
 * as the SDKs do for these link-local services, so a machine without them
 * fails fast.
 */
#include "aws/aws_credentials.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aws/aws_fetch.h"
#include "aws/aws_sigv4.h"
#include "core/log.h"

#define FETCH_CONNECT_TIMEOUT_MS 1000L
#define FETCH_TIMEOUT_MS 5000L
#define FETCH_MAX_BODY ((size_t)64 * 1024)
#define IMDS_TOKEN_TTL_S "21600"

typedef enum source { SOURCE_UNRESOLVED = 0, SOURCE_ENV, SOURCE_ECS, SOURCE_IMDS, SOURCE_NONE } source;

struct kp_aws_credentials_provider {
    pthread_mutex_t lock;
    source source;
    int have;    /* cached holds credentials */
    int refused; /* AWS refused the cached ones as expired: fetch again, do not fall back on them */
    kp_aws_credentials cached;
    unsigned fetches;
};

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

void kp_aws_credentials_wipe(kp_aws_credentials *c)
{
    if (c)
        sodium_memzero(c, sizeof *c);
}

const char *kp_aws_region(void)
{
    const char *r = env("AWS_REGION");
    return r ? r : env("AWS_DEFAULT_REGION");
}

kp_status kp_aws_credentials_provider_new(kp_aws_credentials_provider **out, kp_err *err)
{
    kp_aws_credentials_provider *p = calloc(1, sizeof *p);

    *out = NULL;
    if (!p)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return kp_err_set(err, KP_ENOMEM, "aws credentials: cannot create a mutex");
    }
    *out = p;
    return KP_OK;
}

void kp_aws_credentials_provider_free(kp_aws_credentials_provider *p)
{
    if (!p)
        return;
    kp_aws_credentials_wipe(&p->cached);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* The shared provider and its reference count, behind their own lock. */
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static kp_aws_credentials_provider *shared;
static unsigned shared_refs;

kp_status kp_aws_credentials_shared_acquire(kp_aws_credentials_provider **out, kp_err *err)
{
    kp_status st = KP_OK;

    pthread_mutex_lock(&shared_lock);
    if (!shared)
        st = kp_aws_credentials_provider_new(&shared, err);
    if (st == KP_OK)
        shared_refs++;
    *out = shared;
    pthread_mutex_unlock(&shared_lock);
    return st;
}

void kp_aws_credentials_shared_release(kp_aws_credentials_provider *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&shared_lock);
    if (p == shared && shared_refs > 0 && --shared_refs == 0) {
        kp_aws_credentials_provider_free(shared);
        shared = NULL;
    }
    pthread_mutex_unlock(&shared_lock);
}

unsigned kp_aws_credentials_fetches(kp_aws_credentials_provider *p)
{
    unsigned n;

    pthread_mutex_lock(&p->lock);
    n = p->fetches;
    pthread_mutex_unlock(&p->lock);
    return n;
}

/* ---- copying values in ---- */

static int has_control_char(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 1;
    }
    return 0;
}

/* Copies one value in; refuses what would not fit or could break a header line. */
static kp_status copy_field(char *dst, size_t cap, const char *value, const char *what, kp_err *err)
{
    size_t n = value ? strlen(value) : 0;

    if (n >= cap)
        return kp_err_set(err, KP_EAUTH, "aws credentials: %s is too long (%zu bytes)", what, n);
    if (has_control_char(value ? value : "", n))
        return kp_err_set(err, KP_EAUTH, "aws credentials: %s has a control character", what);
    memcpy(dst, value ? value : "", n + 1);
    return KP_OK;
}

static kp_status fill(kp_aws_credentials *c, const char *akid, const char *secret, const char *token, const char *src,
                      kp_err *err)
{
    kp_status st;

    memset(c, 0, sizeof *c);
    st = copy_field(c->access_key_id, sizeof c->access_key_id, akid, "the access key id", err);
    if (st == KP_OK)
        st = copy_field(c->secret_access_key, sizeof c->secret_access_key, secret, "the secret access key", err);
    if (st == KP_OK)
        st = copy_field(c->session_token, sizeof c->session_token, token, "the session token", err);
    if (st == KP_OK)
        st = copy_field(c->source, sizeof c->source, src, "the source", err);
    if (st != KP_OK)
        kp_aws_credentials_wipe(c);
    return st;
}

/* "2026-12-01T21:00:00Z" (fractional seconds allowed) -> time_t; 0 if unparseable. */
static time_t parse_expiration(const char *s)
{
    struct tm tm;
    const char *rest;

    if (!s)
        return 0;
    memset(&tm, 0, sizeof tm);
    rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return 0;
    return timegm(&tm);
}

/* The JSON both the ECS endpoint and IMDS answer. */
static kp_status parse_credentials_json(const char *body, const char *src, kp_aws_credentials *c, kp_err *err)
{
    json_t *root = json_loads(body, 0, NULL);
    const char *akid, *secret, *code;
    kp_status st;

    if (!root || !json_is_object(root)) {
        json_decref(root);
        return kp_err_set(err, KP_EAUTH, "aws credentials (%s): the answer is not a JSON object", src);
    }
    code = json_string_value(json_object_get(root, "Code"));
    akid = json_string_value(json_object_get(root, "AccessKeyId"));
    secret = json_string_value(json_object_get(root, "SecretAccessKey"));
    if (code && strcmp(code, "Success") != 0) {
        st = kp_err_set(err, KP_EAUTH, "aws credentials (%s): the source answered Code=%.64s", src, code);
    } else if (!akid || !*akid || !secret || !*secret) {
        st = kp_err_set(err, KP_EAUTH, "aws credentials (%s): AccessKeyId or SecretAccessKey missing", src);
    } else {
        st = fill(c, akid, secret, json_string_value(json_object_get(root, "Token")), src, err);
        if (st == KP_OK) {
            c->expiration = parse_expiration(json_string_value(json_object_get(root, "Expiration")));
            if (c->expiration == 0 && json_object_get(root, "Expiration"))
                st = kp_err_set(err, KP_EAUTH, "aws credentials (%s): unreadable Expiration", src);
        }
    }
    /* the parsed tree held the secret: wipe its strings before freeing */
    json_t *v = json_object_get(root, "SecretAccessKey");
    if (json_is_string(v))
        sodium_memzero((void *)json_string_value(v), json_string_length(v));
    v = json_object_get(root, "Token");
    if (json_is_string(v))
        sodium_memzero((void *)json_string_value(v), json_string_length(v));
    json_decref(root);
    if (st != KP_OK)
        kp_aws_credentials_wipe(c);
    return st;
}

static kp_status fetch(const char *method, const char *url, const char *const *headers, kp_aws_fetch_response *resp,
                       const char *src, kp_err *err)
{
    kp_aws_fetch_request req = {.method = method,
                                .url = url,
                                .headers = headers,
                                .timeout_ms = FETCH_TIMEOUT_MS,
                                .connect_timeout_ms = FETCH_CONNECT_TIMEOUT_MS,
                                .max_body = FETCH_MAX_BODY}; /* a fresh connection: these are rare */
    kp_err why;
    kp_status st = kp_aws_fetch(&req, resp, &why);

    if (st != KP_OK)
        return kp_err_set(err, st, "aws credentials (%s): %s", src, why.msg);
    if (resp->status != 200) {
        st = kp_err_set(err, resp->status >= 500 ? KP_EUNAVAILABLE : KP_EAUTH,
                        "aws credentials (%s): %s %s answered HTTP %ld", src, method, url, resp->status);
        kp_aws_fetch_response_free(resp);
    }
    return st;
}

/* Wipes and frees b. */
static void wipe_buf(kp_buf *b)
{
    if (b->data)
        sodium_memzero(b->data, b->len);
    kp_buf_free(b);
}

/* GET url and parse the credentials JSON it answers into c. */
static kp_status fetch_credentials(const char *url, const char *const *headers, const char *src, kp_aws_credentials *c,
                                   kp_err *err)
{
    kp_aws_fetch_response resp = {0};
    kp_status st = fetch("GET", url, headers, &resp, src, err);

    if (st == KP_OK)
        st = parse_credentials_json(resp.body.data, src, c, err);
    wipe_buf(&resp.body);
    kp_aws_fetch_response_free(&resp);
    return st;
}

/* ---- the ECS container endpoint ---- */

static int http_host_allowed(const char *host)
{
    static const char *const allowed[] = {"localhost", "[::1]", "169.254.170.2", "169.254.170.23", "[fd00:ec2::23]"};

    if (strncmp(host, "127.", 4) == 0)
        return 1;
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++) {
        if (strcasecmp(host, allowed[i]) == 0)
            return 1;
    }
    return 0;
}

/* The full URI the ECS source uses, checked: https anywhere, http only to a
 * loopback or the ECS/EKS link-local hosts (what the SDKs allow). */
static kp_status ecs_url(kp_buf *url, kp_err *err)
{
    const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    const char *relative = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    char *scheme = NULL, *host = NULL;
    kp_status st = KP_OK;
    CURLU *u;

    if (relative) /* the SDKs prefer it to the full URI */
        return kp_buf_printf(url, "http://" KP_AWS_ECS_HOST "%s%s", relative[0] == '/' ? "" : "/", relative) == 0
                   ? KP_OK
                   : kp_err_set(err, KP_ENOMEM, "out of memory");
    u = curl_url();
    if (!u)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    if (curl_url_set(u, CURLUPART_URL, full, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        st = kp_err_set(err, KP_EINVAL, "AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL");
    } else if (strcmp(scheme, "https") != 0 && !(strcmp(scheme, "http") == 0 && http_host_allowed(host))) {
        st = kp_err_set(err, KP_EINVAL,
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback or ECS/EKS host "
                        "(got %.32s://%.64s)",
                        scheme, host);
    } else if (kp_buf_puts(url, full) != 0) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return st;
}

/* Reads the token file (at most 16 KiB) into out, trailing whitespace dropped. */
static kp_status read_token_file(const char *file, kp_buf *out, kp_err *err)
{
    char chunk[1024];
    size_t n;
    FILE *f = fopen(file, "r");

    if (!f)
        return kp_err_set(err, KP_EAUTH, "aws credentials (ecs): cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && out->len < 16384) {
        if (kp_buf_append(out, chunk, n) != 0)
            break;
    }
    fclose(f);
    sodium_memzero(chunk, sizeof chunk);
    while (out->len > 0 && strchr(" \t\r\n", out->data[out->len - 1]))
        out->data[--out->len] = '\0';
    return out->len > 0 ? KP_OK : kp_err_set(err, KP_EAUTH, "aws credentials (ecs): the token file is empty");
}

/* "Authorization: <token>" from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, else
 * AWS_CONTAINER_AUTHORIZATION_TOKEN; line stays empty when neither is set. */
static kp_status ecs_auth_header(kp_buf *line, kp_err *err)
{
    const char *file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    kp_buf from_file = KP_BUF_INIT;
    kp_status st = KP_OK;

    if (file) {
        st = read_token_file(file, &from_file, err);
        token = from_file.data;
    }
    if (st == KP_OK && token) {
        if (strpbrk(token, "\r\n"))
            st = kp_err_set(err, KP_EAUTH, "aws credentials (ecs): the authorization token has a line break");
        else if (kp_buf_printf(line, "Authorization: %s", token) != 0)
            st = kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    wipe_buf(&from_file);
    return st;
}

static kp_status fetch_ecs(kp_aws_credentials *c, kp_err *err)
{
    kp_buf url = KP_BUF_INIT, auth = KP_BUF_INIT;
    const char *headers[] = {"Accept: application/json", NULL, NULL};
    kp_status st;

    st = ecs_url(&url, err);
    if (st == KP_OK)
        st = ecs_auth_header(&auth, err);
    if (st == KP_OK) {
        headers[1] = auth.data; /* NULL when there is no token */
        st = fetch_credentials(url.data, headers, "ecs", c, err);
    }
    wipe_buf(&auth);
    kp_buf_free(&url);
    return st;
}

/* ---- EC2 IMDSv2 ---- */

static kp_status fetch_imds(kp_aws_credentials *c, kp_err *err)
{
    const char *base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    kp_buf url = KP_BUF_INIT, token_line = KP_BUF_INIT, role = KP_BUF_INIT;
    kp_aws_fetch_response resp = {0};
    const char *put_headers[] = {"X-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL_S, NULL};
    const char *get_headers[] = {NULL, NULL};
    size_t base_len;
    kp_status st;

    if (!base)
        base = KP_AWS_IMDS_ENDPOINT;
    base_len = strlen(base);
    while (base_len > 0 && base[base_len - 1] == '/')
        base_len--;
    st = kp_buf_printf(&url, "%.*s/latest/api/token", (int)base_len, base) == 0
             ? KP_OK
             : kp_err_set(err, KP_ENOMEM, "out of memory");
    if (st == KP_OK)
        st = fetch("PUT", url.data, put_headers, &resp, "imds", err);
    if (st == KP_OK && (resp.body.len == 0 || has_control_char(resp.body.data, resp.body.len)))
        st = kp_err_set(err, KP_EAUTH, "aws credentials (imds): the session token is empty or not one line");
    if (st == KP_OK && (kp_buf_printf(&token_line, "X-aws-ec2-metadata-token: %s", resp.body.data) != 0))
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
    get_headers[0] = token_line.data;
    if (st == KP_OK) {
        kp_buf_reset(&url);
        if (kp_buf_printf(&url, "%.*s/latest/meta-data/iam/security-credentials/", (int)base_len, base) != 0)
            st = kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    if (st == KP_OK)
        st = fetch("GET", url.data, get_headers, &resp, "imds", err);
    if (st == KP_OK) {
        size_t n = strcspn(resp.body.data, "\r\n");
        if (n == 0)
            st = kp_err_set(err, KP_EAUTH, "aws credentials (imds): this instance has no IAM role");
        else if (kp_aws_sigv4_uri_encode(&role, resp.body.data, n, 0) != 0)
            st = kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    if (st == KP_OK && kp_buf_puts(&url, role.data) != 0)
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
    if (st == KP_OK)
        st = fetch_credentials(url.data, get_headers, "imds", c, err);
    wipe_buf(&resp.body);
    kp_aws_fetch_response_free(&resp);
    wipe_buf(&token_line);
    kp_buf_free(&role);
    kp_buf_free(&url);
    return st;
}

/* ---- the chain ---- */

static source resolve_source(void)
{
    const char *disabled = env("AWS_EC2_METADATA_DISABLED");

    if (env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY"))
        return SOURCE_ENV;
    if (env("AWS_CONTAINER_CREDENTIALS_FULL_URI") || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"))
        return SOURCE_ECS;
    if (disabled && strcasecmp(disabled, "true") == 0)
        return SOURCE_NONE;
    return SOURCE_IMDS;
}

static int fresh(const kp_aws_credentials *c, time_t now)
{
    return c->expiration == 0 || now < c->expiration - KP_AWS_CREDENTIALS_REFRESH_S;
}

static void log_fetched(const kp_aws_credentials *c)
{
    size_t n = strlen(c->access_key_id);
    char expires[32] = "never";
    struct tm tm;

    if (c->expiration) {
        gmtime_r(&c->expiration, &tm);
        strftime(expires, sizeof expires, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    kp_log_json(KP_LOG_INFO, "aws credentials fetched",
                json_pack("{s:s, s:s, s:s}", "source", c->source, "access_key_id_tail",
                          n > 4 ? c->access_key_id + n - 4 : "", "expires", expires));
}

/* Fetches from the remote source into p->cached. Called with the lock held. */
static kp_status refresh(kp_aws_credentials_provider *p, kp_err *err)
{
    kp_aws_credentials c;
    kp_status st;

    p->fetches++;
    st = p->source == SOURCE_ECS ? fetch_ecs(&c, err) : fetch_imds(&c, err);
    if (st != KP_OK)
        return st;
    if (c.expiration != 0 && !fresh(&c, time(NULL)))
        kp_log(KP_LOG_WARN, "aws credentials (%s) expire in less than %d s; fetching again at every use", c.source,
               KP_AWS_CREDENTIALS_REFRESH_S);
    kp_aws_credentials_wipe(&p->cached);
    p->cached = c;
    p->have = 1;
    p->refused = 0;
    kp_aws_credentials_wipe(&c);
    log_fetched(&p->cached);
    return KP_OK;
}

static kp_status get_locked(kp_aws_credentials_provider *p, kp_aws_credentials *out, kp_err *err)
{
    time_t now = time(NULL);
    kp_status st;

    if (p->source == SOURCE_UNRESOLVED)
        p->source = resolve_source();
    switch (p->source) {
    case SOURCE_ENV:
        return fill(out, env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"), env("AWS_SESSION_TOKEN"), "env", err);
    case SOURCE_NONE:
        return kp_err_set(err, KP_EAUTH,
                          "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where the "
                          "ECS endpoint or EC2 instance metadata provides them");
    default: break;
    }
    if (!p->have || p->refused || !fresh(&p->cached, now)) {
        st = refresh(p, err);
        if (st != KP_OK) {
            if (!p->have || p->refused || now >= p->cached.expiration)
                return st;
            kp_log(KP_LOG_WARN, "aws credentials: refresh failed, using the current ones until they expire: %s",
                   err ? err->msg : "");
        }
    }
    *out = p->cached;
    return KP_OK;
}

int kp_aws_credentials_refused(kp_aws_credentials_provider *p, const char *access_key_id)
{
    int again = 0;

    pthread_mutex_lock(&p->lock);
    if (p->source != SOURCE_ENV && p->have && strcmp(p->cached.access_key_id, access_key_id) == 0) {
        p->refused = 1;
        again = 1;
    }
    pthread_mutex_unlock(&p->lock);
    if (again)
        kp_log(KP_LOG_WARN, "aws credentials refused as expired before their Expiration; fetching new ones");
    return again;
}

kp_status kp_aws_credentials_get(kp_aws_credentials_provider *p, kp_aws_credentials *out, kp_err *err)
{
    kp_status st;

    pthread_mutex_lock(&p->lock);
    st = get_locked(p, out, err);
    pthread_mutex_unlock(&p->lock);
    if (st != KP_OK)
        kp_aws_credentials_wipe(out);
    return st;
}

/* ---- endpoints ---- */

typedef struct service_info {
    const char *signing_name;
    const char *env_suffix;
} service_info;

static const service_info SERVICES[] = {
    [KP_AWS_DYNAMODB] = {"dynamodb", "DYNAMODB"},
    [KP_AWS_S3] = {"s3", "S3"},
    [KP_AWS_SECRETS_MANAGER] = {"secretsmanager", "SECRETS_MANAGER"},
    [KP_AWS_LAMBDA] = {"lambda", "LAMBDA"},
};

const char *kp_aws_service_signing_name(kp_aws_service svc)
{
    return SERVICES[svc].signing_name;
}

static int is_http_url(const char *s)
{
    return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

kp_status kp_aws_endpoint(kp_aws_service svc, const char *region, kp_buf *out, kp_err *err)
{
    char name[64];
    const char *url;
    size_t n;

    snprintf(name, sizeof name, "AWS_ENDPOINT_URL_%s", SERVICES[svc].env_suffix);
    url = env(name);
    if (!url)
        url = env("AWS_ENDPOINT_URL");
    if (url) {
        if (!is_http_url(url))
            return kp_err_set(err, KP_EINVAL, "the AWS endpoint for %s must be an http(s) URL",
                              SERVICES[svc].signing_name);
        n = strlen(url);
        while (n > 0 && url[n - 1] == '/')
            n--;
        return kp_buf_append(out, url, n) == 0 ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    if (!region || !*region)
        return kp_err_set(err, KP_EINVAL, "no AWS region: set AWS_REGION (or an endpoint URL for %s)",
                          SERVICES[svc].signing_name);
    return kp_buf_printf(out, "https://%s.%s.amazonaws.com", SERVICES[svc].signing_name, region) == 0
               ? KP_OK
               : kp_err_set(err, KP_ENOMEM, "out of memory");
}

/* S3's rule: 3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit. */
static int valid_bucket(const char *b)
{
    size_t n = strlen(b);

    if (n < 3 || n > 63 || b[0] == '.' || b[0] == '-' || b[n - 1] == '.' || b[n - 1] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

kp_status kp_aws_s3_url(const char *endpoint, const char *bucket, const char *key, int path_style, kp_buf *out,
                        kp_err *err)
{
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    kp_status st = KP_OK;
    CURLU *u;
    int rc;

    if (!valid_bucket(bucket))
        return kp_err_set(err, KP_EINVAL, "bad S3 bucket name \"%.64s\"", bucket);
    u = curl_url();
    if (!u)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    if (!is_http_url(endpoint) || curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
        st = kp_err_set(err, KP_EINVAL, "bad S3 endpoint URL");
        goto cleanup;
    }
    curl_url_get(u, CURLUPART_PORT, &port, 0); /* absent: no port */
    if (path_style) {
        size_t n = strlen(endpoint);
        while (n > 0 && endpoint[n - 1] == '/')
            n--;
        rc = kp_buf_printf(out, "%.*s/%s/", (int)n, endpoint, bucket);
    } else {
        size_t plen = strlen(path);
        while (plen > 0 && path[plen - 1] == '/')
            plen--;
        rc = kp_buf_printf(out, "%s://%s.%s%s%s%.*s/", scheme, bucket, host, port ? ":" : "", port ? port : "",
                           (int)plen, path);
    }
    if (rc != 0 || kp_aws_sigv4_encode_key(out, key ? key : "") != 0)
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
cleanup:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return st;
}
