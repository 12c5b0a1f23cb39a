/*
 * runtime.c - see runtime.h. One curl easy handle, reused (its connection to
 * the Runtime API stays open between calls).
 */
#include "host/lambda/runtime.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#define API_VERSION "2018-06-01"

struct kp_lambda_runtime {
    CURL *curl;
    char base[300]; /* http://host:port/2018-06-01 */
    volatile sig_atomic_t stopping;
};

kp_status kp_lambda_runtime_new(const char *api, kp_lambda_runtime **out, kp_err *err)
{
    *out = NULL;
    if (!api || !*api)
        return kp_err_set(err, KP_EINVAL, "AWS_LAMBDA_RUNTIME_API is not set (the Lambda runtime sets it)");
    if (strlen(api) > 200 || strpbrk(api, "/ \t?#@"))
        return kp_err_set(err, KP_EINVAL, "AWS_LAMBDA_RUNTIME_API must be host:port, not %.200s", api);
    kp_lambda_runtime *rt = calloc(1, sizeof *rt);
    if (!rt || !(rt->curl = curl_easy_init())) {
        free(rt);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    snprintf(rt->base, sizeof rt->base, "http://%s/" API_VERSION, api);
    *out = rt;
    return KP_OK;
}

void kp_lambda_runtime_free(kp_lambda_runtime *rt)
{
    if (!rt)
        return;
    curl_easy_cleanup(rt->curl);
    free(rt);
}

void kp_lambda_runtime_stop(kp_lambda_runtime *rt)
{
    if (rt)
        rt->stopping = 1;
}

void kp_lambda_invocation_free(kp_lambda_invocation *inv)
{
    kp_buf_free(&inv->payload);
    memset(inv, 0, sizeof *inv);
}

/* ---- one call ---- */

typedef struct call {
    kp_lambda_runtime *rt;
    kp_buf body;               /* the response body */
    kp_lambda_invocation *inv; /* next only: headers land here */
} call;

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    call *c = ud;
    return kp_buf_append(&c->body, data, size * n) == 0 ? size * n : 0;
}

static void copy_value(char *dst, size_t n, const char *v, size_t len)
{
    while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
        len--;
    while (len > 0 && *v == ' ') {
        v++;
        len--;
    }
    snprintf(dst, n, "%.*s", (int)len, v);
}

/* Takes the four invocation headers of a `next` response. */
static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    call *c = ud;
    size_t len = size * n;
    const char *colon = memchr(data, ':', len);
    if (!c->inv || !colon)
        return len;
    size_t name_len = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vlen = len - name_len - 1;
    kp_lambda_invocation *inv = c->inv;
    char num[32];
#define IS(name) (name_len == sizeof(name) - 1 && strncasecmp(data, name, name_len) == 0)
    if (IS("Lambda-Runtime-Aws-Request-Id"))
        copy_value(inv->request_id, sizeof inv->request_id, v, vlen);
    else if (IS("Lambda-Runtime-Invoked-Function-Arn"))
        copy_value(inv->function_arn, sizeof inv->function_arn, v, vlen);
    else if (IS("Lambda-Runtime-Trace-Id"))
        copy_value(inv->trace_id, sizeof inv->trace_id, v, vlen);
    else if (IS("Lambda-Runtime-Deadline-Ms")) {
        copy_value(num, sizeof num, v, vlen);
        inv->deadline_ms = strtoll(num, NULL, 10);
    }
#undef IS
    return len;
}

/* libcurl asks about once a second while waiting: give up when stopping. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return ((kp_lambda_runtime *)ud)->stopping ? 1 : 0;
}

/* GET (post NULL) or POST path; *status_out the HTTP status. */
static kp_status perform(kp_lambda_runtime *rt, call *c, const char *path, const char *post, size_t post_len,
                         const char *error_type, long *status_out, kp_err *err)
{
    CURL *h = rt->curl;
    struct curl_slist *hdrs = NULL;
    kp_buf url = KP_BUF_INIT;
    kp_buf type_hdr = KP_BUF_INIT;
    kp_status rc = KP_OK;
    if (rt->stopping)
        return kp_err_set(err, KP_EUNAVAILABLE, "stopping");
    if (kp_buf_printf(&url, "%s%s", rt->base, path) != 0) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, rt);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    if (post) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        hdrs = curl_slist_append(hdrs, "Expect:");
        if (error_type && kp_buf_printf(&type_hdr, "Lambda-Runtime-Function-Error-Type: %s", error_type) == 0)
            hdrs = curl_slist_append(hdrs, type_hdr.data);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)post_len);
    }
    CURLcode cc = curl_easy_perform(h);
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        rc = kp_err_set(err, KP_EUNAVAILABLE, "stopping");
    else if (cc != CURLE_OK)
        rc = kp_err_set(err, KP_EUNAVAILABLE, "the Runtime API (%s) failed: %s", url.data, curl_easy_strerror(cc));
    else
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status_out);
cleanup:
    curl_slist_free_all(hdrs);
    kp_buf_free(&url);
    kp_buf_free(&type_hdr);
    return rc;
}

/* The errorMessage of the Runtime API's error body, or the body itself. */
static const char *api_message(const kp_buf *body, json_t **keep)
{
    *keep = body->len ? json_loadb(body->data, body->len, 0, NULL) : NULL;
    const char *m = json_string_value(json_object_get(*keep, "errorMessage"));
    return m ? m : body->len ? kp_buf_cstr(body) : "no detail";
}

static kp_status check_status(long status, long expected, const char *what, const kp_buf *body, kp_err *err)
{
    json_t *keep = NULL;
    kp_status rc = KP_OK;
    if (status == expected)
        return KP_OK;
    const char *msg = api_message(body, &keep);
    if (status == 413)
        rc = kp_err_set(err, KP_ETOOLARGE, "the Runtime API refused the %s as too large: %s", what, msg);
    else
        rc = kp_err_set(err, KP_EUNAVAILABLE, "the Runtime API answered %ld to the %s: %s", status, what, msg);
    json_decref(keep);
    return rc;
}

kp_status kp_lambda_next(kp_lambda_runtime *rt, kp_lambda_invocation *inv, kp_err *err)
{
    call c = {.rt = rt, .inv = inv};
    long status = 0;
    kp_lambda_invocation_free(inv);
    kp_status rc = perform(rt, &c, "/runtime/invocation/next", NULL, 0, NULL, &status, err);
    if (rc == KP_OK)
        rc = check_status(status, 200, "next invocation request", &c.body, err);
    if (rc == KP_OK && !inv->request_id[0])
        rc = kp_err_set(err, KP_EINTERNAL, "the next invocation has no Lambda-Runtime-Aws-Request-Id");
    if (rc == KP_OK) {
        inv->payload = c.body;
        memset(&c.body, 0, sizeof c.body);
    }
    kp_buf_free(&c.body);
    return rc;
}

static kp_status post(kp_lambda_runtime *rt, const char *path, const char *body, size_t len, const char *error_type,
                      const char *what, kp_err *err)
{
    call c = {.rt = rt};
    long status = 0;
    kp_status rc = perform(rt, &c, path, body, len, error_type, &status, err);
    if (rc == KP_OK)
        rc = check_status(status, 202, what, &c.body, err);
    kp_buf_free(&c.body);
    return rc;
}

static int request_id_is_safe(const char *id)
{
    return id && *id && strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == strlen(id);
}

kp_status kp_lambda_respond(kp_lambda_runtime *rt, const char *request_id, const char *body, size_t len, kp_err *err)
{
    char path[KP_LAMBDA_ID_MAX + 64];
    if (!request_id_is_safe(request_id))
        return kp_err_set(err, KP_EINVAL, "unusable request id");
    snprintf(path, sizeof path, "/runtime/invocation/%s/response", request_id);
    return post(rt, path, body ? body : "", body ? len : 0, NULL, "response", err);
}

/* {"errorMessage","errorType","stackTrace":[]}: a new string (free()), or NULL. */
static char *error_doc(const char *type, const char *message)
{
    json_t *doc = json_pack("{s:s,s:s,s:[]}", "errorMessage", message ? message : "", "errorType", type, "stackTrace");
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

kp_status kp_lambda_fail(kp_lambda_runtime *rt, const char *request_id, const char *type, const char *message,
                         kp_err *err)
{
    char path[KP_LAMBDA_ID_MAX + 64];
    if (request_id && !request_id_is_safe(request_id))
        return kp_err_set(err, KP_EINVAL, "unusable request id");
    if (request_id)
        snprintf(path, sizeof path, "/runtime/invocation/%s/error", request_id);
    else
        snprintf(path, sizeof path, "/runtime/init/error");
    char *text = error_doc(type, message);
    if (!text)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_status rc = post(rt, path, text, strlen(text), type, request_id ? "error report" : "init error report", err);
    free(text);
    return rc;
}

/* ---- streamed responses ---- */

int kp_lambda_runtime_stopping(const kp_lambda_runtime *rt)
{
    return rt && rt->stopping;
}

typedef struct upload {
    kp_lambda_runtime *rt;
    const kp_lambda_body *body;
    int ended;   /* read gave the end of the body */
    int aborted; /* read asked to abort */
    kp_buf type_hdr, body_hdr;
} upload;

static size_t on_upload_read(char *buf, size_t size, size_t n, void *ud)
{
    upload *u = ud;
    long got = u->body->read(u->body->ud, buf, size * n);
    if (got < 0) {
        u->aborted = 1;
        return CURL_READFUNC_ABORT;
    }
    if (got == 0)
        u->ended = 1;
    return (size_t)got;
}

/* Called once the body ended: the error trailers, when the body says it failed. */
static int on_upload_trailers(struct curl_slist **list, void *ud)
{
    upload *u = ud;
    const char *message = NULL;
    const char *type = u->body->failure ? u->body->failure(u->body->ud, &message) : NULL;
    if (!type)
        return CURL_TRAILERFUNC_OK;
    char *doc = error_doc(type, message);
    size_t b64_len = doc ? sodium_base64_encoded_len(strlen(doc), sodium_base64_VARIANT_ORIGINAL) : 0;
    char *b64 = doc ? malloc(b64_len) : NULL;
    int rc = CURL_TRAILERFUNC_ABORT; /* out of memory: the response fails anyway */
    if (b64) {
        sodium_bin2base64(b64, b64_len, (const unsigned char *)doc, strlen(doc), sodium_base64_VARIANT_ORIGINAL);
        if (kp_buf_printf(&u->type_hdr, "Lambda-Runtime-Function-Error-Type: %s", type) == 0 &&
            kp_buf_printf(&u->body_hdr, "Lambda-Runtime-Function-Error-Body: %s", b64) == 0) {
            *list = curl_slist_append(*list, u->type_hdr.data); /* libcurl copies, and frees the list */
            *list = curl_slist_append(*list, u->body_hdr.data);
            rc = CURL_TRAILERFUNC_OK;
        }
    }
    free(b64);
    free(doc);
    return rc;
}

/* While the connection is busy: give up when stopping before the body's end, or when the body says so. */
static int on_upload_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    upload *u = ud;
    (void)dt, (void)dn, (void)ut, (void)un;
    if (u->rt->stopping && !u->ended)
        return 1;
    return u->body->abandon && u->body->abandon(u->body->ud) ? 1 : 0;
}

kp_status kp_lambda_respond_stream(kp_lambda_runtime *rt, const char *request_id, const char *content_type,
                                   const kp_lambda_body *body, kp_err *err)
{
    CURL *h = NULL;
    upload u = {.rt = rt, .body = body};
    call c = {.rt = rt};
    struct curl_slist *hdrs = NULL;
    kp_buf url = KP_BUF_INIT, type = KP_BUF_INIT;
    long status = 0;
    kp_status rc = KP_OK;
    if (!request_id_is_safe(request_id))
        return kp_err_set(err, KP_EINVAL, "unusable request id");
    if (kp_buf_printf(&url, "%s/runtime/invocation/%s/response", rt->base, request_id) != 0 ||
        kp_buf_printf(&type, "Content-Type: %s", content_type) != 0) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    /* its own handle: with libcurl 7.88, a chunked upload with trailers on
     * the reused handle, after an earlier one, wrote out of its buffer's
     * bounds (seen with valgrind) */
    if (!(h = curl_easy_init())) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &c);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &u);
    curl_easy_setopt(h, CURLOPT_TRAILERFUNCTION, on_upload_trailers);
    curl_easy_setopt(h, CURLOPT_TRAILERDATA, &u);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_upload_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &u);
    hdrs = curl_slist_append(hdrs, type.data);
    hdrs = curl_slist_append(hdrs, "Lambda-Runtime-Function-Response-Mode: streaming");
    hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
    hdrs = curl_slist_append(hdrs, "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body");
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    CURLcode cc = curl_easy_perform(h);
    if (cc == CURLE_ABORTED_BY_CALLBACK && rt->stopping && !u.ended)
        rc = kp_err_set(err, KP_EUNAVAILABLE, "stopping");
    else if (cc == CURLE_ABORTED_BY_CALLBACK)
        rc = kp_err_set(err, KP_EIO, "the streamed response was %s",
                        u.aborted ? "aborted" : "abandoned (the Runtime API did not take it)");
    else if (cc != CURLE_OK)
        rc = kp_err_set(err, KP_EUNAVAILABLE, "the Runtime API (%s) failed: %s", url.data, curl_easy_strerror(cc));
    else if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK)
        rc = check_status(status, 202, "streamed response", &c.body, err);
cleanup:
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    kp_buf_free(&url);
    kp_buf_free(&type);
    kp_buf_free(&u.type_hdr);
    kp_buf_free(&u.body_hdr);
    kp_buf_free(&c.body);
    return rc;
}
