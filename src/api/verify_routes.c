/*
 * verify_routes.c - e-mail verification over HTTP (domain/verify.h).
 *
 *   POST /v1/auth/verify {"token"}   consumes the link's token: 200 with the
 *                                    user; 400 invalid_token, 409 token_used,
 *                                    410 token_expired.
 *   POST /v1/auth/verify/resend      (signed in) a new link, the old one
 *                                    stops working: 202; 409 if already
 *                                    verified; 429 beyond 3 an hour; 503
 *                                    when no SMTP server is configured.
 *
 * The mail itself goes out on the mailer's thread (mail/mailer.h).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/handlers.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/ratelimit.h"
#include "domain/accounts.h"
#include "domain/verify.h"
#include "mail/mailer.h"

int kp_h_verification_mail(kp_app *app, kp_store *store, const kp_user *u)
{
    char token[KP_VERIFY_TOKEN_MAX];
    kp_buf subject = KP_BUF_INIT, body = KP_BUF_INIT;
    kp_err err = {0};
    int rc = -1;
    if (kp_verify_issue(store, u->id, app->cfg->verify_ttl_s, token, &err) != KP_OK) {
        kp_log_json(KP_LOG_ERROR, "verification token not stored",
                    json_pack("{s:s,s:s}", "user_id", u->id, "error", err.msg));
        goto cleanup;
    }
    if (kp_verify_mail(app->cfg, token, &subject, &body) != 0 ||
        kp_mailer_send(app->mailer, u->email, kp_buf_cstr(&subject), kp_buf_cstr(&body)) != 0) {
        kp_log_json(KP_LOG_WARN, "verification mail not queued", json_pack("{s:s}", "user_id", u->id));
        goto cleanup;
    }
    rc = 0;
cleanup:
    memset(token, 0, sizeof token);
    kp_buf_free(&subject);
    kp_buf_free(&body);
    return rc;
}

void kp_h_verify(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    json_t *body = NULL;
    kp_err err = {0};
    kp_verify_outcome outcome;
    kp_user u;
    if (kp_req_json_body(req, resp, &body) != 0)
        goto cleanup;
    const char *token = json_string_value(json_object_get(body, "token"));
    if (!token) {
        kp_resp_error(resp, 400, "invalid_request", "token is required and must be a string (from the link)");
        goto cleanup;
    }
    if (kp_verify_consume(ctx->store, token, (int64_t)time(NULL), &outcome, &u, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        goto cleanup;
    }
    switch (outcome) {
    case KP_VERIFY_DONE:
        kp_resp_json(resp, 200, json_pack("{s:b,s:o}", "email_verified", 1, "user", kp_h_user_json(ctx->app->cfg, &u)));
        break;
    case KP_VERIFY_USED: kp_resp_error(resp, 409, "token_used", "this verification link has already been used"); break;
    case KP_VERIFY_EXPIRED:
        kp_resp_error(
            resp, 410, "token_expired",
            "this verification link has expired; sign in and ask for a new one (POST /v1/auth/verify/resend)");
        break;
    default:
        kp_resp_error(resp, 400, "invalid_token",
                      "this verification link is not valid (mistyped, or replaced by a newer mail)");
    }
cleanup:
    json_decref(body);
}

void kp_h_verify_resend(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_user u;
    kp_err err = {0};
    const kp_principal *p = &req->principal;
    if (!ctx->app->mailer) {
        kp_resp_error(resp, 503, "verification_unavailable",
                      "e-mail verification is not configured on this server (no KOUMPA_SMTP_URL)");
        return;
    }
    if (p->email_verified) {
        kp_resp_error(resp, 409, "already_verified", "your e-mail address is already verified");
        return;
    }
    if (!p->email[0]) {
        kp_resp_error(resp, 409, "no_email", "this account has no e-mail address to verify");
        return;
    }
    long retry = kp_ratelimit_hit(ctx->app->resend_limit, p->user_id, kp_clock_mono_s());
    if (retry) {
        char seconds[32];
        snprintf(seconds, sizeof seconds, "%ld", retry);
        kp_resp_error(resp, 429, "rate_limited", "too many verification mails; try again in %ld s", retry);
        kp_headers_set(&resp->headers, "Retry-After", seconds);
        return;
    }
    if (ctx->store->ops->user_get(ctx->store, p->user_id, &u, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    if (kp_h_verification_mail(ctx->app, ctx->store, &u) != 0) {
        kp_resp_error(resp, 503, "mail_busy", "the verification mail could not be queued; try again in a minute");
        kp_headers_set(&resp->headers, "Retry-After", "60");
        return;
    }
    kp_resp_json(resp, 202, json_pack("{s:b,s:s}", "sent", 1, "email", u.email));
}
