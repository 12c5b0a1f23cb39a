/*
 * exchange.c - see exchange.h.
 */
#include "api/exchange.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "core/log.h"

/* A bounded copy, cut to n - 1 bytes (no snprintf: four of these run per request). */
static void copy_str(char *dst, size_t n, const char *src)
{
    size_t len = src ? strnlen(src, n - 1) : 0;
    if (len)
        memcpy(dst, src, len);
    dst[len] = '\0';
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

int kp_exchange_id_is_sane(const char *id)
{
    size_t n = 0;
    if (!id)
        return 0;
    for (; id[n]; n++) {
        char c = id[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                 c == '.';
        if (!ok || n >= KP_REQUEST_ID_MAX)
            return 0;
    }
    return n > 0;
}

void kp_exchange_ids_init(kp_exchange_ids *ids)
{
    unsigned char rnd[4];
    randombytes_buf(rnd, sizeof rnd);
    snprintf(ids->prefix, sizeof ids->prefix, "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
    ids->counter = 0;
}

void kp_exchange_request_id(kp_exchange_ids *ids, const char *incoming, char out[KP_REQUEST_ID_MAX + 1])
{
    if (kp_exchange_id_is_sane(incoming))
        snprintf(out, KP_REQUEST_ID_MAX + 1, "%s", incoming);
    else
        snprintf(out, KP_REQUEST_ID_MAX + 1, "%s%08x", ids->prefix, (unsigned)ids->counter++);
}

void kp_exchange_error(kp_error_page_fn page, kp_resp *resp, int status, const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (page)
        page(resp, status, code, msg);
    else
        kp_resp_error(resp, status, code, "%s", msg);
}

int kp_exchange_check_body(kp_error_page_fn page, size_t len, kp_resp *resp)
{
    if (len <= KP_MAX_BODY)
        return 0;
    kp_exchange_error(page, resp, 413, "payload_too_large", "request body exceeds 1 MiB");
    return -1;
}

void kp_exchange_check_response(kp_error_page_fn page, kp_resp *resp, kp_req_summary *sum)
{
    const char *rid = sum->request_id;
    if (resp->deferred || resp->status < 100 || resp->status > 599) {
        kp_log(KP_LOG_ERROR, "handler left status %d%s for %s %s (request %s)", resp->status,
               resp->deferred ? " and a deferred" : "", sum->method, sum->path, rid);
        kp_resp_free(resp);
        memset(resp, 0, sizeof *resp);
        kp_exchange_error(page, resp, 500, "internal_error", "internal error (request %s)", rid);
    }
    sum->status = resp->status;
}

int kp_exchange_is_head(const char *method)
{
    return method && strcmp(method, "HEAD") == 0;
}

int kp_exchange_has_body(const char *method, int status)
{
    return !kp_exchange_is_head(method) && status >= 200 && status != 204 && status != 304;
}

void kp_exchange_drop_stream(kp_resp *resp)
{
    if (!resp->stream)
        return;
    resp->stream->release(resp->stream);
    resp->stream = NULL;
}

void kp_exchange_begin(kp_req_summary *s, const char *method, const struct timespec *t0)
{
    memset(s, 0, sizeof *s);
    s->method = method;
    s->t0 = *t0;
}

void kp_exchange_take_request(kp_req_summary *s, const kp_req *req)
{
    copy_str(s->route, sizeof s->route, req->route ? req->route : "unmatched");
    copy_str(s->path, sizeof s->path, req->path);
    copy_str(s->request_id, sizeof s->request_id, req->request_id);
    copy_str(s->remote_addr, sizeof s->remote_addr, req->remote_addr);
    if (req->principal.authenticated)
        copy_str(s->user_id, sizeof s->user_id, req->principal.user_id);
}

/* The request's log line, its fields written straight into it (this runs once per request). */
void kp_exchange_record(kp_metrics *m, const kp_req_summary *s)
{
    double secs = seconds_since(&s->t0);
    kp_metrics_observe(m, s->route, s->status, secs);
    kp_jsonw *w = kp_log_begin(KP_LOG_INFO, "request");
    if (!w)
        return;
    kp_jsonw_str(w, "request_id", s->request_id);
    kp_jsonw_str(w, "method", s->method);
    kp_jsonw_str(w, "route", s->route);
    kp_jsonw_int(w, "status", s->status);
    kp_jsonw_milli(w, "duration_ms", (int64_t)(secs * 1e6));
    if (s->user_id[0])
        kp_jsonw_str(w, "user_id", s->user_id);
    kp_jsonw_str(w, "remote_addr", s->remote_addr);
    kp_log_commit(w);
}
