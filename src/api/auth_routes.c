/*
 * auth_routes.c - sign-up and login: credentials in, a bearer token out.
 *
 * What is cheap runs on the HTTP thread: the body, the per-address sign-up
 * limit, the per-address and per-e-mail login limits. The password hash
 * (Argon2id, deliberately slow) and the database work around it run on the
 * password-hashing pool (api/offload.h), answered through a deferred
 * response; a full queue is a 503 with Retry-After.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "api/handlers.h"
#include "api/offload.h"
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

static void respond_with_token(kp_app *app, const char *request_id, kp_resp *resp, int status, const kp_user *u)
{
    kp_err err = {0};
    char *token = NULL;
    int64_t expires_at = 0;
    if (kp_auth_issue(app->auth, u->id, u->email, &token, &expires_at, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, request_id);
        return;
    }
    json_t *user = kp_h_user_json(app->cfg, u);
    kp_resp_json(resp, status,
                 json_pack("{s:s,s:o,s:o}", "token", token, "expires_at", kp_h_time_json(expires_at), "user", user));
    free(token);
}

/* 429 with Retry-After and a message saying what was limited. */
static void too_many(kp_resp *resp, long retry, const char *what)
{
    char seconds[32];
    snprintf(seconds, sizeof seconds, "%ld", retry);
    kp_resp_error(resp, 429, "rate_limited", "too many %s; try again in %ld s", what, retry);
    kp_headers_set(&resp->headers, "Retry-After", seconds);
}

/* ---- the work done on the password-hashing pool ---- */

/* What a pool job needs: copies, since the request is gone by then. */
typedef struct credentials_job {
    kp_app *app;
    char request_id[64];
    char *email;
    char *password; /* wiped before it is freed */
    int signup;     /* 1: sign-up, 0: login */
} credentials_job;

static void free_credentials_job(void *arg)
{
    credentials_job *j = arg;
    if (j->password) {
        sodium_memzero(j->password, strlen(j->password));
        free(j->password);
    }
    free(j->email);
    free(j);
}

static credentials_job *new_credentials_job(kp_ctx *ctx, const kp_req *req, const char *email, const char *password,
                                            int signup)
{
    credentials_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->app = ctx->app;
    j->signup = signup;
    snprintf(j->request_id, sizeof j->request_id, "%s", req->request_id ? req->request_id : "");
    j->email = strdup(email);
    j->password = strdup(password);
    if (!j->email || !j->password) {
        free_credentials_job(j);
        return NULL;
    }
    return j;
}

/* Signs up (201) or logs in (200) with the job's credentials. */
static void credentials_on_pool(void *arg, kp_store *store, kp_resp *resp)
{
    credentials_job *j = arg;
    kp_err err = {0};
    kp_user u;
    kp_status rc = j->signup ? kp_accounts_signup(store, j->app->cfg, j->email, j->password, &u, &err)
                             : kp_accounts_login(store, j->app->cfg, j->email, j->password, &u, &err);
    if (rc != KP_OK) {
        kp_resp_from_err(resp, &err, j->request_id);
        return;
    }
    if (j->signup && j->app->mailer) /* a failure here is logged; the user can ask for another mail */
        kp_h_verification_mail(j->app, store, &u);
    respond_with_token(j->app, j->request_id, resp, j->signup ? 201 : 200, &u);
}

/* Hands the credentials to the pool; resp becomes deferred (or a 503). */
static void defer_to_pool(kp_ctx *ctx, kp_req *req, kp_resp *resp, const char *email, const char *password, int signup)
{
    credentials_job *j = new_credentials_job(ctx, req, email, password, signup);
    if (!j) {
        kp_resp_error(resp, 503, "busy", "out of memory; try again later");
        return;
    }
    kp_offload_defer(ctx->app->pwhash, resp, credentials_on_pool, free_credentials_job, j);
}

/* ---- handlers ---- */

/* Counts a sign-up against the client address (the connection's peer;
 * X-Forwarded-For is not trusted); 429 when over. */
static int signup_limited(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    long retry = kp_ratelimit_hit(ctx->app->signup_limit, req->remote_addr ? req->remote_addr : "-", kp_clock_mono_s());
    if (!retry)
        return 0;
    too_many(resp, retry, "sign-ups from this address");
    return 1;
}

void kp_h_signup(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    json_t *body = NULL;
    const char *email, *password;
    if (read_credentials(req, resp, &body, &email, &password) != 0 || signup_limited(ctx, req, resp))
        goto cleanup;
    defer_to_pool(ctx, req, resp, email, password, 1);
cleanup:
    json_decref(body);
}

/* Counts a login attempt against the client address and the e-mail, each in
 * its own table (so neither kind of key can crowd out the other); 429 when
 * either is over. The address is the connection's peer: X-Forwarded-For is
 * not trusted. */
static int login_limited(kp_ctx *ctx, kp_req *req, kp_resp *resp, const char *email)
{
    char norm[KP_EMAIL_MAX];
    int64_t now = kp_clock_mono_s();
    long retry = kp_ratelimit_hit(ctx->app->login_ip_limit, req->remote_addr ? req->remote_addr : "-", now);
    if (!retry && kp_accounts_normalise_email(email, norm, NULL) == KP_OK)
        retry = kp_ratelimit_hit(ctx->app->login_email_limit, norm, now);
    if (!retry)
        return 0;
    too_many(resp, retry, "login attempts");
    return 1;
}

void kp_h_login(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    json_t *body = NULL;
    const char *email, *password;
    if (read_credentials(req, resp, &body, &email, &password) != 0 || login_limited(ctx, req, resp, email))
        goto cleanup;
    defer_to_pool(ctx, req, resp, email, password, 0);
cleanup:
    json_decref(body);
}
