/*
 * sqlite_billing.c - the SQLite side of billing (store.h, "billing"):
 * users' links to Stripe customers, subscriptions as the webhooks last
 * described them, and the ids of the Stripe events applied.
 *
 * billing_apply writes everything one event changes inside one BEGIN
 * IMMEDIATE transaction, the event id first: a redelivered event finds its
 * id and changes nothing, however many copies arrive at once. Subscriptions
 * carry a version for compare-and-swap, so a decision the domain made on a
 * stale read is refused, never half-applied. The rules (which event moves
 * what) live in domain/billing.c, not here.
 */
#include <time.h>

#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_internal.h"

/* This file's statements, in its slots (sqlite_internal.h). */
enum {
    SB_CUSTOMER_GET,
    SB_CUSTOMER_FIND,
    SB_SUB_GET,
    SB_EVENT_INSERT,
    SB_SUB_INSERT,
    SB_SUB_UPDATE,
    SB_CUSTOMER_UPSERT,
    SB_COUNT
};

#define CUSTOMER_COLS "user_id, customer_id, subscription_id, updated_at"
#define SUB_COLS                                                                                                       \
    "id, user_id, customer_id, status, price_id, plan_id, current_period_end, cancel_at_period_end, event_created, "   \
    "version, updated_at"

static const char *const billing_sql[SB_COUNT] = {
    [SB_CUSTOMER_GET] = "SELECT " CUSTOMER_COLS " FROM billing_customers WHERE user_id = ?1",
    [SB_CUSTOMER_FIND] = "SELECT " CUSTOMER_COLS " FROM billing_customers WHERE customer_id = ?1 AND customer_id != ''",
    [SB_SUB_GET] = "SELECT " SUB_COLS " FROM subscriptions WHERE id = ?1",
    [SB_EVENT_INSERT] = "INSERT INTO stripe_events (id, type, created, applied_at) VALUES (?1, ?2, ?3, ?4) "
                        "ON CONFLICT (id) DO NOTHING",
    [SB_SUB_INSERT] = "INSERT INTO subscriptions (" SUB_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?11) "
                      "ON CONFLICT (id) DO NOTHING",
    /* ?10: the version the caller read. */
    [SB_SUB_UPDATE] = "UPDATE subscriptions SET user_id = ?2, customer_id = ?3, status = ?4, price_id = ?5, "
                      "plan_id = ?6, current_period_end = ?7, cancel_at_period_end = ?8, event_created = ?9, "
                      "version = version + 1, updated_at = ?11 WHERE id = ?1 AND version = ?10",
    [SB_CUSTOMER_UPSERT] = "INSERT INTO billing_customers (" CUSTOMER_COLS ") VALUES (?1, ?2, ?3, ?4) "
                           "ON CONFLICT (user_id) DO UPDATE SET customer_id = excluded.customer_id, "
                           "subscription_id = excluded.subscription_id, updated_at = excluded.updated_at",
};

static kp_status stmt(sq_store *h, int id, sqlite3_stmt **out, kp_err *err)
{
    return sq_stmt_cached(h, SQ_SLOTS_BILLING + (unsigned)id, billing_sql[id], out, err);
}

/* ---- reads ------------------------------------------------------------ */

static void read_customer(sqlite3_stmt *st, kp_billing_customer *c)
{
    sq_column_copy(st, 0, c->user_id, sizeof c->user_id);
    sq_column_copy(st, 1, c->customer_id, sizeof c->customer_id);
    sq_column_copy(st, 2, c->subscription_id, sizeof c->subscription_id);
    c->updated_at = sqlite3_column_int64(st, 3);
}

static void read_subscription(sqlite3_stmt *st, kp_subscription *sub)
{
    sq_column_copy(st, 0, sub->id, sizeof sub->id);
    sq_column_copy(st, 1, sub->user_id, sizeof sub->user_id);
    sq_column_copy(st, 2, sub->customer_id, sizeof sub->customer_id);
    sq_column_copy(st, 3, sub->status, sizeof sub->status);
    sq_column_copy(st, 4, sub->price_id, sizeof sub->price_id);
    sq_column_copy(st, 5, sub->plan_id, sizeof sub->plan_id);
    sub->current_period_end = sqlite3_column_int64(st, 6);
    sub->cancel_at_period_end = sqlite3_column_int(st, 7);
    sub->event_created = sqlite3_column_int64(st, 8);
    sub->version = sqlite3_column_int64(st, 9);
    sub->updated_at = sqlite3_column_int64(st, 10);
}

typedef void (*row_fn)(sqlite3_stmt *st, void *out);

/* Runs a one-row lookup by key: KP_OK with *out filled, or KP_ENOTFOUND. */
static kp_status get_one(kp_store *s, int id, const char *key, row_fn read, void *out, const char *missing, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!sq_nonempty_fits(key, KP_STRIPE_ID_MAX))
        return kp_err_set(err, KP_ENOTFOUND, "%s", missing);
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, key);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        read(st, out);
    else if (step == SQLITE_DONE)
        rc = kp_err_set(err, KP_ENOTFOUND, "%s", missing);
    else
        rc = kp_sqlite_db_error(sq_db(h), "read billing", err);
    sq_stmt_done(st);
    return rc;
}

static void customer_row(sqlite3_stmt *st, void *out)
{
    read_customer(st, out);
}

static void subscription_row(sqlite3_stmt *st, void *out)
{
    read_subscription(st, out);
}

kp_status sq_billing_customer_get(kp_store *s, const char *user_id, kp_billing_customer *out, kp_err *err)
{
    return get_one(s, SB_CUSTOMER_GET, user_id, customer_row, out, "no billing customer for this user", err);
}

kp_status sq_billing_customer_find(kp_store *s, const char *customer_id, kp_billing_customer *out, kp_err *err)
{
    return get_one(s, SB_CUSTOMER_FIND, customer_id, customer_row, out, "unknown Stripe customer", err);
}

kp_status sq_subscription_get(kp_store *s, const char *id, kp_subscription *out, kp_err *err)
{
    return get_one(s, SB_SUB_GET, id, subscription_row, out, "unknown subscription", err);
}

/* ---- billing_apply ---------------------------------------------------- */

/* Runs a prepared write; *changes receives the rows it changed. Constraint
 * failures map to conflict (a unique key) or not found (a foreign key). */
static kp_status run_write(sq_store *h, sqlite3_stmt *st, int *changes, const char *what, kp_err *err)
{
    kp_status rc = KP_OK;
    if (sqlite3_step(st) == SQLITE_DONE) {
        *changes = sqlite3_changes(sq_db(h));
    } else {
        int code = sqlite3_extended_errcode(sq_db(h));
        if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY)
            rc = kp_err_set(err, KP_ECONFLICT, "%s: already linked elsewhere", what);
        else if (code == SQLITE_CONSTRAINT_FOREIGNKEY)
            rc = kp_err_set(err, KP_ENOTFOUND, "%s: user not found", what);
        else
            rc = kp_sqlite_db_error(sq_db(h), what, err);
    }
    sq_stmt_done(st);
    return rc;
}

static kp_status record_event(sq_store *h, const kp_billing_write *w, int64_t now, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    int changes = 0;
    kp_status rc = stmt(h, SB_EVENT_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, w->event_id);
    sq_bind_text(st, 2, w->event_type);
    sqlite3_bind_int64(st, 3, w->event_created);
    sqlite3_bind_int64(st, 4, now);
    rc = run_write(h, st, &changes, "record Stripe event", err);
    if (rc == KP_OK && changes == 0)
        rc = kp_err_set(err, KP_EDUPLICATE, "Stripe event already applied");
    return rc;
}

static kp_status write_subscription(sq_store *h, const kp_subscription *sub, int64_t now, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    int changes = 0;
    kp_status rc = stmt(h, sub->version == 0 ? SB_SUB_INSERT : SB_SUB_UPDATE, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, sub->id);
    sq_bind_text(st, 2, sub->user_id);
    sq_bind_text(st, 3, sub->customer_id);
    sq_bind_text(st, 4, sub->status);
    sq_bind_text(st, 5, sub->price_id);
    sq_bind_text(st, 6, sub->plan_id);
    sqlite3_bind_int64(st, 7, sub->current_period_end);
    sqlite3_bind_int(st, 8, sub->cancel_at_period_end ? 1 : 0);
    sqlite3_bind_int64(st, 9, sub->event_created);
    if (sub->version != 0)
        sqlite3_bind_int64(st, 10, sub->version);
    sqlite3_bind_int64(st, 11, now);
    rc = run_write(h, st, &changes, "write subscription", err);
    if (rc == KP_OK && changes == 0)
        rc = kp_err_set(err, KP_ECONFLICT, "subscription changed meanwhile");
    return rc;
}

static kp_status write_customer(sq_store *h, const kp_billing_customer *c, int64_t now, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    int changes = 0;
    kp_status rc = stmt(h, SB_CUSTOMER_UPSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, c->user_id);
    sq_bind_text(st, 2, c->customer_id);
    sq_bind_text(st, 3, c->subscription_id);
    sqlite3_bind_int64(st, 4, now);
    return run_write(h, st, &changes, "link Stripe customer", err);
}

static int subscription_valid(const kp_subscription *sub)
{
    return sq_nonempty_fits(sub->id, sizeof sub->id) && sq_fits(sub->user_id, sizeof sub->user_id) &&
           sq_fits(sub->customer_id, sizeof sub->customer_id) && sq_fits(sub->status, sizeof sub->status) &&
           sq_fits(sub->price_id, sizeof sub->price_id) && sq_fits(sub->plan_id, sizeof sub->plan_id) &&
           sub->version >= 0;
}

static int customer_valid(const kp_billing_customer *c)
{
    return sq_nonempty_fits(c->user_id, sizeof c->user_id) && sq_fits(c->customer_id, sizeof c->customer_id) &&
           sq_fits(c->subscription_id, sizeof c->subscription_id);
}

static int billing_write_valid(const kp_billing_write *w)
{
    return sq_nonempty_fits(w->event_id, KP_STRIPE_ID_MAX) && sq_fits(w->event_type, KP_NAME_MAX) &&
           (!w->subscription || subscription_valid(w->subscription)) && (!w->customer || customer_valid(w->customer)) &&
           (!w->plan_user_id == !w->plan_id) && (!w->credit || sq_credit_change_valid(w->credit));
}

/* The body of billing_apply, inside its transaction. */
static kp_status apply_locked(sq_store *h, const kp_billing_write *w, int64_t now, int *credited, kp_err *err)
{
    kp_status rc = record_event(h, w, now, err);
    if (rc == KP_OK && w->subscription)
        rc = write_subscription(h, w->subscription, now, err);
    if (rc == KP_OK && w->customer)
        rc = write_customer(h, w->customer, now, err);
    if (rc == KP_OK && w->plan_user_id)
        rc = sq_user_plan_write(h, w->plan_user_id, w->plan_id, err);
    if (rc == KP_OK && w->credit) {
        kp_balance after;
        rc = sq_credits_apply_locked(h, w->credit, now, &after, err);
        if (rc == KP_OK)
            *credited = 1;
        else if (rc == KP_EDUPLICATE)
            rc = KP_OK; /* granted before, by another event carrying the same key */
    }
    return rc;
}

kp_status sq_billing_apply(kp_store *s, const kp_billing_write *w, int *credited, kp_err *err)
{
    sq_store *h = sq_impl(s);
    int granted = 0;
    if (credited)
        *credited = 0;
    if (!w || !billing_write_valid(w))
        return kp_err_set(err, KP_EINVAL, "invalid billing change");
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = apply_locked(h, w, (int64_t)time(NULL), &granted, err);
    rc = sq_tx_end(h, rc, err);
    if (rc == KP_OK && credited)
        *credited = granted;
    return rc;
}
