/*
 * sqlite_accounts.c - the SQLite backend's users, e-mail verification
 * tokens and plans (store.h), and account_get, the one joined read every
 * authenticated request makes. A new user gets their balance row in the same
 * transaction (sqlite_credits.c applies their first credits).
 */
#include <sqlite3.h>
#include <string.h>
#include <time.h>

#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_internal.h"

#define USER_COLS                                                                                                      \
    "id, email, password_hash, external_sub, plan_id, is_admin, created_at, email_verified, verification_required"
#define PLAN_COLS                                                                                                      \
    "id, name, price_cents, currency, monthly_credits, daily_bonus, max_concurrent_generations, "                      \
    "stripe_price_id, active, updated_at"

typedef enum stmt_id {
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
    ST_ACCOUNT_GET,
    ST_COUNT
} stmt_id;

static const char *const stmt_sql[ST_COUNT] = {
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
    [ST_ACCOUNT_GET] = "SELECT u.id, u.email, '', u.external_sub, u.plan_id, u.is_admin, u.created_at, "
                       "b.daily, b.monthly, b.version, p.id, p.name, p.price_cents, p.currency, "
                       "p.monthly_credits, p.daily_bonus, p.max_concurrent_generations, p.stripe_price_id, "
                       "p.active, p.updated_at, u.email_verified, u.verification_required, "
                       "coalesce(s.status, ''), coalesce(s.plan_id, ''), coalesce(s.current_period_end, 0), "
                       "coalesce(s.cancel_at_period_end, 0) "
                       "FROM users u JOIN balances b ON b.user_id = u.id "
                       "JOIN plans p ON p.id = u.plan_id "
                       "LEFT JOIN billing_customers c ON c.user_id = u.id "
                       "LEFT JOIN subscriptions s ON s.id = c.subscription_id WHERE u.id = ?1",
};

_Static_assert(ST_COUNT <= SQ_SLOTS_ACCOUNTS_N, "statement slots");

/* Fetches this file's cached statement, preparing it on first use. */
static kp_status stmt_get(sq_store *h, stmt_id id, sqlite3_stmt **out, kp_err *err)
{
    return sq_stmt_cached(h, SQ_SLOTS_ACCOUNTS + (unsigned)id, stmt_sql[id], out, err);
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
    int code = sqlite3_extended_errcode(sq_db(h));
    const char *msg = sqlite3_errmsg(sq_db(h));
    if (code == SQLITE_CONSTRAINT_FOREIGNKEY)
        return kp_err_set(err, KP_ENOTFOUND, "plan not found");
    if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY) {
        if (strstr(msg, "users.email"))
            return kp_err_set(err, KP_ECONFLICT, "email already registered");
        if (strstr(msg, "users.external_sub"))
            return kp_err_set(err, KP_ECONFLICT, "external identity already linked to a user");
        return kp_err_set(err, KP_ECONFLICT, "user already exists");
    }
    return kp_sqlite_db_error(sq_db(h), what, err);
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
        rc = kp_sqlite_db_error(sq_db(h), "create balance", err);
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

kp_status sq_user_create(kp_store *s, const kp_user *u, kp_err *err)
{
    if (!user_valid(u))
        return kp_err_set(err, KP_EINVAL, "invalid user record");
    return create_user(sq_impl(s), u, NULL, err);
}

kp_status sq_user_create_credited(kp_store *s, const kp_user *u, const kp_credit_change *c, kp_err *err)
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
        rc = kp_sqlite_db_error(sq_db(h), "read user", err);
    sq_stmt_done(st);
    return rc;
}

kp_status sq_user_get(kp_store *s, const char *id, kp_user *out, kp_err *err)
{
    return user_get_with(sq_impl(s), ST_USER_GET, id, out, err);
}

kp_status sq_user_get_by_email(kp_store *s, const char *email, kp_user *out, kp_err *err)
{
    return user_get_with(sq_impl(s), ST_USER_BY_EMAIL, email, out, err);
}

kp_status sq_user_get_by_sub(kp_store *s, const char *external_sub, kp_user *out, kp_err *err)
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
    else if (sqlite3_changes(sq_db(h)) == 0)
        rc = kp_err_set(err, KP_ENOTFOUND, "user not found");
    sq_stmt_done(st);
    return rc;
}

kp_status sq_user_set_admin(kp_store *s, const char *id, int is_admin, kp_err *err)
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

kp_status sq_user_set_plan(kp_store *s, const char *id, const char *plan_id, kp_err *err)
{
    return sq_user_plan_write(sq_impl(s), id, plan_id, err);
}

kp_status sq_user_set_email_verified(kp_store *s, const char *id, kp_err *err)
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
        rc = kp_sqlite_db_error(sq_db(h), "drop unused verification tokens", err);
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
        rc = sqlite3_extended_errcode(sq_db(h)) == SQLITE_CONSTRAINT_FOREIGNKEY
                 ? kp_err_set(err, KP_ENOTFOUND, "user not found")
                 : kp_sqlite_db_error(sq_db(h), "store verification token", err);
    sq_stmt_done(st);
    return rc;
}

kp_status sq_verification_create(kp_store *s, const char *token_hash, const kp_verification *v, kp_err *err)
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
        rc = kp_sqlite_db_error(sq_db(h), "read verification token", err);
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
        rc = kp_sqlite_db_error(sq_db(h), "use verification token", err);
    else if (sqlite3_changes(sq_db(h)) != 1)
        rc = kp_err_set(err, KP_ECONFLICT, "verification token used or expired");
    sq_stmt_done(st);
    return rc;
}

kp_status sq_verification_consume(kp_store *s, const char *token_hash, int64_t now, kp_verification *out, kp_err *err)
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

/* Reads plan columns starting at column `first` (in PLAN_COLS order). */
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

kp_status sq_plan_get(kp_store *s, const char *id, kp_plan *out, kp_err *err)
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
        rc = kp_sqlite_db_error(sq_db(h), "read plan", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status plan_row(sqlite3_stmt *st, void *item, kp_err *err)
{
    (void)err;
    read_plan(st, item);
    return KP_OK;
}

kp_status sq_plan_list(kp_store *s, int active_only, kp_plan **out, size_t *n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    *out = NULL;
    *n = 0;

    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PLAN_LIST, &st, err);
    if (rc != KP_OK)
        return rc;
    sqlite3_bind_int(st, 1, active_only ? 1 : 0);
    return sq_collect_rows(h, st, sizeof(kp_plan), plan_row, NULL, "list plans", (void **)out, n, err);
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
        rc = kp_sqlite_db_error(sq_db(h), "read plan", err);
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
        if ((sqlite3_extended_errcode(sq_db(h)) & 0xff) == SQLITE_CONSTRAINT)
            rc = kp_err_set(err, KP_EINVAL, "invalid plan");
        else
            rc = kp_sqlite_db_error(sq_db(h), "write plan", err);
    }
    sq_stmt_done(st);
    return rc;
}

kp_status sq_plan_put(kp_store *s, const kp_plan *p, int *created, kp_err *err)
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

/* The user's current subscription (LEFT JOINed: all empty when none) from column col on. */
static void read_account_subscription(sqlite3_stmt *st, int col, kp_account_subscription *out)
{
    memset(out, 0, sizeof *out);
    sq_column_copy(st, col, out->status, sizeof out->status);
    sq_column_copy(st, col + 1, out->plan_id, sizeof out->plan_id);
    out->current_period_end = sqlite3_column_int64(st, col + 2);
    out->cancel_at_period_end = sqlite3_column_int(st, col + 3) != 0;
}

kp_status sq_account_get(kp_store *s, const char *user_id, kp_account *out, kp_err *err)
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
        read_account_subscription(st, 22, &out->subscription);
    } else if (step == SQLITE_DONE) {
        rc = kp_err_set(err, KP_ENOTFOUND, "user not found");
    } else {
        rc = kp_sqlite_db_error(sq_db(h), "read account", err);
    }
    sq_stmt_done(st);
    return rc;
}
