/*
 * sqlite_credits.c - the SQLite backend's credits (store.h): balances,
 * the append-only ledger with its unique idempotency keys, reservations and
 * their state machine, many changes in one transaction (the daily bonus's
 * pages) and the walk over every user that the daily bonus reads.
 * sq_credits_apply_locked is the one place a balance changes; the other files
 * call it inside their own transactions (sign-up, admission, the end of a
 * generation, billing). The bonus rule itself is the domain's
 * (domain/credits.c): no SQL here knows it.
 */
#include <sqlite3.h>
#include <string.h>
#include <time.h>

#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_internal.h"

#define LEDGER_COLS                                                                                                    \
    "seq, user_id, delta_daily, delta_monthly, balance_daily, balance_monthly, reason, idem_key, "                     \
    "reservation_id, created_at"

/* credits_apply_many writes its ledger rows LEDGER_GROUP at a time, in one
 * INSERT: one statement per row costs several times more per row
 * (statement start and end, the AUTOINCREMENT counter, the foreign key). */
#define LEDGER_GROUP 32
#define LEDGER_ROW "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
#define LEDGER_ROW_PARAMS 9
#define LEDGER_ROWS_4 LEDGER_ROW ", " LEDGER_ROW ", " LEDGER_ROW ", " LEDGER_ROW
#define LEDGER_ROWS_16 LEDGER_ROWS_4 ", " LEDGER_ROWS_4 ", " LEDGER_ROWS_4 ", " LEDGER_ROWS_4
#define LEDGER_ROWS_32 LEDGER_ROWS_16 ", " LEDGER_ROWS_16
#define LEDGER_INSERT_COLS                                                                                             \
    "INSERT INTO ledger (user_id, delta_daily, delta_monthly, balance_daily, balance_monthly, reason, idem_key, "      \
    "reservation_id, created_at) VALUES "

typedef enum stmt_id {
    ST_BALANCE_GET,
    ST_BALANCE_SET,
    ST_BALANCE_GET_KEYED,
    ST_KEY_USED,
    ST_LEDGER_INSERT,
    ST_LEDGER_INSERT_GROUP,
    ST_LEDGER_LIST,
    ST_LEDGER_SUM,
    ST_RES_GET,
    ST_RES_INSERT,
    ST_RES_SET_STATE,
    ST_BONUS_PAGE,
    ST_COUNT
} stmt_id;

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BALANCE_GET] = "SELECT daily, monthly, version FROM balances WHERE user_id = ?1",
    [ST_BALANCE_SET] = "UPDATE balances SET daily = ?2, monthly = ?3, version = version + 1 WHERE user_id = ?1",
    /* the balance and whether a change's idempotency key was used, in one step */
    [ST_BALANCE_GET_KEYED] = "SELECT daily, monthly, version, EXISTS (SELECT 1 FROM ledger WHERE idem_key = ?2) "
                             "FROM balances WHERE user_id = ?1",
    [ST_KEY_USED] = "SELECT EXISTS (SELECT 1 FROM ledger WHERE idem_key = ?1)",
    [ST_LEDGER_INSERT] = LEDGER_INSERT_COLS LEDGER_ROW,
    [ST_LEDGER_INSERT_GROUP] = LEDGER_INSERT_COLS LEDGER_ROWS_32,
    [ST_LEDGER_LIST] = "SELECT " LEDGER_COLS " FROM ledger WHERE user_id = ?1 AND seq < ?2 "
                       "ORDER BY seq DESC LIMIT ?3",
    [ST_LEDGER_SUM] = "SELECT COALESCE(SUM(delta_daily), 0), COALESCE(SUM(delta_monthly), 0) "
                      "FROM ledger WHERE user_id = ?1",
    [ST_RES_GET] = "SELECT id, user_id, daily, monthly, state, created_at, updated_at "
                   "FROM reservations WHERE id = ?1",
    [ST_RES_INSERT] = "INSERT INTO reservations (id, user_id, daily, monthly, state, created_at, updated_at) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    [ST_RES_SET_STATE] = "UPDATE reservations SET state = ?2, updated_at = ?3 WHERE id = ?1",
    /*
     * A page of the walk over every user with a balance, after the page
     * token (the last id of the previous page), by id. Segment ?2 of ?3
     * holds the users whose id's last two characters (code points, the
     * second-last weighted 16) leave remainder ?2 when divided by ?3: stable
     * and disjoint, whatever the ids look like.
     */
    [ST_BONUS_PAGE] = "SELECT u.id, p.daily_bonus, b.daily, b.monthly, b.version, u.email_verified, "
                      "u.verification_required "
                      "FROM users AS u JOIN balances AS b ON b.user_id = u.id JOIN plans AS p ON p.id = u.plan_id "
                      "WHERE u.id > ?1 AND (?3 = 1 OR (unicode(substr(u.id, -1)) "
                      "+ 16 * COALESCE(unicode(substr(u.id, -2, 1)), 0)) % ?3 = ?2) "
                      "ORDER BY u.id LIMIT ?4",
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

/* Rows a credit change's transaction already read (credits_decide), so that
 * applying the change does not read them again: the user's balance (NULL:
 * read it) and the change's reservation (NULL: read it; else res_found says
 * whether it exists). */
typedef struct sq_known_rows {
    const kp_balance *balance;
    const kp_reservation *res;
    int res_found;
} sq_known_rows;

/* Reads a user's balance; with key (else NULL), *key_used says whether a
 * ledger row holds that idempotency key. KP_ENOTFOUND without a balance. */
static kp_status balance_read(sq_store *h, const char *user_id, const char *key, kp_balance *out, int *key_used,
                              kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, key ? ST_BALANCE_GET_KEYED : ST_BALANCE_GET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    if (key)
        sq_bind_text(st, 2, key);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        out->daily = sqlite3_column_int64(st, 0);
        out->monthly = sqlite3_column_int64(st, 1);
        out->version = sqlite3_column_int64(st, 2);
        if (key)
            *key_used = sqlite3_column_int(st, 3) != 0;
    } else if (step == SQLITE_DONE) {
        rc = kp_err_set(err, KP_ENOTFOUND, "user not found");
    } else {
        rc = kp_sqlite_db_error(sq_db(h), "read balance", err);
    }
    sq_stmt_done(st);
    return rc;
}

/* Whether a ledger row holds idempotency key key (*used). */
static kp_status key_read(sq_store *h, const char *key, int *used, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_KEY_USED, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, key);
    if (sqlite3_step(st) == SQLITE_ROW)
        *used = sqlite3_column_int(st, 0) != 0;
    else
        rc = kp_sqlite_db_error(sq_db(h), "read idempotency key", err);
    sq_stmt_done(st);
    return rc;
}

kp_status sq_balance_get(kp_store *s, const char *user_id, kp_balance *out, kp_err *err)
{
    if (!user_id || !*user_id)
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    return balance_read(sq_impl(s), user_id, NULL, out, NULL, err);
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

void sq_ledger_bind(sqlite3_stmt *st, int first, const kp_credit_change *c, const kp_balance *after, int64_t now)
{
    sq_bind_text(st, first, c->user_id);
    sqlite3_bind_int64(st, first + 1, c->delta_daily);
    sqlite3_bind_int64(st, first + 2, c->delta_monthly);
    sqlite3_bind_int64(st, first + 3, after->daily);
    sqlite3_bind_int64(st, first + 4, after->monthly);
    sq_bind_text(st, first + 5, c->reason);
    sq_bind_text(st, first + 6, c->idem_key);
    sq_bind_text(st, first + 7, c->res_id);
    sqlite3_bind_int64(st, first + 8, now);
}

static kp_status ledger_append(sq_store *h, const kp_credit_change *c, const kp_balance *after, int64_t now,
                               kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_LEDGER_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_ledger_bind(st, 1, c, after, now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "append ledger", err);
    sq_stmt_done(st);
    return rc;
}

/*
 * Ledger rows that credits_apply_many has decided but not written yet, in
 * order, with a hash of each key: a key waiting here counts as used, as one
 * in the table would. The changes (and their strings) outlive the queue.
 */
typedef struct ledger_queue {
    const kp_credit_change *c[LEDGER_GROUP];
    kp_balance after[LEDGER_GROUP];
    uint64_t key_hash[LEDGER_GROUP];
    size_t n;
    int64_t now;
} ledger_queue;

/* FNV-1a: tells most different keys apart without comparing them. */
static uint64_t key_hash(const char *key)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

static int ledger_queue_has(const ledger_queue *q, const char *key)
{
    uint64_t hash = key_hash(key);
    for (size_t i = 0; i < q->n; i++)
        if (q->key_hash[i] == hash && strcmp(q->c[i]->idem_key, key) == 0)
            return 1;
    return 0;
}

/* Writes the waiting rows: LEDGER_GROUP in one statement, fewer one by one. */
static kp_status ledger_queue_flush(sq_store *h, ledger_queue *q, kp_err *err)
{
    kp_status rc = KP_OK;
    if (q->n == LEDGER_GROUP) {
        sqlite3_stmt *st = NULL;
        rc = stmt_get(h, ST_LEDGER_INSERT_GROUP, &st, err);
        if (rc != KP_OK)
            return rc;
        for (size_t i = 0; i < q->n; i++)
            sq_ledger_bind(st, 1 + (int)i * LEDGER_ROW_PARAMS, q->c[i], &q->after[i], q->now);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = kp_sqlite_db_error(sq_db(h), "append ledger", err);
        sq_stmt_done(st);
    } else {
        for (size_t i = 0; i < q->n && rc == KP_OK; i++)
            rc = ledger_append(h, q->c[i], &q->after[i], q->now, err);
    }
    q->n = 0;
    return rc;
}

/* Appends a ledger row now (q NULL) or through the queue. */
static kp_status ledger_add(sq_store *h, ledger_queue *q, const kp_credit_change *c, const kp_balance *after,
                            int64_t now, kp_err *err)
{
    if (!q)
        return ledger_append(h, c, after, now, err);
    q->c[q->n] = c;
    q->after[q->n] = *after;
    q->key_hash[q->n] = key_hash(c->idem_key);
    q->n++;
    return q->n == LEDGER_GROUP ? ledger_queue_flush(h, q, err) : KP_OK;
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

/* Checks and performs the reservation part of a credit change (res_id set);
 * known holds the reservation when this transaction read it already. */
static kp_status reservation_transition(sq_store *h, const kp_credit_change *c, const sq_known_rows *known, int64_t now,
                                        kp_err *err)
{
    kp_reservation res;
    int found = 0;
    if (known && known->res) {
        found = known->res_found;
        if (found)
            res = *known->res;
    } else {
        kp_status rc = reservation_read(h, c->res_id, &res, &found, err);
        if (rc != KP_OK)
            return rc;
    }
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
 * ECREDITS. Those refusals, KP_ENOTFOUND and KP_EINVAL come before the first
 * write, so the transaction can go on with other changes (credits_apply_many). */
static kp_status credits_apply_queued(sq_store *h, const kp_credit_change *c, const sq_known_rows *known, int64_t now,
                                      ledger_queue *q, kp_balance *out, kp_err *err)
{
    int used = 0;
    /* written by balance_read on KP_OK only; zeroed because the analyzer cannot
     * see that kp_err_set returns its (non-OK) status */
    kp_balance cur = {0, 0, 0};
    kp_status rc;
    if (known && known->balance) {
        cur = *known->balance;
        rc = key_read(h, c->idem_key, &used, err);
    } else {
        rc = balance_read(h, c->user_id, c->idem_key, &cur, &used, err);
    }
    if (rc != KP_OK)
        return rc;
    used = used || (q && ledger_queue_has(q, c->idem_key));
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
        rc = reservation_transition(h, c, known, now, err);
        if (rc != KP_OK)
            return rc;
    }
    rc = balance_write(h, c->user_id, next.daily, next.monthly, err);
    if (rc == KP_OK && (c->delta_daily != 0 || c->delta_monthly != 0 || c->record_zero))
        rc = ledger_add(h, q, c, &next, now, err);
    if (rc == KP_OK)
        *out = next;
    return rc;
}

kp_status sq_credits_apply_locked(sq_store *h, const kp_credit_change *c, int64_t now, kp_balance *out, kp_err *err)
{
    return credits_apply_queued(h, c, NULL, now, NULL, out, err);
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

/* What credits_decide was asked. */
typedef struct decide_job {
    const char *user_id;
    const char *res_id;
    kp_credit_rule_fn rule;
    void *arg;
} decide_job;

/* The user whose balance a decision reads: the one named, else the
 * reservation's (once read), else none. */
static const char *decide_user(const decide_job *j, const kp_credit_state *st)
{
    return j->user_id ? j->user_id : st->res_found ? st->res.user_id : NULL;
}

/* Reads what the rule needs into *st; a missing reservation or balance is not an error. */
static kp_status decide_read(sq_store *h, const decide_job *j, kp_credit_state *st, kp_err *err)
{
    kp_status rc = KP_OK;
    if (j->res_id)
        rc = reservation_read(h, j->res_id, &st->res, &st->res_found, err);
    const char *user = decide_user(j, st);
    if (rc != KP_OK || !user)
        return rc;
    rc = balance_read(h, user, NULL, &st->balance, NULL, err);
    st->balance_found = rc == KP_OK;
    if (rc == KP_ENOTFOUND) {
        kp_err_clear(err);
        rc = KP_OK;
    }
    return rc;
}

/* What decide_read read that the change the rule made is about: the same
 * user's balance, the same reservation (found or not). Nothing was written
 * in between, in the same transaction, so the change need not read them
 * again. NULL when neither is. */
static const sq_known_rows *known_rows(const decide_job *j, const kp_credit_state *st, const kp_credit_change *c,
                                       sq_known_rows *known)
{
    const char *user = decide_user(j, st);
    *known = (sq_known_rows){0};
    if (st->balance_found && user && strcmp(c->user_id, user) == 0)
        known->balance = &st->balance;
    if (j->res_id && c->res_id && strcmp(c->res_id, j->res_id) == 0) {
        known->res = &st->res;
        known->res_found = st->res_found;
    }
    return known->balance || known->res ? known : NULL;
}

kp_status sq_credits_decide_locked(sq_store *h, const char *user_id, const char *res_id, kp_credit_rule_fn rule,
                                   void *arg, kp_balance *read, kp_balance *out, kp_err *err)
{
    decide_job j = {.user_id = user_id, .res_id = res_id, .rule = rule, .arg = arg};
    kp_credit_state st = {0};
    kp_credit_change c;
    sq_known_rows known;
    int apply = 0;
    kp_status rc = decide_read(h, &j, &st, err);
    if (rc != KP_OK)
        return rc;
    *out = st.balance;
    if (read)
        *read = st.balance;
    rc = rule(&st, arg, &c, &apply, err);
    if (rc != KP_OK || !apply)
        return rc;
    if (!sq_credit_change_valid(&c) || (user_id && strcmp(c.user_id, user_id) != 0))
        return kp_err_set(err, KP_EINVAL, "invalid credit change");
    return credits_apply_queued(h, &c, known_rows(&j, &st, &c, &known), (int64_t)time(NULL), NULL, out, err);
}

/* The body of credits_decide, inside the write transaction: read, decide, apply. */
static kp_status credits_decide_body(sq_store *h, const void *arg, kp_balance *out, kp_err *err)
{
    const decide_job *j = arg;
    return sq_credits_decide_locked(h, j->user_id, j->res_id, j->rule, j->arg, NULL, out, err);
}

kp_status sq_credits_decide(kp_store *s, const char *user_id, const char *res_id, kp_credit_rule_fn rule, void *arg,
                            kp_balance *out, kp_err *err)
{
    if ((user_id && !sq_nonempty_fits(user_id, KP_ID_MAX)) || (res_id && !sq_nonempty_fits(res_id, KP_ID_MAX)) ||
        (!user_id && !res_id) || !rule)
        return kp_err_set(err, KP_EINVAL, "invalid credit decision");
    decide_job j = {.user_id = user_id, .res_id = res_id, .rule = rule, .arg = arg};
    return sq_run_balance_write(sq_impl(s), credits_decide_body, &j, out, err);
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

/* ---- many changes, and the walk over every user ------------------------ */

/* The outcomes of one change that write nothing and leave the transaction
 * good for the next change (sq_credits_apply_locked returns them before its
 * first write); any other status is the store failing. */
static int change_outcome(kp_status rc)
{
    return rc == KP_OK || rc == KP_EDUPLICATE || rc == KP_ECONFLICT || rc == KP_ECREDITS || rc == KP_ENOTFOUND ||
           rc == KP_EINVAL;
}

/* Applies the changes in the open transaction, their ledger rows in groups;
 * stops at the first failure of the store. */
static kp_status apply_many_locked(sq_store *h, const kp_credit_change *c, size_t n, kp_status *results, kp_err *err)
{
    ledger_queue q = {.n = 0, .now = (int64_t)time(NULL)};
    for (size_t i = 0; i < n; i++) {
        kp_err one = {0};
        kp_balance after;
        kp_status rc =
            sq_credit_change_valid(&c[i]) ? credits_apply_queued(h, &c[i], NULL, q.now, &q, &after, &one) : KP_EINVAL;
        if (!change_outcome(rc)) {
            *err = one;
            return rc;
        }
        results[i] = rc;
    }
    return ledger_queue_flush(h, &q, err);
}

kp_status sq_credits_apply_many(kp_store *s, const kp_credit_change *c, size_t n, kp_status *results, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (n == 0)
        return KP_OK;
    if (!c || !results)
        return kp_err_set(err, KP_EINVAL, "invalid credit changes");
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = apply_many_locked(h, c, n, results, err);
    rc = sq_tx_end(h, rc, err);
    if (rc != KP_OK) /* rolled back: none of them was applied */
        for (size_t i = 0; i < n; i++)
            results[i] = rc;
    return rc;
}

static kp_status bonus_candidate_row(sqlite3_stmt *st, void *item, kp_err *err)
{
    kp_bonus_candidate *c = item;
    (void)err;
    sq_column_copy(st, 0, c->user_id, sizeof c->user_id);
    c->daily_bonus = sqlite3_column_int64(st, 1);
    c->balance.daily = sqlite3_column_int64(st, 2);
    c->balance.monthly = sqlite3_column_int64(st, 3);
    c->balance.version = sqlite3_column_int64(st, 4);
    c->email_verified = sqlite3_column_int(st, 5) != 0;
    c->verification_required = sqlite3_column_int(st, 6) != 0;
    return KP_OK;
}

kp_status sq_users_bonus_page(kp_store *s, const char *token, unsigned segment, unsigned total_segments, size_t limit,
                              kp_bonus_candidate **out, size_t *n, char next[KP_PAGE_TOKEN_MAX], kp_err *err)
{
    sq_store *h = sq_impl(s);
    const char *after = token ? token : "";
    *out = NULL;
    *n = 0;
    next[0] = '\0';
    if (!sq_fits(after, KP_ID_MAX))
        return kp_err_set(err, KP_EINVAL, "invalid page token");
    if (total_segments == 0 || segment >= total_segments || limit == 0)
        return kp_err_set(err, KP_EINVAL, "invalid page (segment %u of %u, limit %zu)", segment, total_segments, limit);

    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_BONUS_PAGE, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, after);
    sqlite3_bind_int64(st, 2, segment);
    sqlite3_bind_int64(st, 3, total_segments);
    sqlite3_bind_int64(st, 4, sq_limit(limit));
    rc = sq_collect_rows(h, st, sizeof(kp_bonus_candidate), bonus_candidate_row, NULL, "walk users", (void **)out, n,
                         err);
    if (rc == KP_OK && *n == limit) /* a full page: there may be more */
        memcpy(next, (*out)[*n - 1].user_id, KP_ID_MAX);
    return rc;
}
