/*
 * apigw.c - see apigw.h.
 */
#include "host/lambda/apigw.h"

#include "api/exchange.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#define MAX_FILE_BODY (6 * 1024 * 1024)    /* a Lambda response cannot be larger anyway */
#define FUNCTION_URL_DOMAIN ".lambda-url." /* <url-id>.lambda-url.<region>.on.aws */

/* ---- small helpers ---- */

static const char *str_at(const json_t *doc, const char *a, const char *b, const char *c)
{
    const json_t *v = json_object_get(doc, a);
    if (b)
        v = json_object_get(v, b);
    if (c)
        v = json_object_get(v, c);
    return json_string_value(v);
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

/* Percent-decodes n bytes of s (plus: '+' is a space first). NULL on a NUL byte or no memory. */
static char *url_decode(const char *s, size_t n, int plus)
{
    char *copy = strndup(s, n);
    char *out = NULL;
    if (!copy)
        return NULL;
    for (char *c = copy; plus && *c; c++)
        if (*c == '+')
            *c = ' ';
    int len = 0;
    char *dec = curl_easy_unescape(NULL, copy, 0, &len);
    if (dec && strlen(dec) == (size_t)len)
        out = strdup(dec);
    curl_free(dec);
    free(copy);
    return out;
}

/* ---- in ---- */

int kp_apigw_is_http_event(const json_t *doc)
{
    const char *v = json_string_value(json_object_get(doc, "version"));
    return v && strcmp(v, "2.0") == 0 &&
           json_is_object(json_object_get(json_object_get(doc, "requestContext"), "http"));
}

int kp_apigw_is_function_url(const json_t *doc)
{
    const char *domain = str_at(doc, "requestContext", "domainName", NULL);
    return domain && strstr(domain, FUNCTION_URL_DOMAIN) != NULL;
}

int kp_apigw_list_contains(const char *flattened, const char *name)
{
    size_t n = strlen(name);
    const char *s = flattened;
    if (!s || !n)
        return 0;
    if (*s == '[')
        s++;
    while (*s && *s != ']') {
        s += strspn(s, " ,");
        size_t len = strcspn(s, " ,]");
        if (len == n && strncmp(s, name, n) == 0)
            return 1;
        if (len == 0)
            break;
        s += len;
    }
    return 0;
}

static int claim_is_true(const json_t *v)
{
    return json_is_true(v) || (json_is_string(v) && strcmp(json_string_value(v), "true") == 0);
}

/* cognito:groups as the gateway sends it ("[admin users]"), or as a real array. */
static int groups_contain(const json_t *v, const char *name)
{
    if (json_is_string(v))
        return kp_apigw_list_contains(json_string_value(v), name);
    for (size_t i = 0; json_is_array(v) && i < json_array_size(v); i++) {
        const char *g = json_string_value(json_array_get(v, i));
        if (g && strcmp(g, name) == 0)
            return 1;
    }
    return 0;
}

kp_status kp_apigw_claims(const json_t *claims, kp_claims *out, char *issuer, size_t issuer_len, kp_err *err)
{
    memset(out, 0, sizeof *out);
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    const char *email = json_string_value(json_object_get(claims, "email"));
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    const char *exp = json_string_value(json_object_get(claims, "exp"));
    if (!sub || !*sub)
        return kp_err_set(err, KP_EAUTH, "the verified token has no sub claim");
    if (strlen(sub) >= sizeof out->sub)
        return kp_err_set(err, KP_EAUTH, "the token's subject is too long");
    snprintf(out->sub, sizeof out->sub, "%s", sub);
    /* an unverified address is anyone's claim (auth.h) */
    if (email && strlen(email) < sizeof out->email && claim_is_true(json_object_get(claims, "email_verified")))
        snprintf(out->email, sizeof out->email, "%s", email);
    out->admin_group = groups_contain(json_object_get(claims, "cognito:groups"), "admin");
    out->exp = exp ? strtoll(exp, NULL, 10) : (int64_t)json_integer_value(json_object_get(claims, "exp"));
    out->external = 1;
    snprintf(issuer, issuer_len, "%s", iss ? iss : "");
    return KP_OK;
}

/* rawQueryString: '&'-separated pairs; a pair without '=' is skipped (like the evhttp host). */
static int parse_query(const char *q, kp_headers *out)
{
    while (q && *q) {
        size_t len = strcspn(q, "&");
        const char *eq = memchr(q, '=', len);
        if (eq) {
            char *name = url_decode(q, (size_t)(eq - q), 1);
            char *value = url_decode(eq + 1, len - (size_t)(eq - q) - 1, 1);
            int rc = name && value ? kp_headers_add(out, name, value) : 0; /* undecodable: skipped */
            free(name);
            free(value);
            if (rc != 0)
                return -1;
        }
        q += len;
        if (*q == '&')
            q++;
    }
    return 0;
}

static int copy_headers(const json_t *headers, const json_t *cookies, kp_headers *out)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)headers, name, v)
    {
        if (json_is_string(v) && kp_headers_add(out, name, json_string_value(v)) != 0)
            return -1;
    }
    if (json_array_size(cookies) == 0)
        return 0;
    kp_buf joined = KP_BUF_INIT;
    size_t i;
    json_array_foreach(cookies, i, v)
    {
        if (json_is_string(v))
            kp_buf_printf(&joined, "%s%s", joined.len ? "; " : "", json_string_value(v));
    }
    int rc = kp_headers_set(out, "cookie", kp_buf_cstr(&joined));
    kp_buf_free(&joined);
    return rc;
}

static kp_status decode_body(const json_t *doc, kp_apigw_event *ev, kp_err *err)
{
    const json_t *b = json_object_get(doc, "body");
    const char *text = json_string_value(b);
    size_t len = json_string_length(b);
    if (!text) {
        ev->body = (unsigned char *)strdup("");
        return ev->body ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    ev->body = malloc(len + 1);
    if (!ev->body)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    if (!json_is_true(json_object_get(doc, "isBase64Encoded"))) {
        memcpy(ev->body, text, len);
        ev->body[len] = '\0';
        ev->req.body_len = len;
        return KP_OK;
    }
    size_t bin_len = 0;
    if (sodium_base642bin(ev->body, len, text, len, "\r\n", &bin_len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0)
        return kp_err_set(err, KP_EINVAL, "the event's body is flagged isBase64Encoded but is not base64");
    ev->body[bin_len] = '\0';
    ev->req.body_len = bin_len;
    return KP_OK;
}

kp_status kp_apigw_parse(const json_t *doc, kp_apigw_event *ev, kp_err *err)
{
    memset(ev, 0, sizeof *ev);
    kp_req *req = &ev->req;
    const json_t *rc_ctx = json_object_get(doc, "requestContext");
    const char *method = str_at(rc_ctx, "http", "method", NULL);
    const char *raw_path = json_string_value(json_object_get(doc, "rawPath"));
    if (!kp_apigw_is_http_event(doc) || !method || !raw_path)
        return kp_err_set(err, KP_EINVAL,
                          "not an API Gateway payload format 2.0 event (version, rawPath, "
                          "requestContext.http.method)");
    ev->method = strdup(method);
    ev->request_id = dup_or_empty(json_string_value(json_object_get(rc_ctx, "requestId")));
    ev->source_ip = dup_or_empty(str_at(rc_ctx, "http", "sourceIp", NULL));
    ev->path = url_decode(*raw_path ? raw_path : "/", strlen(*raw_path ? raw_path : "/"), 0);
    if (!ev->method || !ev->request_id || !ev->source_ip)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    req->method = ev->method;
    req->request_id = ev->request_id;
    req->remote_addr = ev->source_ip;
    req->path = ev->path ? ev->path : "/";
    if (!ev->path)
        return kp_err_set(err, KP_EINVAL, "the request path contains a NUL byte");
    if (parse_query(json_string_value(json_object_get(doc, "rawQueryString")), &req->query) != 0 ||
        copy_headers(json_object_get(doc, "headers"), json_object_get(doc, "cookies"), &req->headers) != 0)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_status st = decode_body(doc, ev, err);
    if (st != KP_OK)
        return st;
    req->body = (const char *)ev->body;
    ev->function_url = kp_apigw_is_function_url(doc);
    const json_t *claims = json_object_get(json_object_get(json_object_get(rc_ctx, "authorizer"), "jwt"), "claims");
    if (json_is_object(claims) && !ev->function_url) {
        st = kp_apigw_claims(claims, &ev->claims, ev->issuer, sizeof ev->issuer, err);
        if (st != KP_OK)
            return st;
        ev->has_claims = 1;
    }
    return KP_OK;
}

void kp_apigw_event_free(kp_apigw_event *ev)
{
    kp_headers_free(&ev->req.headers);
    kp_headers_free(&ev->req.query);
    free(ev->method);
    free(ev->path);
    free(ev->request_id);
    free(ev->source_ip);
    free(ev->body);
    memset(ev, 0, sizeof *ev);
}

/* ---- out ---- */

static int is_textual(const char *type)
{
    if (!type || !*type)
        return 1;
    return strncasecmp(type, "text/", 5) == 0 || strcasestr(type, "json") || strcasestr(type, "javascript") ||
           strcasestr(type, "xml") || strcasestr(type, "x-www-form-urlencoded");
}

/* headers[name]: set, or joined with ", " to a value already there. */
static int put_header(json_t *headers, const char *name, const char *value)
{
    char lower[128];
    snprintf(lower, sizeof lower, "%s", name);
    for (char *c = lower; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    const char *old = json_string_value(json_object_get(headers, lower));
    if (!old)
        return json_object_set_new(headers, lower, json_string(value));
    kp_buf joined = KP_BUF_INIT;
    kp_buf_printf(&joined, "%s, %s", old, value);
    int rc = json_object_set_new(headers, lower, json_string(kp_buf_cstr(&joined)));
    kp_buf_free(&joined);
    return rc;
}

static kp_status read_file_body(const kp_resp *resp, kp_buf *out, kp_err *err)
{
    if (resp->file.len > MAX_FILE_BODY)
        return kp_err_set(err, KP_ETOOLARGE, "the response body (%lld bytes) exceeds a Lambda response",
                          (long long)resp->file.len);
    if (kp_buf_reserve(out, (size_t)resp->file.len + 1) != 0)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    int64_t done = 0;
    while (done < resp->file.len) {
        ssize_t n = pread(resp->file.fd, out->data + done, (size_t)(resp->file.len - done), resp->file.offset + done);
        if (n <= 0)
            return kp_err_set(err, KP_EIO, "cannot read the response's file");
        done += n;
    }
    out->len = (size_t)done;
    out->data[out->len] = '\0'; /* a kp_buf always is */
    return KP_OK;
}

/* body + isBase64Encoded into doc. */
static kp_status put_body(json_t *doc, const kp_resp *resp, const char *method, kp_err *err)
{
    kp_buf file = KP_BUF_INIT;
    const char *data = resp->body.data;
    size_t len = resp->body.len;
    kp_status rc = KP_OK;
    json_t *text = NULL;
    if (!kp_exchange_has_body(method, resp->status)) {
        len = 0;
    } else if (resp->file.set) {
        if ((rc = read_file_body(resp, &file, err)) != KP_OK)
            goto cleanup;
        data = file.data;
        len = file.len;
    }
    if (is_textual(kp_headers_get(&resp->headers, "Content-Type")))
        text = json_stringn(len ? data : "", len); /* NULL: not UTF-8, sent as base64 */
    if (text) {
        json_object_set_new(doc, "body", text);
        json_object_set_new(doc, "isBase64Encoded", json_false());
        goto cleanup;
    }
    size_t b64_len = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = malloc(b64_len);
    if (!b64) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    sodium_bin2base64(b64, b64_len, (const unsigned char *)data, len, sodium_base64_VARIANT_ORIGINAL);
    json_object_set_new(doc, "body", json_string(b64));
    json_object_set_new(doc, "isBase64Encoded", json_true());
    free(b64);
cleanup:
    kp_buf_free(&file);
    return rc;
}

/* {"statusCode","headers","cookies"} of resp (new reference), or NULL when out of memory. */
static json_t *response_head(const kp_resp *resp, const char *const *default_headers, const char *request_id)
{
    json_t *headers = json_object(), *cookies = json_array();
    json_t *doc = json_pack("{s:i,s:o,s:o}", "statusCode", resp->status, "headers", headers, "cookies", cookies);
    if (!doc)
        return NULL;
    for (size_t i = 0; i < resp->headers.n; i++) {
        const kp_header *h = &resp->headers.items[i];
        if (strcasecmp(h->name, "Set-Cookie") == 0)
            json_array_append_new(cookies, json_string(h->value));
        else
            put_header(headers, h->name, h->value);
    }
    for (const char *const *d = default_headers; d && d[0] && d[1]; d += 2)
        if (!kp_headers_get(&resp->headers, d[0]))
            put_header(headers, d[0], d[1]);
    put_header(headers, "X-Request-Id", request_id);
    return doc;
}

char *kp_apigw_response(const kp_resp *resp, const char *method, const char *const *default_headers,
                        const char *request_id, kp_err *err)
{
    json_t *doc = response_head(resp, default_headers, request_id);
    char *out = NULL;
    if (!doc) {
        kp_err_set(err, KP_ENOMEM, "out of memory");
        return NULL;
    }
    if (put_body(doc, resp, method, err) == KP_OK) {
        out = json_dumps(doc, JSON_COMPACT);
        if (!out)
            kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    json_decref(doc);
    return out;
}

char *kp_apigw_prelude(const kp_resp *resp, const char *const *default_headers, const char *request_id, kp_err *err)
{
    json_t *doc = response_head(resp, default_headers, request_id);
    char *out = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!out)
        kp_err_set(err, KP_ENOMEM, "out of memory");
    return out;
}

kp_status kp_apigw_body(const kp_resp *resp, const char *method, kp_buf *out, kp_err *err)
{
    if (!kp_exchange_has_body(method, resp->status) || resp->stream)
        return KP_OK;
    if (resp->file.set)
        return read_file_body(resp, out, err);
    if (resp->body.len && kp_buf_append(out, resp->body.data, resp->body.len) != 0)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    return KP_OK;
}
