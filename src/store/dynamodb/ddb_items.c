/*
 * ddb_items.c - keys and struct <-> item conversions (see ddb_items.h).
 */
#include "store/dynamodb/ddb_items.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    char pk[KP_DDB_KEY_MAX], gpk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_RES, r->id);
    kp_ddb_shard_key(gpk, KP_DDB_GSI2_OPENRES, r->id);
    json_t *item = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "PK", kp_ddb_s(pk), "SK",
                             kp_ddb_s(KP_DDB_SK_MAIN), "id", kp_ddb_s(r->id), "user_id", kp_ddb_s(r->user_id), "daily",
                             kp_ddb_n(r->daily), "monthly", kp_ddb_n(r->monthly), "state", kp_ddb_n((int64_t)r->state),
                             "created_at", kp_ddb_n(r->created_at), "updated_at", kp_ddb_n(r->updated_at));
    if (item && r->state == KP_RES_RESERVED &&
        json_object_update_new(item, json_pack("{s:o, s:o}", "GSI2PK", kp_ddb_s(gpk), "GSI2SK", kp_ddb_s(r->id))) !=
            0) {
        json_decref(item);
        return NULL;
    }
    return item;
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

/* ---- projects and versions ---- */

void kp_ddb_shard_key(char *out, const char *prefix, const char *id)
{
    unsigned shard = 0;
    for (const char *c = id ? id : ""; *c; c++)
        shard = shard * 31u + (unsigned char)*c;
    snprintf(out, KP_DDB_KEY_MAX, "%s%u", prefix, shard % KP_DDB_SHARDS);
}

void kp_ddb_lease_sk(char *out, int64_t lease_until, const char *pid, int64_t n)
{
    snprintf(out, KP_DDB_KEY_MAX, "%015" PRId64 "#%s#%" PRId64, lease_until, pid, n);
}

void kp_ddb_unsettled_sk(char *out, const char *pid, int64_t n)
{
    snprintf(out, KP_DDB_KEY_MAX, "%s#%010" PRId64, pid, n);
}

json_t *kp_ddb_project_key(const char *pid)
{
    char pk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_PROJ, pid);
    return kp_ddb_key_item(pk, KP_DDB_SK_MAIN);
}

json_t *kp_ddb_version_key(const char *pid, int64_t n)
{
    char pk[KP_DDB_KEY_MAX], sk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_PROJ, pid);
    snprintf(sk, sizeof sk, "V#%010" PRId64, n);
    return kp_ddb_key_item(pk, sk);
}

/* GSI1SK: "{created_at:015}#{pid}" (newest first when read backwards). */
json_t *kp_ddb_project_item(const kp_project *p, int64_t created_at)
{
    char gpk[KP_DDB_KEY_MAX], gsk[KP_DDB_KEY_MAX];
    kp_ddb_key(gpk, KP_DDB_UPROJ, p->user_id);
    snprintf(gsk, sizeof gsk, "%015" PRId64 "#%s", created_at, p->id);
    json_t *item = kp_ddb_project_key(p->id);
    if (item && json_object_update_new(
                    item, json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "GSI1PK", kp_ddb_s(gpk),
                                    "GSI1SK", kp_ddb_s(gsk), "id", kp_ddb_s(p->id), "user_id", kp_ddb_s(p->user_id),
                                    "name", kp_ddb_s(p->name), "latest_version", kp_ddb_n(1), "latest_ready",
                                    kp_ddb_n(0), "gen_n", kp_ddb_n(1), "deleting", kp_ddb_bool(0), "created_at",
                                    kp_ddb_n(created_at), "updated_at", kp_ddb_n(created_at))) != 0) {
        json_decref(item);
        return NULL;
    }
    return item;
}

void kp_ddb_project_from(const json_t *item, kp_project *p)
{
    memset(p, 0, sizeof *p);
    kp_ddb_get_s(item, "id", p->id, sizeof p->id);
    kp_ddb_get_s(item, "user_id", p->user_id, sizeof p->user_id);
    kp_ddb_get_s(item, "name", p->name, sizeof p->name);
    p->latest_version = kp_ddb_get_n(item, "latest_version");
    p->latest_ready = kp_ddb_get_n(item, "latest_ready");
    p->created_at = kp_ddb_get_n(item, "created_at");
    p->updated_at = kp_ddb_get_n(item, "updated_at");
}

json_t *kp_ddb_version_item(const char *pid, int64_t n, const kp_version *v, int64_t created_at, const char *owner,
                            int64_t lease_until)
{
    char gpk[KP_DDB_KEY_MAX], gsk[KP_DDB_KEY_MAX];
    kp_ddb_shard_key(gpk, KP_DDB_GSI2_LEASE, pid);
    kp_ddb_lease_sk(gsk, lease_until, pid, n);
    json_t *item = kp_ddb_version_key(pid, n);
    json_t *fields = json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
        "s:o}",
        "GSI2PK", kp_ddb_s(gpk), "GSI2SK", kp_ddb_s(gsk), "project_id", kp_ddb_s(pid), "n", kp_ddb_n(n), "status",
        kp_ddb_n(KP_VER_GENERATING), "reservation_id", kp_ddb_s(v->reservation_id), "settled", kp_ddb_bool(0),
        "error_code", kp_ddb_s(""), "error_message", kp_ddb_s(""), "prompt", kp_ddb_s(v->prompt), "message",
        kp_ddb_s(""), "files_json", kp_ddb_s(v->files_json ? v->files_json : "[]"), "model", kp_ddb_s(v->model),
        "input_tokens", kp_ddb_n(0), "output_tokens", kp_ddb_n(0), "duration_ms", kp_ddb_n(0), "refunded",
        kp_ddb_bool(0), "credit_reason", kp_ddb_s(""), "created_at", kp_ddb_n(created_at), "updated_at",
        kp_ddb_n(created_at), "owner", kp_ddb_s(owner), "lease_until", kp_ddb_n(lease_until));
    if (!item || !fields || json_object_update_new(item, fields) != 0) {
        json_decref(item);
        return NULL;
    }
    return item;
}

static char *dup_s(const json_t *item, const char *name)
{
    const char *v = json_string_value(json_object_get(json_object_get(item, name), "S"));
    return strdup(v ? v : "");
}

kp_status kp_ddb_version_from(const json_t *item, kp_version *v, kp_err *err)
{
    memset(v, 0, sizeof *v);
    kp_ddb_get_s(item, "project_id", v->project_id, sizeof v->project_id);
    v->n = kp_ddb_get_n(item, "n");
    v->status = (kp_version_status)kp_ddb_get_n(item, "status");
    kp_ddb_get_s(item, "reservation_id", v->reservation_id, sizeof v->reservation_id);
    v->settled = kp_ddb_get_bool(item, "settled");
    kp_ddb_get_s(item, "error_code", v->error_code, sizeof v->error_code);
    kp_ddb_get_s(item, "model", v->model, sizeof v->model);
    v->input_tokens = kp_ddb_get_n(item, "input_tokens");
    v->output_tokens = kp_ddb_get_n(item, "output_tokens");
    v->duration_ms = kp_ddb_get_n(item, "duration_ms");
    v->refunded = kp_ddb_get_bool(item, "refunded");
    kp_ddb_get_s(item, "credit_reason", v->credit_reason, sizeof v->credit_reason);
    v->created_at = kp_ddb_get_n(item, "created_at");
    v->updated_at = kp_ddb_get_n(item, "updated_at");
    kp_ddb_get_s(item, "owner", v->owner, sizeof v->owner);
    v->lease_until = kp_ddb_get_n(item, "lease_until");
    v->error_message = dup_s(item, "error_message");
    v->prompt = dup_s(item, "prompt");
    v->message = dup_s(item, "message");
    v->files_json = dup_s(item, "files_json");
    v->events_json = strdup("[]");
    if (!v->error_message || !v->prompt || !v->message || !v->files_json || !v->events_json) {
        kp_version_clear(v);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    return KP_OK;
}

json_t *kp_ddb_resref_put(const char *table, const char *res_id, const char *pid, int64_t n)
{
    char pk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_RES, res_id);
    return json_pack("{s:{s:s, s:{s:o, s:o, s:o, s:o}}}", "Put", "TableName", table, "Item", "PK", kp_ddb_s(pk), "SK",
                     kp_ddb_s(KP_DDB_SK_RESREF), "project_id", kp_ddb_s(pid), "n", kp_ddb_n(n));
}

json_t *kp_ddb_generating_update(const char *table, const char *user_id, int delta)
{
    char pk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_USER, user_id);
    return json_pack("{s:{s:s, s:o, s:s, s:s, s:{s:o}, s:s}}", "Update", "TableName", table, "Key",
                     kp_ddb_key_item(pk, KP_DDB_SK_MAIN), "UpdateExpression", "ADD generating :gd",
                     "ConditionExpression", "attribute_exists(PK)", "ExpressionAttributeValues", ":gd", kp_ddb_n(delta),
                     "ReturnValuesOnConditionCheckFailure", "ALL_OLD");
}
