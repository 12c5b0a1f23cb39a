/*
 * ddb_store.c - the DynamoDB backend's handle and its operations so far
 * (see ddb_store.h). Every operation is a few DynamoDB requests whose cost
 * docs/ARCHITECTURE.md states; reads that decide a write are strongly
 * consistent, writes that must be atomic are one TransactWriteItems whose
 * conditions carry the rule (balance version as compare-and-swap,
 * attribute_not_exists for idempotency keys and unique claims).
 */
#include "store/dynamodb/ddb_store.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/dynamodb/ddb_billing.h"
#include "store/dynamodb/ddb_bonus.h"
#include "store/dynamodb/ddb_client.h"
#include "store/dynamodb/ddb_events.h"
#include "store/dynamodb/ddb_generations.h"
#include "store/dynamodb/ddb_internal.h"
#include "store/dynamodb/ddb_items.h"
#include "store/dynamodb/ddb_projects.h"
#include "store/dynamodb/ddb_tables.h"

#define CAS_ATTEMPTS 64 /* credits_apply without expected_version: re-reads after a lost race */

typedef struct ddb_store {
    kp_store base;
    kp_ddb d;
} ddb_store;

static kp_ddb *D(kp_store *s)
{
    return &((ddb_store *)s->impl)->d;
}

kp_ddb *kp_ddb_of(kp_store *s)
{
    return D(s);
}

static kp_status oom(kp_err *err)
{
    return kp_err_set(err, KP_ENOMEM, "out of memory");
}

static int fits(const char *s, size_t cap)
{
    return s && strlen(s) < cap;
}

static int nonempty_fits(const char *s, size_t cap)
{
    return fits(s, cap) && *s;
}

/* GetItem (consistent) of pk/sk: *item is the item or NULL when absent. */
kp_status kp_ddb_get_item(kp_ddb *d, const char *pk, const char *sk, json_t **item, kp_err *err)
{
    json_t *req =
        json_pack("{s:s, s:o, s:b}", "TableName", d->table, "Key", kp_ddb_key_item(pk, sk), "ConsistentRead", 1);
    json_t *out = NULL;
    *item = NULL;
    kp_status rc = req ? kp_ddb_call(d, "GetItem", req, &out, err) : oom(err);
    if (rc == KP_OK) {
        *item = json_incref(json_object_get(out, "Item"));
    }
    json_decref(req);
    json_decref(out);
    return rc;
}

/* kp_ddb_get_item of an item that must exist: KP_ENOTFOUND "{what} not found" when absent (or key empty). */
kp_status kp_ddb_get_existing(kp_ddb *d, const char *prefix, const char *id, size_t id_cap, const char *sk,
                              const char *what, json_t **item, kp_err *err)
{
    char pk[KP_DDB_KEY_MAX];
    *item = NULL;
    if (!nonempty_fits(id, id_cap))
        return kp_err_set(err, KP_ENOTFOUND, "%s not found", what);
    kp_ddb_key(pk, prefix, id);
    kp_status rc = kp_ddb_get_item(d, pk, sk, item, err);
    if (rc == KP_OK && !*item)
        rc = kp_err_set(err, KP_ENOTFOUND, "%s not found", what);
    return rc;
}

/* ---- health ---- */

/* Each read is its own request: no snapshot to share (store.h). */
static void ddb_snapshot_noop(kp_store *s)
{
    (void)s;
}

static kp_status ddb_ping(kp_store *s, kp_err *err)
{
    json_t *item = NULL;
    kp_status rc = kp_ddb_get_item(D(s), "PING", KP_DDB_SK_MAIN, &item, err);
    json_decref(item);
    return rc;
}

/* ---- plans: PK "PLAN", SK "PLAN#{id}" ---- */

static kp_status ddb_plan_get(kp_store *s, const char *id, kp_plan *out, kp_err *err)
{
    char sk[KP_DDB_KEY_MAX];
    json_t *item = NULL;
    if (!nonempty_fits(id, KP_PLAN_ID_MAX))
        return kp_err_set(err, KP_ENOTFOUND, "plan not found");
    kp_ddb_key(sk, "PLAN#", id);
    kp_status rc = kp_ddb_get_item(D(s), KP_DDB_PLANS, sk, &item, err);
    if (rc == KP_OK && !item)
        rc = kp_err_set(err, KP_ENOTFOUND, "plan not found");
    if (rc == KP_OK)
        kp_ddb_plan_from(item, out);
    json_decref(item);
    return rc;
}

static int plan_cmp(const void *a, const void *b)
{
    const kp_plan *x = a, *y = b;
    if (x->price_cents != y->price_cents)
        return x->price_cents < y->price_cents ? -1 : 1;
    return strcmp(x->id, y->id);
}

kp_status kp_ddb_query_page(kp_ddb *d, json_t *req, kp_ddb_item_fn fn, void *ctx, int *more, kp_err *err)
{
    json_t *out = NULL;
    size_t i;
    json_t *it;
    int next_page = 0;
    kp_status rc = kp_ddb_call(d, "Query", req, &out, err);
    json_array_foreach(json_object_get(out, "Items"), i, it)
    {
        if (rc == KP_OK)
            rc = fn(it, ctx, err);
    }
    json_t *next = json_object_get(out, "LastEvaluatedKey");
    if (rc == KP_OK && next && json_object_size(next) > 0) {
        if (json_object_set(req, "ExclusiveStartKey", next) != 0)
            rc = oom(err);
        next_page = 1;
    }
    json_decref(out);
    if (more)
        *more = rc == KP_OK && next_page;
    return rc;
}

kp_status kp_ddb_query_all(kp_ddb *d, json_t *req, kp_ddb_item_fn fn, void *ctx, kp_err *err)
{
    kp_status rc = KP_OK;
    for (int more = 1; rc == KP_OK && more;)
        rc = kp_ddb_query_page(d, req, fn, ctx, &more, err);
    return rc;
}

/* Room for one more element of size in the array *v of *cap (n used). */
static kp_status grow(void **v, size_t *cap, size_t n, size_t size, kp_err *err)
{
    if (n < *cap)
        return KP_OK;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *nv = realloc(*v, ncap * size);
    if (!nv)
        return oom(err);
    *v = nv;
    *cap = ncap;
    return KP_OK;
}

typedef struct plan_acc {
    kp_plan *v;
    size_t n, cap;
    int active_only;
} plan_acc;

static kp_status plan_add(const json_t *item, void *ctx, kp_err *err)
{
    plan_acc *a = ctx;
    kp_plan p = {0};
    kp_ddb_plan_from(item, &p);
    if (a->active_only && !p.active)
        return KP_OK;
    kp_status rc = grow((void **)&a->v, &a->cap, a->n, sizeof *a->v, err);
    if (rc != KP_OK)
        return rc;
    a->v[a->n++] = p;
    return KP_OK;
}

static kp_status ddb_plan_list(kp_store *s, int active_only, kp_plan **out, size_t *n, kp_err *err)
{
    kp_ddb *d = D(s);
    plan_acc a = {NULL, 0, 0, active_only};
    json_t *req = json_pack("{s:s, s:s, s:{s:o}, s:b}", "TableName", d->table, "KeyConditionExpression", "PK = :p",
                            "ExpressionAttributeValues", ":p", kp_ddb_s(KP_DDB_PLANS), "ConsistentRead", 1);
    kp_status rc = req ? kp_ddb_query_all(d, req, plan_add, &a, err) : oom(err);
    json_decref(req);
    if (rc != KP_OK) {
        free(a.v);
        return rc;
    }
    if (a.n > 1)
        qsort(a.v, a.n, sizeof *a.v, plan_cmp);
    *out = a.v;
    *n = a.n;
    return KP_OK;
}

static kp_status ddb_plan_put(kp_store *s, const kp_plan *p, int *created, kp_err *err)
{
    kp_ddb *d = D(s);
    json_t *out = NULL;
    if (!nonempty_fits(p->id, KP_PLAN_ID_MAX))
        return kp_err_set(err, KP_EINVAL, "invalid plan id");
    json_t *req =
        json_pack("{s:s, s:o, s:s}", "TableName", d->table, "Item", kp_ddb_plan_item(p), "ReturnValues", "ALL_OLD");
    kp_status rc = req ? kp_ddb_call(d, "PutItem", req, &out, err) : oom(err);
    if (rc == KP_OK && created)
        *created = json_object_get(out, "Attributes") == NULL;
    json_decref(req);
    json_decref(out);
    return rc;
}

/* ---- users: PK "USER#{id}" SK "A" (the user and its balance); unique claims EMAIL#, XSUB# ---- */

/* Appends a Put of item, conditional on it not existing, to items. */
int kp_ddb_put_new(json_t *items, const char *table, json_t *item)
{
    return json_array_append_new(items, json_pack("{s:{s:s, s:o, s:s}}", "Put", "TableName", table, "Item", item,
                                                  "ConditionExpression", "attribute_not_exists(PK)"));
}

/* A claim item (EMAIL#..., XSUB#...) naming the user. */
static json_t *claim_item(const char *prefix, const char *value, const char *user_id)
{
    char pk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, prefix, value);
    return json_pack("{s:o, s:o, s:o}", "PK", kp_ddb_s(pk), "SK", kp_ddb_s(KP_DDB_SK_MAIN), "user_id",
                     kp_ddb_s(user_id));
}

static int user_valid(const kp_user *u)
{
    return u && nonempty_fits(u->id, KP_ID_MAX) && fits(u->email, KP_EMAIL_MAX) &&
           fits(u->password_hash, KP_PWHASH_MAX) && fits(u->external_sub, KP_SUB_MAX) &&
           nonempty_fits(u->plan_id, KP_PLAN_ID_MAX);
}

/* The items creating u: the user (with balance b), its e-mail and subject claims; indexes of the claims
 * in *email_i / *sub_i (-1: none). */
static int add_user_items(json_t *items, const char *table, const kp_user *u, const kp_balance *b, long *email_i,
                          long *sub_i)
{
    int bad = kp_ddb_put_new(items, table, kp_ddb_user_item(u, b));
    *email_i = *sub_i = -1;
    if (u->email[0]) {
        *email_i = (long)json_array_size(items);
        bad |= kp_ddb_put_new(items, table, claim_item(KP_DDB_EMAIL, u->email, u->id));
    }
    if (u->external_sub[0]) {
        *sub_i = (long)json_array_size(items);
        bad |= kp_ddb_put_new(items, table, claim_item(KP_DDB_XSUB, u->external_sub, u->id));
    }
    return bad;
}

kp_status kp_ddb_transact(kp_ddb *d, json_t *items, kp_err *err)
{
    json_t *req = json_pack("{s:O}", "TransactItems", items);
    kp_status rc = req ? kp_ddb_call(d, "TransactWriteItems", req, NULL, err) : oom(err);
    json_decref(req);
    return rc;
}

/* Names which uniqueness a cancelled user creation broke. */
static kp_status user_conflict(kp_ddb *d, long email_i, long sub_i, kp_err *err)
{
    if (kp_ddb_reason_failed(d, 0))
        return kp_err_set(err, KP_ECONFLICT, "user id already exists");
    if (email_i >= 0 && kp_ddb_reason_failed(d, (size_t)email_i))
        return kp_err_set(err, KP_ECONFLICT, "email already registered");
    if (sub_i >= 0 && kp_ddb_reason_failed(d, (size_t)sub_i))
        return kp_err_set(err, KP_ECONFLICT, "external identity already registered");
    return KP_ECONFLICT;
}

static kp_status ddb_user_create(kp_store *s, const kp_user *u, kp_err *err)
{
    kp_ddb *d = D(s);
    long email_i = -1, sub_i = -1;
    if (!user_valid(u))
        return kp_err_set(err, KP_EINVAL, "invalid user");
    json_t *items = json_array();
    kp_status rc = items && !add_user_items(items, d->table, u, NULL, &email_i, &sub_i) ? kp_ddb_transact(d, items, err)
                                                                                        : oom(err);
    if (rc == KP_ECONFLICT)
        rc = user_conflict(d, email_i, sub_i, err);
    json_decref(items);
    return rc;
}

static kp_status user_by_id(kp_ddb *d, const char *id, kp_user *out, kp_balance *bal, kp_err *err)
{
    json_t *item = NULL;
    kp_status rc = kp_ddb_get_existing(d, KP_DDB_USER, id, KP_ID_MAX, KP_DDB_SK_MAIN, "user", &item, err);
    if (rc == KP_OK && out)
        kp_ddb_user_from(item, out);
    if (rc == KP_OK && bal)
        kp_ddb_balance_from(item, bal);
    json_decref(item);
    return rc;
}

static kp_status ddb_user_get(kp_store *s, const char *id, kp_user *out, kp_err *err)
{
    return user_by_id(D(s), id, out, NULL, err);
}

/* Through a claim item: 2 consistent GetItems. */
static kp_status user_by_claim(kp_ddb *d, const char *prefix, const char *value, size_t cap, kp_user *out, kp_err *err)
{
    char uid[KP_ID_MAX];
    json_t *item = NULL;
    kp_status rc = kp_ddb_get_existing(d, prefix, value, cap, KP_DDB_SK_MAIN, "user", &item, err);
    if (rc == KP_OK) {
        kp_ddb_get_s(item, "user_id", uid, sizeof uid);
        rc = user_by_id(d, uid, out, NULL, err);
    }
    json_decref(item);
    return rc;
}

static kp_status ddb_user_get_by_email(kp_store *s, const char *email, kp_user *out, kp_err *err)
{
    return user_by_claim(D(s), KP_DDB_EMAIL, email, KP_EMAIL_MAX, out, err);
}

static kp_status ddb_user_get_by_sub(kp_store *s, const char *sub, kp_user *out, kp_err *err)
{
    return user_by_claim(D(s), KP_DDB_XSUB, sub, KP_SUB_MAX, out, err);
}

/* UpdateItem of the user item: SET name = value, only if the user exists. */
static kp_status user_set(kp_ddb *d, const char *id, const char *name, json_t *value, kp_err *err)
{
    char pk[KP_DDB_KEY_MAX];
    if (!nonempty_fits(id, KP_ID_MAX)) {
        json_decref(value);
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    }
    kp_ddb_key(pk, KP_DDB_USER, id);
    json_t *req = json_pack("{s:s, s:o, s:s, s:s, s:{s:s}, s:{s:o}}", "TableName", d->table, "Key",
                            kp_ddb_key_item(pk, KP_DDB_SK_MAIN), "UpdateExpression", "SET #f = :v",
                            "ConditionExpression", "attribute_exists(PK)", "ExpressionAttributeNames", "#f", name,
                            "ExpressionAttributeValues", ":v", value);
    kp_status rc = req ? kp_ddb_call(d, "UpdateItem", req, NULL, err) : oom(err);
    if (rc == KP_ECONFLICT)
        rc = kp_err_set(err, KP_ENOTFOUND, "user not found");
    json_decref(req);
    return rc;
}

static kp_status ddb_user_set_admin(kp_store *s, const char *id, int is_admin, kp_err *err)
{
    return user_set(D(s), id, "is_admin", kp_ddb_bool(is_admin), err);
}

static kp_status ddb_user_set_email_verified(kp_store *s, const char *id, kp_err *err)
{
    return user_set(D(s), id, "email_verified", kp_ddb_bool(1), err);
}

/* The plan must exist: one transaction, a ConditionCheck on the plan and the conditional update. */
static kp_status ddb_user_set_plan(kp_store *s, const char *id, const char *plan_id, kp_err *err)
{
    kp_ddb *d = D(s);
    char pk[KP_DDB_KEY_MAX], plan_sk[KP_DDB_KEY_MAX];
    if (!nonempty_fits(id, KP_ID_MAX) || !nonempty_fits(plan_id, KP_PLAN_ID_MAX))
        return kp_err_set(err, KP_ENOTFOUND, "user or plan not found");
    kp_ddb_key(pk, KP_DDB_USER, id);
    kp_ddb_key(plan_sk, "PLAN#", plan_id);
    json_t *items = json_pack(
        "[{s:{s:s, s:o, s:s}}, {s:{s:s, s:o, s:s, s:s, s:{s:o}}}]", "ConditionCheck", "TableName", d->table, "Key",
        kp_ddb_key_item(KP_DDB_PLANS, plan_sk), "ConditionExpression", "attribute_exists(PK)", "Update", "TableName",
        d->table, "Key", kp_ddb_key_item(pk, KP_DDB_SK_MAIN), "UpdateExpression", "SET plan_id = :p",
        "ConditionExpression", "attribute_exists(PK)", "ExpressionAttributeValues", ":p", kp_ddb_s(plan_id));
    kp_status rc = items ? kp_ddb_transact(d, items, err) : oom(err);
    if (rc == KP_ECONFLICT)
        rc = kp_err_set(err, KP_ENOTFOUND, kp_ddb_reason_failed(d, 0) ? "plan not found" : "user not found");
    json_decref(items);
    return rc;
}

/* ---- e-mail verification: VERIFY#{hash} / A the token; USER#{uid} / VT#{hash} while unused ---- */

#define KP_DDB_VERIFY "VERIFY#"
#define TOKEN_HASH_MAX 256

/* A Delete (or, with item, a conditional Put) of the user's pointer to an unused token. */
static json_t *token_pointer_op(const char *table, const char *user_id, const char *hash, int put)
{
    char pk[KP_DDB_KEY_MAX], sk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_USER, user_id);
    kp_ddb_key(sk, "VT#", hash);
    if (put)
        return json_pack("{s:{s:s, s:{s:o, s:o, s:o}}}", "Put", "TableName", table, "Item", "PK", kp_ddb_s(pk), "SK",
                         kp_ddb_s(sk), "token_hash", kp_ddb_s(hash));
    return json_pack("{s:{s:s, s:o}}", "Delete", "TableName", table, "Key", kp_ddb_key_item(pk, sk));
}

/* One Query for the user's unused tokens, then one TransactWriteItems: their deletion, the new token and
 * its pointer, a ConditionCheck that the user exists. */
static kp_status ddb_verification_create(kp_store *s, const char *token_hash, const kp_verification *v, kp_err *err)
{
    kp_ddb *d = D(s);
    char upk[KP_DDB_KEY_MAX], tpk[KP_DDB_KEY_MAX];
    json_t *out = NULL, *items = NULL;
    if (!v || !nonempty_fits(token_hash, TOKEN_HASH_MAX) || !nonempty_fits(v->user_id, KP_ID_MAX))
        return kp_err_set(err, KP_EINVAL, "invalid verification record");
    kp_ddb_key(upk, KP_DDB_USER, v->user_id);
    kp_ddb_key(tpk, KP_DDB_VERIFY, token_hash);
    json_t *req = json_pack("{s:s, s:s, s:{s:o, s:o}, s:b, s:i}", "TableName", d->table, "KeyConditionExpression",
                            "PK = :pk AND begins_with(SK, :vt)", "ExpressionAttributeValues", ":pk", kp_ddb_s(upk),
                            ":vt", kp_ddb_s("VT#"), "ConsistentRead", 1, "Limit", 40);
    kp_status rc = req ? kp_ddb_call(d, "Query", req, &out, err) : oom(err);
    if (rc == KP_OK) {
        items = json_pack("[{s:{s:s, s:o, s:s}}, {s:{s:s, s:{s:o, s:o, s:o, s:o, s:o, s:o}, s:s}}]", "ConditionCheck",
                          "TableName", d->table, "Key", kp_ddb_key_item(upk, KP_DDB_SK_MAIN), "ConditionExpression",
                          "attribute_exists(PK)", "Put", "TableName", d->table, "Item", "PK", kp_ddb_s(tpk), "SK",
                          kp_ddb_s(KP_DDB_SK_MAIN), "user_id", kp_ddb_s(v->user_id), "created_at",
                          kp_ddb_n(v->created_at), "expires_at", kp_ddb_n(v->expires_at), "used_at", kp_ddb_n(0),
                          "ConditionExpression", "attribute_not_exists(PK)");
        int bad = !items || json_array_append_new(items, token_pointer_op(d->table, v->user_id, token_hash, 1));
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(out, "Items"), i, it)
        {
            char old[TOKEN_HASH_MAX], opk[KP_DDB_KEY_MAX];
            kp_ddb_get_s(it, "token_hash", old, sizeof old);
            kp_ddb_key(opk, KP_DDB_VERIFY, old);
            bad = bad || json_array_append_new(items, token_pointer_op(d->table, v->user_id, old, 0)) ||
                  json_array_append_new(items, json_pack("{s:{s:s, s:o}}", "Delete", "TableName", d->table, "Key",
                                                         kp_ddb_key_item(opk, KP_DDB_SK_MAIN)));
        }
        rc = bad ? oom(err) : kp_ddb_transact(d, items, err);
        if (rc == KP_ECONFLICT)
            rc = kp_err_set(err, kp_ddb_reason_failed(d, 0) ? KP_ENOTFOUND : KP_ECONFLICT,
                            kp_ddb_reason_failed(d, 0) ? "user not found" : "verification token exists");
    }
    json_decref(req);
    json_decref(out);
    json_decref(items);
    return rc;
}

/* 1 GetItem, then 1 TransactWriteItems: the token used (conditional on unused and not expired), the
 * user's address verified, the pointer removed. */
static kp_status ddb_verification_consume(kp_store *s, const char *token_hash, int64_t now, kp_verification *out,
                                          kp_err *err)
{
    kp_ddb *d = D(s);
    kp_verification v = {0};
    json_t *item = NULL, *items = NULL;
    char tpk[KP_DDB_KEY_MAX], upk[KP_DDB_KEY_MAX];
    kp_status rc = kp_ddb_get_existing(d, KP_DDB_VERIFY, token_hash, TOKEN_HASH_MAX, KP_DDB_SK_MAIN,
                                       "verification token", &item, err);
    if (rc != KP_OK)
        return rc == KP_ENOTFOUND ? kp_err_set(err, KP_ENOTFOUND, "unknown verification token") : rc;
    kp_ddb_get_s(item, "user_id", v.user_id, sizeof v.user_id);
    v.created_at = kp_ddb_get_n(item, "created_at");
    v.expires_at = kp_ddb_get_n(item, "expires_at");
    v.used_at = kp_ddb_get_n(item, "used_at");
    if (out)
        *out = v;
    kp_ddb_key(tpk, KP_DDB_VERIFY, token_hash);
    kp_ddb_key(upk, KP_DDB_USER, v.user_id);
    items =
        json_pack("[{s:{s:s, s:o, s:s, s:s, s:{s:o, s:o}}}, {s:{s:s, s:o, s:s, s:s, s:{s:o}}}, o]", "Update",
                  "TableName", d->table, "Key", kp_ddb_key_item(tpk, KP_DDB_SK_MAIN), "UpdateExpression",
                  "SET used_at = :now", "ConditionExpression", "used_at = :zero AND expires_at > :now",
                  "ExpressionAttributeValues", ":now", kp_ddb_n(now), ":zero", kp_ddb_n(0), "Update", "TableName",
                  d->table, "Key", kp_ddb_key_item(upk, KP_DDB_SK_MAIN), "UpdateExpression", "SET email_verified = :t",
                  "ConditionExpression", "attribute_exists(PK)", "ExpressionAttributeValues", ":t", kp_ddb_bool(1),
                  token_pointer_op(d->table, v.user_id, token_hash, 0));
    rc = items ? kp_ddb_transact(d, items, err) : oom(err);
    if (rc == KP_ECONFLICT)
        rc = kp_ddb_reason_failed(d, 0) ? kp_err_set(err, KP_ECONFLICT, "verification token used or expired")
                                        : kp_err_set(err, KP_ENOTFOUND, "user not found");
    json_decref(item);
    json_decref(items);
    return rc;
}

/* ---- credits ---- */

static kp_status ddb_balance_get(kp_store *s, const char *user_id, kp_balance *out, kp_err *err)
{
    return user_by_id(D(s), user_id, NULL, out, err);
}

static kp_status ddb_reservation_get(kp_store *s, const char *id, kp_reservation *out, kp_err *err)
{
    json_t *item = NULL;
    kp_status rc = kp_ddb_get_existing(D(s), KP_DDB_RES, id, KP_ID_MAX, KP_DDB_SK_MAIN, "reservation", &item, err);
    if (rc == KP_OK)
        kp_ddb_reservation_from(item, out);
    json_decref(item);
    return rc;
}

void kp_ddb_credit_state_clear(kp_ddb_credit_state *st)
{
    json_decref(st->user);
    json_decref(st->res);
    memset(st, 0, sizeof *st);
}

kp_status kp_ddb_credit_read(kp_ddb *d, const kp_credit_change *c, kp_ddb_credit_state *st, kp_err *err)
{
    char upk[KP_DDB_KEY_MAX], ipk[KP_DDB_KEY_MAX], rpk[KP_DDB_KEY_MAX];
    json_t *out = NULL;
    kp_ddb_key(upk, KP_DDB_USER, c->user_id);
    kp_ddb_key(ipk, KP_DDB_IDEM, c->idem_key);
    kp_ddb_key(rpk, KP_DDB_RES, c->res_id);
    json_t *keys = json_pack("[o, o]", kp_ddb_key_item(upk, KP_DDB_SK_MAIN), kp_ddb_key_item(ipk, KP_DDB_SK_MAIN));
    if (keys && c->res_id)
        json_array_append_new(keys, kp_ddb_key_item(rpk, KP_DDB_SK_MAIN));
    json_t *req =
        keys ? json_pack("{s:{s:{s:o, s:b}}}", "RequestItems", d->table, "Keys", keys, "ConsistentRead", 1) : NULL;
    kp_status rc = req ? kp_ddb_call(d, "BatchGetItem", req, &out, err) : oom(err);
    json_decref(req);
    if (rc == KP_OK && json_object_size(json_object_get(out, "UnprocessedKeys")) > 0)
        rc = kp_err_set(err, KP_EUNAVAILABLE, "DynamoDB BatchGetItem left keys unprocessed");
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(json_object_get(out, "Responses"), d->table), i, it)
    {
        char pk[KP_DDB_KEY_MAX];
        kp_ddb_get_s(it, "PK", pk, sizeof pk);
        if (strcmp(pk, upk) == 0)
            st->user = json_incref(it);
        else if (strcmp(pk, ipk) == 0)
            st->idem_used = 1;
        else if (c->res_id && strcmp(pk, rpk) == 0)
            st->res = json_incref(it);
    }
    json_decref(out);
    return rc;
}

/* The transaction of one credit change from balance b (read at version b->version) to nb. Item 0: the
 * balance (CAS), 1: the idempotency key, then the ledger entry and the reservation when there are. */
static json_t *credit_items(kp_ddb *d, const kp_credit_change *c, const kp_balance *b, const kp_balance *nb,
                            int64_t now, long *res_i)
{
    char upk[KP_DDB_KEY_MAX], ipk[KP_DDB_KEY_MAX];
    kp_ddb_key(upk, KP_DDB_USER, c->user_id);
    kp_ddb_key(ipk, KP_DDB_IDEM, c->idem_key);
    json_t *items = json_pack("[{s:{s:s, s:o, s:s, s:s, s:s, s:{s:o, s:o, s:o, s:o}}}]", "Update", "TableName",
                              d->table, "Key", kp_ddb_key_item(upk, KP_DDB_SK_MAIN), "UpdateExpression",
                              "SET bal_daily = :d, bal_monthly = :m, bal_version = :nv", "ConditionExpression",
                              "bal_version = :v", "ReturnValuesOnConditionCheckFailure", "ALL_OLD",
                              "ExpressionAttributeValues", ":d", kp_ddb_n(nb->daily), ":m", kp_ddb_n(nb->monthly),
                              ":nv", kp_ddb_n(nb->version), ":v", kp_ddb_n(b->version));
    int bad = !items;
    json_t *idem =
        json_pack("{s:o, s:o, s:o, s:o, s:o}", "PK", kp_ddb_s(ipk), "SK", kp_ddb_s(KP_DDB_SK_MAIN), "user_id",
                  kp_ddb_s(c->user_id), "seq", kp_ddb_n(nb->version), "created_at", kp_ddb_n(now));
    bad = bad || kp_ddb_put_new(items, d->table, idem);
    if (!bad && (c->delta_daily != 0 || c->delta_monthly != 0 || c->record_zero)) {
        kp_ledger_entry e = {0};
        e.seq = nb->version;
        snprintf(e.user_id, sizeof e.user_id, "%s", c->user_id);
        e.delta_daily = c->delta_daily;
        e.delta_monthly = c->delta_monthly;
        e.balance_daily = nb->daily;
        e.balance_monthly = nb->monthly;
        snprintf(e.reason, sizeof e.reason, "%s", c->reason ? c->reason : "");
        snprintf(e.idem_key, sizeof e.idem_key, "%s", c->idem_key);
        snprintf(e.reservation_id, sizeof e.reservation_id, "%s", c->res_id ? c->res_id : "");
        e.created_at = now;
        bad = kp_ddb_put_new(items, d->table, kp_ddb_ledger_item(&e));
    }
    *res_i = -1;
    if (!bad && c->res_id) {
        *res_i = (long)json_array_size(items);
        if (c->res_from == KP_RES_NONE) {
            kp_reservation r = {0};
            snprintf(r.id, sizeof r.id, "%s", c->res_id);
            snprintf(r.user_id, sizeof r.user_id, "%s", c->user_id);
            r.daily = c->res_daily;
            r.monthly = c->res_monthly;
            r.state = c->res_to;
            r.created_at = r.updated_at = now;
            bad = kp_ddb_put_new(items, d->table, kp_ddb_reservation_item(&r));
        } else {
            char rpk[KP_DDB_KEY_MAX];
            kp_ddb_key(rpk, KP_DDB_RES, c->res_id);
            bad = json_array_append_new(
                items, json_pack("{s:{s:s, s:o, s:s, s:s, s:{s:o, s:o, s:o}}}", "Update", "TableName", d->table, "Key",
                                 kp_ddb_key_item(rpk, KP_DDB_SK_MAIN), "UpdateExpression",
                                 "SET #s = :to, updated_at = :now REMOVE GSI2PK, GSI2SK", "ConditionExpression",
                                 "#s = :from", "ExpressionAttributeValues", ":to", kp_ddb_n(c->res_to), ":now",
                                 kp_ddb_n(now), ":from", kp_ddb_n(c->res_from)));
            if (!bad)
                bad = json_object_set_new(json_object_get(json_array_get(items, *res_i), "Update"),
                                          "ExpressionAttributeNames", json_pack("{s:s}", "#s", "state"));
        }
    }
    if (bad) {
        json_decref(items);
        return NULL;
    }
    return items;
}

int kp_ddb_credit_change_valid(const kp_credit_change *c)
{
    return c && nonempty_fits(c->user_id, KP_ID_MAX) && nonempty_fits(c->idem_key, KP_IDEM_MAX) &&
           fits(c->reason ? c->reason : "", KP_REASON_MAX) && (!c->res_id || nonempty_fits(c->res_id, KP_ID_MAX));
}

/* How credit_attempt ended. */
enum { CREDIT_DONE = 0, CREDIT_AGAIN, CREDIT_REREAD };

kp_status kp_ddb_credit_prepare(kp_ddb *d, const kp_credit_change *c, const kp_ddb_credit_state *st, int64_t now,
                                kp_balance *b, kp_balance *nb, json_t **items, long *res_i, kp_err *err)
{
    *items = NULL;
    *res_i = -1;
    if (!st->user)
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    kp_ddb_balance_from(st->user, b);
    if (st->idem_used)
        return kp_err_set(err, KP_EDUPLICATE, "idempotency key already used");
    if (c->expected_version >= 0 && c->expected_version != b->version)
        return kp_err_set(err, KP_ECONFLICT, "balance changed (version %lld, expected %lld)", (long long)b->version,
                          (long long)c->expected_version);
    *nb = (kp_balance){b->daily + c->delta_daily, b->monthly + c->delta_monthly, b->version + 1};
    if (nb->daily < 0 || nb->monthly < 0)
        return kp_err_set(err, KP_ECREDITS, "not enough credits");
    if (c->res_id) {
        kp_reservation r = {0};
        if (st->res)
            kp_ddb_reservation_from(st->res, &r);
        if (c->res_from == KP_RES_NONE ? st->res != NULL : (!st->res || r.state != c->res_from))
            return kp_err_set(err, KP_ECONFLICT, "reservation %s is not in the expected state", c->res_id);
    }
    *items = credit_items(d, c, b, nb, now, res_i);
    return *items ? KP_OK : oom(err);
}

/* One attempt from what st says (read before, or the balance a lost race returned). *next: CREDIT_DONE,
 * CREDIT_AGAIN (the balance moved and the caller gave no expected_version: st->user now holds the
 * balance that won, try again) or CREDIT_REREAD (read again first). */
static kp_status credit_attempt(kp_ddb *d, const kp_credit_change *c, kp_ddb_credit_state *st, kp_balance *out,
                                int *next, kp_err *err)
{
    kp_balance b = {0}, nb = {0};
    long res_i = -1;
    json_t *items = NULL;
    *next = CREDIT_DONE;
    kp_status rc = kp_ddb_credit_prepare(d, c, st, (int64_t)time(NULL), &b, &nb, &items, &res_i, err);
    if (rc == KP_OK)
        rc = kp_ddb_transact(d, items, err);
    if (out)
        *out = rc == KP_OK ? nb : b;
    if (rc == KP_ECONFLICT && items) {
        json_t *won = kp_ddb_reason_item(d, 0);
        if (kp_ddb_reason_failed(d, 1)) {
            rc = kp_err_set(err, KP_EDUPLICATE, "idempotency key already used");
            *next = CREDIT_REREAD; /* for the balance to report */
        } else if (res_i >= 0 && kp_ddb_reason_failed(d, (size_t)res_i)) {
            rc = kp_err_set(err, KP_ECONFLICT, "reservation %s is not in the expected state", c->res_id);
        } else {
            rc = kp_err_set(err, KP_ECONFLICT, "balance changed meanwhile");
            if (c->expected_version < 0)
                *next = won ? CREDIT_AGAIN : CREDIT_REREAD;
            if (won) {
                json_decref(st->user);
                st->user = json_incref(won);
            }
        }
    }
    json_decref(items);
    return rc;
}

/* Reads once (1 BatchGetItem), then transacts; a lost race retries from the balance that won, which
 * the cancelled transaction returns (ALL_OLD), without reading again. Bounded. */
static kp_status ddb_credits_apply(kp_store *s, const kp_credit_change *c, kp_balance *out, kp_err *err)
{
    kp_ddb *d = D(s);
    kp_ddb_credit_state st = {0};
    int next = CREDIT_REREAD;
    kp_status rc = KP_ECONFLICT;
    if (!kp_ddb_credit_change_valid(c))
        return kp_err_set(err, KP_EINVAL, "invalid credit change");
    for (int i = 0; i < CAS_ATTEMPTS && next != CREDIT_DONE; i++) {
        kp_err_clear(err);
        if (next == CREDIT_REREAD) {
            kp_ddb_credit_state_clear(&st);
            rc = kp_ddb_credit_read(d, c, &st, err);
            if (rc != KP_OK)
                break;
        }
        rc = credit_attempt(d, c, &st, out, &next, err);
    }
    kp_ddb_credit_state_clear(&st);
    return rc;
}

/* Reads (the reservation, then the balance), lets the rule decide, then writes as credits_apply does:
 * a move of the balance or the reservation in between comes back as KP_ECONFLICT (store.h). */
static kp_status ddb_credits_decide(kp_store *s, const char *user_id, const char *res_id, kp_credit_rule_fn rule,
                                    void *arg, kp_balance *out, kp_err *err)
{
    kp_credit_state st = {0};
    kp_credit_change c;
    kp_balance tmp = {0, 0, 0};
    int apply = 0;
    kp_status rc = KP_OK;
    if (!rule || (!user_id && !res_id))
        return kp_err_set(err, KP_EINVAL, "invalid credit decision");
    out = out ? out : &tmp;
    if (res_id) { /* a missing reservation or user is the rule's to judge */
        rc = ddb_reservation_get(s, res_id, &st.res, err);
        st.res_found = rc == KP_OK;
        if (rc != KP_OK && rc != KP_ENOTFOUND)
            return rc;
    }
    const char *user = user_id ? user_id : st.res_found ? st.res.user_id : NULL;
    if (user) {
        rc = ddb_balance_get(s, user, &st.balance, err);
        st.balance_found = rc == KP_OK;
        if (rc != KP_OK && rc != KP_ENOTFOUND)
            return rc;
    }
    kp_err_clear(err);
    *out = st.balance;
    rc = rule(&st, arg, &c, &apply, err);
    if (rc != KP_OK || !apply)
        return rc;
    return ddb_credits_apply(s, &c, out, err);
}

static kp_status ddb_user_create_credited(kp_store *s, const kp_user *u, const kp_credit_change *c, kp_err *err)
{
    kp_ddb *d = D(s);
    long email_i = -1, sub_i = -1, res_i = -1;
    kp_balance zero = {0, 0, 0}, nb;
    if (!user_valid(u) || !kp_ddb_credit_change_valid(c) || strcmp(c->user_id, u->id) != 0 || c->res_id)
        return kp_err_set(err, KP_EINVAL, "invalid user or credit change");
    nb = (kp_balance){c->delta_daily, c->delta_monthly, 1};
    if (nb.daily < 0 || nb.monthly < 0)
        return kp_err_set(err, KP_ECREDITS, "not enough credits");
    json_t *items = json_array();
    json_t *credit = credit_items(d, c, &zero, &nb, (int64_t)time(NULL), &res_i);
    kp_status rc = KP_OK;
    /* the user item is created with its balance already applied, so the credit's balance update is dropped */
    if (!items || !credit || add_user_items(items, d->table, u, &nb, &email_i, &sub_i) != 0)
        rc = oom(err);
    for (size_t i = 1; rc == KP_OK && i < json_array_size(credit); i++)
        if (json_array_append(items, json_array_get(credit, i)) != 0)
            rc = oom(err);
    if (rc == KP_OK)
        rc = kp_ddb_transact(d, items, err);
    if (rc == KP_ECONFLICT) {
        size_t idem_i = json_array_size(items) - (json_array_size(credit) - 1);
        rc = kp_ddb_reason_failed(d, idem_i) ? kp_err_set(err, KP_EDUPLICATE, "idempotency key already used")
                                             : user_conflict(d, email_i, sub_i, err);
    }
    json_decref(credit);
    json_decref(items);
    return rc;
}

typedef struct ledger_acc {
    kp_ledger_entry *v;
    size_t n, cap;
    kp_balance sum;
} ledger_acc;

static kp_status ledger_add(const json_t *item, void *ctx, kp_err *err)
{
    ledger_acc *a = ctx;
    kp_status rc = grow((void **)&a->v, &a->cap, a->n, sizeof *a->v, err);
    if (rc != KP_OK)
        return rc;
    memset(&a->v[a->n], 0, sizeof a->v[a->n]);
    kp_ddb_ledger_from(item, &a->v[a->n++]);
    return KP_OK;
}

static kp_status ledger_sum_add(const json_t *item, void *ctx, kp_err *err)
{
    ledger_acc *a = ctx;
    (void)err;
    a->sum.daily += kp_ddb_get_n(item, "delta_daily");
    a->sum.monthly += kp_ddb_get_n(item, "delta_monthly");
    return KP_OK;
}

/* A Query of the user's ledger items (SK "L#..."), newest first, below before_seq when > 0. */
static json_t *ledger_query(kp_ddb *d, const char *user_id, int64_t before_seq, size_t limit)
{
    char pk[KP_DDB_KEY_MAX], lo[KP_DDB_KEY_MAX], hi[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_USER, user_id);
    kp_ddb_ledger_sk(lo, 0);
    kp_ddb_ledger_sk(hi, before_seq > 0 ? before_seq - 1 : INT64_MAX);
    json_t *req = json_pack("{s:s, s:s, s:{s:o, s:o, s:o}, s:b, s:b}", "TableName", d->table, "KeyConditionExpression",
                            "PK = :pk AND SK BETWEEN :lo AND :hi", "ExpressionAttributeValues", ":pk", kp_ddb_s(pk),
                            ":lo", kp_ddb_s(lo), ":hi", kp_ddb_s(hi), "ScanIndexForward", 0, "ConsistentRead", 1);
    if (req && limit > 0)
        json_object_set_new(req, "Limit", json_integer((json_int_t)limit));
    return req;
}

static kp_status ddb_ledger_list(kp_store *s, const char *user_id, int64_t before_seq, size_t limit,
                                 kp_ledger_entry **out, size_t *n, kp_err *err)
{
    kp_ddb *d = D(s);
    ledger_acc a = {0};
    json_t *resp = NULL;
    if (!nonempty_fits(user_id, KP_ID_MAX))
        return kp_err_set(err, KP_EINVAL, "invalid user id");
    json_t *req = ledger_query(d, user_id, before_seq, limit);
    kp_status rc = req ? kp_ddb_call(d, "Query", req, &resp, err) : oom(err);
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(resp, "Items"), i, it)
    {
        if (rc == KP_OK && a.n < limit)
            rc = ledger_add(it, &a, err);
    }
    json_decref(req);
    json_decref(resp);
    if (rc != KP_OK) {
        free(a.v);
        return rc;
    }
    *out = a.v;
    *n = a.n;
    return KP_OK;
}

static kp_status ddb_ledger_sum(kp_store *s, const char *user_id, kp_balance *out, kp_err *err)
{
    kp_ddb *d = D(s);
    ledger_acc a = {0};
    if (!nonempty_fits(user_id, KP_ID_MAX))
        return kp_err_set(err, KP_EINVAL, "invalid user id");
    json_t *req = ledger_query(d, user_id, 0, 0);
    kp_status rc = req ? kp_ddb_query_all(d, req, ledger_sum_add, &a, err) : oom(err);
    json_decref(req);
    if (rc == KP_OK)
        *out = a.sum;
    return rc;
}

/* ---- the handle ---- */

static void ddb_close(kp_store *s)
{
    if (!s)
        return;
    kp_ddb_close(D(s));
    free(s->impl);
}

static const kp_store_ops ddb_ops = {
    .user_create = ddb_user_create,
    .user_get = ddb_user_get,
    .user_create_credited = ddb_user_create_credited,
    .user_get_by_email = ddb_user_get_by_email,
    .user_get_by_sub = ddb_user_get_by_sub,
    .user_set_admin = ddb_user_set_admin,
    .user_set_plan = ddb_user_set_plan,
    .user_set_email_verified = ddb_user_set_email_verified,
    .verification_create = ddb_verification_create,
    .verification_consume = ddb_verification_consume,
    .plan_get = ddb_plan_get,
    .plan_list = ddb_plan_list,
    .plan_put = ddb_plan_put,
    .balance_get = ddb_balance_get,
    .account_get = kp_ddb_account_get, /* ddb_billing.c: reads the subscription too */
    .credits_apply = ddb_credits_apply,
    .reservation_get = ddb_reservation_get,
    .credits_decide = ddb_credits_decide,
    .ledger_list = ddb_ledger_list,
    .ledger_sum = ddb_ledger_sum,
    .project_create = kp_ddb_project_create,
    .project_get = kp_ddb_project_get,
    .project_list = kp_ddb_project_list,
    .version_create = kp_ddb_version_create,
    .version_get = kp_ddb_version_get,
    .version_list = kp_ddb_version_list,
    .version_set_settled = kp_ddb_version_set_settled,
    .version_finish = kp_ddb_version_finish,
    .project_mark_deleting = kp_ddb_project_mark_deleting,
    .project_delete = kp_ddb_project_delete,
    .version_end = kp_ddb_version_end,
    .admit = kp_ddb_admit,
    .leases_renew = kp_ddb_leases_renew,
    .lease_transfer = kp_ddb_lease_transfer,
    .version_request_cancel = kp_ddb_version_request_cancel,
    .versions_generating_count = kp_ddb_versions_generating_count,
    .versions_unsettled = kp_ddb_versions_unsettled,
    .versions_expired = kp_ddb_versions_expired,
    .reservations_orphaned = kp_ddb_reservations_orphaned,
    .credits_apply_many = kp_ddb_credits_apply_many,
    .users_bonus_page = kp_ddb_users_bonus_page,
    .bonus_page_grant = kp_ddb_bonus_page_grant,
    .events_append = kp_ddb_events_append,
    .events_append_many = kp_ddb_events_append_many,
    .events_list = kp_ddb_events_list,
    .events_last_id = kp_ddb_events_last_id,
    .billing_customer_get = kp_ddb_billing_customer_get,
    .billing_customer_find = kp_ddb_billing_customer_find,
    .subscription_get = kp_ddb_subscription_get,
    .billing_apply = kp_ddb_billing_apply,
    .snapshot_begin = ddb_snapshot_noop,
    .snapshot_end = ddb_snapshot_noop,
    .ping = ddb_ping,
    .close = ddb_close,
};

kp_status kp_ddb_store_open(const char *prefix, kp_store **out, kp_err *err)
{
    ddb_store *h = calloc(1, sizeof *h);
    if (!h)
        return oom(err);
    kp_status rc = kp_ddb_open(&h->d, prefix, err);
    if (rc != KP_OK) {
        free(h);
        return rc;
    }
    h->base.ops = &ddb_ops;
    h->base.impl = h;
    *out = &h->base;
    return KP_OK;
}

kp_status kp_ddb_store_migrate(const char *prefix, int *created, kp_err *err)
{
    kp_ddb d = {0};
    kp_status rc = kp_ddb_open(&d, prefix, err);
    if (rc == KP_OK)
        rc = kp_ddb_migrate(&d, 60, created, err);
    kp_ddb_close(&d);
    return rc;
}

unsigned long kp_ddb_store_requests(kp_store *s)
{
    return D(s)->requests;
}

kp_ddb *kp_ddb_store_client(kp_store *s)
{
    return D(s);
}
