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
/* GET /v1/me's body is about 400 bytes, 550 with a subscription. The buffer
 * kp_buf_reserve makes for 720 is 729 bytes: glibc's per-thread cache serves
 * blocks up to 1,032 bytes, and a larger one, asked for on every request,
 * made glibc consolidate its fast bins each time (malloc_consolidate, 1.7 %
 * of the server's CPU under make bench). */
#define ME_BODY_RESERVE 720

/* The user's current Stripe subscription as {status, plan_id,
 * current_period_end, cancel_at_period_end}, or null when there is none (or
 * only a checkout knows of it so far: no status from Stripe yet). */
static void subscription_write(kp_jsonw *w, const kp_account_subscription *sub)
{
    char end[KP_H_TIME_MAX];
    if (!sub->status[0]) {
        kp_jsonw_null(w, "subscription");
        return;
    }
    kp_jsonw_open(w, "subscription");
    kp_jsonw_str(w, "status", sub->status);
    kp_jsonw_str(w, "plan_id", sub->plan_id[0] ? sub->plan_id : NULL);
    if (sub->current_period_end)
        kp_h_time_text(sub->current_period_end, end);
    kp_jsonw_str(w, "current_period_end", sub->current_period_end ? end : NULL);
    kp_jsonw_bool(w, "cancel_at_period_end", sub->cancel_at_period_end);
    kp_jsonw_close(w);
}

/* Written straight into the response body (no jansson tree: the most frequent request). */
void kp_h_me(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    /* authentication read the account (user, plan, balance, subscription) in one go */
    (void)ctx;
    const kp_principal *p = &req->principal;
    const kp_balance bal = p->balance;
    char created[KP_H_TIME_MAX];
    kp_jsonw w;
    kp_h_time_text(p->created_at, created);
    kp_buf_reset(&resp->body);
    kp_buf_reserve(&resp->body, ME_BODY_RESERVE); /* one allocation, not one per doubling */
    kp_jsonw_init(&w, &resp->body);
    kp_jsonw_open(&w, NULL);
    kp_jsonw_str(&w, "id", p->user_id);
    kp_jsonw_str(&w, "email", p->email);
    kp_jsonw_bool(&w, "email_verified", p->email_verified);
    kp_jsonw_bool(&w, "is_admin", p->is_admin);
    kp_plans_write(&w, "plan", &p->plan);
    kp_jsonw_open(&w, "credits");
    kp_jsonw_int(&w, "daily", bal.daily);
    kp_jsonw_int(&w, "monthly", bal.monthly);
    kp_jsonw_int(&w, "total", bal.daily + bal.monthly);
    kp_jsonw_close(&w);
    kp_jsonw_str(&w, "created_at", created);
    subscription_write(&w, &p->subscription);
    kp_jsonw_close(&w);
    if (kp_jsonw_end(&w) != 0) {
        kp_resp_error(resp, 500, "internal_error", "out of memory");
        return;
    }
    kp_resp_json_written(resp, 200);
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
