/*
 * functions.c - see functions.h.
 */
#include "host/lambda/functions.h"

#include <stdio.h>
#include <string.h>

#include "api/router.h"

const char *const kp_lambda_function_names[] = {
    "get-user", "list-projects", "generate-app", "admin-update-plan", "stripe-webhook", "daily-bonus", NULL,
};

const kp_lambda_route kp_lambda_routes[] = {
    {"get-user", "GET", "/v1/me"},
    {"get-user", "GET", "/v1/me/ledger"},
    {"get-user", "GET", "/v1/plans"},
    {"list-projects", "GET", "/v1/projects"},
    {"list-projects", "GET", "/v1/projects/{id}"},
    {"list-projects", "GET", "/v1/projects/{id}/versions/{n}/download"},
    {"list-projects", "GET", "/v1/projects/{id}/versions/{n}/file"},
    {"generate-app", "POST", "/v1/projects"},
    {"generate-app", "POST", "/v1/projects/{id}/versions"},
    {"generate-app", "POST", "/v1/projects/{id}/cancel"},
    {"generate-app", "DELETE", "/v1/projects/{id}"},
    {"generate-app", "GET", "/v1/projects/{id}/events"},
    {"admin-update-plan", "GET", "/v1/admin/users"},
    {"admin-update-plan", "PUT", "/v1/admin/plans/{id}"},
    {"admin-update-plan", "PUT", "/v1/admin/users/{id}/plan"},
    {"admin-update-plan", "PUT", "/v1/admin/users/{id}/admin"},
    {"stripe-webhook", "POST", "/v1/webhooks/stripe"},
    {"stripe-webhook", "POST", "/v1/billing/checkout"},
    {"stripe-webhook", "POST", "/v1/billing/portal"},
    {NULL, NULL, NULL},
};

const char *const kp_lambda_not_routed[] = {
    "GET",  "/",                      /* the self-hosted server's dashboard (on AWS: CloudFront) */
    "GET",  "/config.json",           /* ... and its settings (on AWS: a file beside it) */
    "GET",  "/healthz",               /* Lambda has no long-lived process to probe */
    "GET",  "/metrics",               /* CloudWatch measures the functions */
    "POST", "/v1/auth/signup",        /* Cognito signs users up */
    "POST", "/v1/auth/login",         /* ... logs them in */
    "POST", "/v1/auth/verify",        /* ... and verifies their e-mail */
    "POST", "/v1/auth/verify/resend", /* */
    NULL,
};

int kp_lambda_function_known(const char *name)
{
    for (const char *const *n = kp_lambda_function_names; name && *n; n++)
        if (strcmp(*n, name) == 0)
            return 1;
    return 0;
}

const char *kp_lambda_route_owner(const char *method, const char *path)
{
    const char *m = strcmp(method, "HEAD") == 0 ? "GET" : method;
    for (const kp_lambda_route *r = kp_lambda_routes; r->function; r++)
        if (strcmp(r->method, m) == 0 && kp_router_match(r->pattern, path, NULL))
            return r->function;
    return NULL;
}

json_t *kp_lambda_routes_json(void)
{
    json_t *out = json_array();
    for (const kp_lambda_route *r = kp_lambda_routes; out && r->function; r++) {
        char key[160];
        snprintf(key, sizeof key, "%s %s", r->method, r->pattern);
        json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s}", "function", r->function, "method", r->method, "path",
                                             r->pattern, "route_key", key));
    }
    return out;
}
