/*
 * migrations.c - the SQLite schema, as an ordered list of migrations, and the
 * code that applies them (kp_sqlite_migrate).
 *
 * Invariants:
 *   - migrations are append-only: a released migration is never edited; a
 *     schema change is a new entry at the end of the array;
 *   - each migration runs in its own BEGIN IMMEDIATE transaction, and the
 *     version check happens inside it, after the write lock is taken, so two
 *     processes migrating at once apply each migration exactly once;
 *   - the version is MAX(version) of schema_migrations (0 without the table).
 */
#include "store/sqlite/migrations.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "core/log.h"
#include "store/sqlite/sqlite_store.h"

static const char *const migrations[] = {
    /* 1: plans, users, balances, ledger, reservations; the three base plans. */
    "CREATE TABLE plans ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  name TEXT NOT NULL,"
    "  price_cents INTEGER NOT NULL CHECK (price_cents >= 0),"
    "  currency TEXT NOT NULL CHECK (length(currency) = 3),"
    "  monthly_credits INTEGER NOT NULL CHECK (monthly_credits >= 0),"
    "  daily_bonus INTEGER NOT NULL CHECK (daily_bonus >= 0),"
    "  max_concurrent_generations INTEGER NOT NULL CHECK (max_concurrent_generations >= 0),"
    "  stripe_price_id TEXT NOT NULL DEFAULT '',"
    "  active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),"
    "  updated_at INTEGER NOT NULL"
    ");"
    "CREATE TABLE users ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  email TEXT NOT NULL DEFAULT '',"
    "  password_hash TEXT NOT NULL DEFAULT '',"
    "  external_sub TEXT NOT NULL DEFAULT '',"
    "  plan_id TEXT NOT NULL REFERENCES plans(id),"
    "  is_admin INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),"
    "  created_at INTEGER NOT NULL"
    ");"
    "CREATE UNIQUE INDEX users_email ON users(email) WHERE email <> '';"
    "CREATE UNIQUE INDEX users_external_sub ON users(external_sub) WHERE external_sub <> '';"
    "CREATE TABLE balances ("
    "  user_id TEXT PRIMARY KEY NOT NULL REFERENCES users(id),"
    "  daily INTEGER NOT NULL DEFAULT 0,"
    "  monthly INTEGER NOT NULL DEFAULT 0,"
    "  version INTEGER NOT NULL DEFAULT 0,"
    "  CHECK (daily >= 0 AND monthly >= 0)"
    ") WITHOUT ROWID;"
    /* AUTOINCREMENT: seq is never reused, so it only ever grows. */
    "CREATE TABLE ledger ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  user_id TEXT NOT NULL REFERENCES users(id),"
    "  delta_daily INTEGER NOT NULL,"
    "  delta_monthly INTEGER NOT NULL,"
    "  balance_daily INTEGER NOT NULL,"
    "  balance_monthly INTEGER NOT NULL,"
    "  reason TEXT NOT NULL,"
    "  idem_key TEXT NOT NULL,"
    "  reservation_id TEXT NOT NULL DEFAULT '',"
    "  created_at INTEGER NOT NULL"
    ");"
    "CREATE UNIQUE INDEX ledger_idem_key ON ledger(idem_key);"
    "CREATE INDEX ledger_user_seq ON ledger(user_id, seq);"
    "CREATE TABLE reservations ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  user_id TEXT NOT NULL REFERENCES users(id),"
    "  daily INTEGER NOT NULL CHECK (daily >= 0),"
    "  monthly INTEGER NOT NULL CHECK (monthly >= 0),"
    "  state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'refunded')),"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX reservations_user ON reservations(user_id);"
    "INSERT INTO plans (id, name, price_cents, currency, monthly_credits, daily_bonus,"
    "                   max_concurrent_generations, stripe_price_id, active, updated_at) VALUES"
    "  ('free', 'Free', 0, 'EUR', 0, 5, 1, '', 1, CAST(strftime('%s', 'now') AS INTEGER)),"
    "  ('pro', 'Pro', 2500, 'EUR', 100, 5, 3, '', 1, CAST(strftime('%s', 'now') AS INTEGER)),"
    "  ('business', 'Business', 5000, 'EUR', 300, 10, 10, '', 1, CAST(strftime('%s', 'now') AS INTEGER));",

    /*
     * 2: projects and their versions. versions.user_id is a copy of its
     * project's (which never changes) so that a user's generating versions
     * are counted from one partial index. versions keeps a rowid: its rows
     * hold whole prompts and event logs, too large for a WITHOUT ROWID b-tree.
     */
    "CREATE TABLE projects ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  user_id TEXT NOT NULL REFERENCES users(id),"
    "  name TEXT NOT NULL,"
    "  latest_version INTEGER NOT NULL DEFAULT 1 CHECK (latest_version >= 1),"
    "  latest_ready INTEGER NOT NULL DEFAULT 0 CHECK (latest_ready >= 0 AND latest_ready <= latest_version),"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX projects_user_created ON projects(user_id, created_at DESC, id DESC);"
    "CREATE TABLE versions ("
    "  project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,"
    "  n INTEGER NOT NULL CHECK (n >= 1),"
    "  user_id TEXT NOT NULL,"
    "  status INTEGER NOT NULL CHECK (status IN (1, 2, 3)),"
    "  reservation_id TEXT NOT NULL DEFAULT '',"
    "  settled INTEGER NOT NULL DEFAULT 0 CHECK (settled IN (0, 1)),"
    "  error_code TEXT NOT NULL DEFAULT '',"
    "  error_message TEXT NOT NULL DEFAULT '',"
    "  prompt TEXT NOT NULL DEFAULT '',"
    "  message TEXT NOT NULL DEFAULT '',"
    "  files_json TEXT NOT NULL DEFAULT '[]',"
    "  events_json TEXT NOT NULL DEFAULT '[]',"
    "  model TEXT NOT NULL DEFAULT '',"
    "  input_tokens INTEGER NOT NULL DEFAULT 0,"
    "  output_tokens INTEGER NOT NULL DEFAULT 0,"
    "  duration_ms INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (project_id, n)"
    ");"
    "CREATE INDEX versions_unsettled ON versions(project_id, n) WHERE settled = 0;"
    "CREATE INDEX versions_generating ON versions(user_id) WHERE status = 1;",
    /* 3 (money): projects' and versions' times in milliseconds, so that
     * "newest first" is exact; existing rows keep their second. */
    "UPDATE projects SET created_at = created_at * 1000, updated_at = updated_at * 1000;"
    "UPDATE versions SET created_at = created_at * 1000, updated_at = updated_at * 1000;"
    /* (money) whether a failed version's credit was refunded, and why; every
     * failure was refunded before. */
    "ALTER TABLE versions ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0 CHECK (refunded IN (0, 1));"
    "ALTER TABLE versions ADD COLUMN credit_reason TEXT NOT NULL DEFAULT '';"
    "UPDATE versions SET refunded = 1 WHERE status = 3;"
    /* (money) recovery finds reservations that no version refers to */
    "CREATE INDEX IF NOT EXISTS reservations_open ON reservations(id) WHERE state = 'reserved';"
    "CREATE INDEX IF NOT EXISTS versions_reservation ON versions(reservation_id) WHERE reservation_id <> '';"
    /* (money) a project whose files are being removed takes no new version */
    "ALTER TABLE projects ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0 CHECK (deleting IN (0, 1));",
    /* 4 (accounts, issue 9): verified addresses and single-use verification
     * tokens (only their hash is stored). verification_required: the daily
     * bonus waits for a verified address (accounts made while SMTP was on). */
    "ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE users ADD COLUMN verification_required INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE email_verifications ("
    "  token_hash TEXT PRIMARY KEY NOT NULL,"
    "  user_id TEXT NOT NULL REFERENCES users(id),"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  used_at INTEGER NOT NULL DEFAULT 0"
    ") WITHOUT ROWID;"
    "CREATE INDEX email_verifications_user ON email_verifications(user_id);",

    /* 5: billing (Stripe). A user's link to their customer and current
     * subscription; each subscription as its webhooks last described it (and
     * the event time and version that keep it moving forward only); the ids of
     * the events applied, which make each event apply once. */
    "CREATE TABLE billing_customers ("
    "  user_id TEXT PRIMARY KEY NOT NULL REFERENCES users(id),"
    "  customer_id TEXT NOT NULL DEFAULT '',"
    "  subscription_id TEXT NOT NULL DEFAULT '',"
    "  updated_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE UNIQUE INDEX billing_customers_customer ON billing_customers(customer_id) WHERE customer_id != '';"
    "CREATE TABLE subscriptions ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  user_id TEXT NOT NULL DEFAULT '',"
    "  customer_id TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL DEFAULT '',"
    "  price_id TEXT NOT NULL DEFAULT '',"
    "  plan_id TEXT NOT NULL DEFAULT '',"
    "  current_period_end INTEGER NOT NULL DEFAULT 0,"
    "  cancel_at_period_end INTEGER NOT NULL DEFAULT 0,"
    "  event_created INTEGER NOT NULL DEFAULT 0,"
    "  version INTEGER NOT NULL CHECK (version >= 1),"
    "  updated_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE stripe_events ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  type TEXT NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  applied_at INTEGER NOT NULL"
    ") WITHOUT ROWID;",

    /* 6 (issue 11: leases): a generating version's owner (the instance
     * running it) and the lease it renews (ms). Rows of older builds get no
     * owner and a lease that ran out long ago, so recovery takes them.
     * Recovery reads generating versions by lease from a partial index. */
    "ALTER TABLE versions ADD COLUMN owner TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE versions ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX versions_lease ON versions(lease_until) WHERE status = 1;",

    /* 7 (issue 11: events): the event store, one row per event a reader
     * sees (store.h kp_event), written as a generation runs. The events of
     * versions that older builds ended move here from versions.events_json,
     * which then stays '[]' (replays read only this table). */
    "CREATE TABLE version_events ("
    "  project_id TEXT NOT NULL,"
    "  n INTEGER NOT NULL CHECK (n >= 1),"
    "  id INTEGER NOT NULL CHECK (id >= 1),"
    "  type TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  PRIMARY KEY (project_id, n, id)"
    ") WITHOUT ROWID;"
    "INSERT OR IGNORE INTO version_events (project_id, n, id, type, data)"
    "  SELECT v.project_id, v.n, e.value ->> '$.id', e.value ->> '$.event', e.value -> '$.data'"
    "  FROM versions v, json_each(CASE WHEN json_valid(v.events_json) THEN"
    "    CASE json_type(v.events_json) WHEN 'array' THEN v.events_json ELSE '[]' END ELSE '[]' END) e"
    "  WHERE e.type = 'object' AND e.value ->> '$.id' >= 1 AND e.value ->> '$.event' IS NOT NULL"
    "    AND e.value -> '$.data' IS NOT NULL;"
    "UPDATE versions SET events_json = '[]' WHERE events_json <> '[]';",

    /* 8 (issue 12: cancel): a cancel asked of a generating version through
     * another instance than the one running it; that one reads it back when
     * it renews its lease (store.h version_request_cancel). */
    "ALTER TABLE versions ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;",

    /* 9 (issue 14: spends): no query reads reservations by user, and users
     * are never deleted (the foreign key never looks them up): the index
     * only cost every reservation a write to a page picked by its user. */
    "DROP INDEX IF EXISTS reservations_user;",

    /* 10 (issue 14: spends): reservations keyed by their id in one b-tree
     * (WITHOUT ROWID), where a rowid table and its key's index made every
     * reservation's insert, read and update two b-tree walks. */
    "CREATE TABLE reservations_by_id ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  user_id TEXT NOT NULL REFERENCES users(id),"
    "  daily INTEGER NOT NULL CHECK (daily >= 0),"
    "  monthly INTEGER NOT NULL CHECK (monthly >= 0),"
    "  state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'refunded')),"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "INSERT INTO reservations_by_id (id, user_id, daily, monthly, state, created_at, updated_at)"
    "  SELECT id, user_id, daily, monthly, state, created_at, updated_at FROM reservations;"
    "DROP TABLE reservations;"
    "ALTER TABLE reservations_by_id RENAME TO reservations;"
    "CREATE INDEX reservations_open ON reservations(id) WHERE state = 'reserved';",
};

#define MIGRATION_COUNT ((int)(sizeof migrations / sizeof migrations[0]))

int kp_sqlite_schema_target(void)
{
    return MIGRATION_COUNT;
}

kp_status kp_sqlite_db_error(sqlite3 *db, const char *what, kp_err *err)
{
    int code = db ? sqlite3_extended_errcode(db) : SQLITE_ERROR;
    const char *msg = db ? sqlite3_errmsg(db) : "no connection";
    kp_log_json(KP_LOG_ERROR, "database error",
                json_pack("{s:s, s:s, s:i}", "op", what, "sqlite_error", msg, "sqlite_code", code));
    return kp_err_set(err, KP_EDB, "database error (%s)", what);
}

/* Runs one statement whose result rows, if any, are ignored. */
static int exec_simple(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/*
 * Switches the database to WAL (persistent in the file; a no-op when it
 * already is). While another connection is switching the same file, SQLite
 * may answer SQLITE_BUSY without calling the busy handler, so this retries
 * by itself, within the busy timeout.
 */
static kp_status enable_wal(sqlite3 *db, kp_err *err)
{
    const struct timespec pause = {0, 10 * 1000 * 1000};
    sqlite3_stmt *st = NULL;
    kp_status rc = KP_OK;
    int step = SQLITE_OK;

    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
        return kp_sqlite_db_error(db, "enable WAL", err);
    for (int waited_ms = 0;; waited_ms += 10) {
        step = sqlite3_step(st);
        if ((step & 0xff) != SQLITE_BUSY || waited_ms >= KP_SQLITE_BUSY_TIMEOUT_MS)
            break;
        sqlite3_reset(st);
        nanosleep(&pause, NULL);
    }
    if (step != SQLITE_ROW) {
        rc = kp_sqlite_db_error(db, "enable WAL", err);
    } else {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        if (!mode || sqlite3_stricmp(mode, "wal") != 0) {
            kp_log(KP_LOG_ERROR, "database stays in journal mode %s, not wal", mode ? mode : "?");
            rc = kp_err_set(err, KP_EDB, "database error (enable WAL)");
        }
    }
    sqlite3_finalize(st);
    return rc;
}

kp_status kp_sqlite_configure(sqlite3 *db, int foreign_keys, kp_err *err)
{
    if (sqlite3_busy_timeout(db, KP_SQLITE_BUSY_TIMEOUT_MS) != SQLITE_OK)
        return kp_sqlite_db_error(db, "set busy timeout", err);
    kp_status rc = enable_wal(db, err);
    if (rc != KP_OK)
        return rc;
    if (exec_simple(db, "PRAGMA synchronous=" KP_SQLITE_SYNCHRONOUS) != SQLITE_OK)
        return kp_sqlite_db_error(db, "set synchronous", err);
    if (foreign_keys && exec_simple(db, "PRAGMA foreign_keys=ON") != SQLITE_OK)
        return kp_sqlite_db_error(db, "enable foreign keys", err);
    return KP_OK;
}

/* 1 if the table exists, 0 if not, -1 on error. */
static int table_exists(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", -1, &st, NULL) !=
        SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int result = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    return result;
}

kp_status kp_sqlite_schema_version(sqlite3 *db, int *version, kp_err *err)
{
    *version = 0;
    int exists = table_exists(db, "schema_migrations");
    if (exists < 0)
        return kp_sqlite_db_error(db, "read schema version", err);
    if (!exists)
        return KP_OK;

    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1, &st, NULL) != SQLITE_OK)
        return kp_sqlite_db_error(db, "read schema version", err);
    kp_status rc = KP_OK;
    if (sqlite3_step(st) == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    else
        rc = kp_sqlite_db_error(db, "read schema version", err);
    sqlite3_finalize(st);
    return rc;
}

static kp_status record_version(sqlite3 *db, int version, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", -1, &st, NULL) !=
        SQLITE_OK)
        return kp_sqlite_db_error(db, "record schema version", err);
    sqlite3_bind_int(st, 1, version);
    sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
    kp_status rc = KP_OK;
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(db, "record schema version", err);
    sqlite3_finalize(st);
    return rc;
}

/*
 * Applies migration `version` (1-based) unless the database already has it.
 * *applied is set to 1 when it ran now. Owns its transaction.
 */
static kp_status apply_one(sqlite3 *db, int version, int *applied, kp_err *err)
{
    *applied = 0;
    /* The write lock first: whoever gets it second sees the first's version. */
    if (exec_simple(db, "BEGIN IMMEDIATE") != SQLITE_OK)
        return kp_sqlite_db_error(db, "begin migration", err);

    kp_status rc = KP_OK;
    int current = 0;
    if (exec_simple(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        "  version INTEGER PRIMARY KEY NOT NULL,"
                        "  applied_at INTEGER NOT NULL)") != SQLITE_OK) {
        rc = kp_sqlite_db_error(db, "create schema_migrations", err);
        goto cleanup;
    }
    rc = kp_sqlite_schema_version(db, &current, err);
    if (rc != KP_OK || current >= version)
        goto cleanup;

    if (exec_simple(db, migrations[version - 1]) != SQLITE_OK) {
        kp_log(KP_LOG_ERROR, "migration %d failed", version);
        rc = kp_sqlite_db_error(db, "apply migration", err);
        goto cleanup;
    }
    rc = record_version(db, version, err);
    if (rc != KP_OK)
        goto cleanup;
    if (exec_simple(db, "COMMIT") != SQLITE_OK) {
        rc = kp_sqlite_db_error(db, "commit migration", err);
        goto cleanup;
    }
    *applied = 1;
    kp_log(KP_LOG_INFO, "applied schema migration %d", version);
    return KP_OK;

cleanup:
    exec_simple(db, "ROLLBACK");
    return rc;
}

static void global_init_once(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    /* statement journals (a savepoint's, a statement's that may abort) in
     * memory, in small chunks: spilling at 64 KiB makes each journal one
     * 64 KiB allocation, whose free makes glibc trim its heap (madvise, and
     * a TLB flush on every core) at every savepoint's end */
    sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, -1);
    sqlite3_initialize();
}

void kp_sqlite_global_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init_once);
}

kp_status kp_sqlite_migrate(const char *db_path, int *applied, kp_err *err)
{
    sqlite3 *db = NULL;
    kp_status rc = KP_OK;
    int count = 0;

    kp_sqlite_global_init();
    if (applied)
        *applied = 0;
    if (!db_path || !*db_path)
        return kp_err_set(err, KP_EINVAL, "database path is empty");

    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        kp_log_json(
            KP_LOG_ERROR, "cannot open database",
            json_pack("{s:s, s:s}", "path", db_path, "sqlite_error", db ? sqlite3_errmsg(db) : "out of memory"));
        rc = kp_err_set(err, KP_EDB, "cannot open or create the database");
        goto cleanup;
    }
    /* Foreign keys stay off here: a migration that rebuilds a table needs that. */
    rc = kp_sqlite_configure(db, 0, err);
    if (rc != KP_OK)
        goto cleanup;

    for (int v = 1; v <= MIGRATION_COUNT; v++) {
        int now = 0;
        rc = apply_one(db, v, &now, err);
        if (rc != KP_OK)
            goto cleanup;
        count += now;
    }
    if (applied)
        *applied = count;

cleanup:
    sqlite3_close_v2(db);
    return rc;
}
