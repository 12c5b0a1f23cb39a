/*
 * ddb_items.c - keys and struct <-> item conversions (see ddb_items.h).
 */
#include "store/dynamodb/ddb_items.h"

#include <inttypes.h>
#include <stdio.h>

#include "store/dynamodb/ddb_client.h"

void kp_ddb_key(char *out, const char *prefix, const char *id)
{
    snprintf(out, KP_DDB_KEY_MAX, "%s%s", prefix, id ? id : "");
}

json_t *kp_ddb_key_item(const char *pk, const char *sk)
{
    return json_pack("{s:o, s:o}", "PK", kp_ddb_s(pk), "SK", kp_ddb_s(sk));
}

void kp_ddb_ledger_sk(char *out, int64_t seq)
{
    snprintf(out, KP_DDB_KEY_MAX, "L#%019" PRId64, seq);
}

json_t *kp_ddb_plan_item(const kp_plan *p)
{
    char sk[KP_DDB_KEY_MAX];
    kp_ddb_key(sk, "PLAN#", p->id);
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "PK", kp_ddb_s(KP_DDB_PLANS), "SK",
                     kp_ddb_s(sk), "id", kp_ddb_s(p->id), "name", kp_ddb_s(p->name), "price_cents",
                     kp_ddb_n(p->price_cents), "currency", kp_ddb_s(p->currency), "monthly_credits",
                     kp_ddb_n(p->monthly_credits), "daily_bonus", kp_ddb_n(p->daily_bonus), "max_generating",
                     kp_ddb_n(p->max_concurrent_generations), "stripe_price_id", kp_ddb_s(p->stripe_price_id), "active",
                     kp_ddb_bool(p->active), "updated_at", kp_ddb_n(p->updated_at));
}

void kp_ddb_plan_from(const json_t *item, kp_plan *p)
{
    kp_ddb_get_s(item, "id", p->id, sizeof p->id);
    kp_ddb_get_s(item, "name", p->name, sizeof p->name);
    p->price_cents = kp_ddb_get_n(item, "price_cents");
    kp_ddb_get_s(item, "currency", p->currency, sizeof p->currency);
    p->monthly_credits = kp_ddb_get_n(item, "monthly_credits");
    p->daily_bonus = kp_ddb_get_n(item, "daily_bonus");
    p->max_concurrent_generations = kp_ddb_get_n(item, "max_generating");
    kp_ddb_get_s(item, "stripe_price_id", p->stripe_price_id, sizeof p->stripe_price_id);
    p->active = kp_ddb_get_bool(item, "active");
    p->updated_at = kp_ddb_get_n(item, "updated_at");
}

json_t *kp_ddb_user_item(const kp_user *u, const kp_balance *b)
{
    char pk[KP_DDB_KEY_MAX];
    kp_balance zero = {0, 0, 0};
    if (!b)
        b = &zero;
    kp_ddb_key(pk, KP_DDB_USER, u->id);
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "PK", kp_ddb_s(pk),
                     "SK", kp_ddb_s(KP_DDB_SK_MAIN), "id", kp_ddb_s(u->id), "email", kp_ddb_s(u->email),
                     "password_hash", kp_ddb_s(u->password_hash), "external_sub", kp_ddb_s(u->external_sub), "plan_id",
                     kp_ddb_s(u->plan_id), "is_admin", kp_ddb_bool(u->is_admin), "created_at", kp_ddb_n(u->created_at),
                     "email_verified", kp_ddb_bool(u->email_verified), "verification_required",
                     kp_ddb_bool(u->verification_required), "bal_daily", kp_ddb_n(b->daily), "bal_monthly",
                     kp_ddb_n(b->monthly), "bal_version", kp_ddb_n(b->version), "generating", kp_ddb_n(0));
}

void kp_ddb_user_from(const json_t *item, kp_user *u)
{
    kp_ddb_get_s(item, "id", u->id, sizeof u->id);
    kp_ddb_get_s(item, "email", u->email, sizeof u->email);
    kp_ddb_get_s(item, "password_hash", u->password_hash, sizeof u->password_hash);
    kp_ddb_get_s(item, "external_sub", u->external_sub, sizeof u->external_sub);
    kp_ddb_get_s(item, "plan_id", u->plan_id, sizeof u->plan_id);
    u->is_admin = kp_ddb_get_bool(item, "is_admin");
    u->created_at = kp_ddb_get_n(item, "created_at");
    u->email_verified = kp_ddb_get_bool(item, "email_verified");
    u->verification_required = kp_ddb_get_bool(item, "verification_required");
}

void kp_ddb_balance_from(const json_t *item, kp_balance *b)
{
    b->daily = kp_ddb_get_n(item, "bal_daily");
    b->monthly = kp_ddb_get_n(item, "bal_monthly");
    b->version = kp_ddb_get_n(item, "bal_version");
}

json_t *kp_ddb_ledger_item(const kp_ledger_entry *e)
{
    char pk[KP_DDB_KEY_MAX], sk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_USER, e->user_id);
    kp_ddb_ledger_sk(sk, e->seq);
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "PK", kp_ddb_s(pk), "SK",
                     kp_ddb_s(sk), "seq", kp_ddb_n(e->seq), "user_id", kp_ddb_s(e->user_id), "delta_daily",
                     kp_ddb_n(e->delta_daily), "delta_monthly", kp_ddb_n(e->delta_monthly), "balance_daily",
                     kp_ddb_n(e->balance_daily), "balance_monthly", kp_ddb_n(e->balance_monthly), "reason",
                     kp_ddb_s(e->reason), "idem_key", kp_ddb_s(e->idem_key), "reservation_id",
                     kp_ddb_s(e->reservation_id), "created_at", kp_ddb_n(e->created_at));
}

void kp_ddb_ledger_from(const json_t *item, kp_ledger_entry *e)
{
    e->seq = kp_ddb_get_n(item, "seq");
    kp_ddb_get_s(item, "user_id", e->user_id, sizeof e->user_id);
    e->delta_daily = kp_ddb_get_n(item, "delta_daily");
    e->delta_monthly = kp_ddb_get_n(item, "delta_monthly");
    e->balance_daily = kp_ddb_get_n(item, "balance_daily");
    e->balance_monthly = kp_ddb_get_n(item, "balance_monthly");
    kp_ddb_get_s(item, "reason", e->reason, sizeof e->reason);
    kp_ddb_get_s(item, "idem_key", e->idem_key, sizeof e->idem_key);
    kp_ddb_get_s(item, "reservation_id", e->reservation_id, sizeof e->reservation_id);
    e->created_at = kp_ddb_get_n(item, "created_at");
}

json_t *kp_ddb_reservation_item(const kp_reservation *r)
{
    char pk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_RES, r->id);
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "PK", kp_ddb_s(pk), "SK",
                     kp_ddb_s(KP_DDB_SK_MAIN), "id", kp_ddb_s(r->id), "user_id", kp_ddb_s(r->user_id), "daily",
                     kp_ddb_n(r->daily), "monthly", kp_ddb_n(r->monthly), "state", kp_ddb_n((int64_t)r->state),
                     "created_at", kp_ddb_n(r->created_at), "updated_at", kp_ddb_n(r->updated_at));
}

void kp_ddb_reservation_from(const json_t *item, kp_reservation *r)
{
    kp_ddb_get_s(item, "id", r->id, sizeof r->id);
    kp_ddb_get_s(item, "user_id", r->user_id, sizeof r->user_id);
    r->daily = kp_ddb_get_n(item, "daily");
    r->monthly = kp_ddb_get_n(item, "monthly");
    r->state = (kp_reservation_state)kp_ddb_get_n(item, "state");
    r->created_at = kp_ddb_get_n(item, "created_at");
    r->updated_at = kp_ddb_get_n(item, "updated_at");
}
