/* system_routes.c - the server's own endpoints: a landing page, health, metrics. */
#include <string.h>
#include <time.h>

#include "api/handlers.h"
#include "core/metrics.h"

static const char landing_page[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Koumpa API</title>\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;color:#222}"
    "code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}</style></head><body>\n"
    "<h1>Koumpa</h1>\n<p>Koumpa turns a sentence into a working web app. This server is its JSON API; "
    "there is no web dashboard here yet.</p>\n<h2>Entry points</h2>\n<ul>\n"
    "<li><code>POST /v1/auth/signup</code> and <code>POST /v1/auth/login</code> with "
    "<code>{\"email\", \"password\"}</code> return a bearer token</li>\n"
    "<li><code>GET /v1/me</code> shows your plan and credits</li>\n"
    "<li><code>POST /v1/projects</code> with <code>{\"prompt\"}</code> generates an app "
    "(send <code>Accept: text/event-stream</code> to watch it being written); "
    "<code>GET /v1/projects</code> lists yours; each is served on the apps origin</li>\n"
    "<li><code>GET /v1/plans</code> lists the plans</li>\n"
    "<li><code>GET /healthz</code> and <code>GET /metrics</code> for operators</li>\n</ul>\n"
    "<p>The full reference is <code>docs/api/openapi.yaml</code> in the source tree; "
    "README.md says how to run and configure the server.</p>\n</body></html>\n";

void kp_h_root(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    (void)ctx;
    (void)req;
    kp_resp_text(resp, 200, "text/html; charset=utf-8", landing_page, sizeof landing_page - 1);
}

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

json_t *kp_h_time_json(int64_t t)
{
    char text[32];
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(text);
}
