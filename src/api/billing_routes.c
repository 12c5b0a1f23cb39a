/*
 * billing_routes.c - the two billing calls a user makes: POST
 * /v1/billing/checkout (a Stripe Checkout Session for a paid plan) and POST
 * /v1/billing/portal (a Stripe Billing Portal session to manage or cancel).
 * Both answer {"url"}: where the client sends the user's browser. What
 * happens after - the subscription, the plan, the credits - arrives through
 * the webhook, never through these routes.
 *
 * What is cheap runs on the HTTP thread: the configuration check, the body,
 * the plan and the user's Stripe customer (two reads of this thread's
 * database handle). The call to Stripe - up to seconds, and retried - runs
 * on the billing pool (api/offload.h, app->billing), answered through a
 * deferred response, so a slow Stripe never holds an HTTP worker; a full
 * queue is a 503 with Retry-After.
 *
 * The links Stripe sends the user back to, all the dashboard's "Credits and
 * plan" screen under KOUMPA_PUBLIC_URL (routing in the dashboard is by hash,
 * so no host needs a rewrite; the query says what happened, and the screen
 * removes it once read):
 *   success  {public}/?checkout=success&session_id={CHECKOUT_SESSION_ID}#/billing
 *            (Stripe fills in the session id)
 *   cancel   {public}/?checkout=cancel#/billing
 *   portal   {public}/#/billing  (the portal's "return" link)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "api/offload.h"
#include "core/log.h"
#include "stripe/stripe_api.h"

#define SUCCESS_PATH "/?checkout=success&session_id={CHECKOUT_SESSION_ID}#/billing"
#define CANCEL_PATH "/?checkout=cancel#/billing"
#define RETURN_PATH "/#/billing"

/* 503 billing_not_configured unless Stripe can be called; returns 1 when it answered. */
static int not_configured(kp_ctx *ctx, kp_resp *resp)
{
    if (ctx->app->billing && kp_stripe_configured(ctx->app->stripe))
        return 0;
    kp_resp_error(resp, 503, "billing_not_configured", "billing is not configured: set %s",
                  KP_SECRET_STRIPE_SECRET_KEY);
    return 1;
}

/* {public_url}{path}, without a doubled '/'; NULL when out of memory. */
static char *public_link(const kp_config *cfg, const char *path)
{
    kp_buf b = KP_BUF_INIT;
    size_t n = strlen(cfg->public_url);
    while (n && cfg->public_url[n - 1] == '/')
        n--;
    if (kp_buf_printf(&b, "%.*s%s", (int)n, cfg->public_url, path) != 0) {
        kp_buf_free(&b);
        return NULL;
    }
    return kp_buf_steal(&b);
}

/* ---- the work done on the billing pool ---- */

/* What a pool job needs: copies, since the request is gone by then. */
typedef struct billing_job {
    kp_app *app;
    char request_id[64];
    int portal; /* 1: a portal session; 0: a checkout session */
    char user_id[KP_ID_MAX];
    char email[KP_EMAIL_MAX];
    char customer_id[KP_STRIPE_ID_MAX];
    char price_id[KP_NAME_MAX];
    char *success_url; /* the portal's return_url when portal */
    char *cancel_url;
} billing_job;

static void free_billing_job(void *arg)
{
    billing_job *j = arg;
    free(j->success_url);
    free(j->cancel_url);
    free(j);
}

/* A failed call to Stripe: 502 naming Stripe's message, or what went wrong on the way. */
static void stripe_failed(const billing_job *j, const kp_stripe_result *res, const kp_err *err, kp_resp *resp)
{
    kp_log_json(KP_LOG_ERROR, "billing call to Stripe failed",
                json_pack("{s:s,s:s,s:s,s:I,s:i,s:s,s:s,s:s}", "request_id", j->request_id, "call",
                          j->portal ? "portal" : "checkout", "user_id", j->user_id, "stripe_status",
                          (json_int_t)res->http_status, "attempts", res->attempts, "stripe_error_code", res->error_code,
                          "stripe_request_id", res->request_id, "detail", err->msg));
    if (err->status == KP_EUNAVAILABLE && !kp_stripe_configured(j->app->stripe))
        kp_resp_error(resp, 503, "billing_not_configured", "billing is not configured: set %s",
                      KP_SECRET_STRIPE_SECRET_KEY);
    else if (err->status == KP_EIO && res->http_status)
        kp_resp_error(resp, 502, "stripe_error", "%s", err->msg);
    else if (err->status == KP_EIO)
        kp_resp_error(resp, 502, "stripe_unavailable", "%s", err->msg);
    else
        kp_resp_from_err(resp, err, j->request_id);
}

static void billing_on_pool(void *arg, kp_store *store, kp_resp *resp)
{
    billing_job *j = arg;
    kp_stripe_result res;
    kp_err err = {0};
    char *url = NULL;
    kp_status rc;
    (void)store;
    if (j->portal) {
        rc = kp_stripe_portal_create(j->app->stripe, j->customer_id, j->success_url, &url, &res, &err);
    } else {
        kp_stripe_checkout c = {
            .price_id = j->price_id,
            .user_id = j->user_id,
            .customer_id = j->customer_id,
            .customer_email = j->email,
            .success_url = j->success_url,
            .cancel_url = j->cancel_url,
        };
        rc = kp_stripe_checkout_create(j->app->stripe, &c, &url, &res, &err);
    }
    if (rc == KP_OK)
        kp_resp_json(resp, 200, json_pack("{s:s}", "url", url));
    else
        stripe_failed(j, &res, &err, resp);
    free(url);
}

static billing_job *new_billing_job(kp_ctx *ctx, const kp_req *req, int portal, const kp_billing_customer *cust)
{
    const kp_config *cfg = ctx->app->cfg;
    billing_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->app = ctx->app;
    j->portal = portal;
    snprintf(j->request_id, sizeof j->request_id, "%s", req->request_id ? req->request_id : "");
    snprintf(j->user_id, sizeof j->user_id, "%s", req->principal.user_id);
    snprintf(j->email, sizeof j->email, "%s", req->principal.email);
    snprintf(j->customer_id, sizeof j->customer_id, "%s", cust->customer_id);
    j->success_url = public_link(cfg, portal ? RETURN_PATH : SUCCESS_PATH);
    j->cancel_url = portal ? NULL : public_link(cfg, CANCEL_PATH);
    if (!j->success_url || (!portal && !j->cancel_url)) {
        free_billing_job(j);
        return NULL;
    }
    return j;
}

/* Hands the job to the billing pool; resp becomes deferred (or a 503). */
static void defer_to_pool(kp_ctx *ctx, kp_resp *resp, billing_job *j)
{
    if (!j) {
        kp_resp_error(resp, 503, "busy", "out of memory; try again later");
        return;
    }
    kp_offload_defer(ctx->app->billing, resp, billing_on_pool, free_billing_job, j);
}

/* ---- checks on the HTTP thread ---- */

/* The user's Stripe customer ("" customer_id when none); -1 with resp filled on a store failure. */
static int read_customer(kp_ctx *ctx, kp_req *req, kp_resp *resp, kp_billing_customer *out)
{
    kp_err err = {0};
    memset(out, 0, sizeof *out);
    kp_status rc = ctx->store->ops->billing_customer_get(ctx->store, req->principal.user_id, out, &err);
    if (rc == KP_ENOTFOUND) {
        memset(out, 0, sizeof *out);
        return 0;
    }
    if (rc != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return -1;
    }
    return 0;
}

/* The plan the body names, if it can be bought; -1 with resp filled otherwise. */
static int read_plan(kp_ctx *ctx, kp_req *req, kp_resp *resp, kp_plan *plan)
{
    json_t *body = NULL;
    kp_err err = {0};
    int ok = -1;
    if (kp_req_json_body(req, resp, &body) != 0)
        return -1;
    const char *id = json_string_value(json_object_get(body, "plan_id"));
    if (!id || !*id) {
        kp_resp_error(resp, 400, "invalid_request", "plan_id is required and must be a non-empty string");
        goto cleanup;
    }
    kp_status rc = ctx->store->ops->plan_get(ctx->store, id, plan, &err);
    if (rc == KP_ENOTFOUND)
        kp_resp_error(resp, 404, "plan_not_found", "no plan with id '%s'", id);
    else if (rc != KP_OK)
        kp_resp_from_err(resp, &err, req->request_id);
    else if (plan->price_cents == 0)
        kp_resp_error(resp, 400, "plan_free", "plan '%s' is free: there is nothing to pay", plan->id);
    else if (!plan->active)
        kp_resp_error(resp, 400, "plan_inactive", "plan '%s' is no longer offered", plan->id);
    else if (!plan->stripe_price_id[0])
        kp_resp_error(resp, 400, "plan_not_purchasable",
                      "plan '%s' has no Stripe price yet (an admin sets its stripe_price_id)", plan->id);
    else
        ok = 0;
cleanup:
    json_decref(body);
    return ok;
}

/* ---- handlers ---- */

void kp_h_billing_checkout(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_plan plan;
    kp_billing_customer cust;
    if (not_configured(ctx, resp) || read_plan(ctx, req, resp, &plan) != 0 || read_customer(ctx, req, resp, &cust) != 0)
        return;
    billing_job *j = new_billing_job(ctx, req, 0, &cust);
    if (j)
        snprintf(j->price_id, sizeof j->price_id, "%s", plan.stripe_price_id);
    defer_to_pool(ctx, resp, j);
}

void kp_h_billing_portal(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_billing_customer cust;
    if (not_configured(ctx, resp) || read_customer(ctx, req, resp, &cust) != 0)
        return;
    if (!cust.customer_id[0]) {
        kp_resp_error(resp, 409, "no_customer",
                      "you have no Stripe customer yet: subscribe to a plan first (POST /v1/billing/checkout)");
        return;
    }
    defer_to_pool(ctx, resp, new_billing_job(ctx, req, 1, &cust));
}
