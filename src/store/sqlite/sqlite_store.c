/*
 * sqlite_store.c - the SQLite backend of kp_store_ops (see store.h for the
 * contract of each operation, sqlite_store.h for opening, migrations.c for
 * the schema): the handle, its statement cache, transactions, the helpers
 * every file of the backend shares (sqlite_internal.h), and the ops table.
 * The operations live by aggregate: sqlite_accounts.c (users, e-mail
 * verification, plans), sqlite_credits.c (balances, ledger, reservations,
 * the walk over users for the daily bonus), sqlite_bonus.c (a bonus page read
 * and granted in one transaction), sqlite_projects.c (projects,
 * versions, admission), sqlite_billing.c (Stripe customers, subscriptions,
 * events).
 *
 * A handle owns one connection and a cache of prepared statements (prepared
 * on first use with SQLITE_PREPARE_PERSISTENT, reset and unbound after every
 * use), so hot reads such as user_get + balance_get + plan_get never re-parse
 * SQL. Each file keeps its SQL beside the code that runs it, in its own range
 * of the cache's slots.
 *
 * Writes queue at the file's in-process write gate; sq_run_balance_write's
 * (credits_apply, credits_decide, admit, version_end) are group-committed: a
 * batch of them in one transaction on the file's batch connection, each in a
 * savepoint (sqlite_writer.h); its WAL is gathered (sqlite_walbuf.h) and
 * synced after the gate is given back, and checkpoints run outside the gate.
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

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"
#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_internal.h"
#include "store/sqlite/sqlite_walbuf.h"
#include "store/sqlite/sqlite_writer.h"

/* How often BEGIN IMMEDIATE is retried when it still reports SQLITE_BUSY
 * after the busy timeout. */
#define BEGIN_ATTEMPTS 3

struct sq_store {
    kp_store base; /* base.impl points back to this struct */
    sqlite3 *db;
    sq_writer *writer;                  /* shared by the process's handles on the same file */
    int wal_fd;                         /* the batch connection's: its WAL file, synced after each batch; else -1 */
    int wal_frames;                     /* the batch connection's: frames in the WAL after its last commit */
    sqlite3_stmt *stmts[SQ_STMT_SLOTS]; /* every file's statements, each in its range (sqlite_internal.h) */
    unsigned char reads[SQ_STMT_SLOTS]; /* 1: the slot's statement is a SELECT (may run in a snapshot) */
    int snapshot;                       /* a read transaction begun by sq_snapshot_begin is open */
};

typedef enum stmt_id {
    ST_BEGIN,
    ST_BEGIN_READ,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_PING,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_COUNT
} stmt_id;

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN DEFERRED", /* a snapshot: locks nothing until its first read */
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PING] = "SELECT 1",
    /* one write of a group commit (sq_run_balance_write) */
    [ST_SAVEPOINT] = "SAVEPOINT one_write",
    [ST_RELEASE] = "RELEASE one_write",
    [ST_ROLLBACK_TO] = "ROLLBACK TO one_write",
};

_Static_assert(ST_COUNT <= SQ_SLOTS_CORE_N, "statement slots");

/* Fetches this file's cached statement, preparing it on first use. */
static kp_status stmt_get(sq_store *h, stmt_id id, sqlite3_stmt **out, kp_err *err)
{
    return sq_stmt_cached(h, SQ_SLOTS_CORE + (unsigned)id, stmt_sql[id], out, err);
}

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

sqlite3 *sq_db(sq_store *h)
{
    return h->db;
}

/* 1 for a statement that only reads rows (transaction control statements
 * are "read-only" to SQLite too, but must not run inside a snapshot). */
static int stmt_only_reads(sqlite3_stmt *st)
{
    const char *sql = sqlite3_sql(st);
    return sqlite3_stmt_readonly(st) && sql && (strncasecmp(sql, "SELECT", 6) == 0 || strncasecmp(sql, "WITH", 4) == 0);
}

kp_status sq_stmt_cached(sq_store *h, unsigned slot, const char *sql, sqlite3_stmt **out, kp_err *err)
{
    if (slot >= SQ_STMT_SLOTS)
        return kp_err_set(err, KP_EINTERNAL, "statement slot %u out of range", slot);
    if (!h->stmts[slot]) {
        if (sqlite3_prepare_v3(h->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &h->stmts[slot], NULL) != SQLITE_OK)
            return kp_sqlite_db_error(h->db, "prepare statement", err);
        h->reads[slot] = (unsigned char)stmt_only_reads(h->stmts[slot]);
    }
    if (h->snapshot && !h->reads[slot])
        sq_snapshot_end(h); /* a write, or a transaction of its own, sees the latest data */
    *out = h->stmts[slot];
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

/* BEGIN IMMEDIATE, the gate held: waits (busy timeout) for other processes'
 * writers, then retries a few times if SQLite still reports SQLITE_BUSY. */
static kp_status tx_begin_gated(sq_store *h, kp_err *err)
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

kp_status sq_tx_begin(sq_store *h, kp_err *err)
{
    sq_snapshot_end(h); /* before the gate: a snapshot held while waiting would only age */
    sq_writer_enter(h->writer);
    kp_status rc = tx_begin_gated(h, err);
    if (rc != KP_OK)
        sq_writer_leave(h->writer);
    return rc;
}

static void tx_rollback(sq_store *h)
{
    if (sqlite3_get_autocommit(h->db))
        return; /* SQLite already rolled back (or nothing was begun) */
    kp_err ignored;
    if (run_simple(h, ST_ROLLBACK, "rollback", &ignored) != KP_OK)
        kp_log(KP_LOG_ERROR, "rollback failed");
}

/* Commits when rc is KP_OK, else rolls back; the gate stays held. */
static kp_status tx_end_gated(sq_store *h, kp_status rc, kp_err *err)
{
    if (rc == KP_OK) {
        rc = run_simple(h, ST_COMMIT, "commit", err);
        if (rc == KP_OK)
            return KP_OK;
    }
    tx_rollback(h);
    return rc;
}

/* Ends the transaction begun by sq_tx_begin: commits when rc is KP_OK, else
 * rolls back; gives the gate back. Returns the final status. */
kp_status sq_tx_end(sq_store *h, kp_status rc, kp_err *err)
{
    rc = tx_end_gated(h, rc, err);
    sq_writer_leave(h->writer);
    return rc;
}

/* ---- snapshots ----------------------------------------------------------- */

void sq_snapshot_begin(sq_store *h)
{
    if (h->snapshot || !sqlite3_get_autocommit(h->db))
        return; /* one is open, or a write transaction is (its reads are current) */
    kp_err ignored = {0};
    if (run_simple(h, ST_BEGIN_READ, "begin snapshot", &ignored) == KP_OK)
        h->snapshot = 1; /* else each read runs on its own, as without a snapshot */
}

void sq_snapshot_end(sq_store *h)
{
    if (!h->snapshot)
        return;
    h->snapshot = 0; /* first: COMMIT's own statement fetch must not end it again */
    if (sqlite3_get_autocommit(h->db))
        return; /* an error already rolled it back */
    kp_err ignored = {0};
    if (run_simple(h, ST_COMMIT, "end snapshot", &ignored) != KP_OK)
        tx_rollback(h); /* a read transaction: nothing to lose */
}

static void sq_store_snapshot_begin(kp_store *s)
{
    sq_snapshot_begin(sq_impl(s));
}

static void sq_store_snapshot_end(kp_store *s)
{
    sq_snapshot_end(sq_impl(s));
}

kp_status sq_collect_rows(sq_store *h, sqlite3_stmt *st, size_t elem, sq_row_reader read_row,
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

int64_t sq_limit(size_t limit)
{
    return limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit;
}

/* ---- group commit ------------------------------------------------------ */

/* One write of a group commit: what sq_run_balance_write was asked, and its outcome. */
typedef struct balance_job {
    sq_balance_write_fn body;
    const void *arg;
    kp_balance out;
    kp_status rc;
    kp_err err;
} balance_job;

static balance_job *job_of(sq_write_req *r)
{
    return r->job;
}

/* Runs one job inside the open transaction, in a savepoint when it shares the
 * transaction with others, so that its failure undoes its own writes only. */
static void job_run(sq_store *h, balance_job *j, int alone)
{
    kp_err ignored;
    j->out = (kp_balance){0, 0, 0};
    if (alone) {
        j->rc = j->body(h, j->arg, &j->out, &j->err);
        return;
    }
    j->rc = run_simple(h, ST_SAVEPOINT, "savepoint", &j->err);
    if (j->rc != KP_OK)
        return;
    j->rc = j->body(h, j->arg, &j->out, &j->err);
    if (sqlite3_get_autocommit(h->db))
        return; /* SQLite rolled the whole transaction back (batch_run sees it) */
    if (j->rc != KP_OK && run_simple(h, ST_ROLLBACK_TO, "rollback to savepoint", &ignored) != KP_OK)
        kp_log(KP_LOG_ERROR, "rollback to savepoint failed");
    kp_status released = run_simple(h, ST_RELEASE, "release savepoint", &ignored);
    if (j->rc == KP_OK && released != KP_OK)
        j->rc = kp_err_set(&j->err, KP_EDB, "database error (release savepoint)");
}

/* The jobs from first up to (not including) stop that had succeeded failed
 * after all: their transaction did not commit. */
static void jobs_fail(sq_write_req *first, sq_write_req *stop, kp_status rc, const kp_err *why)
{
    for (sq_write_req *r = first; r != stop; r = r->next) {
        balance_job *j = job_of(r);
        if (j->rc == KP_OK) {
            j->rc = rc;
            j->err = *why;
        }
    }
}

/*
 * Runs a batch of jobs in as few transactions as possible (the gate held):
 * one, unless a job's failure made SQLite roll the whole transaction back
 * (an I/O error, a full disk); then the jobs before it failed too and the
 * rest go on in a new transaction. A job succeeds only if its transaction
 * commits.
 */
static void batch_run(sq_store *h, sq_write_req *batch)
{
    int alone = batch->next == NULL;
    sq_write_req *r = batch;
    while (r) {
        sq_write_req *first = r;
        kp_err why = {0};
        kp_status rc = tx_begin_gated(h, &why);
        if (rc != KP_OK) {
            for (; r; r = r->next) {
                job_of(r)->rc = rc;
                job_of(r)->err = why;
            }
            return;
        }
        int lost = 0;
        for (; r && !lost; r = r->next) {
            job_run(h, job_of(r), alone);
            lost = sqlite3_get_autocommit(h->db);
        }
        if (lost) {
            why = (kp_err){0};
            kp_err_set(&why, KP_EDB, "database error (transaction rolled back)");
            jobs_fail(first, r, KP_EDB, &why);
            continue;
        }
        /* alone, the job's failure rolls its transaction back */
        kp_status end = alone ? job_of(first)->rc : KP_OK;
        rc = tx_end_gated(h, end, &why);
        if (end == KP_OK && rc != KP_OK)
            jobs_fail(first, r, rc, &why);
    }
}

static int wal_sync(void *ctx)
{
    sq_store *conn = ctx;
    if (fdatasync(conn->wal_fd) == 0)
        return 0;
    kp_log(KP_LOG_ERROR, "fdatasync of the WAL failed: %s", strerror(errno));
    return -1;
}

/* Makes the batch's commit durable, the gate given back, so that the next
 * batch runs meanwhile: an fdatasync of the WAL file (sq_writer_sync). The
 * leaders' syncs overlap (the disk takes them together); a failure fails
 * the jobs that had succeeded (their outcome is unknown to the caller: a
 * retry with the same idempotency key tells). */
static void batch_sync(sq_store *conn, sq_writer *w, sq_write_req *batch)
{
    if (conn->wal_fd < 0)
        return; /* synchronous=FULL synced it in COMMIT */
    int any = 0;
    for (sq_write_req *r = batch; r && !any; r = r->next)
        any = job_of(r)->rc == KP_OK;
    if (!any || sq_writer_sync(w, wal_sync, conn) == 0)
        return;
    kp_err why = {0};
    kp_err_set(&why, KP_EDB, "database error (sync the WAL)");
    jobs_fail(batch, NULL, KP_EDB, &why);
}

/* A checkpoint on h's own connection, by one thread at a time: PASSIVE
 * outside the gate (batches go on meanwhile), then again with the gate held
 * for the frames written meanwhile, so that the next batch restarts the WAL
 * from its start (with batches running all along, the first alone never
 * catches up and the WAL would grow without end). */
static void checkpoint_passive(sq_store *h)
{
    if (!sq_writer_checkpoint_begin(h->writer))
        return;
    int rc = sqlite3_wal_checkpoint_v2(h->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    if (rc == SQLITE_OK) {
        sq_writer_enter(h->writer);
        rc = sqlite3_wal_checkpoint_v2(h->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        sq_writer_leave(h->writer);
    }
    if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY)
        kp_log(KP_LOG_WARN, "checkpoint failed: %s", sqlite3_errmsg(h->db));
    sq_writer_checkpoint_end(h->writer);
}

/* The batch connection's WAL hook: keeps the WAL's size, and replaces
 * SQLite's automatic checkpoint (checkpoint_passive runs it). */
static int wal_frames_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    ((sq_store *)arg)->wal_frames = frames;
    return SQLITE_OK;
}

/* Opens conn's WAL file for batch_sync, and syncs its directory once (the
 * file's entry, as SQLite does when it creates a journal it syncs). -1 when
 * it cannot (then the batch connection commits with synchronous=FULL). */
static int wal_open(sqlite3 *db)
{
    const char *path = sqlite3_db_filename(db, "main");
    const char *wal = path ? sqlite3_filename_wal(path) : NULL;
    if (!wal || !*wal)
        return -1;
    int fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", wal);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return fd;
}

static kp_status handle_open(const char *db_path, const char *vfs, sq_store **out, kp_err *err);
static void handle_free(sq_store *h);

static void batch_conn_close(void *conn)
{
    sq_walbuf_defer_sync(((sq_store *)conn)->db, 0); /* the checkpoint at close syncs for real */
    handle_free(conn);
}

/* Opens the batch connection on path: its WAL gathered (sqlite_walbuf.h)
 * and synced by batch_sync after the gate, with synchronous=FULL (SQLite
 * then syncs, which writes the gathered frames out, before it publishes a
 * commit). When the WAL file cannot be opened for batch_sync, FULL syncs it
 * in COMMIT. */
static kp_status batch_conn_open(const char *path, sq_store **out, kp_err *err)
{
    sq_store *conn = NULL;
    int gather = sq_walbuf_register() == SQLITE_OK;
    kp_status rc = handle_open(path, gather ? SQ_WALBUF_VFS : NULL, &conn, err);
    if (rc != KP_OK)
        return rc;
    if (sqlite3_exec(conn->db, "PRAGMA synchronous=" KP_SQLITE_SYNCHRONOUS_CREDITS, NULL, NULL, NULL) != SQLITE_OK) {
        handle_free(conn);
        return kp_err_set(err, KP_EDB, "database error (synchronous of the batch connection)");
    }
    conn->wal_fd = wal_open(conn->db);
    if (conn->wal_fd >= 0)
        sq_walbuf_defer_sync(conn->db, 1);
    sqlite3_wal_hook(conn->db, wal_frames_hook, conn);
    *out = conn;
    return KP_OK;
}

/* The writer's batch connection (sqlite_writer.h), opened by the first leader
 * (the gate held); h's own when it cannot be opened. */
static sq_store *batch_conn(sq_store *h)
{
    void **slot = sq_writer_conn(h->writer);
    if (!*slot) {
        sq_store *conn = NULL;
        kp_err err = {0};
        const char *path = sqlite3_db_filename(h->db, "main");
        if (!path || batch_conn_open(path, &conn, &err) != KP_OK) {
            kp_log(KP_LOG_WARN, "no batch connection, writing on the caller's: %s", err.msg);
            return h;
        }
        conn->writer = h->writer; /* not a reference: the writer owns conn */
        sq_writer_set_conn_close(h->writer, batch_conn_close);
        *slot = conn;
    }
    return *slot;
}

/* Group commit (sqlite_writer.h): the body runs, alone or with other threads'
 * writes of this file, in one transaction that some thread's connection runs. */
kp_status sq_run_balance_write(sq_store *h, sq_balance_write_fn body, const void *arg, kp_balance *out, kp_err *err)
{
    balance_job job = {.body = body, .arg = arg};
    sq_write_req req = {.job = &job};
    sq_write_req *batch = NULL;
    sq_snapshot_end(h); /* the caller's next read must see this write */
    sq_writer_queue(h->writer, &req);
    while (sq_writer_next(h->writer, &req, &batch)) {
        sq_store *conn = batch_conn(h);
        batch_run(conn, batch);
        int frames = conn->wal_frames;
        sq_writer_leave(h->writer);
        batch_sync(conn, h->writer, batch);
        sq_writer_done(h->writer, batch);
        if (frames >= KP_SQLITE_CHECKPOINT_FRAMES)
            checkpoint_passive(h);
    }
    if (out)
        *out = job.out;
    if (job.rc != KP_OK)
        *err = job.err;
    return job.rc;
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

/* Closes a connection and its statements (not its writer). */
static void handle_free(sq_store *h)
{
    for (int i = 0; i < SQ_STMT_SLOTS; i++)
        sqlite3_finalize(h->stmts[i]);
    sqlite3_close_v2(h->db);
    if (h->wal_fd >= 0)
        close(h->wal_fd);
    free(h);
}

static void sq_close(kp_store *s)
{
    if (!s)
        return;
    sq_store *h = sq_impl(s);
    sq_writer *w = h->writer;
    sq_snapshot_end(h);
    handle_free(h);
    sq_writer_release(w);
}

void kp_sqlite_each_statement(kp_store *s, void (*each)(const char *sql, void *ud), void *ud)
{
    sq_store *h = sq_impl(s);
    for (int i = 0; i < SQ_STMT_SLOTS; i++)
        if (h->stmts[i])
            each(sqlite3_sql(h->stmts[i]), ud);
}

static const kp_store_ops sqlite_ops = {
    .snapshot_begin = sq_store_snapshot_begin,
    .snapshot_end = sq_store_snapshot_end,
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
    .credits_decide = sq_credits_decide,
    .ledger_list = sq_ledger_list,
    .ledger_sum = sq_ledger_sum,
    .credits_apply_many = sq_credits_apply_many,
    .users_bonus_page = sq_users_bonus_page,
    .bonus_page_grant = sq_bonus_page_grant,
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
    .versions_expired = sq_versions_expired,
    .leases_renew = sq_leases_renew,
    .lease_transfer = sq_lease_transfer,
    .version_request_cancel = sq_version_request_cancel,
    .events_append = sq_events_append,
    .events_append_many = sq_events_append_many,
    .events_list = sq_events_list,
    .events_last_id = sq_events_last_id,
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

/* Opens a connection on the migrated database at db_path, without a writer. */
static kp_status handle_open(const char *db_path, const char *vfs, sq_store **out, kp_err *err)
{
    sqlite3 *db = NULL;
    sq_store *h = NULL;
    int version = 0;
    kp_status rc;

    /* No SQLITE_OPEN_CREATE: a missing file means "not migrated". */
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, vfs) != SQLITE_OK) {
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
    h->wal_fd = -1;
    h->base.ops = &sqlite_ops;
    h->base.impl = h;
    *out = h;
    return KP_OK;

cleanup:
    sqlite3_close_v2(db);
    return rc;
}

kp_status kp_sqlite_open(const char *db_path, kp_store **out, kp_err *err)
{
    sq_store *h = NULL;
    *out = NULL;
    kp_sqlite_global_init();
    if (!db_path || !*db_path)
        return kp_err_set(err, KP_EINVAL, "database path is empty");
    kp_status rc = handle_open(db_path, NULL, &h, err);
    if (rc != KP_OK)
        return rc;
    rc = sq_writer_acquire(db_path, &h->writer, err);
    if (rc != KP_OK) {
        handle_free(h);
        return rc;
    }
    *out = &h->base;
    return KP_OK;
}
