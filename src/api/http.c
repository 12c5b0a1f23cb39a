/* http.c - see http.h: building responses and reading requests, for handlers. */
#include "api/http.h"

#include <pthread.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"

int kp_headers_add(kp_headers *h, const char *name, const char *value)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        kp_header *items = realloc(h->items, cap * sizeof *items);
        if (!items)
            return -1;
        h->items = items;
        h->cap = cap;
    }
    char *n = strdup(name);
    char *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -1;
    }
    h->items[h->n].name = n;
    h->items[h->n].value = v;
    h->n++;
    return 0;
}

int kp_headers_set(kp_headers *h, const char *name, const char *value)
{
    for (size_t i = 0; i < h->n; i++) {
        if (strcasecmp(h->items[i].name, name) == 0) {
            char *v = strdup(value);
            if (!v)
                return -1;
            free(h->items[i].value);
            h->items[i].value = v;
            return 0;
        }
    }
    return kp_headers_add(h, name, value);
}

const char *kp_headers_get(const kp_headers *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcasecmp(h->items[i].name, name) == 0)
            return h->items[i].value;
    return NULL;
}

const char *kp_headers_get_exact(const kp_headers *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->items[i].name, name) == 0)
            return h->items[i].value;
    return NULL;
}

void kp_headers_free(kp_headers *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->items[i].name);
        free(h->items[i].value);
    }
    free(h->items);
    h->items = NULL;
    h->n = h->cap = 0;
}

int kp_etag_matches(const char *header, const char *etag)
{
    if (!header)
        return 0;
    size_t tlen = strlen(etag);
    const char *p = header;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return 1;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        size_t len = strcspn(p, ",");
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == tlen && strncmp(p, etag, tlen) == 0)
            return 1;
        p += strcspn(p, ",");
    }
    return 0;
}

/* json_dump_callback's sink: appends to a kp_buf (no intermediate string). */
static int append_to_buf(const char *text, size_t len, void *data)
{
    return kp_buf_append(data, text, len);
}

void kp_resp_json(kp_resp *resp, int status, json_t *body)
{
    resp->status = status;
    kp_buf_reset(&resp->body);
    if (body && json_dump_callback(body, append_to_buf, &resp->body, JSON_COMPACT) != 0)
        kp_buf_reset(&resp->body);
    json_decref(body);
    kp_headers_set(&resp->headers, "Content-Type", "application/json");
}

void kp_resp_json_written(kp_resp *resp, int status)
{
    resp->status = status;
    kp_headers_set(&resp->headers, "Content-Type", "application/json");
}

/* Copies text, replacing every byte that is not part of valid UTF-8 with '?'
 * (jansson refuses invalid UTF-8, and a message may echo client bytes). */
static void utf8_sanitise(const char *text, char *out, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; text[i] && o + 1 < n;) {
        size_t len = 1;
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x80)
            len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
        int valid = len > 0;
        for (size_t k = 1; valid && k < len; k++)
            valid = ((unsigned char)text[i + k] & 0xC0) == 0x80;
        if (valid && len > 1) {
            json_t *probe = json_stringn(text + i, len); /* rejects overlongs and surrogates */
            valid = probe != NULL;
            json_decref(probe);
        }
        if (!valid || o + len >= n) {
            out[o++] = '?';
            i++;
            continue;
        }
        memcpy(out + o, text + i, len);
        o += len;
        i += len;
    }
    out[o] = '\0';
}

static void error_body(kp_resp *resp, int status, const char *code, const char *message)
{
    json_t *body = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    if (!body) {
        char clean[512];
        utf8_sanitise(message, clean, sizeof clean);
        body = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", clean);
    }
    kp_resp_json(resp, status, body);
}

void kp_resp_error(kp_resp *resp, int status, const char *code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    error_body(resp, status, code, message);
}

void kp_resp_from_err(kp_resp *resp, const kp_err *err, const char *request_id)
{
    int status = kp_status_http(err->status);
    if (status >= 500) {
        json_t *fields = json_pack("{s:s,s:s,s:s}", "request_id", request_id ? request_id : "", "error",
                                   kp_status_name(err->status), "detail", err->msg);
        kp_log_json(KP_LOG_ERROR, "request failed", fields);
        if (status == 503)
            error_body(resp, status, kp_status_name(err->status), err->msg);
        else
            kp_resp_error(resp, status, "internal_error", "internal error (request %s)", request_id ? request_id : "-");
        return;
    }
    error_body(resp, status, kp_status_name(err->status), err->msg);
}

void kp_resp_text(kp_resp *resp, int status, const char *content_type, const char *body, size_t len)
{
    resp->status = status;
    kp_buf_reset(&resp->body);
    kp_buf_append(&resp->body, body, len);
    kp_headers_set(&resp->headers, "Content-Type", content_type);
}

void kp_resp_set_file(kp_resp *resp, int status, const char *content_type, int fd, int64_t offset, int64_t len)
{
    if (resp->file.set)
        close(resp->file.fd);
    resp->status = status;
    kp_buf_reset(&resp->body);
    resp->file = (kp_resp_file){.set = 1, .fd = fd, .offset = offset, .len = len};
    kp_headers_set(&resp->headers, "Content-Type", content_type);
}

void kp_resp_free(kp_resp *resp)
{
    if (resp->file.set)
        close(resp->file.fd);
    resp->file.set = 0;
    kp_headers_free(&resp->headers);
    kp_buf_free(&resp->body);
    if (resp->stream && resp->stream->release)
        resp->stream->release(resp->stream);
    resp->stream = NULL;
    if (resp->deferred && resp->deferred->release)
        resp->deferred->release(resp->deferred);
    resp->deferred = NULL;
}

/* ---- waiting for a deferred response ---- */

typedef struct settle_reply {
    kp_reply reply;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sent;
    kp_resp resp;
} settle_reply;

static void settle_send(kp_reply *reply, kp_resp *resp)
{
    settle_reply *r = (settle_reply *)reply;
    pthread_mutex_lock(&r->mu);
    r->resp = *resp;
    memset(resp, 0, sizeof *resp);
    r->sent = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void kp_resp_settle(kp_resp *resp)
{
    if (!resp->deferred)
        return;
    kp_deferred *d = resp->deferred;
    resp->deferred = NULL;
    settle_reply r;
    memset(&r, 0, sizeof r);
    r.reply.send = settle_send;
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    d->start(d, &r.reply);
    pthread_mutex_lock(&r.mu);
    while (!r.sent)
        pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    d->release(d);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    kp_headers_free(&resp->headers);
    kp_buf_free(&resp->body);
    *resp = r.resp;
}

const char *kp_req_header(const kp_req *req, const char *name)
{
    return kp_headers_get(&req->headers, name);
}

const char *kp_req_query(const kp_req *req, const char *name)
{
    return kp_headers_get_exact(&req->query, name);
}

static int is_json_content_type(const char *ct)
{
    if (!ct)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; ");
    return n == 16 && strncasecmp(ct, "application/json", 16) == 0;
}

int kp_req_json_body(const kp_req *req, kp_resp *resp, json_t **out)
{
    *out = NULL;
    if (!is_json_content_type(kp_req_header(req, "Content-Type"))) {
        kp_resp_error(resp, 415, "unsupported_media_type",
                      "the request body must be JSON (Content-Type: application/json)");
        return -1;
    }
    if (req->body_len == 0) {
        kp_resp_error(resp, 400, "invalid_json", "the request body is empty; expected a JSON object");
        return -1;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!doc) {
        kp_resp_error(resp, 400, "invalid_json", "malformed JSON at line %d, column %d (position %d): %s", jerr.line,
                      jerr.column, jerr.position, jerr.text);
        return -1;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        kp_resp_error(resp, 400, "invalid_json", "the request body must be a JSON object");
        return -1;
    }
    *out = doc;
    return 0;
}
