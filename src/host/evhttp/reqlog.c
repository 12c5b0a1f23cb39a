/*
 * reqlog.c - see reqlog.h.
 */
#include "host/evhttp/reqlog.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "core/log.h"

static void copy_str(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

int kp_reqlog_id_is_sane(const char *id)
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

void kp_reqlog_begin(kp_req_summary *s, const char *method, const struct timespec *t0)
{
    memset(s, 0, sizeof *s);
    s->method = method;
    s->t0 = *t0;
}

void kp_reqlog_take_request(kp_req_summary *s, const kp_req *req)
{
    copy_str(s->route, sizeof s->route, req->route ? req->route : "unmatched");
    copy_str(s->path, sizeof s->path, req->path);
    copy_str(s->request_id, sizeof s->request_id, req->request_id);
    copy_str(s->remote_addr, sizeof s->remote_addr, req->remote_addr);
    if (req->principal.authenticated)
        copy_str(s->user_id, sizeof s->user_id, req->principal.user_id);
}

void kp_reqlog_record(kp_metrics *m, const kp_req_summary *s)
{
    double secs = seconds_since(&s->t0);
    kp_metrics_observe(m, s->route, s->status, secs);
    if (!kp_log_enabled(KP_LOG_INFO))
        return;
    json_t *f = json_pack("{s:s,s:s,s:s,s:i,s:f}", "request_id", s->request_id, "method", s->method, "route", s->route,
                          "status", s->status, "duration_ms", (double)(long long)(secs * 1e6) / 1000.0);
    if (!f)
        return;
    if (s->user_id[0])
        json_object_set_new(f, "user_id", json_string(s->user_id));
    json_object_set_new(f, "remote_addr", json_string(s->remote_addr));
    kp_log_json(KP_LOG_INFO, "request", f);
}
