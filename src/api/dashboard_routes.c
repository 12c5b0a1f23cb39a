/*
 * dashboard_routes.c - the web dashboard on the API's origin: GET / (its
 * index.html), GET /config.json (what the dashboard reads at start), and,
 * through the router's fallback, GET/HEAD /<path> of each of its files.
 * The serving itself (headers, gzip, ETags) is api/dashboard.c's; a server
 * without a dashboard (the Lambda bootstrap) answers these with the JSON 404.
 * Nothing under /v1/ is ever a dashboard file: the API keeps its own 404s.
 */
#include <string.h>

#include "api/dashboard.h"
#include "api/handlers.h"

#define FILE_ROUTE "/{file}"

static void no_dashboard(kp_req *req, kp_resp *resp)
{
    kp_resp_error(resp, 404, "not_found", "no such endpoint: %s %s (this server has no dashboard)", req->method,
                  req->path);
}

void kp_h_dashboard_index(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    if (!ctx->app || !kp_dashboard_serve(ctx->app->dashboard, req, "index.html", resp))
        no_dashboard(req, resp);
}

void kp_h_dashboard_config(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    if (ctx->app && ctx->app->dashboard)
        kp_dashboard_config(ctx->app->dashboard, req, resp);
    else
        no_dashboard(req, resp);
}

int kp_h_dashboard_file(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    if (!ctx->app || !ctx->app->dashboard || (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) ||
        req->path[0] != '/' || strncmp(req->path, "/v1/", 4) == 0)
        return 0;
    if (!kp_dashboard_serve(ctx->app->dashboard, req, req->path + 1, resp))
        return 0;
    req->route = FILE_ROUTE;
    return 1;
}
