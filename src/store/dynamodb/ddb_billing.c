/*
 * ddb_billing.c - the DynamoDB backend's billing ops (store.h "billing"):
 * a user's Stripe link USER#{uid} / BILL with the claim CUS#{customer} / A
 * (one user per customer id), subscriptions STRSUB#{id} / A (version as
 * compare-and-swap) and processed events STREVT#{id} / A. billing_apply is
 * one TransactWriteItems (docs/ARCHITECTURE.md "DynamoDB data model"): its
 * credit change is ddb_store.c's (kp_ddb_credit_prepare), joined to the same
 * transaction, so an event's plan, subscription and credits land together
 * or not at all. account_get is here too: it reads the user's link and the
 * subscription it names with the user and plan (2 BatchGetItems), so that
 * GET /v1/me shows the subscription within the request budget.
 */
#include "store/dynamodb/ddb_billing.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/dynamodb/ddb_internal.h"
#include "store/dynamodb/ddb_items.h"

#define KP_DDB_BILL_SK "BILL"
#define KP_DDB_CUS "CUS#"
#define KP_DDB_STRSUB "STRSUB#"
#define KP_DDB_STREVT "STREVT#"
#define BILLING_ATTEMPTS 16 /* a credit's balance moved meanwhile: decide again from the new one */

static kp_status oom(kp_err *err)
{
    return kp_err_set(err, KP_ENOMEM, "out of memory");
}

static int id_ok(const char *s, size_t cap)
{
    return s && *s && strlen(s) < cap;
}

static json_t *customer_item(const kp_billing_customer *c, int64_t now)
{
    char pk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_USER, c->user_id);
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "PK", kp_ddb_s(pk), "SK", kp_ddb_s(KP_DDB_BILL_SK), "user_id",
                     kp_ddb_s(c->user_id), "customer_id", kp_ddb_s(c->customer_id), "subscription_id",
                     kp_ddb_s(c->subscription_id), "updated_at", kp_ddb_n(now));
}

static void customer_from(const json_t *item, kp_billing_customer *c)
{
    memset(c, 0, sizeof *c);
    kp_ddb_get_s(item, "user_id", c->user_id, sizeof c->user_id);
    kp_ddb_get_s(item, "customer_id", c->customer_id, sizeof c->customer_id);
    kp_ddb_get_s(item, "subscription_id", c->subscription_id, sizeof c->subscription_id);
    c->updated_at = kp_ddb_get_n(item, "updated_at");
}

/* The subscription as stored after this write: version one more than sub's. */
static json_t *subscription_item(const kp_subscription *sub, int64_t now)
{
    char pk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_STRSUB, sub->id);
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "PK", kp_ddb_s(pk), "SK",
                     kp_ddb_s(KP_DDB_SK_MAIN), "id", kp_ddb_s(sub->id), "user_id", kp_ddb_s(sub->user_id),
                     "customer_id", kp_ddb_s(sub->customer_id), "status", kp_ddb_s(sub->status), "price_id",
                     kp_ddb_s(sub->price_id), "plan_id", kp_ddb_s(sub->plan_id), "current_period_end",
                     kp_ddb_n(sub->current_period_end), "cancel_at_period_end", kp_ddb_bool(sub->cancel_at_period_end),
                     "event_created", kp_ddb_n(sub->event_created), "version", kp_ddb_n(sub->version + 1), "updated_at",
                     kp_ddb_n(now));
}

static void subscription_from(const json_t *item, kp_subscription *sub)
{
    memset(sub, 0, sizeof *sub);
    kp_ddb_get_s(item, "id", sub->id, sizeof sub->id);
    kp_ddb_get_s(item, "user_id", sub->user_id, sizeof sub->user_id);
    kp_ddb_get_s(item, "customer_id", sub->customer_id, sizeof sub->customer_id);
    kp_ddb_get_s(item, "status", sub->status, sizeof sub->status);
    kp_ddb_get_s(item, "price_id", sub->price_id, sizeof sub->price_id);
    kp_ddb_get_s(item, "plan_id", sub->plan_id, sizeof sub->plan_id);
    sub->current_period_end = kp_ddb_get_n(item, "current_period_end");
    sub->cancel_at_period_end = kp_ddb_get_bool(item, "cancel_at_period_end");
    sub->event_created = kp_ddb_get_n(item, "event_created");
    sub->version = kp_ddb_get_n(item, "version");
    sub->updated_at = kp_ddb_get_n(item, "updated_at");
}

/* ---- reads ---- */

kp_status kp_ddb_billing_customer_get(kp_store *s, const char *user_id, kp_billing_customer *out, kp_err *err)
{
    json_t *item = NULL;
    kp_status rc = kp_ddb_get_existing(kp_ddb_of(s), KP_DDB_USER, user_id, KP_ID_MAX, KP_DDB_BILL_SK,
                                       "billing customer", &item, err);
    if (rc == KP_OK)
        customer_from(item, out);
    json_decref(item);
    return rc;
}

/* Through the claim CUS#{customer}: 2 consistent GetItems. */
kp_status kp_ddb_billing_customer_find(kp_store *s, const char *customer_id, kp_billing_customer *out, kp_err *err)
{
    char uid[KP_ID_MAX];
    json_t *item = NULL;
    kp_status rc = kp_ddb_get_existing(kp_ddb_of(s), KP_DDB_CUS, customer_id, KP_STRIPE_ID_MAX, KP_DDB_SK_MAIN,
                                       "billing customer", &item, err);
    if (rc == KP_OK) {
        kp_ddb_get_s(item, "user_id", uid, sizeof uid);
        rc = kp_ddb_billing_customer_get(s, uid, out, err);
    }
    json_decref(item);
    return rc;
}

kp_status kp_ddb_subscription_get(kp_store *s, const char *id, kp_subscription *out, kp_err *err)
{
    json_t *item = NULL;
    kp_status rc = kp_ddb_get_existing(kp_ddb_of(s), KP_DDB_STRSUB, id, KP_STRIPE_ID_MAX, KP_DDB_SK_MAIN,
                                       "subscription", &item, err);
    if (rc == KP_OK)
        subscription_from(item, out);
    json_decref(item);
    return rc;
}

/* ---- account_get: the user with their plan and subscription ---- */

/* One consistent BatchGetItem of keys (stolen; at most 2 here, so DynamoDB's limits are far): the items
 * found, in any order, into *found. */
static kp_status batch_get(kp_ddb *d, json_t *keys, json_t **found, kp_err *err)
{
    json_t *out = NULL;
    json_t *req =
        keys ? json_pack("{s:{s:{s:o, s:b}}}", "RequestItems", d->table, "Keys", keys, "ConsistentRead", 1) : NULL;
    kp_status rc = req ? kp_ddb_call(d, "BatchGetItem", req, &out, err) : oom(err);
    if (rc == KP_OK && json_object_size(json_object_get(out, "UnprocessedKeys")) > 0)
        rc = kp_err_set(err, KP_EUNAVAILABLE, "DynamoDB BatchGetItem left keys unprocessed");
    *found = rc == KP_OK ? json_incref(json_object_get(json_object_get(out, "Responses"), d->table)) : NULL;
    json_decref(req);
    json_decref(out);
    return rc;
}

/* The item of found with this key, or NULL (borrowed). */
static const json_t *item_with(const json_t *found, const char *pk, const char *sk)
{
    size_t i;
    const json_t *it;
    json_array_foreach(found, i, it)
    {
        char ipk[KP_DDB_KEY_MAX], isk[KP_DDB_KEY_MAX];
        kp_ddb_get_s(it, "PK", ipk, sizeof ipk);
        kp_ddb_get_s(it, "SK", isk, sizeof isk);
        if (strcmp(ipk, pk) == 0 && strcmp(isk, sk) == 0)
            return it;
    }
    return NULL;
}

/* Round 2: the plan, and the subscription the link names (sid, "" for none). */
static kp_status plan_and_subscription(kp_ddb *d, const char *sid, kp_account *out, kp_err *err)
{
    char plan_sk[KP_DDB_KEY_MAX], spk[KP_DDB_KEY_MAX];
    json_t *found = NULL;
    if (!id_ok(out->user.plan_id, KP_PLAN_ID_MAX))
        return kp_err_set(err, KP_ENOTFOUND, "plan not found");
    kp_ddb_key(plan_sk, "PLAN#", out->user.plan_id);
    kp_ddb_key(spk, KP_DDB_STRSUB, sid);
    json_t *keys = json_pack("[o]", kp_ddb_key_item(KP_DDB_PLANS, plan_sk));
    if (keys && id_ok(sid, KP_STRIPE_ID_MAX) && json_array_append_new(keys, kp_ddb_key_item(spk, KP_DDB_SK_MAIN))) {
        json_decref(keys);
        return oom(err);
    }
    kp_status rc = batch_get(d, keys, &found, err);
    const json_t *plan = rc == KP_OK ? item_with(found, KP_DDB_PLANS, plan_sk) : NULL;
    if (rc == KP_OK && !plan)
        rc = kp_err_set(err, KP_ENOTFOUND, "plan not found");
    if (rc == KP_OK) {
        kp_subscription sub; /* all empty when there is none */
        subscription_from(id_ok(sid, KP_STRIPE_ID_MAX) ? item_with(found, spk, KP_DDB_SK_MAIN) : NULL, &sub);
        kp_ddb_plan_from(plan, &out->plan);
        memcpy(out->subscription.status, sub.status, sizeof sub.status);
        memcpy(out->subscription.plan_id, sub.plan_id, sizeof sub.plan_id);
        out->subscription.current_period_end = sub.current_period_end;
        out->subscription.cancel_at_period_end = sub.cancel_at_period_end;
    }
    json_decref(found);
    return rc;
}

/* 2 consistent BatchGetItems: {the user item, their link USER#{uid} / BILL}, then {the user's plan, the
 * subscription the link names}. */
kp_status kp_ddb_account_get(kp_store *s, const char *user_id, kp_account *out, kp_err *err)
{
    kp_ddb *d = kp_ddb_of(s);
    char upk[KP_DDB_KEY_MAX], sid[KP_STRIPE_ID_MAX];
    json_t *found = NULL;
    if (!id_ok(user_id, KP_ID_MAX))
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    kp_ddb_key(upk, KP_DDB_USER, user_id);
    kp_status rc =
        batch_get(d, json_pack("[o, o]", kp_ddb_key_item(upk, KP_DDB_SK_MAIN), kp_ddb_key_item(upk, KP_DDB_BILL_SK)),
                  &found, err);
    const json_t *user = rc == KP_OK ? item_with(found, upk, KP_DDB_SK_MAIN) : NULL;
    if (rc == KP_OK && !user)
        rc = kp_err_set(err, KP_ENOTFOUND, "user not found");
    if (rc == KP_OK) {
        memset(out, 0, sizeof *out);
        kp_ddb_user_from(user, &out->user);
        kp_ddb_balance_from(user, &out->balance);
        kp_ddb_get_s(item_with(found, upk, KP_DDB_BILL_SK), "subscription_id", sid, sizeof sid);
        rc = plan_and_subscription(d, sid, out, err);
    }
    json_decref(found);
    return rc;
}

/* ---- billing_apply ---- */

/* Where each part of the transaction sits (-1: absent), to name the condition that failed. */
typedef struct bill_tx {
    json_t *items;
    long sub, link, claim, old_claim, user_check, plan_check, plan_update;
    long credit; /* its balance update; +1 its key */
    long res;    /* the credit's reservation */
} bill_tx;

static int append(json_t *items, long *at, json_t *op)
{
    *at = (long)json_array_size(items);
    return json_array_append_new(items, op);
}

static int add_subscription(bill_tx *t, const char *table, const kp_subscription *sub, int64_t now)
{
    json_t *put = json_pack("{s:s, s:o}", "TableName", table, "Item", subscription_item(sub, now));
    if (!put)
        return -1;
    int bad;
    if (sub->version == 0) {
        bad = json_object_set_new(put, "ConditionExpression", json_string("attribute_not_exists(PK)"));
    } else {
        bad = json_object_set_new(put, "ConditionExpression", json_string("version = :v")) ||
              json_object_set_new(put, "ExpressionAttributeValues", json_pack("{s:o}", ":v", kp_ddb_n(sub->version)));
    }
    if (bad) {
        json_decref(put);
        return -1;
    }
    return append(t->items, &t->sub, json_pack("{s:o}", "Put", put));
}

/* The link (a CAS on the customer id it had, old; had: whether it existed), the claim on its customer id
 * (free, or this user's already) and, when the id changes, the old claim's removal. */
static int add_customer(bill_tx *t, const char *table, const kp_billing_customer *c, int had, const char *old,
                        int64_t now)
{
    char cpk[KP_DDB_KEY_MAX];
    int bad = append(t->items, &t->link,
                     json_pack("{s:{s:s, s:o, s:s}}", "Put", "TableName", table, "Item", customer_item(c, now),
                               "ConditionExpression", had ? "customer_id = :old" : "attribute_not_exists(PK)"));
    if (!bad && had)
        bad = json_object_set_new(json_object_get(json_array_get(t->items, (size_t)t->link), "Put"),
                                  "ExpressionAttributeValues", json_pack("{s:o}", ":old", kp_ddb_s(old)));
    if (!bad && old[0] && strcmp(old, c->customer_id) != 0) {
        kp_ddb_key(cpk, KP_DDB_CUS, old);
        bad = append(t->items, &t->old_claim,
                     json_pack("{s:{s:s, s:o, s:s, s:{s:o}}}", "Delete", "TableName", table, "Key",
                               kp_ddb_key_item(cpk, KP_DDB_SK_MAIN), "ConditionExpression", "user_id = :u",
                               "ExpressionAttributeValues", ":u", kp_ddb_s(c->user_id)));
    }
    if (bad || !c->customer_id[0])
        return bad;
    kp_ddb_key(cpk, KP_DDB_CUS, c->customer_id);
    return append(t->items, &t->claim,
                  json_pack("{s:{s:s, s:{s:o, s:o, s:o}, s:s, s:{s:o}}}", "Put", "TableName", table, "Item", "PK",
                            kp_ddb_s(cpk), "SK", kp_ddb_s(KP_DDB_SK_MAIN), "user_id", kp_ddb_s(c->user_id),
                            "ConditionExpression", "attribute_not_exists(PK) OR user_id = :u",
                            "ExpressionAttributeValues", ":u", kp_ddb_s(c->user_id)));
}

/* The user's current link (1 consistent GetItem): *had, and its customer id into old. */
static kp_status link_read(kp_ddb *d, const char *user_id, int *had, char old[KP_STRIPE_ID_MAX], kp_err *err)
{
    char pk[KP_DDB_KEY_MAX];
    json_t *item = NULL;
    kp_ddb_key(pk, KP_DDB_USER, user_id);
    kp_status rc = kp_ddb_get_item(d, pk, KP_DDB_BILL_SK, &item, err);
    *had = item != NULL;
    old[0] = '\0';
    if (item)
        kp_ddb_get_s(item, "customer_id", old, KP_STRIPE_ID_MAX);
    json_decref(item);
    return rc;
}

static json_t *user_key(const char *uid)
{
    char pk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, KP_DDB_USER, uid);
    return kp_ddb_key_item(pk, KP_DDB_SK_MAIN);
}

/* The plan must exist; the user's plan is set in the credit's balance update when it is the same user
 * (one transaction may touch an item once), else in its own conditional update. */
static int add_plan(bill_tx *t, const char *table, const kp_billing_write *w, const char *credit_user)
{
    char sk[KP_DDB_KEY_MAX];
    kp_ddb_key(sk, "PLAN#", w->plan_id);
    int bad = append(t->items, &t->plan_check,
                     json_pack("{s:{s:s, s:o, s:s}}", "ConditionCheck", "TableName", table, "Key",
                               kp_ddb_key_item(KP_DDB_PLANS, sk), "ConditionExpression", "attribute_exists(PK)"));
    if (bad)
        return bad;
    if (credit_user && strcmp(credit_user, w->plan_user_id) == 0) {
        json_t *upd = json_object_get(json_array_get(t->items, (size_t)t->credit), "Update");
        const char *expr = json_string_value(json_object_get(upd, "UpdateExpression"));
        char *more = expr ? malloc(strlen(expr) + sizeof ", plan_id = :plan") : NULL;
        if (!more)
            return -1;
        memcpy(more, expr, strlen(expr));
        memcpy(more + strlen(expr), ", plan_id = :plan", sizeof ", plan_id = :plan");
        bad = json_object_set_new(upd, "UpdateExpression", json_string(more)) ||
              json_object_set_new(json_object_get(upd, "ExpressionAttributeValues"), ":plan", kp_ddb_s(w->plan_id));
        free(more);
        return bad;
    }
    return append(t->items, &t->plan_update,
                  json_pack("{s:{s:s, s:o, s:s, s:s, s:{s:o}}}", "Update", "TableName", table, "Key",
                            user_key(w->plan_user_id), "UpdateExpression", "SET plan_id = :p", "ConditionExpression",
                            "attribute_exists(PK)", "ExpressionAttributeValues", ":p", kp_ddb_s(w->plan_id)));
}

/* What a cancelled transaction means. *again: the credit's balance or key moved; decide again. */
static kp_status bill_conflict(kp_ddb *d, const bill_tx *t, const kp_credit_change *c, int *again, kp_err *err)
{
#define FAILED(i) ((i) >= 0 && kp_ddb_reason_failed(d, (size_t)(i)))
    if (FAILED(0))
        return kp_err_set(err, KP_EDUPLICATE, "Stripe event already applied");
    if (FAILED(t->sub))
        return kp_err_set(err, KP_ECONFLICT, "subscription changed meanwhile");
    if (FAILED(t->claim))
        return kp_err_set(err, KP_ECONFLICT, "billing customer: already linked elsewhere");
    if (FAILED(t->plan_check))
        return kp_err_set(err, KP_ENOTFOUND, "plan not found");
    if (FAILED(t->plan_update) || FAILED(t->user_check))
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    if (FAILED(t->res))
        return kp_err_set(err, KP_ECONFLICT, "reservation %s is not in the expected state", c->res_id);
    if (FAILED(t->link) || FAILED(t->old_claim) || (t->credit >= 0 && FAILED(t->credit + 1)) ||
        (FAILED(t->credit) && c->expected_version < 0)) {
        *again = 1;
        return kp_err_set(err, KP_ECONFLICT, "balance changed meanwhile");
    }
    return kp_err_set(err, KP_ECONFLICT, FAILED(t->credit) ? "balance changed meanwhile" : "billing write refused");
#undef FAILED
}

static int write_valid(const kp_billing_write *w)
{
    const kp_subscription *sub = w->subscription;
    const kp_billing_customer *c = w->customer;
    return id_ok(w->event_id, KP_STRIPE_ID_MAX) && (!sub || (id_ok(sub->id, KP_STRIPE_ID_MAX) && sub->version >= 0)) &&
           (!c || id_ok(c->user_id, KP_ID_MAX)) && !w->plan_user_id == !w->plan_id &&
           (!w->plan_id || (id_ok(w->plan_user_id, KP_ID_MAX) && id_ok(w->plan_id, KP_PLAN_ID_MAX))) &&
           (!w->credit || kp_ddb_credit_change_valid(w->credit));
}

/* One attempt: the credit read (if any), then one TransactWriteItems. */
static kp_status bill_attempt(kp_ddb *d, const kp_billing_write *w, int *credited, int *again, kp_err *err)
{
    bill_tx t = {NULL, -1, -1, -1, -1, -1, -1, -1, -1, -1};
    char old[KP_STRIPE_ID_MAX] = "";
    int had = 0;
    kp_ddb_credit_state st = {0};
    json_t *credit = NULL;
    const char *credit_user = NULL;
    int64_t now = (int64_t)time(NULL);
    kp_status rc = KP_OK;
    int bad;
    *again = 0;
    *credited = 0;
    if (w->credit) {
        kp_balance b, nb;
        rc = kp_ddb_credit_read(d, w->credit, &st, err);
        if (rc == KP_OK)
            rc = kp_ddb_credit_prepare(d, w->credit, &st, now, &b, &nb, &credit, &t.res, err);
        if (rc == KP_EDUPLICATE) {
            kp_err_clear(err);
            rc = KP_OK; /* credited before: the rest still applies */
        }
        if (rc != KP_OK)
            goto cleanup;
    }
    if (w->customer && (rc = link_read(d, w->customer->user_id, &had, old, err)) != KP_OK)
        goto cleanup;
    char epk[KP_DDB_KEY_MAX];
    kp_ddb_key(epk, KP_DDB_STREVT, w->event_id);
    t.items = json_array();
    bad = !t.items ||
          kp_ddb_put_new(t.items, d->table,
                         json_pack("{s:o, s:o, s:o, s:o, s:o}", "PK", kp_ddb_s(epk), "SK", kp_ddb_s(KP_DDB_SK_MAIN),
                                   "type", kp_ddb_s(w->event_type ? w->event_type : ""), "created",
                                   kp_ddb_n(w->event_created), "applied_at", kp_ddb_n(now)));
    if (!bad && credit) {
        long base = (long)json_array_size(t.items);
        for (size_t i = 0; !bad && i < json_array_size(credit); i++)
            bad = json_array_append(t.items, json_array_get(credit, i));
        t.credit = base;
        t.res = t.res >= 0 ? base + t.res : -1;
        credit_user = w->credit->user_id;
    }
    if (!bad && w->subscription)
        bad = add_subscription(&t, d->table, w->subscription, now);
    if (!bad && w->plan_id)
        bad = add_plan(&t, d->table, w, credit_user);
    if (!bad && w->customer) {
        const char *uid = w->customer->user_id;
        bad = add_customer(&t, d->table, w->customer, had, old, now);
        if (!bad && !(credit_user && strcmp(credit_user, uid) == 0) &&
            !(w->plan_id && strcmp(w->plan_user_id, uid) == 0))
            bad = append(t.items, &t.user_check,
                         json_pack("{s:{s:s, s:o, s:s}}", "ConditionCheck", "TableName", d->table, "Key", user_key(uid),
                                   "ConditionExpression", "attribute_exists(PK)"));
    }
    rc = bad ? oom(err) : kp_ddb_transact(d, t.items, err);
    if (rc == KP_OK)
        *credited = credit != NULL;
    else if (rc == KP_ECONFLICT)
        rc = bill_conflict(d, &t, w->credit, again, err);
cleanup:
    json_decref(credit);
    json_decref(t.items);
    kp_ddb_credit_state_clear(&st);
    return rc;
}

kp_status kp_ddb_billing_apply(kp_store *s, const kp_billing_write *w, int *credited, kp_err *err)
{
    int again = 1, done = 0;
    kp_status rc = KP_ECONFLICT;
    if (!w || !write_valid(w))
        return kp_err_set(err, KP_EINVAL, "invalid billing change");
    for (int i = 0; i < BILLING_ATTEMPTS && again; i++) {
        kp_err_clear(err);
        rc = bill_attempt(kp_ddb_of(s), w, &done, &again, err);
    }
    if (credited)
        *credited = rc == KP_OK && done;
    return rc;
}
