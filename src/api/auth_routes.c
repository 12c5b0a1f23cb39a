/* auth_routes.c - sign-up and login: credentials in, a bearer token out. */
#include <stdio.h>
#include <time.h>

#include "api/handlers.h"
#include "auth/auth.h"
#include "core/clock.h"
#include "core/ratelimit.h"
#include "domain/accounts.h"

/* Reads {email, password} strings; on failure fills resp and returns -1. */
static int read_credentials(kp_req *req, kp_resp *resp, json_t **body, const char **email, const char **password)
{
    if (kp_req_json_body(req, resp, body) != 0)
        return -1;
    json_t *e = json_object_get(*body, "email");
    json_t *p = json_object_get(*body, "password");
    if (!e || !json_is_string(e)) {
        kp_resp_error(resp, 400, "invalid_request", "email is required and must be a string");
        return -1;
    }
    if (!p || !json_is_string(p)) {
        kp_resp_error(resp, 400, "invalid_request", "password is required and must be a string");
        return -1;
    }
    *email = json_string_value(e);
    *password = json_string_value(p);
    return 0;
}

static void respond_with_token(kp_ctx *ctx, kp_req *req, kp_resp *resp, int status, const kp_user *u)
{
    kp_err err = {0};
    char *token = NULL;
    int64_t expires_at = 0;
    if (kp_auth_issue(ctx->app->auth, u->id, u->email, &token, &expires_at, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    json_t *user = json_pack("{s:s,s:s,s:b,s:s,s:o}", "id", u->id, "email", u->email, "is_admin",
                             kp_accounts_is_admin(ctx->app->cfg, u), "plan_id", u->plan_id, "created_at",
                             kp_h_time_json(u->created_at));
    kp_resp_json(resp, status,
                 json_pack("{s:s,s:o,s:o}", "token", token, "expires_at", kp_h_time_json(expires_at), "user", user));
    free(token);
}

void kp_h_signup(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    json_t *body = NULL;
    const char *email, *password;
    kp_err err = {0};
    kp_user u;
    if (read_credentials(req, resp, &body, &email, &password) != 0)
        goto cleanup;
    if (kp_accounts_signup(ctx->store, ctx->app->cfg, email, password, &u, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        goto cleanup;
    }
    respond_with_token(ctx, req, resp, 201, &u);
cleanup:
    json_decref(body);
}

/* Counts a login attempt against the client address and the e-mail, each in
 * its own table (so neither kind of key can crowd out the other); 429 when
 * either is over. The address is the connection's peer: X-Forwarded-For is
 * not trusted. */
static int rate_limited(kp_ctx *ctx, kp_req *req, kp_resp *resp, const char *email)
{
    char norm[KP_EMAIL_MAX];
    int64_t now = kp_clock_mono_s();
    long retry = kp_ratelimit_hit(ctx->app->login_ip_limit, req->remote_addr ? req->remote_addr : "-", now);
    if (!retry && kp_accounts_normalise_email(email, norm, NULL) == KP_OK)
        retry = kp_ratelimit_hit(ctx->app->login_email_limit, norm, now);
    if (!retry)
        return 0;
    char seconds[32];
    snprintf(seconds, sizeof seconds, "%ld", retry);
    kp_resp_error(resp, 429, "rate_limited", "too many login attempts; try again in %ld s", retry);
    kp_headers_set(&resp->headers, "Retry-After", seconds);
    return 1;
}

void kp_h_login(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    json_t *body = NULL;
    const char *email, *password;
    kp_err err = {0};
    kp_user u;
    if (read_credentials(req, resp, &body, &email, &password) != 0)
        goto cleanup;
    if (rate_limited(ctx, req, resp, email))
        goto cleanup;
    if (kp_accounts_login(ctx->store, ctx->app->cfg, email, password, &u, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        goto cleanup;
    }
    respond_with_token(ctx, req, resp, 200, &u);
cleanup:
    json_decref(body);
}
