/*
 * me_routes.c - the caller's own account: profile with plan and credits, and
 * the credit history. The profile shows the user's Stripe subscription, if
 * any, as the webhooks last described it: authentication's account_get read
 * it with the user (the request budget: docs/ARCHITECTURE.md). The ledger is
 * paged newest first with an opaque cursor (base64url of the last entry's
 * sequence number), so clients never build cursors themselves.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "api/paging.h"
#include "domain/plans.h"

#define LEDGER_DEFAULT_LIMIT 50
#define LEDGER_MAX_LIMIT 100

/* The user's current Stripe subscription as {status, plan_id,
 * current_period_end, cancel_at_period_end}, or null when there is none (or
 * only a checkout knows of it so far: no status from Stripe yet). */
static json_t *subscription_json(const kp_account_subscription *sub)
{
    if (!sub->status[0])
        return json_null();
    return json_pack("{s:s,s:s*,s:o,s:b}", "status", sub->status, "plan_id", sub->plan_id[0] ? sub->plan_id : NULL,
                     "current_period_end",
                     sub->current_period_end ? kp_h_time_json(sub->current_period_end) : json_null(),
                     "cancel_at_period_end", sub->cancel_at_period_end);
}

void kp_h_me(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    /* authentication read the account (user, plan, balance, subscription) in one go */
    (void)ctx;
    const kp_principal *p = &req->principal;
    const kp_balance bal = p->balance;
    json_t *body = json_pack("{s:s,s:s,s:b,s:b,s:o,s:{s:I,s:I,s:I},s:o,s:o}", "id", p->user_id, "email", p->email,
                             "email_verified", p->email_verified, "is_admin", p->is_admin, "plan",
                             kp_plans_to_json(&p->plan), "credits", "daily", (json_int_t)bal.daily, "monthly",
                             (json_int_t)bal.monthly, "total", (json_int_t)(bal.daily + bal.monthly), "created_at",
                             kp_h_time_json(p->created_at), "subscription", subscription_json(&p->subscription));
    kp_resp_json(resp, 200, body);
}

/* The ledger's cursor text is "l:{seq}", the last entry shown. */
static int parse_cursor(const kp_req *req, kp_resp *resp, int64_t *before)
{
    char text[KP_CURSOR_MAX + 1];
    *before = 0;
    if (kp_paging_cursor_decode(req, resp, text) != 0)
        return -1;
    if (!text[0])
        return 0;
    if (strncmp(text, "l:", 2) != 0 || kp_paging_parse_int(text + 2, before) != 0 || *before <= 0)
        return kp_paging_bad_cursor(resp);
    return 0;
}

static json_t *entry_json(const kp_ledger_entry *e)
{
    return json_pack("{s:I,s:I,s:I,s:{s:I,s:I},s:s,s:o}", "delta_daily", (json_int_t)e->delta_daily, "delta_monthly",
                     (json_int_t)e->delta_monthly, "delta", (json_int_t)(e->delta_daily + e->delta_monthly), "balance",
                     "daily", (json_int_t)e->balance_daily, "monthly", (json_int_t)e->balance_monthly, "reason",
                     e->reason, "created_at", kp_h_time_json(e->created_at));
}

void kp_h_me_ledger(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    size_t limit, n = 0;
    int64_t before;
    kp_ledger_entry *entries = NULL;
    kp_err err = {0};
    if (kp_paging_limit(req, resp, LEDGER_DEFAULT_LIMIT, LEDGER_MAX_LIMIT, &limit) != 0 ||
        parse_cursor(req, resp, &before) != 0)
        return;
    /* one extra row tells whether there is a next page */
    if (ctx->store->ops->ledger_list(ctx->store, req->principal.user_id, before, limit + 1, &entries, &n, &err) !=
        KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n && i < limit; i++)
        json_array_append_new(items, entry_json(&entries[i]));
    json_t *next = json_null();
    if (n > limit) {
        char text[32], cursor[64];
        snprintf(text, sizeof text, "l:%lld", (long long)entries[limit - 1].seq);
        kp_paging_cursor_encode(text, cursor, sizeof cursor);
        next = json_string(cursor);
    }
    free(entries);
    kp_resp_json(resp, 200, json_pack("{s:o,s:o}", "entries", items, "next_cursor", next));
}
