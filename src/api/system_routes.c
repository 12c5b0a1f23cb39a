/* system_routes.c - the server's own endpoints: health, metrics (the dashboard at /: dashboard_routes.c). */
#include <string.h>
#include <time.h>

#include "api/handlers.h"
#include "core/metrics.h"

void kp_h_healthz(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_err err = {0};
    (void)req;
    if (ctx->store->ops->ping(ctx->store, &err) != KP_OK) {
        kp_resp_error(resp, 503, "unavailable", "the database does not answer");
        return;
    }
    kp_resp_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

void kp_h_metrics(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    (void)req;
    kp_buf out = KP_BUF_INIT;
    kp_metrics_render(ctx->app->metrics, &out);
    kp_resp_text(resp, 200, "text/plain; version=0.0.4; charset=utf-8", kp_buf_cstr(&out), out.len);
    kp_buf_free(&out);
}

void kp_h_time_text(int64_t t, char out[KP_H_TIME_MAX])
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    if (strftime(out, KP_H_TIME_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        out[0] = '\0';
}

json_t *kp_h_time_json(int64_t t)
{
    char text[KP_H_TIME_MAX];
    kp_h_time_text(t, text);
    return json_string(text);
}
