/*
 * sqlite_store.c - the SQLite backend of kp_store_ops (see store.h for the
 * contract of each operation, sqlite_store.h for opening, migrations.c for
 * the schema).
 *
 * A handle owns one connection and a cache of prepared statements (prepared
 * on first use with SQLITE_PREPARE_PERSISTENT, reset and unbound after every
 * use), so hot reads such as user_get + balance_get + plan_get never re-parse
 * SQL.
 *
 * Invariants:
 *   - every multi-statement write runs inside BEGIN IMMEDIATE ... COMMIT: the
 *     write lock is taken before anything is read, so checks and writes see
 *     the same state in every thread and process, and any failure rolls the
 *     whole change back;
 *   - a balance row exists for every user (created with it) and is never
 *     negative (checked here, and by a CHECK constraint as a second guard);
 *   - for every user, the sum of ledger deltas equals the balance;
 *   - a project's latest_version is its highest version number and
 *     latest_ready its highest ready one (0: none); at most one of its
 *     versions is generating, and new versions are only added after it
 *     (version_create checks both inside its transaction);
 *   - versions.user_id is a copy of its project's user_id (which never
 *     changes), so counting a user's generating versions needs no join;
 *   - client-facing messages never hold SQL or SQLite's own messages; those
 *     go to the log (kp_sqlite_db_error).
 */
#include "store/sqlite/sqlite_store.h"

#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/id.h"
#include "core/log.h"
#include "core/testhook.h"
#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_internal.h"

/* How often BEGIN IMMEDIATE is retried when it still reports SQLITE_BUSY
 * after the busy timeout. */
#define BEGIN_ATTEMPTS 3

typedef enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_USER_INSERT,
    ST_USER_GET,
    ST_USER_BY_EMAIL,
    ST_USER_BY_SUB,
    ST_USER_SET_ADMIN,
    ST_USER_SET_PLAN,
    ST_USER_SET_VERIFIED,
    ST_VERIFY_DROP_UNUSED,
    ST_VERIFY_INSERT,
    ST_VERIFY_GET,
    ST_VERIFY_USE,
    ST_PLAN_GET,
    ST_PLAN_EXISTS,
    ST_PLAN_LIST,
    ST_PLAN_UPSERT,
    ST_BALANCE_INSERT,
    ST_BALANCE_GET,
    ST_ACCOUNT_GET,
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
    ST_PROJECT_INSERT,
    ST_PROJECT_GET,
    ST_PROJECT_LIST_FIRST,
    ST_PROJECT_LIST_AFTER,
    ST_PROJECT_DELETE,
    ST_PROJECT_MARK,
    ST_PROJECT_DELETING,
    ST_PROJECT_BUMP,
    ST_PROJECT_FINISHED,
    ST_VERSION_INSERT,
    ST_VERSION_GET,
    ST_VERSION_LIST,
    ST_VERSION_STATUS,
    ST_VERSION_GENERATING_IN,
    ST_VERSION_FINISH,
    ST_VERSION_SET_SETTLED,
    ST_VERSIONS_DELETE,
    ST_VERSIONS_GENERATING_COUNT,
    ST_VERSIONS_UNSETTLED,
    ST_RES_ORPHANED,
    ST_PING,
    ST_COUNT
} stmt_id;

#define USER_COLS                                                                                                      \
    "id, email, password_hash, external_sub, plan_id, is_admin, created_at, email_verified, verification_required"
#define PLAN_COLS                                                                                                      \
    "id, name, price_cents, currency, monthly_credits, daily_bonus, max_concurrent_generations, "                      \
    "stripe_price_id, active, updated_at"
#define LEDGER_COLS                                                                                                    \
    "seq, user_id, delta_daily, delta_monthly, balance_daily, balance_monthly, reason, idem_key, "                     \
    "reservation_id, created_at"
#define PROJECT_COLS "id, user_id, name, latest_version, latest_ready, created_at, updated_at"
#define VERSION_COLS                                                                                                   \
    "project_id, n, status, reservation_id, settled, error_code, error_message, prompt, message, files_json, "         \
    "events_json, model, input_tokens, output_tokens, duration_ms, created_at, updated_at, refunded, credit_reason"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_USER_INSERT] = "INSERT INTO users (" USER_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [ST_USER_GET] = "SELECT " USER_COLS " FROM users WHERE id = ?1",
    [ST_USER_BY_EMAIL] = "SELECT " USER_COLS " FROM users WHERE email = ?1 AND email <> ''",
    [ST_USER_BY_SUB] = "SELECT " USER_COLS " FROM users WHERE external_sub = ?1 AND external_sub <> ''",
    [ST_USER_SET_ADMIN] = "UPDATE users SET is_admin = ?2 WHERE id = ?1",
    [ST_USER_SET_PLAN] = "UPDATE users SET plan_id = ?2 WHERE id = ?1",
    [ST_USER_SET_VERIFIED] = "UPDATE users SET email_verified = ?2 WHERE id = ?1",
    [ST_VERIFY_DROP_UNUSED] = "DELETE FROM email_verifications WHERE user_id = ?1 AND used_at = 0",
    [ST_VERIFY_INSERT] = "INSERT INTO email_verifications (token_hash, user_id, created_at, expires_at) "
                         "VALUES (?1, ?2, ?3, ?4)",
    [ST_VERIFY_GET] = "SELECT user_id, created_at, expires_at, used_at FROM email_verifications WHERE token_hash = ?1",
    [ST_VERIFY_USE] = "UPDATE email_verifications SET used_at = ?2 "
                      "WHERE token_hash = ?1 AND used_at = 0 AND expires_at > ?2",
    [ST_PLAN_GET] = "SELECT " PLAN_COLS " FROM plans WHERE id = ?1",
    [ST_PLAN_EXISTS] = "SELECT 1 FROM plans WHERE id = ?1",
    [ST_PLAN_LIST] = "SELECT " PLAN_COLS " FROM plans WHERE ?1 = 0 OR active = 1 ORDER BY price_cents, id",
    [ST_PLAN_UPSERT] = "INSERT INTO plans (" PLAN_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
                       "ON CONFLICT(id) DO UPDATE SET name = excluded.name, price_cents = excluded.price_cents, "
                       "currency = excluded.currency, monthly_credits = excluded.monthly_credits, "
                       "daily_bonus = excluded.daily_bonus, "
                       "max_concurrent_generations = excluded.max_concurrent_generations, "
                       "stripe_price_id = excluded.stripe_price_id, active = excluded.active, "
                       "updated_at = excluded.updated_at",
    [ST_BALANCE_INSERT] = "INSERT INTO balances (user_id, daily, monthly, version) VALUES (?1, 0, 0, 0)",
    [ST_BALANCE_GET] = "SELECT daily, monthly, version FROM balances WHERE user_id = ?1",
    [ST_ACCOUNT_GET] = "SELECT u.id, u.email, '', u.external_sub, u.plan_id, u.is_admin, u.created_at, "
                       "b.daily, b.monthly, b.version, p.id, p.name, p.price_cents, p.currency, "
                       "p.monthly_credits, p.daily_bonus, p.max_concurrent_generations, p.stripe_price_id, "
                       "p.active, p.updated_at, u.email_verified, u.verification_required "
                       "FROM users u JOIN balances b ON b.user_id = u.id "
                       "JOIN plans p ON p.id = u.plan_id WHERE u.id = ?1",
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
    [ST_PROJECT_INSERT] = "INSERT INTO projects (" PROJECT_COLS ") VALUES (?1, ?2, ?3, 1, 0, ?4, ?4)",
    [ST_PROJECT_GET] = "SELECT " PROJECT_COLS " FROM projects WHERE id = ?1",
    /* Both pages walk the index projects_user_created; the row value keeps
     * the cursor a range on it (ids break ties between equal times). */
    [ST_PROJECT_LIST_FIRST] = "SELECT " PROJECT_COLS " FROM projects WHERE user_id = ?1 "
                              "ORDER BY created_at DESC, id DESC LIMIT ?2",
    [ST_PROJECT_LIST_AFTER] = "SELECT " PROJECT_COLS " FROM projects WHERE user_id = ?1 "
                              "AND (created_at, id) < (?2, ?3) ORDER BY created_at DESC, id DESC LIMIT ?4",
    [ST_PROJECT_DELETE] = "DELETE FROM projects WHERE id = ?1",
    [ST_PROJECT_MARK] = "UPDATE projects SET deleting = ?2 WHERE id = ?1",
    [ST_PROJECT_DELETING] = "SELECT deleting FROM projects WHERE id = ?1",
    [ST_PROJECT_BUMP] = "UPDATE projects SET latest_version = ?2, updated_at = ?3 WHERE id = ?1",
    /* ?2: the version that became ready, 0 when it failed. */
    [ST_PROJECT_FINISHED] = "UPDATE projects SET latest_ready = max(latest_ready, ?2), updated_at = ?3 WHERE id = ?1",
    /* A new version is generating and unsettled; its user is its project's. */
    [ST_VERSION_INSERT] = "INSERT INTO versions (project_id, n, user_id, status, reservation_id, settled, prompt, "
                          "created_at, updated_at) VALUES (?1, ?2, ?3, 1, ?4, 0, ?5, ?6, ?6)",
    [ST_VERSION_GET] = "SELECT " VERSION_COLS " FROM versions WHERE project_id = ?1 AND n = ?2",
    [ST_VERSION_LIST] = "SELECT " VERSION_COLS " FROM versions WHERE project_id = ?1 ORDER BY n",
    [ST_VERSION_STATUS] = "SELECT status FROM versions WHERE project_id = ?1 AND n = ?2",
    [ST_VERSION_GENERATING_IN] = "SELECT n FROM versions WHERE project_id = ?1 AND status = 1 LIMIT 1",
    [ST_VERSION_FINISH] =
        "UPDATE versions SET status = ?3, error_code = ?4, error_message = ?5, message = ?6, "
        "files_json = ?7, events_json = ?8, model = ?9, input_tokens = ?10, "
        "output_tokens = ?11, duration_ms = ?12, updated_at = ?13, refunded = ?14, credit_reason = ?15, "
        "settled = max(settled, ?16) WHERE project_id = ?1 AND n = ?2 AND status = 1",
    [ST_VERSION_SET_SETTLED] = "UPDATE versions SET settled = 1 WHERE project_id = ?1 AND n = ?2",
    [ST_VERSIONS_DELETE] = "DELETE FROM versions WHERE project_id = ?1",
    /* Both read partial indexes (versions_generating, versions_unsettled). */
    [ST_VERSIONS_GENERATING_COUNT] = "SELECT COUNT(*) FROM versions WHERE user_id = ?1 AND status = 1",
    [ST_VERSIONS_UNSETTLED] = "SELECT " VERSION_COLS " FROM versions WHERE settled = 0 ORDER BY project_id, n",
    /* Reads the partial indexes reservations_open and versions_reservation. */
    [ST_RES_ORPHANED] = "SELECT id, user_id, daily, monthly, state, created_at, updated_at FROM reservations AS r "
                        "WHERE state = 'reserved' AND NOT EXISTS "
                        "(SELECT 1 FROM versions AS v WHERE v.reservation_id = r.id) ORDER BY id",
    [ST_PING] = "SELECT 1",
};

static const char *const res_state_names[] = {
    [KP_RES_NONE] = "",
    [KP_RES_RESERVED] = "reserved",
    [KP_RES_COMMITTED] = "committed",
    [KP_RES_REFUNDED] = "refunded",
};

struct sq_store {
    kp_store base; /* base.impl points back to this struct */
    sqlite3 *db;
    sqlite3_stmt *stmts[ST_COUNT];
    sqlite3_stmt *module_stmts[SQ_MODULE_STMTS]; /* the other files' statements (sq_stmt_cached) */
};

/* ---- helpers ---------------------------------------------------------- */

sq_store *sq_impl(kp_store *s)
{
    return (sq_store *)s->impl;
}

/* 1 when s is a non-NULL string that sq_fits, with its NUL, in cap bytes. */
int sq_fits(const char *s, size_t cap)
{
    return s && strnlen(s, cap) < cap;
}

int sq_nonempty_fits(const char *s, size_t cap)
{
    return sq_fits(s, cap) && s[0] != '\0';
}

/* Fetches the cached statement, preparing it on first use. */
static kp_status stmt_get(sq_store *h, stmt_id id, sqlite3_stmt **out, kp_err *err)
{
    if (!h->stmts[id] &&
        sqlite3_prepare_v3(h->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &h->stmts[id], NULL) != SQLITE_OK)
        return kp_sqlite_db_error(h->db, "prepare statement", err);
    *out = h->stmts[id];
    return KP_OK;
}

sqlite3 *sq_db(sq_store *h)
{
    return h->db;
}

kp_status sq_stmt_cached(sq_store *h, unsigned slot, const char *sql, sqlite3_stmt **out, kp_err *err)
{
    if (slot >= SQ_MODULE_STMTS)
        return kp_err_set(err, KP_EINTERNAL, "statement slot %u out of range", slot);
    if (!h->module_stmts[slot] &&
        sqlite3_prepare_v3(h->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &h->module_stmts[slot], NULL) != SQLITE_OK)
        return kp_sqlite_db_error(h->db, "prepare statement", err);
    *out = h->module_stmts[slot];
    return KP_OK;
}

/* Makes a cached statement ready for its next use. Text is bound with
 * SQLITE_STATIC, so bindings must not outlive the call that made them. */
void sq_stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Text parameters: NULL is stored as "". The caller's string must stay alive
 * until sq_stmt_done. Bind calls cannot fail here: indexes are fixed, integers
 * and static text need no allocation, and lengths are checked beforehand. */
void sq_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    sqlite3_bind_text(st, idx, s ? s : "", -1, SQLITE_STATIC);
}

void sq_column_copy(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *text = sqlite3_column_text(st, col);
    size_t len = text ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (len >= cap)
        len = cap - 1;
    if (len)
        memcpy(dst, text, len);
    dst[len] = '\0';
}

/* Runs a statement that returns no rows; KP_OK or KP_EDB. */
static kp_status run_simple(sq_store *h, stmt_id id, const char *what, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(h->db, what, err);
    sq_stmt_done(st);
    return rc;
}

/* BEGIN IMMEDIATE: waits (busy timeout) for other writers, then retries a
 * few times if SQLite still reports SQLITE_BUSY. */
kp_status sq_tx_begin(sq_store *h, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_BEGIN, &st, err);
    if (rc != KP_OK)
        return rc;
    for (int attempt = 1;; attempt++) {
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE) {
            sq_stmt_done(st);
            return KP_OK;
        }
        if ((step & 0xff) != SQLITE_BUSY || attempt >= BEGIN_ATTEMPTS) {
            rc = kp_sqlite_db_error(h->db, "begin transaction", err);
            sq_stmt_done(st);
            return rc;
        }
        sq_stmt_done(st);
        kp_log(KP_LOG_WARN, "database busy, retrying (attempt %d)", attempt + 1);
    }
}

static void tx_rollback(sq_store *h)
{
    if (sqlite3_get_autocommit(h->db))
        return; /* SQLite already rolled back (or nothing was begun) */
    kp_err ignored;
    if (run_simple(h, ST_ROLLBACK, "rollback", &ignored) != KP_OK)
        kp_log(KP_LOG_ERROR, "rollback failed");
}

/* Ends the transaction begun by sq_tx_begin: commits when rc is KP_OK, else
 * rolls back. Returns the final status. */
kp_status sq_tx_end(sq_store *h, kp_status rc, kp_err *err)
{
    if (rc == KP_OK) {
        rc = run_simple(h, ST_COMMIT, "commit", err);
        if (rc == KP_OK)
            return KP_OK;
    }
    tx_rollback(h);
    return rc;
}

/* ---- users ------------------------------------------------------------ */

static void read_user(sqlite3_stmt *st, kp_user *u)
{
    sq_column_copy(st, 0, u->id, sizeof u->id);
    sq_column_copy(st, 1, u->email, sizeof u->email);
    sq_column_copy(st, 2, u->password_hash, sizeof u->password_hash);
    sq_column_copy(st, 3, u->external_sub, sizeof u->external_sub);
    sq_column_copy(st, 4, u->plan_id, sizeof u->plan_id);
    u->is_admin = sqlite3_column_int(st, 5);
    u->created_at = sqlite3_column_int64(st, 6);
}

/* The verification flags, at columns col and col + 1. */
static void read_user_flags(sqlite3_stmt *st, int col, kp_user *u)
{
    u->email_verified = sqlite3_column_int(st, col);
    u->verification_required = sqlite3_column_int(st, col + 1);
}

/* Maps a failed INSERT/UPDATE on users to a status. */
static kp_status user_write_error(sq_store *h, const char *what, kp_err *err)
{
    int code = sqlite3_extended_errcode(h->db);
    const char *msg = sqlite3_errmsg(h->db);
    if (code == SQLITE_CONSTRAINT_FOREIGNKEY)
        return kp_err_set(err, KP_ENOTFOUND, "plan not found");
    if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY) {
        if (strstr(msg, "users.email"))
            return kp_err_set(err, KP_ECONFLICT, "email already registered");
        if (strstr(msg, "users.external_sub"))
            return kp_err_set(err, KP_ECONFLICT, "external identity already linked to a user");
        return kp_err_set(err, KP_ECONFLICT, "user already exists");
    }
    return kp_sqlite_db_error(h->db, what, err);
}

static kp_status insert_user_row(sq_store *h, const kp_user *u, int64_t created_at, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_USER_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, u->id);
    sq_bind_text(st, 2, u->email);
    sq_bind_text(st, 3, u->password_hash);
    sq_bind_text(st, 4, u->external_sub);
    sq_bind_text(st, 5, u->plan_id);
    sqlite3_bind_int(st, 6, u->is_admin ? 1 : 0);
    sqlite3_bind_int64(st, 7, created_at);
    sqlite3_bind_int(st, 8, u->email_verified ? 1 : 0);
    sqlite3_bind_int(st, 9, u->verification_required ? 1 : 0);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = user_write_error(h, "create user", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status insert_balance_row(sq_store *h, const char *user_id, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_BALANCE_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(h->db, "create balance", err);
    sq_stmt_done(st);
    return rc;
}

static int user_valid(const kp_user *u)
{
    return u && sq_nonempty_fits(u->id, sizeof u->id) && sq_fits(u->email, sizeof u->email) &&
           sq_fits(u->password_hash, sizeof u->password_hash) && sq_fits(u->external_sub, sizeof u->external_sub) &&
           sq_nonempty_fits(u->plan_id, sizeof u->plan_id);
}

/* The user, its balance and (c non-NULL) its first credits, in one transaction. */
static kp_status create_user(sq_store *h, const kp_user *u, const kp_credit_change *c, kp_err *err)
{
    kp_balance after;
    int64_t created_at = u->created_at > 0 ? u->created_at : (int64_t)time(NULL);
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = insert_user_row(h, u, created_at, err);
    if (rc == KP_OK)
        rc = insert_balance_row(h, u->id, err);
    if (rc == KP_OK && c)
        rc = sq_credits_apply_locked(h, c, created_at, &after, err);
    return sq_tx_end(h, rc, err);
}

static kp_status sq_user_create(kp_store *s, const kp_user *u, kp_err *err)
{
    if (!user_valid(u))
        return kp_err_set(err, KP_EINVAL, "invalid user record");
    return create_user(sq_impl(s), u, NULL, err);
}

static kp_status sq_user_create_credited(kp_store *s, const kp_user *u, const kp_credit_change *c, kp_err *err)
{
    if (!user_valid(u) || !sq_credit_change_valid(c) || strcmp(c->user_id, u->id) != 0)
        return kp_err_set(err, KP_EINVAL, "invalid user record");
    return create_user(sq_impl(s), u, c, err);
}

static kp_status user_get_with(sq_store *h, stmt_id id, const char *key, kp_user *out, kp_err *err)
{
    if (!key || !*key)
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, key);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        read_user(st, out);
        read_user_flags(st, 7, out);
    } else if (step == SQLITE_DONE) {
        rc = kp_err_set(err, KP_ENOTFOUND, "user not found");
    } else
        rc = kp_sqlite_db_error(h->db, "read user", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status sq_user_get(kp_store *s, const char *id, kp_user *out, kp_err *err)
{
    return user_get_with(sq_impl(s), ST_USER_GET, id, out, err);
}

static kp_status sq_user_get_by_email(kp_store *s, const char *email, kp_user *out, kp_err *err)
{
    return user_get_with(sq_impl(s), ST_USER_BY_EMAIL, email, out, err);
}

static kp_status sq_user_get_by_sub(kp_store *s, const char *external_sub, kp_user *out, kp_err *err)
{
    return user_get_with(sq_impl(s), ST_USER_BY_SUB, external_sub, out, err);
}

/* Runs an UPDATE of one user's column (?1 id, ?2 value); KP_ENOTFOUND when no
 * such user. Exactly one of text / number is used. */
static kp_status user_update(sq_store *h, stmt_id id, const char *user_id, const char *text, int number,
                             const char *what, kp_err *err)
{
    if (!user_id || !*user_id)
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    if (text)
        sq_bind_text(st, 2, text);
    else
        sqlite3_bind_int(st, 2, number);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = user_write_error(h, what, err);
    else if (sqlite3_changes(h->db) == 0)
        rc = kp_err_set(err, KP_ENOTFOUND, "user not found");
    sq_stmt_done(st);
    return rc;
}

static kp_status sq_user_set_admin(kp_store *s, const char *id, int is_admin, kp_err *err)
{
    return user_update(sq_impl(s), ST_USER_SET_ADMIN, id, NULL, is_admin ? 1 : 0, "set admin", err);
}

kp_status sq_user_plan_write(sq_store *h, const char *user_id, const char *plan_id, kp_err *err)
{
    if (!sq_nonempty_fits(plan_id, KP_PLAN_ID_MAX))
        return kp_err_set(err, KP_ENOTFOUND, "plan not found");
    /* The foreign key on users.plan_id reports an unknown plan; a missing
     * user updates nothing and is reported first. */
    return user_update(h, ST_USER_SET_PLAN, user_id, plan_id, 0, "set plan", err);
}

static kp_status sq_user_set_plan(kp_store *s, const char *id, const char *plan_id, kp_err *err)
{
    return sq_user_plan_write(sq_impl(s), id, plan_id, err);
}

static kp_status sq_user_set_email_verified(kp_store *s, const char *id, kp_err *err)
{
    return user_update(sq_impl(s), ST_USER_SET_VERIFIED, id, NULL, 1, "verify email", err);
}

/* ---- e-mail verification tokens --------------------------------------- */

static kp_status verification_insert(sq_store *h, const char *token_hash, const kp_verification *v, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERIFY_DROP_UNUSED, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, v->user_id);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(h->db, "drop unused verification tokens", err);
    sq_stmt_done(st);
    if (rc == KP_OK)
        rc = stmt_get(h, ST_VERIFY_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, token_hash);
    sq_bind_text(st, 2, v->user_id);
    sqlite3_bind_int64(st, 3, v->created_at);
    sqlite3_bind_int64(st, 4, v->expires_at);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = sqlite3_extended_errcode(h->db) == SQLITE_CONSTRAINT_FOREIGNKEY
                 ? kp_err_set(err, KP_ENOTFOUND, "user not found")
                 : kp_sqlite_db_error(h->db, "store verification token", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status sq_verification_create(kp_store *s, const char *token_hash, const kp_verification *v, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!v || !sq_nonempty_fits(token_hash, 256) || !sq_nonempty_fits(v->user_id, sizeof v->user_id))
        return kp_err_set(err, KP_EINVAL, "invalid verification record");
    kp_status rc = sq_tx_begin(h, err);
    if (rc == KP_OK)
        rc = sq_tx_end(h, verification_insert(h, token_hash, v, err), err);
    return rc;
}

static kp_status verification_read(sq_store *h, const char *token_hash, kp_verification *out, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERIFY_GET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, token_hash);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        sq_column_copy(st, 0, out->user_id, sizeof out->user_id);
        out->created_at = sqlite3_column_int64(st, 1);
        out->expires_at = sqlite3_column_int64(st, 2);
        out->used_at = sqlite3_column_int64(st, 3);
    } else if (step == SQLITE_DONE) {
        rc = kp_err_set(err, KP_ENOTFOUND, "unknown verification token");
    } else {
        rc = kp_sqlite_db_error(h->db, "read verification token", err);
    }
    sq_stmt_done(st);
    return rc;
}

/* Marks the token used if it is usable at now; KP_ECONFLICT if not. */
static kp_status verification_use(sq_store *h, const char *token_hash, int64_t now, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERIFY_USE, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, token_hash);
    sqlite3_bind_int64(st, 2, now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(h->db, "use verification token", err);
    else if (sqlite3_changes(h->db) != 1)
        rc = kp_err_set(err, KP_ECONFLICT, "verification token used or expired");
    sq_stmt_done(st);
    return rc;
}

static kp_status sq_verification_consume(kp_store *s, const char *token_hash, int64_t now, kp_verification *out,
                                         kp_err *err)
{
    sq_store *h = sq_impl(s);
    kp_verification v;
    memset(&v, 0, sizeof v);
    if (!sq_nonempty_fits(token_hash, 256))
        return kp_err_set(err, KP_ENOTFOUND, "unknown verification token");
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = verification_read(h, token_hash, &v, err);
    if (rc == KP_OK)
        rc = verification_use(h, token_hash, now, err);
    if (rc == KP_OK)
        rc = user_update(h, ST_USER_SET_VERIFIED, v.user_id, NULL, 1, "verify email", err);
    rc = sq_tx_end(h, rc, err);
    if (out)
        *out = v;
    return rc;
}

/* ---- plans ------------------------------------------------------------ */

static void read_plan_at(sqlite3_stmt *st, int first, kp_plan *p)
{
    sq_column_copy(st, first + 0, p->id, sizeof p->id);
    sq_column_copy(st, first + 1, p->name, sizeof p->name);
    p->price_cents = sqlite3_column_int64(st, first + 2);
    sq_column_copy(st, first + 3, p->currency, sizeof p->currency);
    p->monthly_credits = sqlite3_column_int64(st, first + 4);
    p->daily_bonus = sqlite3_column_int64(st, first + 5);
    p->max_concurrent_generations = sqlite3_column_int64(st, first + 6);
    sq_column_copy(st, first + 7, p->stripe_price_id, sizeof p->stripe_price_id);
    p->active = sqlite3_column_int(st, first + 8);
    p->updated_at = sqlite3_column_int64(st, first + 9);
}

static void read_plan(sqlite3_stmt *st, kp_plan *p)
{
    read_plan_at(st, 0, p);
}

static kp_status sq_plan_get(kp_store *s, const char *id, kp_plan *out, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!id || !*id)
        return kp_err_set(err, KP_ENOTFOUND, "plan not found");
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PLAN_GET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        read_plan(st, out);
    else if (step == SQLITE_DONE)
        rc = kp_err_set(err, KP_ENOTFOUND, "plan not found");
    else
        rc = kp_sqlite_db_error(h->db, "read plan", err);
    sq_stmt_done(st);
    return rc;
}

/*
 * Steps a bound statement into a new array of elem-sized items, each filled
 * by read_row; resets st. On failure frees what it read (free_items, or
 * free() when NULL) and leaves *out untouched.
 */
typedef kp_status (*row_reader)(sqlite3_stmt *st, void *item, kp_err *err);

static kp_status collect_rows(sq_store *h, sqlite3_stmt *st, size_t elem, row_reader read_row,
                              void (*free_items)(void *items, size_t n), const char *what, void **out, size_t *n,
                              kp_err *err)
{
    char *items = NULL;
    size_t count = 0, cap = 0;
    kp_status rc = KP_OK;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            char *grown = realloc(items, ncap * elem);
            if (!grown) {
                rc = kp_err_set(err, KP_ENOMEM, "out of memory");
                goto cleanup;
            }
            items = grown;
            cap = ncap;
        }
        memset(items + count * elem, 0, elem);
        rc = read_row(st, items + count * elem, err);
        if (rc != KP_OK)
            goto cleanup;
        count++;
    }
    if (step != SQLITE_DONE)
        rc = kp_sqlite_db_error(h->db, what, err);

cleanup:
    sq_stmt_done(st);
    if (rc != KP_OK) {
        if (free_items)
            free_items(items, count);
        else
            free(items);
        return rc;
    }
    *out = items;
    *n = count;
    return KP_OK;
}

static kp_status plan_row(sqlite3_stmt *st, void *item, kp_err *err)
{
    (void)err;
    read_plan(st, item);
    return KP_OK;
}

static kp_status sq_plan_list(kp_store *s, int active_only, kp_plan **out, size_t *n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    *out = NULL;
    *n = 0;

    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PLAN_LIST, &st, err);
    if (rc != KP_OK)
        return rc;
    sqlite3_bind_int(st, 1, active_only ? 1 : 0);
    return collect_rows(h, st, sizeof(kp_plan), plan_row, NULL, "list plans", (void **)out, n, err);
}

static int plan_id_valid(const char *id)
{
    if (!sq_nonempty_fits(id, KP_PLAN_ID_MAX))
        return 0;
    for (const char *c = id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '-'))
            return 0;
    return 1;
}

static int plan_valid(const kp_plan *p)
{
    return plan_id_valid(p->id) && sq_fits(p->name, sizeof p->name) && strnlen(p->currency, sizeof p->currency) == 3 &&
           sq_fits(p->stripe_price_id, sizeof p->stripe_price_id) && p->price_cents >= 0 && p->monthly_credits >= 0 &&
           p->daily_bonus >= 0 && p->max_concurrent_generations >= 0;
}

static kp_status plan_exists(sq_store *h, const char *id, int *exists, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PLAN_EXISTS, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW || step == SQLITE_DONE)
        *exists = step == SQLITE_ROW;
    else
        rc = kp_sqlite_db_error(h->db, "read plan", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status upsert_plan_row(sq_store *h, const kp_plan *p, int64_t now, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PLAN_UPSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, p->id);
    sq_bind_text(st, 2, p->name);
    sqlite3_bind_int64(st, 3, p->price_cents);
    sq_bind_text(st, 4, p->currency);
    sqlite3_bind_int64(st, 5, p->monthly_credits);
    sqlite3_bind_int64(st, 6, p->daily_bonus);
    sqlite3_bind_int64(st, 7, p->max_concurrent_generations);
    sq_bind_text(st, 8, p->stripe_price_id);
    sqlite3_bind_int(st, 9, p->active ? 1 : 0);
    sqlite3_bind_int64(st, 10, now);
    if (sqlite3_step(st) != SQLITE_DONE) {
        if ((sqlite3_extended_errcode(h->db) & 0xff) == SQLITE_CONSTRAINT)
            rc = kp_err_set(err, KP_EINVAL, "invalid plan");
        else
            rc = kp_sqlite_db_error(h->db, "write plan", err);
    }
    sq_stmt_done(st);
    return rc;
}

static kp_status sq_plan_put(kp_store *s, const kp_plan *p, int *created, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!p || !plan_valid(p))
        return kp_err_set(err, KP_EINVAL, "invalid plan");

    int exists = 0;
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = plan_exists(h, p->id, &exists, err);
    if (rc == KP_OK)
        rc = upsert_plan_row(h, p, (int64_t)time(NULL), err);
    rc = sq_tx_end(h, rc, err);
    if (rc == KP_OK && created)
        *created = !exists;
    return rc;
}

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
        rc = kp_sqlite_db_error(h->db, "read balance", err);
    }
    sq_stmt_done(st);
    return rc;
}

/* Reads plan columns starting at column `first` (in PLAN_COLS order). */
static void read_plan_at(sqlite3_stmt *st, int first, kp_plan *p);

static kp_status sq_account_get(kp_store *s, const char *user_id, kp_account *out, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!user_id || !*user_id)
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_ACCOUNT_GET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        read_user(st, &out->user);
        out->balance.daily = sqlite3_column_int64(st, 7);
        out->balance.monthly = sqlite3_column_int64(st, 8);
        out->balance.version = sqlite3_column_int64(st, 9);
        read_plan_at(st, 10, &out->plan);
        read_user_flags(st, 20, &out->user);
    } else if (step == SQLITE_DONE) {
        rc = kp_err_set(err, KP_ENOTFOUND, "user not found");
    } else {
        rc = kp_sqlite_db_error(h->db, "read account", err);
    }
    sq_stmt_done(st);
    return rc;
}

static kp_status sq_balance_get(kp_store *s, const char *user_id, kp_balance *out, kp_err *err)
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
        rc = kp_sqlite_db_error(h->db, "read ledger", err);
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
        rc = kp_sqlite_db_error(h->db, "write balance", err);
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
        rc = kp_sqlite_db_error(h->db, "append ledger", err);
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
static kp_status read_reservation(sqlite3_stmt *st, void *item, kp_err *err)
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
        rc = read_reservation(st, out, err);
        *found = rc == KP_OK;
    } else if (step != SQLITE_DONE) {
        rc = kp_sqlite_db_error(h->db, "read reservation", err);
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
        rc = kp_sqlite_db_error(h->db, "create reservation", err);
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
        rc = kp_sqlite_db_error(h->db, "update reservation", err);
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

/* A write that reports a balance, run in its own transaction: *out (may be
 * NULL) receives what body left in its balance, also on failure. */
typedef kp_status (*balance_write_fn)(sq_store *h, const void *arg, kp_balance *out, kp_err *err);

static kp_status run_balance_write(sq_store *h, balance_write_fn body, const void *arg, kp_balance *out, kp_err *err)
{
    kp_balance result = {0, 0, 0};
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = body(h, arg, &result, err);
    rc = sq_tx_end(h, rc, err);
    if (out)
        *out = result;
    return rc;
}

static kp_status credits_apply_body(sq_store *h, const void *arg, kp_balance *out, kp_err *err)
{
    return sq_credits_apply_locked(h, arg, (int64_t)time(NULL), out, err);
}

static kp_status sq_credits_apply(kp_store *s, const kp_credit_change *c, kp_balance *out, kp_err *err)
{
    if (!sq_credit_change_valid(c))
        return kp_err_set(err, KP_EINVAL, "invalid credit change");
    return run_balance_write(sq_impl(s), credits_apply_body, c, out, err);
}

static kp_status sq_reservation_get(kp_store *s, const char *id, kp_reservation *out, kp_err *err)
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

static kp_status sq_ledger_list(kp_store *s, const char *user_id, int64_t before_seq, size_t limit,
                                kp_ledger_entry **out, size_t *n, kp_err *err)
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
    return collect_rows(h, st, sizeof(kp_ledger_entry), ledger_row, NULL, "list ledger", (void **)out, n, err);
}

static kp_status sq_ledger_sum(kp_store *s, const char *user_id, kp_balance *out, kp_err *err)
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
        rc = kp_sqlite_db_error(h->db, "sum ledger", err);
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
        rc = kp_sqlite_db_error(h->db, "daily bonus batch", err);
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
        rc = kp_sqlite_db_error(h->db, "read ledger", err);
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
        *inserted = (size_t)sqlite3_changes(h->db);
    else
        rc = kp_sqlite_db_error(h->db, "daily bonus ledger", err);
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
        rc = kp_sqlite_db_error(h->db, "daily bonus balances", err);
    else if ((size_t)sqlite3_changes(h->db) != expected)
        rc = kp_err_set(err, KP_EINTERNAL, "daily bonus updated %d balances for %zu ledger rows",
                        sqlite3_changes(h->db), expected);
    sq_stmt_done(st);
    return rc;
}

static kp_status sq_daily_bonus_batch(kp_store *s, const char *date, const char *after_user_id, size_t limit,
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

/* ---- projects and versions -------------------------------------------- */

static const char *const version_status_names[] = {
    [KP_VER_GENERATING] = "generating",
    [KP_VER_READY] = "ready",
    [KP_VER_FAILED] = "failed",
};

static int64_t limit_to_sql(size_t limit)
{
    return limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit;
}

/* A JSON array column's value as written: NULL or "" means "[]". */
static const char *json_or_empty_array(const char *s)
{
    return s && *s ? s : "[]";
}

/*
 * A heap copy of a text column into *dst. SQL NULL reads as dflt (and so
 * does "" when empty_is_default is set). Returns -1 when out of memory.
 */
static int column_dup(sqlite3_stmt *st, int col, const char *dflt, int empty_is_default, char **dst)
{
    const char *text = dflt;
    size_t len = strlen(dflt);
    if (sqlite3_column_type(st, col) != SQLITE_NULL) {
        const unsigned char *t = sqlite3_column_text(st, col);
        if (!t)
            return -1; /* SQLite could not convert it: out of memory */
        size_t tlen = (size_t)sqlite3_column_bytes(st, col);
        if (tlen > 0 || !empty_is_default) {
            text = (const char *)t;
            len = tlen;
        }
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, text, len);
    copy[len] = '\0';
    *dst = copy;
    return 0;
}

static void read_project(sqlite3_stmt *st, kp_project *p)
{
    sq_column_copy(st, 0, p->id, sizeof p->id);
    sq_column_copy(st, 1, p->user_id, sizeof p->user_id);
    sq_column_copy(st, 2, p->name, sizeof p->name);
    p->latest_version = sqlite3_column_int64(st, 3);
    p->latest_ready = sqlite3_column_int64(st, 4);
    p->created_at = sqlite3_column_int64(st, 5);
    p->updated_at = sqlite3_column_int64(st, 6);
}

/* Reads a VERSION_COLS row into v, which must hold no heap fields. On
 * failure v holds none either. */
static kp_status read_version(sqlite3_stmt *st, kp_version *v, kp_err *err)
{
    memset(v, 0, sizeof *v);
    sq_column_copy(st, 0, v->project_id, sizeof v->project_id);
    v->n = sqlite3_column_int64(st, 1);
    int status = sqlite3_column_int(st, 2);
    sq_column_copy(st, 3, v->reservation_id, sizeof v->reservation_id);
    v->settled = sqlite3_column_int(st, 4);
    sq_column_copy(st, 5, v->error_code, sizeof v->error_code);
    sq_column_copy(st, 11, v->model, sizeof v->model);
    v->input_tokens = sqlite3_column_int64(st, 12);
    v->output_tokens = sqlite3_column_int64(st, 13);
    v->duration_ms = sqlite3_column_int64(st, 14);
    v->created_at = sqlite3_column_int64(st, 15);
    v->updated_at = sqlite3_column_int64(st, 16);
    v->refunded = sqlite3_column_int(st, 17);
    sq_column_copy(st, 18, v->credit_reason, sizeof v->credit_reason);
    if (status < KP_VER_GENERATING || status > KP_VER_FAILED)
        return kp_err_set(err, KP_EINTERNAL, "version in an unknown state");
    v->status = (kp_version_status)status;

    if (column_dup(st, 6, "", 0, &v->error_message) != 0 || column_dup(st, 7, "", 0, &v->prompt) != 0 ||
        column_dup(st, 8, "", 0, &v->message) != 0 || column_dup(st, 9, "[]", 1, &v->files_json) != 0 ||
        column_dup(st, 10, "[]", 1, &v->events_json) != 0) {
        kp_version_clear(v);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    return KP_OK;
}

/* Maps a failed INSERT on projects or versions to a status: a missing parent
 * (the user, the project) is `missing`, a duplicate key `conflict`. */
static kp_status project_write_error(sq_store *h, const char *what, const char *missing, const char *conflict,
                                     kp_err *err)
{
    int code = sqlite3_extended_errcode(h->db);
    if (code == SQLITE_CONSTRAINT_FOREIGNKEY)
        return kp_err_set(err, KP_ENOTFOUND, "%s", missing);
    if (code == SQLITE_CONSTRAINT_PRIMARYKEY || code == SQLITE_CONSTRAINT_UNIQUE)
        return kp_err_set(err, KP_ECONFLICT, "%s", conflict);
    if ((code & 0xff) == SQLITE_CONSTRAINT)
        return kp_err_set(err, KP_EINVAL, "invalid %s", what);
    return kp_sqlite_db_error(h->db, what, err);
}

/* Reads a project; *found is 0 (and out untouched) when it does not exist. */
static kp_status project_read(sq_store *h, const char *id, kp_project *out, int *found, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PROJECT_GET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, id);
    *found = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        read_project(st, out);
        *found = 1;
    } else if (step != SQLITE_DONE) {
        rc = kp_sqlite_db_error(h->db, "read project", err);
    }
    sq_stmt_done(st);
    return rc;
}

static kp_status insert_project_row(sq_store *h, const kp_project *p, int64_t created_at, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PROJECT_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, p->id);
    sq_bind_text(st, 2, p->user_id);
    sq_bind_text(st, 3, p->name);
    sqlite3_bind_int64(st, 4, created_at);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = project_write_error(h, "project", "user not found", "project already exists", err);
    sq_stmt_done(st);
    return rc;
}

/* Inserts version n of project_id (owned by user_id), generating and unsettled. */
static kp_status insert_version_row(sq_store *h, const char *project_id, const char *user_id, int64_t n,
                                    const kp_version *v, int64_t created_at, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    sq_bind_text(st, 3, user_id);
    sq_bind_text(st, 4, v->reservation_id);
    sq_bind_text(st, 5, v->prompt);
    sqlite3_bind_int64(st, 6, created_at);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = project_write_error(h, "version", "project not found", "version already exists", err);
    sq_stmt_done(st);
    return rc;
}

static int project_valid(const kp_project *p)
{
    return p && sq_nonempty_fits(p->id, sizeof p->id) && sq_nonempty_fits(p->user_id, sizeof p->user_id) &&
           sq_fits(p->name, sizeof p->name);
}

/* The fields of a new version that the store writes (see ST_VERSION_INSERT). */
static int new_version_valid(const kp_version *v)
{
    return v && sq_fits(v->project_id, sizeof v->project_id) && sq_fits(v->reservation_id, sizeof v->reservation_id);
}

static kp_status sq_project_create(kp_store *s, const kp_project *p, const kp_version *v, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!project_valid(p))
        return kp_err_set(err, KP_EINVAL, "invalid project record");
    if (!new_version_valid(v) || (v->n != 0 && v->n != 1) || (v->project_id[0] && strcmp(v->project_id, p->id) != 0))
        return kp_err_set(err, KP_EINVAL, "invalid version record");

    int64_t created_at = p->created_at > 0 ? p->created_at : kp_time_now_ms();
    int64_t v_created_at = v->created_at > 0 ? v->created_at : created_at;
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = insert_project_row(h, p, created_at, err);
    if (rc == KP_OK)
        rc = insert_version_row(h, p->id, p->user_id, 1, v, v_created_at, err);
    return sq_tx_end(h, rc, err);
}

static kp_status sq_project_get(kp_store *s, const char *id, kp_project *out, kp_err *err)
{
    if (!id || !*id)
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    int found = 0;
    kp_status rc = project_read(sq_impl(s), id, out, &found, err);
    if (rc == KP_OK && !found)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    return rc;
}

static kp_status project_row(sqlite3_stmt *st, void *item, kp_err *err)
{
    (void)err;
    read_project(st, item);
    return KP_OK;
}

static kp_status sq_project_list(kp_store *s, const char *user_id, int64_t before_created_at, const char *before_id,
                                 size_t limit, kp_project **out, size_t *n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    int after = before_id && *before_id;
    *out = NULL;
    *n = 0;
    if (!user_id || !*user_id || limit == 0)
        return KP_OK;

    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, after ? ST_PROJECT_LIST_AFTER : ST_PROJECT_LIST_FIRST, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    if (after) {
        sqlite3_bind_int64(st, 2, before_created_at);
        sq_bind_text(st, 3, before_id);
        sqlite3_bind_int64(st, 4, limit_to_sql(limit));
    } else {
        sqlite3_bind_int64(st, 2, limit_to_sql(limit));
    }
    return collect_rows(h, st, sizeof(kp_project), project_row, NULL, "list projects", (void **)out, n, err);
}

/* Runs a write keyed by one text (?1); *changes receives the rows it changed. */
static kp_status run_keyed(sq_store *h, stmt_id id, const char *key, int *changes, const char *what, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, key);
    if (sqlite3_step(st) == SQLITE_DONE)
        *changes = sqlite3_changes(h->db);
    else
        rc = kp_sqlite_db_error(h->db, what, err);
    sq_stmt_done(st);
    return rc;
}

/* The version of the project that is generating; *n 0 when none is. */
static kp_status generating_version(sq_store *h, const char *project_id, int64_t *n, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_GENERATING_IN, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    *n = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *n = sqlite3_column_int64(st, 0);
    else if (step != SQLITE_DONE)
        rc = kp_sqlite_db_error(h->db, "read versions", err);
    sq_stmt_done(st);
    return rc;
}

/* KP_ECONFLICT when a version of the project is generating. */
static kp_status refuse_if_generating(sq_store *h, const char *id, kp_err *err)
{
    int64_t busy = 0;
    kp_status rc = generating_version(h, id, &busy, err);
    if (rc == KP_OK && busy)
        rc = kp_err_set(err, KP_ECONFLICT, "version %lld of this project is generating", (long long)busy);
    return rc;
}

/* Sets the project's deleting flag (the check and the mark in one transaction). */
static kp_status project_mark_locked(sq_store *h, const char *id, int on, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = on ? refuse_if_generating(h, id, err) : KP_OK;
    if (rc == KP_OK)
        rc = stmt_get(h, ST_PROJECT_MARK, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, id);
    sqlite3_bind_int(st, 2, on ? 1 : 0);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(h->db, "mark project", err);
    else if (sqlite3_changes(h->db) == 0)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    sq_stmt_done(st);
    return rc;
}

static kp_status sq_project_mark_deleting(kp_store *s, const char *id, int on, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!id || !*id)
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = project_mark_locked(h, id, on, err);
    return sq_tx_end(h, rc, err);
}

/* KP_ENOTFOUND when the project is being deleted: no new version for it. */
static kp_status refuse_if_deleting(sq_store *h, const char *id, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PROJECT_DELETING, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW && sqlite3_column_int(st, 0))
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found (it is being deleted)");
    else if (step != SQLITE_ROW && step != SQLITE_DONE)
        rc = kp_sqlite_db_error(h->db, "read project", err);
    sq_stmt_done(st);
    return rc;
}

/* Versions are deleted explicitly (not only by the ON DELETE CASCADE), so
 * the result does not depend on the connection's foreign key setting. */
static kp_status sq_project_delete(kp_store *s, const char *id, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!id || !*id)
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    int versions = 0, projects = 0;
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    /* the check and the delete under one write lock: no version can start
     * generating in between (admit takes the same lock) */
    rc = refuse_if_generating(h, id, err);
    if (rc == KP_OK)
        rc = run_keyed(h, ST_VERSIONS_DELETE, id, &versions, "delete versions", err);
    if (rc == KP_OK)
        rc = run_keyed(h, ST_PROJECT_DELETE, id, &projects, "delete project", err);
    if (rc == KP_OK && projects == 0)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    return sq_tx_end(h, rc, err);
}

/* Writes the project's latest_version (or, with ready_n > 0, raises its
 * latest_ready) and its updated_at. */
static kp_status project_touch(sq_store *h, stmt_id id, const char *project_id, int64_t value, int64_t now, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, value);
    sqlite3_bind_int64(st, 3, now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(h->db, "update project", err);
    else if (sqlite3_changes(h->db) != 1)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    sq_stmt_done(st);
    return rc;
}

/* The body of version_create, inside the write transaction. */
static kp_status version_create_locked(sq_store *h, const kp_version *v, int64_t created_at, kp_err *err)
{
    kp_project p;
    int found = 0;
    int64_t busy = 0;
    kp_status rc = project_read(h, v->project_id, &p, &found, err);
    if (rc != KP_OK)
        return rc;
    if (!found)
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    rc = refuse_if_deleting(h, v->project_id, err);
    if (rc != KP_OK)
        return rc;
    rc = generating_version(h, v->project_id, &busy, err);
    if (rc != KP_OK)
        return rc;
    if (busy)
        return kp_err_set(err, KP_ECONFLICT, "version %lld of this project is still generating", (long long)busy);
    if (v->n != p.latest_version + 1)
        return kp_err_set(err, KP_ECONFLICT, "version %lld is not the next one (the latest is %lld)", (long long)v->n,
                          (long long)p.latest_version);
    rc = insert_version_row(h, v->project_id, p.user_id, v->n, v, created_at, err);
    if (rc == KP_OK)
        rc = project_touch(h, ST_PROJECT_BUMP, v->project_id, v->n, created_at, err);
    return rc;
}

static kp_status sq_version_create(kp_store *s, const kp_version *v, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!new_version_valid(v) || !v->project_id[0] || v->n < 1)
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    int64_t created_at = v->created_at > 0 ? v->created_at : kp_time_now_ms();
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = version_create_locked(h, v, created_at, err);
    return sq_tx_end(h, rc, err);
}

static kp_status sq_version_get(kp_store *s, const char *project_id, int64_t n, kp_version *out, kp_err *err)
{
    sq_store *h = sq_impl(s);
    memset(out, 0, sizeof *out);
    if (!project_id || !*project_id)
        return kp_err_set(err, KP_ENOTFOUND, "version not found");
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_GET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        rc = read_version(st, out, err);
    else if (step == SQLITE_DONE)
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    else
        rc = kp_sqlite_db_error(h->db, "read version", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status version_row(sqlite3_stmt *st, void *item, kp_err *err)
{
    return read_version(st, item, err);
}

static void free_versions(void *items, size_t n)
{
    kp_version_free_array(items, n);
}

/* Steps a bound statement over VERSION_COLS rows into a new array. Resets st. */
static kp_status collect_versions(sq_store *h, sqlite3_stmt *st, const char *what, kp_version **out, size_t *n,
                                  kp_err *err)
{
    return collect_rows(h, st, sizeof(kp_version), version_row, free_versions, what, (void **)out, n, err);
}

static kp_status sq_version_list(kp_store *s, const char *project_id, kp_version **out, size_t *n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    *out = NULL;
    *n = 0;
    if (!project_id || !*project_id)
        return KP_OK;
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_LIST, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    return collect_versions(h, st, "list versions", out, n, err);
}

/* Why a version could not be finished: it is missing, or not generating. */
static kp_status finish_refused(sq_store *h, const kp_version *v, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_STATUS, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, v->project_id);
    sqlite3_bind_int64(st, 2, v->n);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        int status = sqlite3_column_int(st, 0);
        rc = kp_err_set(err, KP_ECONFLICT, "version %lld is %s, not generating", (long long)v->n,
                        status >= KP_VER_GENERATING && status <= KP_VER_FAILED ? version_status_names[status]
                                                                               : "in an unknown state");
    } else if (step == SQLITE_DONE) {
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    } else {
        rc = kp_sqlite_db_error(h->db, "read version", err);
    }
    sq_stmt_done(st);
    return rc;
}

/* settle: 1 marks the version settled in the same statement. */
static kp_status finish_version_row(sq_store *h, const kp_version *v, int64_t now, int settle, int *changed,
                                    kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_FINISH, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, v->project_id);
    sqlite3_bind_int64(st, 2, v->n);
    sqlite3_bind_int(st, 3, (int)v->status);
    sq_bind_text(st, 4, v->error_code);
    sq_bind_text(st, 5, v->error_message);
    sq_bind_text(st, 6, v->message);
    sq_bind_text(st, 7, json_or_empty_array(v->files_json));
    sq_bind_text(st, 8, json_or_empty_array(v->events_json));
    sq_bind_text(st, 9, v->model);
    sqlite3_bind_int64(st, 10, v->input_tokens);
    sqlite3_bind_int64(st, 11, v->output_tokens);
    sqlite3_bind_int64(st, 12, v->duration_ms);
    sqlite3_bind_int64(st, 13, now);
    sqlite3_bind_int(st, 14, v->refunded ? 1 : 0);
    sq_bind_text(st, 15, v->credit_reason);
    sqlite3_bind_int(st, 16, settle ? 1 : 0);
    if (sqlite3_step(st) == SQLITE_DONE)
        *changed = sqlite3_changes(h->db);
    else if ((sqlite3_extended_errcode(h->db) & 0xff) == SQLITE_CONSTRAINT)
        rc = kp_err_set(err, KP_EINVAL, "invalid version record");
    else
        rc = kp_sqlite_db_error(h->db, "finish version", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status version_finish_locked(sq_store *h, const kp_version *v, int64_t now, int settle, kp_err *err)
{
    int changed = 0;
    kp_status rc = finish_version_row(h, v, now, settle, &changed, err);
    if (rc != KP_OK)
        return rc;
    if (changed == 0)
        return finish_refused(h, v, err);
    return project_touch(h, ST_PROJECT_FINISHED, v->project_id, v->status == KP_VER_READY ? v->n : 0, now, err);
}

static int finished_version_valid(const kp_version *v)
{
    return v && sq_nonempty_fits(v->project_id, sizeof v->project_id) && v->n >= 1 &&
           (v->status == KP_VER_READY || v->status == KP_VER_FAILED) && sq_fits(v->error_code, sizeof v->error_code) &&
           sq_fits(v->model, sizeof v->model) && sq_fits(v->credit_reason, sizeof v->credit_reason);
}

static kp_status sq_version_finish(kp_store *s, const kp_version *v, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!finished_version_valid(v))
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    int64_t now = v->updated_at > 0 ? v->updated_at : kp_time_now_ms();
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = version_finish_locked(h, v, now, 0, err);
    return sq_tx_end(h, rc, err);
}

typedef struct version_ending {
    const kp_version *v;
    const kp_credit_change *c;
} version_ending;

static kp_status version_end_body(sq_store *h, const void *arg, kp_balance *out, kp_err *err)
{
    const version_ending *e = arg;
    int64_t now = e->v->updated_at > 0 ? e->v->updated_at : kp_time_now_ms();
    kp_status rc = e->c ? sq_credits_apply_locked(h, e->c, now / 1000, out, err) : KP_OK;
    return rc == KP_OK ? version_finish_locked(h, e->v, now, 1, err) : rc;
}

static kp_status sq_version_end(kp_store *s, const kp_version *v, const kp_credit_change *c, kp_balance *out,
                                kp_err *err)
{
    if (!finished_version_valid(v))
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    if (c && !sq_credit_change_valid(c))
        return kp_err_set(err, KP_EINVAL, "invalid credit change");
    version_ending e = {v, c};
    return run_balance_write(sq_impl(s), version_end_body, &e, out, err);
}

static kp_status sq_version_set_settled(kp_store *s, const char *project_id, int64_t n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!project_id || !*project_id)
        return kp_err_set(err, KP_ENOTFOUND, "version not found");
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_SET_SETTLED, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(h->db, "settle version", err);
    else if (sqlite3_changes(h->db) == 0)
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    sq_stmt_done(st);
    return rc;
}

static kp_status count_generating(sq_store *h, const char *user_id, int64_t *count, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSIONS_GENERATING_COUNT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    if (sqlite3_step(st) == SQLITE_ROW)
        *count = sqlite3_column_int64(st, 0);
    else
        rc = kp_sqlite_db_error(h->db, "count generating versions", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status sq_versions_generating_count(kp_store *s, const char *user_id, int64_t *count, kp_err *err)
{
    *count = 0;
    if (!user_id || !*user_id)
        return KP_OK;
    return count_generating(sq_impl(s), user_id, count, err);
}

/* The body of admit, inside the write transaction. */
static kp_status admit_body(sq_store *h, const void *arg, kp_balance *out, kp_err *err)
{
    const kp_admission *a = arg;
    int64_t now_ms = kp_time_now_ms();
    kp_status rc = KP_OK;
    if (a->max_generating >= 0) {
        int64_t running = 0;
        rc = count_generating(h, a->user_id, &running, err);
        if (rc != KP_OK)
            return rc;
        if (running >= a->max_generating)
            return kp_err_set(err, KP_ERATE, "%lld generation%s running already", (long long)running,
                              running == 1 ? "" : "s");
    }
    if (a->charge) {
        rc = sq_credits_apply_locked(h, a->charge, now_ms / 1000, out, err);
        if (rc != KP_OK)
            return rc;
    }
    kp_testhook_point("after_reserve");
    const kp_project *p = a->project;
    const kp_version *v = a->version;
    int64_t v_created_at = v->created_at > 0 ? v->created_at : now_ms;
    if (!p)
        return version_create_locked(h, v, v_created_at, err);
    rc = insert_project_row(h, p, p->created_at > 0 ? p->created_at : now_ms, err);
    if (rc == KP_OK)
        rc = insert_version_row(h, p->id, p->user_id, 1, v, v_created_at, err);
    return rc;
}

static int admission_valid(const kp_admission *a)
{
    if (!a || !sq_nonempty_fits(a->user_id, KP_ID_MAX) || !new_version_valid(a->version))
        return 0;
    if (a->charge && (!sq_credit_change_valid(a->charge) || strcmp(a->charge->user_id, a->user_id) != 0))
        return 0;
    if (a->project)
        return project_valid(a->project) && strcmp(a->project->user_id, a->user_id) == 0 &&
               (a->version->n == 0 || a->version->n == 1) &&
               (!a->version->project_id[0] || strcmp(a->version->project_id, a->project->id) == 0);
    return a->version->project_id[0] && a->version->n >= 1;
}

static kp_status sq_admit(kp_store *s, const kp_admission *a, kp_balance *out, kp_err *err)
{
    if (!admission_valid(a))
        return kp_err_set(err, KP_EINVAL, "invalid admission");
    return run_balance_write(sq_impl(s), admit_body, a, out, err);
}

/* Runs a list query that takes no parameters into a new array (collect_rows). */
static kp_status list_all(sq_store *h, stmt_id id, size_t elem, row_reader read_row,
                          void (*free_items)(void *items, size_t n), const char *what, void **out, size_t *n,
                          kp_err *err)
{
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *n = 0;
    kp_status rc = stmt_get(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    return collect_rows(h, st, elem, read_row, free_items, what, out, n, err);
}

static kp_status sq_reservations_orphaned(kp_store *s, kp_reservation **out, size_t *n, kp_err *err)
{
    return list_all(sq_impl(s), ST_RES_ORPHANED, sizeof(kp_reservation), read_reservation, NULL,
                    "list orphaned reservations", (void **)out, n, err);
}

static kp_status sq_versions_unsettled(kp_store *s, kp_version **out, size_t *n, kp_err *err)
{
    return list_all(sq_impl(s), ST_VERSIONS_UNSETTLED, sizeof(kp_version), version_row, free_versions,
                    "list unsettled versions", (void **)out, n, err);
}

/* ---- health and lifetime ---------------------------------------------- */

static kp_status sq_ping(kp_store *s, kp_err *err)
{
    sq_store *h = sq_impl(s);
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PING, &st, err);
    if (rc != KP_OK)
        return rc;
    if (sqlite3_step(st) != SQLITE_ROW)
        rc = kp_sqlite_db_error(h->db, "ping", err);
    sq_stmt_done(st);
    return rc;
}

static void sq_close(kp_store *s)
{
    if (!s)
        return;
    sq_store *h = sq_impl(s);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(h->stmts[i]);
    for (int i = 0; i < SQ_MODULE_STMTS; i++)
        sqlite3_finalize(h->module_stmts[i]);
    sqlite3_close_v2(h->db);
    free(h);
}

static const kp_store_ops sqlite_ops = {
    .user_create = sq_user_create,
    .user_get = sq_user_get,
    .user_create_credited = sq_user_create_credited,
    .user_get_by_email = sq_user_get_by_email,
    .user_get_by_sub = sq_user_get_by_sub,
    .user_set_admin = sq_user_set_admin,
    .user_set_plan = sq_user_set_plan,
    .plan_get = sq_plan_get,
    .plan_list = sq_plan_list,
    .plan_put = sq_plan_put,
    .balance_get = sq_balance_get,
    .credits_apply = sq_credits_apply,
    .reservation_get = sq_reservation_get,
    .ledger_list = sq_ledger_list,
    .ledger_sum = sq_ledger_sum,
    .daily_bonus_batch = sq_daily_bonus_batch,
    .project_create = sq_project_create,
    .project_get = sq_project_get,
    .project_list = sq_project_list,
    .project_delete = sq_project_delete,
    .project_mark_deleting = sq_project_mark_deleting,
    .version_create = sq_version_create,
    .version_get = sq_version_get,
    .version_list = sq_version_list,
    .version_finish = sq_version_finish,
    .version_set_settled = sq_version_set_settled,
    .version_end = sq_version_end,
    .admit = sq_admit,
    .reservations_orphaned = sq_reservations_orphaned,
    .versions_generating_count = sq_versions_generating_count,
    .versions_unsettled = sq_versions_unsettled,
    .account_get = sq_account_get,
    .user_set_email_verified = sq_user_set_email_verified,
    .verification_create = sq_verification_create,
    .verification_consume = sq_verification_consume,
    .billing_customer_get = sq_billing_customer_get,
    .billing_customer_find = sq_billing_customer_find,
    .subscription_get = sq_subscription_get,
    .billing_apply = sq_billing_apply,
    .ping = sq_ping,
    .close = sq_close,
};

kp_status kp_sqlite_open(const char *db_path, kp_store **out, kp_err *err)
{
    sqlite3 *db = NULL;
    sq_store *h = NULL;
    int version = 0;
    kp_status rc;

    *out = NULL;
    kp_sqlite_global_init();
    if (!db_path || !*db_path)
        return kp_err_set(err, KP_EINVAL, "database path is empty");
    /* No SQLITE_OPEN_CREATE: a missing file means "not migrated". */
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        kp_log_json(
            KP_LOG_ERROR, "cannot open database",
            json_pack("{s:s, s:s}", "path", db_path, "sqlite_error", db ? sqlite3_errmsg(db) : "out of memory"));
        rc = kp_err_set(err, KP_EUNAVAILABLE, "cannot open the database: run koumpa migrate");
        goto cleanup;
    }
    rc = kp_sqlite_configure(db, 1, err);
    if (rc != KP_OK)
        goto cleanup;
    rc = kp_sqlite_schema_version(db, &version, err);
    if (rc != KP_OK)
        goto cleanup;
    if (version < kp_sqlite_schema_target()) {
        rc = kp_err_set(err, KP_EUNAVAILABLE,
                        "database schema is at version %d, this build needs %d: run koumpa migrate", version,
                        kp_sqlite_schema_target());
        goto cleanup;
    }
    if (version > kp_sqlite_schema_target())
        kp_log(KP_LOG_WARN, "database schema version %d is newer than this build's %d", version,
               kp_sqlite_schema_target());

    h = calloc(1, sizeof *h);
    if (!h) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    h->db = db;
    h->base.ops = &sqlite_ops;
    h->base.impl = h;
    *out = &h->base;
    return KP_OK;

cleanup:
    sqlite3_close_v2(db);
    return rc;
}
