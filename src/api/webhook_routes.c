/*
 * webhook_routes.c - Stripe's webhooks over HTTP.
 *
 *   POST /v1/webhooks/stripe   (no bearer token: Stripe signs instead)
 *     200 {"received":true,"outcome"}  applied, a redelivery, ignored or stale
 *     400 invalid_signature            Stripe-Signature missing, malformed, stale,
 *                                      from the future, or matching no secret
 *     400 invalid_event                the body is not JSON or not an event
 *     409 not_linked                   a paid invoice for no known user yet
 *                                      (Stripe delivers it again later)
 *     503 billing_not_configured       STRIPE_WEBHOOK_SECRET is not set
 *
 * The signature is checked on the raw body before anything parses it
 * (auth/stripe_sig.h), with the secrets service's STRIPE_WEBHOOK_SECRET (a
 * comma-separated list while a secret is rolled); the event then goes to the
 * domain (domain/billing.h), which writes all it changes in one store
 * transaction. Nothing here calls out over the network. Every outcome is one
 * log line: why a signature failed (never the secret), what an event did.
 */
#include <string.h>
#include <time.h>

#include "api/handlers.h"
#include "auth/stripe_sig.h"
#include "core/log.h"
#include "domain/billing.h"
#include "domain/stripe_event.h"
#include "secrets/secrets.h"

/* The webhook secrets, or an error response (503 when none is configured). */
static int webhook_secrets(kp_ctx *ctx, kp_req *req, kp_resp *resp, char **secrets, size_t *len)
{
    kp_err err = {0};
    kp_status rc = ctx->app->secrets
                       ? kp_secrets_get(ctx->app->secrets, KP_SECRET_STRIPE_WEBHOOK_SECRET, secrets, len, &err)
                       : KP_ENOTFOUND;
    if (rc == KP_OK)
        return 0;
    if (rc == KP_ENOTFOUND)
        kp_resp_error(resp, 503, "billing_not_configured",
                      "Stripe webhooks are not configured: set STRIPE_WEBHOOK_SECRET (or STRIPE_WEBHOOK_SECRET_FILE)");
    else
        kp_resp_from_err(resp, &err, req->request_id);
    return -1;
}

static void refuse_signature(kp_req *req, kp_resp *resp, kp_stripe_sig_status st, const char *detail)
{
    kp_log_json(KP_LOG_WARN, "stripe webhook refused",
                json_pack("{s:s,s:s,s:s}", "reason", kp_stripe_sig_reason(st), "detail", detail, "request_id",
                          req->request_id ? req->request_id : ""));
    kp_resp_error(resp, 400, "invalid_signature", "Stripe-Signature: %s", detail);
}

/* 0 when the body is signed by one of our secrets; else resp is the error. */
static int verify_signature(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    char *secrets = NULL;
    size_t len = 0;
    const char *detail = "";
    if (webhook_secrets(ctx, req, resp, &secrets, &len) != 0)
        return -1;
    kp_stripe_sig_status st =
        kp_stripe_sig_verify(kp_req_header(req, "Stripe-Signature"), req->body, req->body_len, secrets,
                             (int64_t)time(NULL), ctx->app->cfg->stripe_tolerance_s, &detail);
    kp_secrets_value_free(secrets, len);
    if (st == KP_STRIPE_SIG_NO_SECRET) {
        kp_resp_error(resp, 503, "billing_not_configured",
                      "Stripe webhooks are not configured: STRIPE_WEBHOOK_SECRET holds no secret");
        return -1;
    }
    if (st != KP_STRIPE_SIG_OK) {
        refuse_signature(req, resp, st, detail);
        return -1;
    }
    return 0;
}

static kp_log_level outcome_level(kp_billing_outcome o)
{
    switch (o) {
    case KP_BILLING_IGNORED: return KP_LOG_DEBUG;
    case KP_BILLING_UNKNOWN_PRICE: return KP_LOG_ERROR; /* operators must map the price to a plan */
    case KP_BILLING_NO_USER:
    case KP_BILLING_NOT_LINKED: return KP_LOG_WARN;
    default: return KP_LOG_INFO;
    }
}

static void log_outcome(const kp_req *req, const kp_stripe_event *ev, const kp_billing_result *r)
{
    kp_log_level level = outcome_level(r->outcome);
    if (!kp_log_enabled(level))
        return;
    kp_log_json(level, "stripe event",
                json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:s}", "event_id", ev->id, "type", ev->type, "outcome",
                          kp_billing_outcome_name(r->outcome), "note", r->note ? r->note : "", "object", ev->object_id,
                          "price_id", ev->price_id, "user_id", r->user_id, "plan_id", r->plan_id, "credited",
                          (json_int_t)r->credited, "request_id", req->request_id ? req->request_id : ""));
}

void kp_h_stripe_webhook(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_stripe_event ev;
    kp_billing_result r;
    kp_err err = {0};
    if (verify_signature(ctx, req, resp) != 0)
        return;
    if (kp_stripe_event_parse(req->body, req->body_len, &ev, &err) != KP_OK) {
        kp_resp_error(resp, 400, "invalid_event", "%s", err.msg);
        return;
    }
    if (kp_billing_handle(ctx->store, &ev, &r, &err) != KP_OK) {
        kp_log_json(KP_LOG_ERROR, "stripe event not applied",
                    json_pack("{s:s,s:s,s:s}", "event_id", ev.id, "type", ev.type, "error", err.msg));
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    log_outcome(req, &ev, &r);
    if (r.outcome == KP_BILLING_NOT_LINKED)
        kp_resp_error(resp, 409, "not_linked",
                      "subscription %s is linked to no user yet: deliver the event again after "
                      "checkout.session.completed",
                      ev.subscription_id);
    else
        kp_resp_json(resp, 200, json_pack("{s:b,s:s}", "received", 1, "outcome", kp_billing_outcome_name(r.outcome)));
}
