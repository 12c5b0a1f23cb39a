/*
 * sqlite_credits.c - the SQLite backend's credits (store.h): balances,
 * the append-only ledger with its unique idempotency keys, reservations and
 * their state machine, and the daily bonus in batches. sq_credits_apply_locked
 * is the one place a balance changes; the other files call it inside their
 * own transactions (sign-up, admission, the end of a generation, billing).
 */
#include <sqlite3.h>
#include <string.h>
#include <time.h>

#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_internal.h"

#define LEDGER_COLS                                                                                                    \
    "seq, user_id, delta_daily, delta_monthly, balance_daily, balance_monthly, reason, idem_key, "                     \
    "reservation_id, created_at"

typedef enum stmt_id {
    ST_BALANCE_GET,
    ST_BALANCE_SET,
    ST_LEDGER_IDEM_USED,
    ST_LEDGER_INSERT,
    ST_LEDGER_LIST,
    ST_LEDGER_SUM,
    ST_LEDGER_MAX_SEQ,
    ST_RES_GET,
    ST_RES_INSERT,
    ST_RES_SET_STATE,
    ST_BONUS_BATCH_END,
    ST_BONUS_INSERT,
    ST_BONUS_APPLY,
    ST_COUNT
} stmt_id;

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BALANCE_GET] = "SELECT daily, monthly, version FROM balances WHERE user_id = ?1",
    [ST_BALANCE_SET] = "UPDATE balances SET daily = ?2, monthly = ?3, version = version + 1 WHERE user_id = ?1",
    [ST_LEDGER_IDEM_USED] = "SELECT 1 FROM ledger WHERE idem_key = ?1",
    [ST_LEDGER_INSERT] = "INSERT INTO ledger (user_id, delta_daily, delta_monthly, balance_daily, "
                         "balance_monthly, reason, idem_key, reservation_id, created_at) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [ST_LEDGER_LIST] = "SELECT " LEDGER_COLS " FROM ledger WHERE user_id = ?1 AND seq < ?2 "
                       "ORDER BY seq DESC LIMIT ?3",
    [ST_LEDGER_SUM] = "SELECT COALESCE(SUM(delta_daily), 0), COALESCE(SUM(delta_monthly), 0) "
                      "FROM ledger WHERE user_id = ?1",
    [ST_LEDGER_MAX_SEQ] = "SELECT COALESCE(MAX(seq), 0) FROM ledger",
    [ST_RES_GET] = "SELECT id, user_id, daily, monthly, state, created_at, updated_at "
                   "FROM reservations WHERE id = ?1",
    [ST_RES_INSERT] = "INSERT INTO reservations (id, user_id, daily, monthly, state, created_at, updated_at) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    [ST_RES_SET_STATE] = "UPDATE reservations SET state = ?2, updated_at = ?3 WHERE id = ?1",
    /* The last id of the batch (NULL when the batch is empty). */
    [ST_BONUS_BATCH_END] = "SELECT MAX(id) FROM (SELECT id FROM users WHERE id > ?1 ORDER BY id LIMIT ?2)",
    /*
     * One bonus row per user of the batch (after < id <= end) that has none
     * for the date yet: the unique idem_key makes a second run, or a
     * concurrent one, insert nothing for users already done. delta_daily may
     * be negative or zero (unused daily credits do not carry over); the row
     * is written anyway, since it is what records the date as done.
     */
    [ST_BONUS_INSERT] = "INSERT INTO ledger (user_id, delta_daily, delta_monthly, balance_daily, "
                        "balance_monthly, reason, idem_key, reservation_id, created_at) "
                        "SELECT u.id, p.daily_bonus - b.daily, 0, p.daily_bonus, b.monthly, 'daily_bonus', "
                        "'daily:' || ?1 || ':' || u.id, '', ?4 "
                        "FROM users AS u JOIN plans AS p ON p.id = u.plan_id "
                        "JOIN balances AS b ON b.user_id = u.id "
                        "WHERE u.id > ?2 AND u.id <= ?3 "
                        "AND (u.email_verified = 1 OR u.verification_required = 0) ORDER BY u.id "
                        "ON CONFLICT(idem_key) DO NOTHING",
    /* Moves exactly the balances of the rows just inserted (seq above the
     * watermark read inside the same write transaction) to their new value. */
    [ST_BONUS_APPLY] = "UPDATE balances SET daily = l.balance_daily, version = balances.version + 1 "
                       "FROM ledger AS l WHERE l.seq > ?1 AND l.user_id = balances.user_id",
};

_Static_assert(ST_COUNT <= SQ_SLOTS_CREDITS_N, "statement slots");

/* Fetches this file's cached statement, preparing it on first use. */
static kp_status stmt_get(sq_store *h, stmt_id id, sqlite3_stmt **out, kp_err *err)
{
    return sq_stmt_cached(h, SQ_SLOTS_CREDITS + (unsigned)id, stmt_sql[id], out, err);
}

static const char *const res_state_names[] = {
    [KP_RES_NONE] = "",
    [KP_RES_RESERVED] = "reserved",
    [KP_RES_COMMITTED] = "committed",
    [KP_RES_REFUNDED] = "refunded",
};

/* ---- credits ---------------------------------------------------------- */

static kp_status balance_read(sq_store *h, const char *user_id, kp_balance *out, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_BALANCE_GET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        out->daily = sqlite3_column_int64(st, 0);
        out->monthly = sqlite3_column_int64(st, 1);
        out->version = sqlite3_column_int64(st, 2);
    } else if (step == SQLITE_DONE) {
        rc = kp_err_set(err, KP_ENOTFOUND, "user not found");
    } else {
        rc = kp_sqlite_db_error(sq_db(h), "read balance", err);
    }
    sq_stmt_done(st);
    return rc;
}

kp_status sq_balance_get(kp_store *s, const char *user_id, kp_balance *out, kp_err *err)
{
    if (!user_id || !*user_id)
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    return balance_read(sq_impl(s), user_id, out, err);
}

static kp_status idem_key_used(sq_store *h, const char *key, int *used, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_LEDGER_IDEM_USED, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, key);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW || step == SQLITE_DONE)
        *used = step == SQLITE_ROW;
    else
        rc = kp_sqlite_db_error(sq_db(h), "read ledger", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status balance_write(sq_store *h, const char *user_id, int64_t daily, int64_t monthly, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_BALANCE_SET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    sqlite3_bind_int64(st, 2, daily);
    sqlite3_bind_int64(st, 3, monthly);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "write balance", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status ledger_append(sq_store *h, const kp_credit_change *c, const kp_balance *after, int64_t now,
                               kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_LEDGER_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, c->user_id);
    sqlite3_bind_int64(st, 2, c->delta_daily);
    sqlite3_bind_int64(st, 3, c->delta_monthly);
    sqlite3_bind_int64(st, 4, after->daily);
    sqlite3_bind_int64(st, 5, after->monthly);
    sq_bind_text(st, 6, c->reason);
    sq_bind_text(st, 7, c->idem_key);
    sq_bind_text(st, 8, c->res_id);
    sqlite3_bind_int64(st, 9, now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "append ledger", err);
    sq_stmt_done(st);
    return rc;
}

static int res_state_parse(const char *name, kp_reservation_state *out)
{
    for (int i = KP_RES_RESERVED; i <= KP_RES_REFUNDED; i++) {
        if (strcmp(name, res_state_names[i]) == 0) {
            *out = (kp_reservation_state)i;
            return 0;
        }
    }
    return -1;
}

/* Reads a reservation row (id, user_id, daily, monthly, state, created_at, updated_at). */
kp_status sq_read_reservation(sqlite3_stmt *st, void *item, kp_err *err)
{
    kp_reservation *out = item;
    sq_column_copy(st, 0, out->id, sizeof out->id);
    sq_column_copy(st, 1, out->user_id, sizeof out->user_id);
    out->daily = sqlite3_column_int64(st, 2);
    out->monthly = sqlite3_column_int64(st, 3);
    out->created_at = sqlite3_column_int64(st, 5);
    out->updated_at = sqlite3_column_int64(st, 6);
    const unsigned char *state = sqlite3_column_text(st, 4);
    if (!state || res_state_parse((const char *)state, &out->state) != 0)
        return kp_err_set(err, KP_EINTERNAL, "reservation in an unknown state");
    return KP_OK;
}

/* Reads a reservation; *found is 0 (and out untouched) when it does not exist. */
static kp_status reservation_read(sq_store *h, const char *id, kp_reservation *out, int *found, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_RES_GET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, id);
    *found = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        rc = sq_read_reservation(st, out, err);
        *found = rc == KP_OK;
    } else if (step != SQLITE_DONE) {
        rc = kp_sqlite_db_error(sq_db(h), "read reservation", err);
    }
    sq_stmt_done(st);
    return rc;
}

static kp_status reservation_create(sq_store *h, const kp_credit_change *c, int64_t now, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_RES_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, c->res_id);
    sq_bind_text(st, 2, c->user_id);
    sqlite3_bind_int64(st, 3, c->res_daily);
    sqlite3_bind_int64(st, 4, c->res_monthly);
    sq_bind_text(st, 5, res_state_names[c->res_to]);
    sqlite3_bind_int64(st, 6, now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "create reservation", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status reservation_set_state(sq_store *h, const char *id, kp_reservation_state state, int64_t now,
                                       kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_RES_SET_STATE, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, id);
    sq_bind_text(st, 2, res_state_names[state]);
    sqlite3_bind_int64(st, 3, now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "update reservation", err);
    sq_stmt_done(st);
    return rc;
}

/* Checks and performs the reservation part of a credit change (res_id set). */
static kp_status reservation_transition(sq_store *h, const kp_credit_change *c, int64_t now, kp_err *err)
{
    kp_reservation res;
    int found = 0;
    kp_status rc = reservation_read(h, c->res_id, &res, &found, err);
    if (rc != KP_OK)
        return rc;
    if (c->res_from == KP_RES_NONE) {
        if (found)
            return kp_err_set(err, KP_ECONFLICT, "reservation already exists");
        return reservation_create(h, c, now, err);
    }
    if (!found || strcmp(res.user_id, c->user_id) != 0)
        return kp_err_set(err, KP_ECONFLICT, "no such reservation for this user");
    if (res.state != c->res_from)
        return kp_err_set(err, KP_ECONFLICT, "reservation is %s, not %s", res_state_names[res.state],
                          res_state_names[c->res_from]);
    return reservation_set_state(h, c->res_id, c->res_to, now, err);
}

/* The body of credits_apply, inside the write transaction. *out receives the
 * balance after the change, or the current one on EDUPLICATE / ECONFLICT /
 * ECREDITS. */
kp_status sq_credits_apply_locked(sq_store *h, const kp_credit_change *c, int64_t now, kp_balance *out, kp_err *err)
{
    int used = 0;
    kp_status rc = idem_key_used(h, c->idem_key, &used, err);
    if (rc != KP_OK)
        return rc;
    /* written by balance_read on KP_OK only; zeroed because the analyzer cannot
     * see that kp_err_set returns its (non-OK) status */
    kp_balance cur = {0, 0, 0};
    rc = balance_read(h, c->user_id, &cur, err);
    if (rc != KP_OK)
        return rc;
    *out = cur;
    if (used)
        return kp_err_set(err, KP_EDUPLICATE, "idempotency key already used");
    if (c->expected_version >= 0 && c->expected_version != cur.version)
        return kp_err_set(err, KP_ECONFLICT, "balance changed (version %lld, expected %lld)", (long long)cur.version,
                          (long long)c->expected_version);

    kp_balance next = {0, 0, cur.version + 1};
    if (__builtin_add_overflow(cur.daily, c->delta_daily, &next.daily) ||
        __builtin_add_overflow(cur.monthly, c->delta_monthly, &next.monthly))
        return kp_err_set(err, KP_EINVAL, "credit amount out of range");
    if (next.daily < 0 || next.monthly < 0)
        return kp_err_set(err, KP_ECREDITS, "not enough credits (daily %lld, monthly %lld)", (long long)cur.daily,
                          (long long)cur.monthly);

    if (c->res_id) {
        rc = reservation_transition(h, c, now, err);
        if (rc != KP_OK)
            return rc;
    }
    rc = balance_write(h, c->user_id, next.daily, next.monthly, err);
    if (rc == KP_OK && (c->delta_daily != 0 || c->delta_monthly != 0 || c->record_zero))
        rc = ledger_append(h, c, &next, now, err);
    if (rc == KP_OK)
        *out = next;
    return rc;
}

int sq_credit_change_valid(const kp_credit_change *c)
{
    if (!c || !sq_nonempty_fits(c->user_id, KP_ID_MAX) || !sq_nonempty_fits(c->idem_key, KP_IDEM_MAX) ||
        (c->reason && !sq_fits(c->reason, KP_REASON_MAX)))
        return 0;
    if (!c->res_id)
        return 1;
    return sq_nonempty_fits(c->res_id, KP_ID_MAX) && c->res_from >= KP_RES_NONE && c->res_from <= KP_RES_REFUNDED &&
           c->res_to >= KP_RES_RESERVED && c->res_to <= KP_RES_REFUNDED && c->res_daily >= 0 && c->res_monthly >= 0;
}

static kp_status credits_apply_body(sq_store *h, const void *arg, kp_balance *out, kp_err *err)
{
    return sq_credits_apply_locked(h, arg, (int64_t)time(NULL), out, err);
}

kp_status sq_credits_apply(kp_store *s, const kp_credit_change *c, kp_balance *out, kp_err *err)
{
    if (!sq_credit_change_valid(c))
        return kp_err_set(err, KP_EINVAL, "invalid credit change");
    return sq_run_balance_write(sq_impl(s), credits_apply_body, c, out, err);
}

kp_status sq_reservation_get(kp_store *s, const char *id, kp_reservation *out, kp_err *err)
{
    if (!id || !*id)
        return kp_err_set(err, KP_ENOTFOUND, "reservation not found");
    int found = 0;
    kp_status rc = reservation_read(sq_impl(s), id, out, &found, err);
    if (rc == KP_OK && !found)
        rc = kp_err_set(err, KP_ENOTFOUND, "reservation not found");
    return rc;
}

static void read_ledger_entry(sqlite3_stmt *st, kp_ledger_entry *e)
{
    e->seq = sqlite3_column_int64(st, 0);
    sq_column_copy(st, 1, e->user_id, sizeof e->user_id);
    e->delta_daily = sqlite3_column_int64(st, 2);
    e->delta_monthly = sqlite3_column_int64(st, 3);
    e->balance_daily = sqlite3_column_int64(st, 4);
    e->balance_monthly = sqlite3_column_int64(st, 5);
    sq_column_copy(st, 6, e->reason, sizeof e->reason);
    sq_column_copy(st, 7, e->idem_key, sizeof e->idem_key);
    sq_column_copy(st, 8, e->reservation_id, sizeof e->reservation_id);
    e->created_at = sqlite3_column_int64(st, 9);
}

static kp_status ledger_row(sqlite3_stmt *st, void *item, kp_err *err)
{
    (void)err;
    read_ledger_entry(st, item);
    return KP_OK;
}

kp_status sq_ledger_list(kp_store *s, const char *user_id, int64_t before_seq, size_t limit, kp_ledger_entry **out,
                         size_t *n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    *out = NULL;
    *n = 0;
    if (!user_id || !*user_id || limit == 0)
        return KP_OK;

    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_LEDGER_LIST, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    sqlite3_bind_int64(st, 2, before_seq > 0 ? before_seq : INT64_MAX);
    sqlite3_bind_int64(st, 3, limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit);
    return sq_collect_rows(h, st, sizeof(kp_ledger_entry), ledger_row, NULL, "list ledger", (void **)out, n, err);
}

kp_status sq_ledger_sum(kp_store *s, const char *user_id, kp_balance *out, kp_err *err)
{
    sq_store *h = sq_impl(s);
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_LEDGER_SUM, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        out->daily = sqlite3_column_int64(st, 0);
        out->monthly = sqlite3_column_int64(st, 1);
        out->version = 0;
    } else {
        rc = kp_sqlite_db_error(sq_db(h), "sum ledger", err);
    }
    sq_stmt_done(st);
    return rc;
}

/* ---- daily bonus ------------------------------------------------------ */

/* Dates are the caller's day key, e.g. "2025-01-31": digits and dashes. */
static int bonus_date_valid(const char *date)
{
    if (!sq_nonempty_fits(date, 32))
        return 0;
    for (const char *c = date; *c; c++)
        if (!((*c >= '0' && *c <= '9') || *c == '-'))
            return 0;
    return 1;
}

/* The last user id of the batch after `after`; *found 0 when it is empty. */
static kp_status bonus_batch_end(sq_store *h, const char *after, size_t limit, char end[KP_ID_MAX], int *found,
                                 kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_BONUS_BATCH_END, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, after);
    sqlite3_bind_int64(st, 2, limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit);
    *found = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
            sq_column_copy(st, 0, end, KP_ID_MAX);
            *found = 1;
        }
    } else {
        rc = kp_sqlite_db_error(sq_db(h), "daily bonus batch", err);
    }
    sq_stmt_done(st);
    return rc;
}

static kp_status ledger_max_seq(sq_store *h, int64_t *seq, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_LEDGER_MAX_SEQ, &st, err);
    if (rc != KP_OK)
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW)
        *seq = sqlite3_column_int64(st, 0);
    else
        rc = kp_sqlite_db_error(sq_db(h), "read ledger", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status bonus_insert_rows(sq_store *h, const char *date, const char *after, const char *end, int64_t now,
                                   size_t *inserted, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_BONUS_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, date);
    sq_bind_text(st, 2, after);
    sq_bind_text(st, 3, end);
    sqlite3_bind_int64(st, 4, now);
    if (sqlite3_step(st) == SQLITE_DONE)
        *inserted = (size_t)sqlite3_changes(sq_db(h));
    else
        rc = kp_sqlite_db_error(sq_db(h), "daily bonus ledger", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status bonus_apply_rows(sq_store *h, int64_t after_seq, size_t expected, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_BONUS_APPLY, &st, err);
    if (rc != KP_OK)
        return rc;
    sqlite3_bind_int64(st, 1, after_seq);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "daily bonus balances", err);
    else if ((size_t)sqlite3_changes(sq_db(h)) != expected)
        rc = kp_err_set(err, KP_EINTERNAL, "daily bonus updated %d balances for %zu ledger rows",
                        sqlite3_changes(sq_db(h)), expected);
    sq_stmt_done(st);
    return rc;
}

kp_status sq_daily_bonus_batch(kp_store *s, const char *date, const char *after_user_id, size_t limit,
                               char last_user_id[KP_ID_MAX], size_t *granted, kp_err *err)
{
    sq_store *h = sq_impl(s);
    const char *after = after_user_id ? after_user_id : "";
    char end[KP_ID_MAX] = "";
    size_t count = 0;
    int found = 0;
    int64_t watermark = 0;

    last_user_id[0] = '\0';
    *granted = 0;
    if (!bonus_date_valid(date))
        return kp_err_set(err, KP_EINVAL, "invalid bonus date");
    if (!sq_fits(after, KP_ID_MAX) || limit == 0)
        return kp_err_set(err, KP_EINVAL, "invalid bonus batch");

    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = bonus_batch_end(h, after, limit, end, &found, err);
    if (rc == KP_OK && found)
        rc = ledger_max_seq(h, &watermark, err);
    if (rc == KP_OK && found)
        rc = bonus_insert_rows(h, date, after, end, (int64_t)time(NULL), &count, err);
    if (rc == KP_OK && count > 0)
        rc = bonus_apply_rows(h, watermark, count, err);
    rc = sq_tx_end(h, rc, err);
    if (rc != KP_OK)
        return rc;
    memcpy(last_user_id, end, KP_ID_MAX);
    *granted = count;
    return KP_OK;
}
