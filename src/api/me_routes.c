/*
 * me_routes.c - the caller's own account: profile with plan and credits, and
 * the credit history. The ledger is paged newest first with an opaque cursor
 * (base64url of the last entry's sequence number), so clients never build
 * cursors themselves.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "domain/plans.h"

#define LEDGER_DEFAULT_LIMIT 50
#define LEDGER_MAX_LIMIT 100

void kp_h_me(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_err err = {0};
    kp_plan plan;
    kp_balance bal;
    kp_store *s = ctx->store;
    const kp_principal *p = &req->principal;
    if (s->ops->plan_get(s, p->plan_id, &plan, &err) != KP_OK ||
        s->ops->balance_get(s, p->user_id, &bal, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    json_t *body = json_pack("{s:s,s:s,s:b,s:o,s:{s:I,s:I,s:I},s:o}", "id", p->user_id, "email", p->email,
                             "is_admin", p->is_admin, "plan", kp_plans_to_json(&plan), "credits", "daily",
                             (json_int_t)bal.daily, "monthly", (json_int_t)bal.monthly, "total",
                             (json_int_t)(bal.daily + bal.monthly), "created_at", kp_h_time_json(p->created_at));
    kp_resp_json(resp, 200, body);
}

/* Parses ?limit= (1..100); on failure fills resp. */
static int parse_limit(const kp_req *req, kp_resp *resp, size_t *limit)
{
    const char *v = kp_req_query(req, "limit");
    *limit = LEDGER_DEFAULT_LIMIT;
    if (!v)
        return 0;
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || !end || *end || end == v || n < 1 || n > LEDGER_MAX_LIMIT) {
        kp_resp_error(resp, 400, "invalid_request", "limit must be a whole number from 1 to %d", LEDGER_MAX_LIMIT);
        return -1;
    }
    *limit = (size_t)n;
    return 0;
}

static void encode_cursor(int64_t seq, char *out, size_t n)
{
    char raw[32];
    int len = snprintf(raw, sizeof raw, "l:%lld", (long long)seq);
    sodium_bin2base64(out, n, (const unsigned char *)raw, (size_t)len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* Decodes ?cursor=; on failure fills resp. */
static int parse_cursor(const kp_req *req, kp_resp *resp, int64_t *before)
{
    const char *v = kp_req_query(req, "cursor");
    *before = 0;
    if (!v || !*v)
        return 0;
    unsigned char raw[32];
    size_t len = 0;
    long long seq = 0;
    char text[33];
    if (sodium_base642bin(raw, sizeof raw - 1, v, strlen(v), NULL, &len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0) {
        memcpy(text, raw, len);
        text[len] = '\0';
        char *end = NULL;
        errno = 0;
        if (strncmp(text, "l:", 2) == 0 && text[2] >= '0' && text[2] <= '9')
            seq = strtoll(text + 2, &end, 10);
        if (end && !*end && errno == 0 && seq > 0) {
            *before = seq;
            return 0;
        }
    }
    kp_resp_error(resp, 400, "invalid_request", "cursor is not one this server returned");
    return -1;
}

static json_t *entry_json(const kp_ledger_entry *e)
{
    return json_pack("{s:I,s:I,s:I,s:{s:I,s:I},s:s,s:o}", "delta_daily", (json_int_t)e->delta_daily, "delta_monthly",
                     (json_int_t)e->delta_monthly, "delta", (json_int_t)(e->delta_daily + e->delta_monthly),
                     "balance", "daily", (json_int_t)e->balance_daily, "monthly", (json_int_t)e->balance_monthly,
                     "reason", e->reason, "created_at", kp_h_time_json(e->created_at));
}

void kp_h_me_ledger(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    size_t limit, n = 0;
    int64_t before;
    kp_ledger_entry *entries = NULL;
    kp_err err = {0};
    if (parse_limit(req, resp, &limit) != 0 || parse_cursor(req, resp, &before) != 0)
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
        char cursor[64];
        encode_cursor(entries[limit - 1].seq, cursor, sizeof cursor);
        next = json_string(cursor);
    }
    free(entries);
    kp_resp_json(resp, 200, json_pack("{s:o,s:o}", "entries", items, "next_cursor", next));
}
