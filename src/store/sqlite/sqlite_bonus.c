/*
 * sqlite_bonus.c - the SQLite backend's bonus_page_grant (store.h): one page
 * of the daily bonus read and granted in ONE write transaction, so that what
 * the rule saw is what is written (no compare-and-swap can fail, no balance
 * is read twice). Per page: the page read (sq_users_bonus_page, inside the
 * transaction); per user granted, one UPDATE that checks the idempotency key
 * and writes the balance (no change: the key was used); the ledger rows
 * GRANT_GROUP at a time in one INSERT. The rule is the domain's
 * (domain/credits.c, through the callback): no SQL here knows it.
 *
 * Invariant kept: a user's balance changes only together with the ledger row
 * that explains it (both in the page's transaction; any failure of the store
 * rolls the whole page back).
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_internal.h"

/* Ledger rows per INSERT: one statement per row costs several times more
 * per row (statement start and end, the AUTOINCREMENT counter). */
#define GRANT_GROUP 40
#define GRANT_ROW "(?,?,?,?,?,?,?,?,?)"
#define GRANT_ROW_PARAMS 9
#define GRANT_ROWS_5 GRANT_ROW "," GRANT_ROW "," GRANT_ROW "," GRANT_ROW "," GRANT_ROW
#define GRANT_ROWS_40                                                                                                  \
    GRANT_ROWS_5 "," GRANT_ROWS_5 "," GRANT_ROWS_5 "," GRANT_ROWS_5 "," GRANT_ROWS_5 "," GRANT_ROWS_5 "," GRANT_ROWS_5 \
                 "," GRANT_ROWS_5
#define GRANT_INSERT                                                                                                   \
    "INSERT INTO ledger (user_id, delta_daily, delta_monthly, balance_daily, balance_monthly, reason, idem_key, "      \
    "reservation_id, created_at) VALUES "

typedef enum stmt_id { ST_GRANT_BALANCE, ST_GRANT_ROW, ST_GRANT_ROWS, ST_COUNT } stmt_id;

static const char *const stmt_sql[ST_COUNT] = {
    /* the key check and the balance write in one step: no row changed means the key was used */
    [ST_GRANT_BALANCE] = "UPDATE balances SET daily = ?2, monthly = ?3, version = version + 1 "
                         "WHERE user_id = ?1 AND NOT EXISTS (SELECT 1 FROM ledger WHERE idem_key = ?4)",
    [ST_GRANT_ROW] = GRANT_INSERT GRANT_ROW,
    [ST_GRANT_ROWS] = GRANT_INSERT GRANT_ROWS_40,
};

_Static_assert(ST_COUNT <= SQ_SLOTS_BONUS_N, "statement slots");
_Static_assert(sizeof GRANT_ROWS_40 == 40 * sizeof GRANT_ROW, "GRANT_ROWS_40 holds GRANT_GROUP rows");

static kp_status stmt_get(sq_store *h, stmt_id id, sqlite3_stmt **out, kp_err *err)
{
    return sq_stmt_cached(h, SQ_SLOTS_BONUS + (unsigned)id, stmt_sql[id], out, err);
}

/* The ledger rows granted and not written yet (their keys copied here). */
typedef struct grant_rows {
    kp_credit_change c[GRANT_GROUP];
    kp_balance after[GRANT_GROUP];
    char key[GRANT_GROUP][KP_IDEM_MAX];
    size_t n;
    int64_t now;
} grant_rows;

/* Runs one INSERT of rows [from, from + count); two keys alike in a page are the caller's error. */
static kp_status rows_insert(sq_store *h, grant_rows *r, stmt_id id, size_t from, size_t count, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    for (size_t i = 0; i < count; i++)
        sq_ledger_bind(st, 1 + (int)i * GRANT_ROW_PARAMS, &r->c[from + i], &r->after[from + i], r->now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = sqlite3_extended_errcode(sq_db(h)) == SQLITE_CONSTRAINT_UNIQUE
                 ? kp_err_set(err, KP_EINVAL, "two changes of one bonus page with one idempotency key")
                 : kp_sqlite_db_error(sq_db(h), "append ledger", err);
    sq_stmt_done(st);
    return rc;
}

/* Writes the waiting rows: a full group in one statement, fewer one by one. */
static kp_status rows_flush(sq_store *h, grant_rows *r, kp_err *err)
{
    kp_status rc = KP_OK;
    if (r->n == GRANT_GROUP)
        rc = rows_insert(h, r, ST_GRANT_ROWS, 0, GRANT_GROUP, err);
    for (size_t i = 0; r->n < GRANT_GROUP && i < r->n && rc == KP_OK; i++)
        rc = rows_insert(h, r, ST_GRANT_ROW, i, 1, err);
    r->n = 0;
    return rc;
}

/* The balance write with its key check; *used is 1 (nothing written) when the key was used. */
static kp_status balance_grant(sq_store *h, const kp_credit_change *c, const kp_balance *after, int *used, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_GRANT_BALANCE, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, c->user_id);
    sqlite3_bind_int64(st, 2, after->daily);
    sqlite3_bind_int64(st, 3, after->monthly);
    sq_bind_text(st, 4, c->idem_key);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "write balance", err);
    *used = sqlite3_changes(sq_db(h)) == 0;
    sq_stmt_done(st);
    return rc;
}

/* The refusals of change c for user u that need no write (KP_OK: none), and the balance it leads to. */
static kp_status change_check(const kp_bonus_candidate *u, const kp_credit_change *c, kp_balance *after)
{
    if (!sq_credit_change_valid(c) || c->res_id || strcmp(c->user_id, u->user_id) != 0)
        return KP_EINVAL;
    if (c->expected_version >= 0 && c->expected_version != u->balance.version)
        return KP_ECONFLICT;
    *after = (kp_balance){0, 0, u->balance.version + 1};
    if (__builtin_add_overflow(u->balance.daily, c->delta_daily, &after->daily) ||
        __builtin_add_overflow(u->balance.monthly, c->delta_monthly, &after->monthly))
        return KP_EINVAL;
    return after->daily < 0 || after->monthly < 0 ? KP_ECREDITS : KP_OK;
}

/* Asks the rule about user i and grants what it says; the outcome into out->results[i]. */
static kp_status user_grant(sq_store *h, kp_bonus_rule_fn rule, void *arg, grant_rows *r, kp_bonus_page *out, size_t i,
                            kp_err *err)
{
    const kp_bonus_candidate *u = &out->users[i];
    kp_credit_change *c = &r->c[r->n];
    int used = 0;
    out->results[i] = KP_OK;
    if (!rule(u, arg, r->key[r->n], c))
        return KP_OK;
    if (c->idem_key != r->key[r->n] && sq_fits(c->idem_key, KP_IDEM_MAX)) { /* the row keeps its own copy */
        memcpy(r->key[r->n], c->idem_key, strlen(c->idem_key) + 1);
        c->idem_key = r->key[r->n];
    }
    kp_status rc = change_check(u, c, &r->after[r->n]);
    if (rc != KP_OK) {
        out->results[i] = rc;
        return KP_OK;
    }
    rc = balance_grant(h, c, &r->after[r->n], &used, err);
    if (rc != KP_OK || used) {
        out->results[i] = used ? KP_EDUPLICATE : rc;
        return rc;
    }
    out->granted++;
    if (c->delta_daily == 0 && c->delta_monthly == 0 && !c->record_zero)
        return KP_OK;
    r->n++;
    return r->n == GRANT_GROUP ? rows_flush(h, r, err) : KP_OK;
}

/* The page's work inside its transaction. */
static kp_status page_grant_locked(kp_store *s, const char *token, unsigned segment, unsigned total_segments,
                                   size_t limit, kp_bonus_rule_fn rule, void *arg, kp_bonus_page *out,
                                   char next[KP_PAGE_TOKEN_MAX], kp_err *err)
{
    sq_store *h = sq_impl(s);
    grant_rows *r = malloc(sizeof *r);
    kp_status rc = r ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
    if (rc == KP_OK)
        rc = sq_users_bonus_page(s, token, segment, total_segments, limit, &out->users, &out->n, next, err);
    if (rc == KP_OK && out->n && !(out->results = malloc(out->n * sizeof *out->results)))
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    if (rc == KP_OK) {
        r->n = 0;
        r->now = (int64_t)time(NULL);
    }
    for (size_t i = 0; rc == KP_OK && i < out->n; i++)
        rc = user_grant(h, rule, arg, r, out, i, err);
    if (rc == KP_OK)
        rc = rows_flush(h, r, err);
    free(r);
    return rc;
}

kp_status sq_bonus_page_grant(kp_store *s, const char *token, unsigned segment, unsigned total_segments, size_t limit,
                              kp_bonus_rule_fn rule, void *arg, kp_bonus_page *out, char next[KP_PAGE_TOKEN_MAX],
                              kp_err *err)
{
    sq_store *h = sq_impl(s);
    *out = (kp_bonus_page){0};
    next[0] = '\0';
    if (!rule)
        return kp_err_set(err, KP_EINVAL, "no bonus rule");
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = page_grant_locked(s, token, segment, total_segments, limit, rule, arg, out, next, err);
    rc = sq_tx_end(h, rc, err);
    if (rc != KP_OK) { /* rolled back: nothing of the page was applied */
        free(out->users);
        free(out->results);
        *out = (kp_bonus_page){0};
        next[0] = '\0';
    }
    return rc;
}
