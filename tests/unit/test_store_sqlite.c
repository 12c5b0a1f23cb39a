/*
 * test_store_sqlite.c - the SQLite backend against the store.h contract:
 * migrations, users, plans, credits (idempotency, CAS, reservations, the
 * ledger, many changes at once), concurrency across threads and processes,
 * the walk over users that the daily bonus reads, and the daily bonus itself
 * (domain/credits.c on this backend, including a 100,000-user run, whose
 * time is printed).
 *
 * Every test works in its own temporary directory under /tmp, removed after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "domain/credits.h"
#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_store.h"
#include "store/store.h"
#include "testutil.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    kp_store *s;
} fixture;

/* ---- fixture and helpers ---------------------------------------------- */

static int make_dir(fixture *f)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/kp-store-test-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/koumpa.db", f->dir);
    return 0;
}

static int setup_empty(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || make_dir(f) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup_store(void **state)
{
    if (setup_empty(state) != 0)
        return -1;
    fixture *f = *state;
    kp_err err;
    int applied = 0;
    if (kp_sqlite_migrate(f->path, &applied, &err) != KP_OK || kp_sqlite_open(f->path, &f->s, &err) != KP_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char file[160];
    if (f->s)
        f->s->ops->close(f->s);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        snprintf(file, sizeof file, "%s%s", f->path, suffixes[i]);
        unlink(file);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void reopen(fixture *f)
{
    kp_err err;
    assert_int_equal(kp_sqlite_open(f->path, &f->s, &err), KP_OK);
}

static void close_store(fixture *f)
{
    f->s->ops->close(f->s);
    f->s = NULL;
}

static void add_user(kp_store *s, const char *id, const char *email, const char *sub, const char *plan)
{
    kp_user u;
    kp_err err;
    memset(&u, 0, sizeof u);
    snprintf(u.id, sizeof u.id, "%s", id);
    snprintf(u.email, sizeof u.email, "%s", email);
    snprintf(u.external_sub, sizeof u.external_sub, "%s", sub);
    snprintf(u.plan_id, sizeof u.plan_id, "%s", plan);
    kp_status rc = s->ops->user_create(s, &u, &err);
    if (rc != KP_OK)
        fail_msg("user_create %s: %s", id, err.msg);
}

/* A plain credit change (no reservation, no CAS). */
static kp_credit_change change(const char *user, int64_t dd, int64_t dm, const char *reason, const char *idem)
{
    kp_credit_change c;
    memset(&c, 0, sizeof c);
    c.user_id = user;
    c.delta_daily = dd;
    c.delta_monthly = dm;
    c.reason = reason;
    c.idem_key = idem;
    c.expected_version = -1;
    return c;
}

static kp_status apply(kp_store *s, kp_credit_change c, kp_balance *out)
{
    kp_err err;
    kp_balance ignored;
    return s->ops->credits_apply(s, &c, out ? out : &ignored, &err);
}

static kp_balance balance(kp_store *s, const char *user)
{
    kp_balance b;
    kp_err err;
    assert_int_equal(s->ops->balance_get(s, user, &b, &err), KP_OK);
    return b;
}

static size_t ledger_count(kp_store *s, const char *user)
{
    kp_ledger_entry *e = NULL;
    size_t n = 0;
    kp_err err;
    assert_int_equal(s->ops->ledger_list(s, user, 0, 1000000, &e, &n, &err), KP_OK);
    free(e);
    return n;
}

static void assert_ledger_matches_balance(kp_store *s, const char *user)
{
    kp_balance b = balance(s, user), sum;
    kp_err err;
    assert_int_equal(s->ops->ledger_sum(s, user, &sum, &err), KP_OK);
    assert_int_equal(sum.daily, b.daily);
    assert_int_equal(sum.monthly, b.monthly);
}

/* Inserts n users usr_{i as 24 hex} (plans free/pro/business by i % 3) and
 * their zero balances in one transaction, on a raw connection. */
static void bulk_users(const char *path, int n)
{
    static const char *const sql =
        "BEGIN IMMEDIATE;"
        "INSERT INTO users (id, email, password_hash, external_sub, plan_id, is_admin, created_at) "
        "  WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %d) "
        "  SELECT printf('usr_%%024x', i), printf('user%%d@example.com', i), '', '', "
        "         CASE i %% 3 WHEN 0 THEN 'free' WHEN 1 THEN 'pro' ELSE 'business' END, 0, 0 FROM seq;"
        "INSERT INTO balances (user_id, daily, monthly, version) SELECT id, 0, 0, 0 FROM users;"
        "COMMIT;";
    char text[1024];
    sqlite3 *db = NULL;
    snprintf(text, sizeof text, sql, n);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    int rc = sqlite3_exec(db, text, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        fail_msg("bulk_users: %s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* Runs the daily bonus (domain/credits.c) for every user, pages of batch; returns users granted. */
static size_t run_bonus(kp_store *s, const char *date, size_t batch)
{
    size_t granted = 0;
    kp_err err;
    if (kp_credits_daily_bonus(s, date, batch, &granted, &err) != KP_OK)
        fail_msg("daily bonus: %s", err.msg);
    return granted;
}

/* Walks segment `segment` of `total` in pages of limit; returns the users seen (ids into seen, n of them). */
static size_t walk_users(kp_store *s, unsigned segment, unsigned total, size_t limit, char (*seen)[KP_ID_MAX],
                         size_t cap)
{
    char token[KP_PAGE_TOKEN_MAX] = "", next[KP_PAGE_TOKEN_MAX];
    size_t count = 0;
    kp_err err;
    do {
        kp_bonus_candidate *page = NULL;
        size_t n = 0;
        if (s->ops->users_bonus_page(s, token, segment, total, limit, &page, &n, next, &err) != KP_OK)
            fail_msg("users_bonus_page: %s", err.msg);
        assert_true(n <= limit);
        for (size_t i = 0; i < n && count < cap; i++)
            memcpy(seen[count++], page[i].user_id, KP_ID_MAX);
        free(page);
        memcpy(token, next, sizeof token);
    } while (token[0]);
    return count;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits for a child and checks it exited with status 0. */
static void wait_child(pid_t pid)
{
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- query plans -------------------------------------------------------- */

typedef struct plan_check {
    sqlite3 *db;
    int checked;
} plan_check;

#define PLAN_ROWS 64

/* Fails when the statement's plan scans inside a correlated subquery: a scan for each outer row
 * (the tables grow with use; a partial index the planner cannot prove usable ends like that). */
static void check_plan(const char *sql, void *ud)
{
    plan_check *pc = ud;
    int ids[PLAN_ROWS], parents[PLAN_ROWS], n = 0;
    char details[PLAN_ROWS][256];
    char *q = sqlite3_mprintf("EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(pc->db, q, -1, &st, NULL), SQLITE_OK);
    sqlite3_free(q);
    while (n < PLAN_ROWS && sqlite3_step(st) == SQLITE_ROW) {
        ids[n] = sqlite3_column_int(st, 0);
        parents[n] = sqlite3_column_int(st, 1);
        snprintf(details[n], sizeof details[n], "%s", (const char *)sqlite3_column_text(st, 3));
        n++;
    }
    sqlite3_finalize(st);
    for (int i = 0; i < n; i++) {
        if (strncmp(details[i], "SCAN ", 5) != 0 || strncmp(details[i], "SCAN CONSTANT ROW", 17) == 0)
            continue;
        for (int parent = parents[i], hops = 0; parent != 0 && hops < PLAN_ROWS; hops++) {
            int j = 0;
            while (j < n && ids[j] != parent)
                j++;
            if (j == n)
                break;
            if (strstr(details[j], "CORRELATED"))
                fail_msg("%s\n  plan: %s inside %s", sql, details[i], details[j]);
            parent = parents[j];
        }
    }
    pc->checked++;
}

/* The statements the store's reads and recovery prepare, checked with EXPLAIN QUERY PLAN. */
static void test_no_statement_scans_per_row(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    kp_err err;
    kp_account acct;
    kp_user u;
    kp_plan *plans = NULL;
    kp_ledger_entry *ledger = NULL;
    kp_reservation *rs = NULL;
    kp_version *vs = NULL;
    kp_project *ps = NULL;
    kp_event *evs = NULL;
    kp_bonus_candidate *cands = NULL;
    size_t n = 0;
    int64_t count = 0;
    char next[KP_PAGE_TOKEN_MAX];
    add_user(s, "usr_a", "a@example.com", "sub-a", "free");
    assert_int_equal(apply(s, change("usr_a", 0, 10, "admin_grant", "g1"), NULL), KP_OK);
    assert_int_equal(s->ops->account_get(s, "usr_a", &acct, &err), KP_OK);
    assert_int_equal(s->ops->user_get_by_email(s, "a@example.com", &u, &err), KP_OK);
    assert_int_equal(s->ops->user_get_by_sub(s, "sub-a", &u, &err), KP_OK);
    assert_int_equal(s->ops->plan_list(s, 1, &plans, &n, &err), KP_OK);
    free(plans);
    assert_int_equal(s->ops->ledger_list(s, "usr_a", 0, 10, &ledger, &n, &err), KP_OK);
    free(ledger);
    assert_int_equal(s->ops->reservations_orphaned(s, &rs, &n, &err), KP_OK);
    free(rs);
    assert_int_equal(s->ops->versions_unsettled(s, &vs, &n, &err), KP_OK);
    kp_version_free_array(vs, n);
    assert_int_equal(s->ops->versions_expired(s, 0, 10, &vs, &n, &err), KP_OK);
    kp_version_free_array(vs, n);
    assert_int_equal(s->ops->versions_generating_count(s, "usr_a", &count, &err), KP_OK);
    assert_int_equal(s->ops->project_list(s, "usr_a", 0, "", 10, &ps, &n, &err), KP_OK);
    free(ps);
    assert_int_equal(s->ops->events_list(s, "prj_none", 1, 0, 10, &evs, &n, &err), KP_OK);
    kp_event_free_array(evs, n);
    assert_int_equal(s->ops->users_bonus_page(s, "", 0, 1, 10, &cands, &n, next, &err), KP_OK);
    free(cands);

    plan_check pc = {0};
    assert_int_equal(sqlite3_open_v2(f->path, &pc.db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    kp_sqlite_each_statement(s, check_plan, &pc);
    sqlite3_close(pc.db);
    assert_true(pc.checked >= 12);
}

/* ---- snapshots (store.h snapshot_begin) -------------------------------- */

static kp_user get_user(kp_store *s, const char *id)
{
    kp_user u;
    kp_err err;
    assert_int_equal(s->ops->user_get(s, id, &u, &err), KP_OK);
    return u;
}

/* A snapshot's reads share one view; any write through the handle ends it
 * first and is committed at once (not held in the read transaction); an
 * ended snapshot leaves later reads current. */
static void test_snapshot_reads_share_one_view(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s, *other = NULL;
    kp_err err;
    assert_int_equal(kp_sqlite_open(f->path, &other, &err), KP_OK);
    add_user(s, "usr_a", "a@example.com", "", "free");
    assert_int_equal(apply(s, change("usr_a", 0, 10, "admin_grant", "g1"), NULL), KP_OK);

    kp_store_snapshot_begin(s);
    kp_store_snapshot_begin(s); /* one open: nothing more */
    assert_int_equal(balance(s, "usr_a").monthly, 10);
    assert_int_equal(apply(other, change("usr_a", 0, 5, "admin_grant", "g2"), NULL), KP_OK);
    assert_int_equal(balance(s, "usr_a").monthly, 10); /* the view of the first read */
    assert_int_equal(balance(other, "usr_a").monthly, 15);

    /* a single-statement write through the handle: the snapshot ends first, the write commits at once */
    assert_int_equal(s->ops->user_set_admin(s, "usr_a", 1, &err), KP_OK);
    assert_true(get_user(other, "usr_a").is_admin);
    assert_int_equal(balance(s, "usr_a").monthly, 15); /* no snapshot now: current */

    /* a group-committed write ends one too, and the handle's next read sees it */
    kp_store_snapshot_begin(s);
    assert_int_equal(balance(s, "usr_a").monthly, 15);
    assert_int_equal(apply(s, change("usr_a", 0, -2, "generation", "s1"), NULL), KP_OK);
    assert_int_equal(balance(s, "usr_a").monthly, 13);
    assert_int_equal(balance(other, "usr_a").monthly, 13);

    /* a transaction of the handle's own (BEGIN IMMEDIATE) ends one too */
    kp_store_snapshot_begin(s);
    assert_int_equal(balance(s, "usr_a").monthly, 13);
    kp_plan plan;
    int created = -1;
    assert_int_equal(s->ops->plan_get(s, "pro", &plan, &err), KP_OK);
    snprintf(plan.name, sizeof plan.name, "Pro 2");
    assert_int_equal(s->ops->plan_put(s, &plan, &created, &err), KP_OK);
    assert_int_equal(created, 0);
    assert_int_equal(other->ops->plan_get(other, "pro", &plan, &err), KP_OK);
    assert_string_equal(plan.name, "Pro 2");

    /* ended: the other handle's writes show again */
    kp_store_snapshot_begin(s);
    assert_int_equal(balance(s, "usr_a").monthly, 13);
    kp_store_snapshot_end(s);
    kp_store_snapshot_end(s); /* none open: nothing */
    assert_int_equal(apply(other, change("usr_a", 0, 1, "admin_grant", "g3"), NULL), KP_OK);
    assert_int_equal(balance(s, "usr_a").monthly, 14);
    kp_store_snapshot_begin(NULL); /* no handle: nothing */

    /* closing with one open */
    kp_store_snapshot_begin(other);
    assert_int_equal(balance(other, "usr_a").monthly, 14);
    other->ops->close(other);
    assert_int_equal(apply(s, change("usr_a", 0, 1, "admin_grant", "g4"), NULL), KP_OK);
}

/* ---- migrations and open ---------------------------------------------- */

static void test_migrate_seeds_plans(void **state)
{
    fixture *f = *state;
    kp_err err;
    int applied = -1;
    assert_int_equal(kp_sqlite_migrate(f->path, &applied, &err), KP_OK);
    assert_true(applied >= 1);
    reopen(f);

    kp_plan *plans = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->plan_list(f->s, 0, &plans, &n, &err), KP_OK);
    assert_int_equal(n, 3);
    static const struct {
        const char *id, *name;
        int64_t price, monthly, daily, concurrent;
    } want[] = {
        {"free", "Free", 0, 0, 5, 1},
        {"pro", "Pro", 2500, 100, 5, 3},
        {"business", "Business", 5000, 300, 10, 10},
    };
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(plans[i].id, want[i].id);
        assert_string_equal(plans[i].name, want[i].name);
        assert_int_equal(plans[i].price_cents, want[i].price);
        assert_string_equal(plans[i].currency, "EUR");
        assert_int_equal(plans[i].monthly_credits, want[i].monthly);
        assert_int_equal(plans[i].daily_bonus, want[i].daily);
        assert_int_equal(plans[i].max_concurrent_generations, want[i].concurrent);
        assert_string_equal(plans[i].stripe_price_id, "");
        assert_int_equal(plans[i].active, 1);
        assert_true(plans[i].updated_at > 0);
    }
    free(plans);
}

static void test_migrate_twice_applies_nothing(void **state)
{
    fixture *f = *state;
    kp_err err;
    int first = -1, second = -1;
    assert_int_equal(kp_sqlite_migrate(f->path, &first, &err), KP_OK);
    assert_int_equal(kp_sqlite_migrate(f->path, &second, &err), KP_OK);
    assert_true(first >= 1);
    assert_int_equal(second, 0);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM plans"), 3);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM schema_migrations"), first);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_open_before_migrate_fails(void **state)
{
    fixture *f = *state;
    kp_err err;
    kp_store *s = NULL;

    /* No file at all: refused, and not created. */
    assert_int_equal(kp_sqlite_open(f->path, &s, &err), KP_EUNAVAILABLE);
    assert_null(s);
    assert_non_null(strstr(err.msg, "run koumpa migrate"));
    assert_int_equal(access(f->path, F_OK), -1);

    /* A database that was never migrated: refused too. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE other (x INTEGER)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(kp_sqlite_open(f->path, &s, &err), KP_EUNAVAILABLE);
    assert_null(s);
    assert_non_null(strstr(err.msg, "run koumpa migrate"));

    /* After migrating, it opens. */
    assert_int_equal(kp_sqlite_migrate(f->path, NULL, &err), KP_OK);
    assert_int_equal(kp_sqlite_open(f->path, &s, &err), KP_OK);
    assert_int_equal(s->ops->ping(s, &err), KP_OK);
    s->ops->close(s);
}

static void test_migrate_concurrent_processes(void **state)
{
    fixture *f = *state;
    enum { PROCS = 8 };
    int fds[2];
    pid_t pids[PROCS];
    assert_int_equal(pipe(fds), 0);
    for (int i = 0; i < PROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            kp_err err;
            int applied = 0;
            close(fds[0]);
            if (kp_sqlite_migrate(f->path, &applied, &err) != KP_OK) {
                fprintf(stderr, "child migrate: %s\n", err.msg);
                _exit(1);
            }
            _exit(write(fds[1], &applied, sizeof applied) == sizeof applied ? 0 : 1);
        }
    }
    close(fds[1]);
    int total = 0, one;
    for (int i = 0; i < PROCS; i++) {
        assert_int_equal(read(fds[0], &one, sizeof one), sizeof one);
        total += one;
    }
    close(fds[0]);
    for (int i = 0; i < PROCS; i++)
        wait_child(pids[i]);
    /* Every migration was applied by exactly one of them. */
    assert_int_equal(total, (int)kp_test_sql_int(f->path, "SELECT COUNT(*) FROM schema_migrations"));
    assert_true(total >= 1);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM plans"), 3);
}

/* ---- users ------------------------------------------------------------ */

static void test_users(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    kp_user u;
    kp_err err;

    add_user(s, "usr_a", "a@example.com", "", "free");
    add_user(s, "usr_b", "", "https://issuer|b", "pro");
    /* Empty emails and subs are not unique. */
    add_user(s, "usr_c", "", "", "free");
    add_user(s, "usr_d", "", "", "free");

    assert_int_equal(s->ops->user_get(s, "usr_a", &u, &err), KP_OK);
    assert_string_equal(u.id, "usr_a");
    assert_string_equal(u.email, "a@example.com");
    assert_string_equal(u.plan_id, "free");
    assert_int_equal(u.is_admin, 0);
    assert_true(u.created_at > 0);

    assert_int_equal(s->ops->user_get_by_email(s, "a@example.com", &u, &err), KP_OK);
    assert_string_equal(u.id, "usr_a");
    assert_int_equal(s->ops->user_get_by_sub(s, "https://issuer|b", &u, &err), KP_OK);
    assert_string_equal(u.id, "usr_b");
    assert_string_equal(u.plan_id, "pro");
    assert_int_equal(s->ops->user_get(s, "usr_nope", &u, &err), KP_ENOTFOUND);
    assert_int_equal(s->ops->user_get_by_email(s, "nobody@example.com", &u, &err), KP_ENOTFOUND);
    assert_int_equal(s->ops->user_get_by_email(s, "", &u, &err), KP_ENOTFOUND);
    assert_int_equal(s->ops->user_get_by_sub(s, "", &u, &err), KP_ENOTFOUND);

    /* Duplicates. */
    kp_user dup;
    memset(&dup, 0, sizeof dup);
    snprintf(dup.id, sizeof dup.id, "usr_e");
    snprintf(dup.email, sizeof dup.email, "a@example.com");
    snprintf(dup.plan_id, sizeof dup.plan_id, "free");
    assert_int_equal(s->ops->user_create(s, &dup, &err), KP_ECONFLICT);
    assert_non_null(strstr(err.msg, "email"));
    dup.email[0] = '\0';
    snprintf(dup.external_sub, sizeof dup.external_sub, "https://issuer|b");
    assert_int_equal(s->ops->user_create(s, &dup, &err), KP_ECONFLICT);
    dup.external_sub[0] = '\0';
    snprintf(dup.id, sizeof dup.id, "usr_a");
    assert_int_equal(s->ops->user_create(s, &dup, &err), KP_ECONFLICT);
    /* Unknown plan. */
    snprintf(dup.id, sizeof dup.id, "usr_f");
    snprintf(dup.plan_id, sizeof dup.plan_id, "gold");
    assert_int_equal(s->ops->user_create(s, &dup, &err), KP_ENOTFOUND);
    /* None of the failures left a user or a balance behind. */
    assert_int_equal(s->ops->user_get(s, "usr_e", &u, &err), KP_ENOTFOUND);
    assert_int_equal(s->ops->user_get(s, "usr_f", &u, &err), KP_ENOTFOUND);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM balances"), 4);

    /* A new user has a zero balance at version 0. */
    kp_balance b = balance(s, "usr_a");
    assert_int_equal(b.daily, 0);
    assert_int_equal(b.monthly, 0);
    assert_int_equal(b.version, 0);

    /* Admin flag. */
    assert_int_equal(s->ops->user_set_admin(s, "usr_a", 1, &err), KP_OK);
    assert_int_equal(s->ops->user_get(s, "usr_a", &u, &err), KP_OK);
    assert_int_equal(u.is_admin, 1);
    assert_int_equal(s->ops->user_set_admin(s, "usr_a", 0, &err), KP_OK);
    assert_int_equal(s->ops->user_get(s, "usr_a", &u, &err), KP_OK);
    assert_int_equal(u.is_admin, 0);
    assert_int_equal(s->ops->user_set_admin(s, "usr_nope", 1, &err), KP_ENOTFOUND);

    /* Plan. */
    assert_int_equal(s->ops->user_set_plan(s, "usr_a", "business", &err), KP_OK);
    assert_int_equal(s->ops->user_get(s, "usr_a", &u, &err), KP_OK);
    assert_string_equal(u.plan_id, "business");
    assert_int_equal(s->ops->user_set_plan(s, "usr_a", "gold", &err), KP_ENOTFOUND);
    assert_non_null(strstr(err.msg, "plan"));
    assert_int_equal(s->ops->user_get(s, "usr_a", &u, &err), KP_OK);
    assert_string_equal(u.plan_id, "business");
    assert_int_equal(s->ops->user_set_plan(s, "usr_nope", "pro", &err), KP_ENOTFOUND);
    assert_non_null(strstr(err.msg, "user"));
}

/* ---- plans ------------------------------------------------------------ */

static kp_plan plan(const char *id, int64_t price, int64_t daily, int active)
{
    kp_plan p;
    memset(&p, 0, sizeof p);
    snprintf(p.id, sizeof p.id, "%s", id);
    snprintf(p.name, sizeof p.name, "Plan %s", id);
    p.price_cents = price;
    snprintf(p.currency, sizeof p.currency, "EUR");
    p.monthly_credits = 50;
    p.daily_bonus = daily;
    p.max_concurrent_generations = 2;
    p.active = active;
    return p;
}

static void test_plans(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    kp_err err;
    int created = -1;

    kp_plan p = plan("aaa", 2500, 7, 1);
    assert_int_equal(s->ops->plan_put(s, &p, &created, &err), KP_OK);
    assert_int_equal(created, 1);
    p = plan("old", 100, 1, 0);
    assert_int_equal(s->ops->plan_put(s, &p, &created, &err), KP_OK);
    assert_int_equal(created, 1);

    /* Ordered by price, then id; active_only drops "old". */
    kp_plan *list = NULL;
    size_t n = 0;
    static const char *const all[] = {"free", "old", "aaa", "pro", "business"};
    assert_int_equal(s->ops->plan_list(s, 0, &list, &n, &err), KP_OK);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(list[i].id, all[i]);
    free(list);
    static const char *const active[] = {"free", "aaa", "pro", "business"};
    assert_int_equal(s->ops->plan_list(s, 1, &list, &n, &err), KP_OK);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(list[i].id, active[i]);
    free(list);

    /* Update. */
    p = plan("pro", 2900, 6, 1);
    snprintf(p.name, sizeof p.name, "Pro+");
    snprintf(p.stripe_price_id, sizeof p.stripe_price_id, "price_123");
    assert_int_equal(s->ops->plan_put(s, &p, &created, &err), KP_OK);
    assert_int_equal(created, 0);
    kp_plan got;
    assert_int_equal(s->ops->plan_get(s, "pro", &got, &err), KP_OK);
    assert_string_equal(got.name, "Pro+");
    assert_int_equal(got.price_cents, 2900);
    assert_int_equal(got.daily_bonus, 6);
    assert_int_equal(got.monthly_credits, 50);
    assert_string_equal(got.stripe_price_id, "price_123");
    assert_int_equal(s->ops->plan_get(s, "gold", &got, &err), KP_ENOTFOUND);

    /* Invalid plans are refused and change nothing. */
    p = plan("Bad Id", 0, 1, 1);
    assert_int_equal(s->ops->plan_put(s, &p, &created, &err), KP_EINVAL);
    p = plan("neg", -1, 1, 1);
    assert_int_equal(s->ops->plan_put(s, &p, &created, &err), KP_EINVAL);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM plans"), 5);
}

/* ---- credits ---------------------------------------------------------- */

static void test_credits_grant_spend(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    kp_balance b;
    kp_err err;
    add_user(s, "usr_a", "a@example.com", "", "free");

    assert_int_equal(apply(s, change("usr_a", 0, 10, "admin_grant", "g1"), &b), KP_OK);
    assert_int_equal(b.daily, 0);
    assert_int_equal(b.monthly, 10);
    assert_int_equal(b.version, 1);
    assert_int_equal(apply(s, change("usr_a", 4, -3, "generation", "s1"), &b), KP_OK);
    assert_int_equal(b.daily, 4);
    assert_int_equal(b.monthly, 7);
    assert_int_equal(b.version, 2);
    b = balance(s, "usr_a");
    assert_int_equal(b.monthly, 7);
    assert_int_equal(b.version, 2);

    /* Newest first, with the balance after each entry. */
    kp_ledger_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(s->ops->ledger_list(s, "usr_a", 0, 10, &e, &n, &err), KP_OK);
    assert_int_equal(n, 2);
    assert_string_equal(e[0].idem_key, "s1");
    assert_string_equal(e[0].reason, "generation");
    assert_int_equal(e[0].delta_daily, 4);
    assert_int_equal(e[0].delta_monthly, -3);
    assert_int_equal(e[0].balance_daily, 4);
    assert_int_equal(e[0].balance_monthly, 7);
    assert_string_equal(e[0].user_id, "usr_a");
    assert_true(e[0].created_at > 0);
    assert_string_equal(e[1].idem_key, "g1");
    assert_int_equal(e[1].balance_monthly, 10);
    assert_true(e[0].seq > e[1].seq);
    int64_t newest = e[0].seq;
    free(e);
    assert_int_equal(s->ops->ledger_list(s, "usr_a", newest, 10, &e, &n, &err), KP_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].idem_key, "g1");
    free(e);
    assert_int_equal(s->ops->ledger_list(s, "usr_a", 0, 1, &e, &n, &err), KP_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].idem_key, "s1");
    free(e);

    /* Too much: refused, nothing written. */
    kp_credit_change c = change("usr_a", -5, 0, "generation", "s2");
    assert_int_equal(s->ops->credits_apply(s, &c, &b, &err), KP_ECREDITS);
    assert_non_null(strstr(err.msg, "daily 4"));
    assert_non_null(strstr(err.msg, "monthly 7"));
    b = balance(s, "usr_a");
    assert_int_equal(b.daily, 4);
    assert_int_equal(b.version, 2);
    assert_int_equal(ledger_count(s, "usr_a"), 2);
    /* The key was not consumed by the refusal. */
    assert_int_equal(apply(s, change("usr_a", -4, 0, "generation", "s2"), &b), KP_OK);
    assert_int_equal(b.daily, 0);

    /* Same idempotency key again: a no-op reporting the current balance. */
    assert_int_equal(apply(s, change("usr_a", 0, 100, "admin_grant", "g1"), &b), KP_EDUPLICATE);
    assert_int_equal(b.daily, 0);
    assert_int_equal(b.monthly, 7);
    assert_int_equal(b.version, 3);
    assert_int_equal(balance(s, "usr_a").version, 3);
    assert_int_equal(ledger_count(s, "usr_a"), 3);

    /* Unknown user, bad input. */
    assert_int_equal(apply(s, change("usr_nope", 1, 0, "admin_grant", "g9"), NULL), KP_ENOTFOUND);
    assert_int_equal(apply(s, change("usr_a", 1, 0, "admin_grant", ""), NULL), KP_EINVAL);
    assert_int_equal(apply(s, change("usr_a", INT64_MAX, 0, "admin_grant", "big1"), NULL), KP_OK);
    assert_int_equal(apply(s, change("usr_a", 1, 0, "admin_grant", "big2"), NULL), KP_EINVAL);
    assert_int_equal(balance(s, "usr_a").daily, INT64_MAX);
}

static void test_credits_cas(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    kp_balance b;
    kp_err err;
    add_user(s, "usr_a", "", "", "free");
    assert_int_equal(apply(s, change("usr_a", 0, 10, "admin_grant", "g1"), &b), KP_OK);
    assert_int_equal(b.version, 1);

    kp_credit_change c = change("usr_a", 0, -1, "generation", "s1");
    c.expected_version = 0;
    assert_int_equal(s->ops->credits_apply(s, &c, &b, &err), KP_ECONFLICT);
    assert_int_equal(b.version, 1);
    assert_int_equal(b.monthly, 10);
    assert_int_equal(balance(s, "usr_a").monthly, 10);
    assert_int_equal(ledger_count(s, "usr_a"), 1);
    c.expected_version = 1;
    assert_int_equal(s->ops->credits_apply(s, &c, &b, &err), KP_OK);
    assert_int_equal(b.version, 2);
    assert_int_equal(b.monthly, 9);
}

static kp_credit_change res_change(const char *user, int64_t dd, int64_t dm, const char *reason, const char *idem,
                                   const char *res, kp_reservation_state from, kp_reservation_state to)
{
    kp_credit_change c = change(user, dd, dm, reason, idem);
    c.res_id = res;
    c.res_from = from;
    c.res_to = to;
    c.res_daily = -dd > 0 ? -dd : 0;
    c.res_monthly = -dm > 0 ? -dm : 0;
    return c;
}

static void test_reservations(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    kp_balance b;
    kp_reservation r;
    kp_err err;
    add_user(s, "usr_a", "", "", "free");
    add_user(s, "usr_b", "", "", "free");
    assert_int_equal(apply(s, change("usr_a", 5, 10, "admin_grant", "g1"), NULL), KP_OK);

    /* Reserve 2 daily + 1 monthly. */
    assert_int_equal(
        apply(s, res_change("usr_a", -2, -1, "generation", "r1:reserve", "res_1", KP_RES_NONE, KP_RES_RESERVED), &b),
        KP_OK);
    assert_int_equal(b.daily, 3);
    assert_int_equal(b.monthly, 9);
    assert_int_equal(s->ops->reservation_get(s, "res_1", &r, &err), KP_OK);
    assert_string_equal(r.id, "res_1");
    assert_string_equal(r.user_id, "usr_a");
    assert_int_equal(r.state, KP_RES_RESERVED);
    assert_int_equal(r.daily, 2);
    assert_int_equal(r.monthly, 1);
    assert_true(r.created_at > 0);
    assert_int_equal(s->ops->reservation_get(s, "res_nope", &r, &err), KP_ENOTFOUND);

    /* Creating it again (other key): conflict, nothing written. */
    assert_int_equal(
        apply(s, res_change("usr_a", -2, 0, "generation", "r1:again", "res_1", KP_RES_NONE, KP_RES_RESERVED), NULL),
        KP_ECONFLICT);
    b = balance(s, "usr_a");
    assert_int_equal(b.daily, 3);
    assert_int_equal(b.version, 2);

    /* Commit: no credit movement, so no ledger row, but the state moves. */
    size_t rows = ledger_count(s, "usr_a");
    assert_int_equal(
        apply(s, res_change("usr_a", 0, 0, "generation", "r1:commit", "res_1", KP_RES_RESERVED, KP_RES_COMMITTED), &b),
        KP_OK);
    assert_int_equal(b.daily, 3);
    assert_int_equal(ledger_count(s, "usr_a"), rows);
    assert_int_equal(s->ops->reservation_get(s, "res_1", &r, &err), KP_OK);
    assert_int_equal(r.state, KP_RES_COMMITTED);
    /* A committed reservation cannot be refunded. */
    assert_int_equal(
        apply(s, res_change("usr_a", 2, 1, "refund", "r1:refund", "res_1", KP_RES_RESERVED, KP_RES_REFUNDED), NULL),
        KP_ECONFLICT);
    assert_int_equal(balance(s, "usr_a").daily, 3);

    /* Reserve then refund; a second refund is refused and gives nothing back. */
    assert_int_equal(
        apply(s, res_change("usr_a", -3, 0, "generation", "r2:reserve", "res_2", KP_RES_NONE, KP_RES_RESERVED), &b),
        KP_OK);
    assert_int_equal(b.daily, 0);
    assert_int_equal(
        apply(s, res_change("usr_a", 3, 0, "refund", "r2:refund", "res_2", KP_RES_RESERVED, KP_RES_REFUNDED), &b),
        KP_OK);
    assert_int_equal(b.daily, 3);
    kp_balance before = balance(s, "usr_a");
    rows = ledger_count(s, "usr_a");
    assert_int_equal(
        apply(s, res_change("usr_a", 3, 0, "refund", "r2:refund2", "res_2", KP_RES_RESERVED, KP_RES_REFUNDED), &b),
        KP_ECONFLICT);
    kp_balance after = balance(s, "usr_a");
    assert_int_equal(after.daily, before.daily);
    assert_int_equal(after.version, before.version);
    assert_int_equal(ledger_count(s, "usr_a"), rows);
    assert_int_equal(s->ops->reservation_get(s, "res_2", &r, &err), KP_OK);
    assert_int_equal(r.state, KP_RES_REFUNDED);

    /* Another user's reservation cannot be moved. */
    assert_int_equal(
        apply(s, res_change("usr_b", 0, 0, "generation", "r1:steal", "res_1", KP_RES_COMMITTED, KP_RES_REFUNDED), NULL),
        KP_ECONFLICT);

    /* The refund's ledger row links the reservation. */
    kp_ledger_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(s->ops->ledger_list(s, "usr_a", 0, 1, &e, &n, &err), KP_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].reservation_id, "res_2");
    assert_string_equal(e[0].reason, "refund");
    free(e);
    assert_ledger_matches_balance(s, "usr_a");
}

/* A decision rule that applies the change it was given, whatever was read. */
static kp_status apply_given(const kp_credit_state *st, void *arg, kp_credit_change *c, int *apply, kp_err *err)
{
    (void)st;
    (void)err;
    *c = *(const kp_credit_change *)arg;
    *apply = 1;
    return KP_OK;
}

/* credits_decide's change reuses the rows the decision read only when it is
 * about them: a change about another reservation or another user than the
 * one read is checked and applied against its own rows; one about the rows
 * read sees them as read (a replay of its key still refused). */
static void test_decide_change_about_other_rows(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    kp_balance b;
    kp_reservation r;
    kp_err err;
    add_user(s, "usr_a", "", "", "free");
    add_user(s, "usr_b", "", "", "free");
    assert_int_equal(apply(s, change("usr_a", 10, 0, "admin_grant", "ga"), NULL), KP_OK);
    assert_int_equal(apply(s, change("usr_b", 100, 0, "admin_grant", "gb"), NULL), KP_OK);
    assert_int_equal(
        apply(s, res_change("usr_a", -1, 0, "generation", "ra:reserve", "res_a", KP_RES_NONE, KP_RES_RESERVED), NULL),
        KP_OK);
    assert_int_equal(
        apply(s, res_change("usr_a", -1, 0, "generation", "rb:reserve", "res_b", KP_RES_NONE, KP_RES_RESERVED), NULL),
        KP_OK);
    assert_int_equal(
        apply(s, res_change("usr_a", 0, 0, "generation", "ra:commit", "res_a", KP_RES_RESERVED, KP_RES_COMMITTED),
              NULL),
        KP_OK);

    /* decided on res_a (committed), the change commits res_b (reserved) */
    kp_credit_change c =
        res_change("usr_a", 0, 0, "generation", "rb:commit", "res_b", KP_RES_RESERVED, KP_RES_COMMITTED);
    assert_int_equal(s->ops->credits_decide(s, NULL, "res_a", apply_given, &c, &b, &err), KP_OK);
    assert_int_equal(s->ops->reservation_get(s, "res_b", &r, &err), KP_OK);
    assert_int_equal(r.state, KP_RES_COMMITTED);

    /* decided on res_a (usr_a's 8), the change grants usr_b (100) */
    c = change("usr_b", 1, 0, "admin_grant", "gb2");
    assert_int_equal(s->ops->credits_decide(s, NULL, "res_a", apply_given, &c, &b, &err), KP_OK);
    assert_int_equal(b.daily, 101);
    assert_int_equal(balance(s, "usr_b").daily, 101);
    assert_int_equal(balance(s, "usr_a").daily, 8);

    /* about the rows read: applied on them, and its key's replay refused */
    c = change("usr_a", 2, 0, "admin_grant", "ga2");
    assert_int_equal(s->ops->credits_decide(s, "usr_a", NULL, apply_given, &c, &b, &err), KP_OK);
    assert_int_equal(b.daily, 10);
    assert_int_equal(s->ops->credits_decide(s, "usr_a", NULL, apply_given, &c, &b, &err), KP_EDUPLICATE);
    assert_int_equal(balance(s, "usr_a").daily, 10);
    c = res_change("usr_a", 0, 0, "generation", "ra:commit2", "res_a", KP_RES_RESERVED, KP_RES_COMMITTED);
    assert_int_equal(s->ops->credits_decide(s, NULL, "res_a", apply_given, &c, &b, &err), KP_ECONFLICT);
    assert_ledger_matches_balance(s, "usr_a");
    assert_ledger_matches_balance(s, "usr_b");
}

static void test_ledger_sum_after_mix(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    char key[32];
    add_user(s, "usr_a", "", "", "pro");
    add_user(s, "usr_b", "", "", "free");
    assert_int_equal(apply(s, change("usr_a", 5, 100, "daily_bonus", "seed"), NULL), KP_OK);
    assert_int_equal(apply(s, change("usr_b", 9, 9, "admin_grant", "seed_b"), NULL), KP_OK);
    for (int i = 0; i < 60; i++) {
        snprintf(key, sizeof key, "k%d", i);
        int64_t dd = (i % 3 == 0) ? -2 : (i % 3 == 1) ? 1 : 0;
        int64_t dm = (i % 4 == 0) ? -7 : 3;
        kp_status rc = apply(s, change("usr_a", dd, dm, "mix", key), NULL);
        assert_true(rc == KP_OK || rc == KP_ECREDITS);
        /* Repeating a used key changes nothing. */
        if (rc == KP_OK)
            assert_int_equal(apply(s, change("usr_a", 1, 1, "mix", key), NULL), KP_EDUPLICATE);
    }
    assert_int_equal(
        apply(s, res_change("usr_a", -1, -1, "generation", "r:res", "res_1", KP_RES_NONE, KP_RES_RESERVED), NULL),
        KP_OK);
    assert_int_equal(
        apply(s, res_change("usr_a", 1, 1, "refund", "r:refund", "res_1", KP_RES_RESERVED, KP_RES_REFUNDED), NULL),
        KP_OK);
    assert_ledger_matches_balance(s, "usr_a");
    assert_ledger_matches_balance(s, "usr_b");
    assert_int_equal(balance(s, "usr_b").daily, 9);
}

/* ---- concurrency ------------------------------------------------------ */

#define MAX_SPENDERS 16

typedef struct spender {
    pthread_barrier_t *start; /* every thread opens its handle, then all start at once */
    const char *path;
    const char *user;
    int tag; /* makes idempotency keys unique across threads and processes */
    int spends;
    int ok, no_credits, other;
} spender;

static void *spend_thread(void *arg)
{
    spender *sp = arg;
    kp_store *s = NULL;
    kp_err err;
    char key[64];
    int opened = kp_sqlite_open(sp->path, &s, &err) == KP_OK;
    pthread_barrier_wait(sp->start);
    if (!opened) {
        sp->other = sp->spends;
        return NULL;
    }
    for (int i = 0; i < sp->spends; i++) {
        snprintf(key, sizeof key, "spend:%d:%d", sp->tag, i);
        kp_status rc = apply(s, change(sp->user, -1, 0, "generation", key), NULL);
        if (rc == KP_OK)
            sp->ok++;
        else if (rc == KP_ECREDITS)
            sp->no_credits++;
        else
            sp->other++;
    }
    s->ops->close(s);
    return NULL;
}

/* Runs `threads` (at most MAX_SPENDERS) spenders sharing `total` spends;
 * sums their counts: {ok, not enough credits, other}. */
static void run_spenders(const char *path, const char *user, int tag_base, int threads, int total, int counts[3])
{
    spender sp[MAX_SPENDERS];
    pthread_t tid[MAX_SPENDERS];
    if (threads > MAX_SPENDERS)
        threads = MAX_SPENDERS;
    pthread_barrier_t start;
    memset(sp, 0, sizeof sp);
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) {
        sp[i].start = &start;
        sp[i].path = path;
        sp[i].user = user;
        sp[i].tag = tag_base + i;
        sp[i].spends = total / threads + (i < total % threads ? 1 : 0);
        pthread_create(&tid[i], NULL, spend_thread, &sp[i]);
    }
    counts[0] = counts[1] = counts[2] = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        counts[0] += sp[i].ok;
        counts[1] += sp[i].no_credits;
        counts[2] += sp[i].other;
    }
    pthread_barrier_destroy(&start);
}

static void test_concurrent_spends_threads(void **state)
{
    fixture *f = *state;
    int counts[3];
    add_user(f->s, "usr_a", "", "", "free");
    assert_int_equal(apply(f->s, change("usr_a", 10, 0, "daily_bonus", "seed"), NULL), KP_OK);

    run_spenders(f->path, "usr_a", 0, 8, 200, counts);
    assert_int_equal(counts[0], 10);
    assert_int_equal(counts[1], 190);
    assert_int_equal(counts[2], 0);
    kp_balance b = balance(f->s, "usr_a");
    assert_int_equal(b.daily, 0);
    assert_int_equal(b.version, 11);
    assert_ledger_matches_balance(f->s, "usr_a");
    assert_int_equal(ledger_count(f->s, "usr_a"), 11);
}

/* Group commit (sqlite_writer.h): writers of many threads share transactions; each keeps its own outcome. */
typedef struct granter {
    pthread_barrier_t *start;
    const char *path;
    int tag;
    int ok, duplicate, other;
} granter;

enum { GRANTERS = 16, GRANTS = 50, SHARED_EVERY = 5 };

static void *grant_thread(void *arg)
{
    granter *g = arg;
    kp_store *s = NULL;
    kp_err err;
    char key[64];
    int opened = kp_sqlite_open(g->path, &s, &err) == KP_OK;
    pthread_barrier_wait(g->start);
    if (!opened) {
        g->other = GRANTS;
        return NULL;
    }
    for (int i = 0; i < GRANTS; i++) {
        /* one change in SHARED_EVERY has a key every thread uses: one of them wins it */
        if (i % SHARED_EVERY == 0)
            snprintf(key, sizeof key, "shared:%d", i);
        else
            snprintf(key, sizeof key, "own:%d:%d", g->tag, i);
        kp_status rc = apply(s, change("usr_a", 0, 1, "admin_grant", key), NULL);
        if (rc == KP_OK)
            g->ok++;
        else if (rc == KP_EDUPLICATE)
            g->duplicate++;
        else
            g->other++;
    }
    s->ops->close(s);
    return NULL;
}

static void test_group_commit_keeps_each_outcome(void **state)
{
    fixture *f = *state;
    granter g[GRANTERS];
    pthread_t tid[GRANTERS];
    pthread_barrier_t start;
    add_user(f->s, "usr_a", "", "", "free");
    memset(g, 0, sizeof g);
    pthread_barrier_init(&start, NULL, GRANTERS);
    for (int i = 0; i < GRANTERS; i++) {
        g[i] = (granter){.start = &start, .path = f->path, .tag = i};
        pthread_create(&tid[i], NULL, grant_thread, &g[i]);
    }
    int ok = 0, duplicate = 0, other = 0;
    for (int i = 0; i < GRANTERS; i++) {
        pthread_join(tid[i], NULL);
        ok += g[i].ok;
        duplicate += g[i].duplicate;
        other += g[i].other;
    }
    pthread_barrier_destroy(&start);
    int shared = GRANTS / SHARED_EVERY;
    int own = GRANTERS * (GRANTS - shared);
    assert_int_equal(other, 0);
    assert_int_equal(ok, own + shared);
    assert_int_equal(duplicate, (GRANTERS - 1) * shared);
    kp_balance b = balance(f->s, "usr_a");
    assert_int_equal(b.monthly, own + shared);
    assert_int_equal(b.version, own + shared);
    assert_ledger_matches_balance(f->s, "usr_a");
    assert_int_equal(ledger_count(f->s, "usr_a"), (size_t)(own + shared));
}

/* --- many batches: large commits (the gathered WAL written in pieces) and checkpoints off the gate --- */

enum { BIG_WRITERS = 64, BIG_WRITES = 60, BIG_USERS = 16 };

typedef struct big_writer {
    const char *path;
    int tag;
    int ok;
} big_writer;

static void *big_write_thread(void *arg)
{
    big_writer *g = arg;
    kp_store *s = NULL;
    kp_err err;
    char user[16], key[96];
    if (kp_sqlite_open(g->path, &s, &err) != KP_OK)
        return NULL;
    for (int i = 0; i < BIG_WRITES; i++) {
        snprintf(user, sizeof user, "usr_%d", (g->tag + i) % BIG_USERS);
        snprintf(key, sizeof key, "big:%d:%d:%0*d", g->tag, i, 48, i * 7919 % 10007); /* wide keys, spread */
        g->ok += apply(s, change(user, 0, 1, "admin_grant", key), NULL) == KP_OK;
    }
    s->ops->close(s);
    return NULL;
}

/* 64 threads, 3,840 writes: commits of many pages (more than one write of
 * the default VFS) all land, and the WAL, checkpointed outside the gate,
 * restarts instead of growing with every frame (~25,000 of them, about
 * 100 MiB): it stays under twice the checkpoint's threshold. */
static void test_group_commit_many_batches(void **state)
{
    fixture *f = *state;
    big_writer g[BIG_WRITERS];
    pthread_t tid[BIG_WRITERS];
    char user[16], wal[160];
    for (int u = 0; u < BIG_USERS; u++) {
        snprintf(user, sizeof user, "usr_%d", u);
        add_user(f->s, user, "", "", "free");
    }
    for (int i = 0; i < BIG_WRITERS; i++) {
        g[i] = (big_writer){.path = f->path, .tag = i};
        pthread_create(&tid[i], NULL, big_write_thread, &g[i]);
    }
    int ok = 0;
    for (int i = 0; i < BIG_WRITERS; i++) {
        pthread_join(tid[i], NULL);
        ok += g[i].ok;
    }
    assert_int_equal(ok, BIG_WRITERS * BIG_WRITES);
    int64_t total = 0;
    for (int u = 0; u < BIG_USERS; u++) {
        snprintf(user, sizeof user, "usr_%d", u);
        assert_ledger_matches_balance(f->s, user);
        total += balance(f->s, user).monthly;
    }
    assert_int_equal(total, BIG_WRITERS * BIG_WRITES);
    struct stat st;
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    assert_int_equal(stat(wal, &st), 0);
    assert_true(st.st_size < 2 * KP_SQLITE_CHECKPOINT_FRAMES * (4096 + 24)); /* a frame: its header, a page */
}

static void test_concurrent_spends_processes(void **state)
{
    fixture *f = *state;
    enum { PROCS = 2, THREADS = 4, SPENDS = 100 };
    int fds[2];
    pid_t pids[PROCS];
    add_user(f->s, "usr_a", "", "", "free");
    assert_int_equal(apply(f->s, change("usr_a", 10, 0, "daily_bonus", "seed"), NULL), KP_OK);
    close_store(f); /* no connection crosses fork() */

    assert_int_equal(pipe(fds), 0);
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            int counts[3];
            close(fds[0]);
            run_spenders(f->path, "usr_a", 1000 * (p + 1), THREADS, SPENDS, counts);
            _exit(write(fds[1], counts, sizeof counts) == sizeof counts ? 0 : 1);
        }
    }
    close(fds[1]);
    int total[3] = {0, 0, 0}, counts[3];
    for (int p = 0; p < PROCS; p++) {
        assert_int_equal(read(fds[0], counts, sizeof counts), sizeof counts);
        for (int i = 0; i < 3; i++)
            total[i] += counts[i];
    }
    close(fds[0]);
    for (int p = 0; p < PROCS; p++)
        wait_child(pids[p]);

    reopen(f);
    assert_int_equal(total[0], 10);
    assert_int_equal(total[1], PROCS * SPENDS - 10);
    assert_int_equal(total[2], 0);
    assert_int_equal(balance(f->s, "usr_a").daily, 0);
    assert_ledger_matches_balance(f->s, "usr_a");
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM ledger WHERE reason = 'generation'"), 10);
}

/* ---- daily bonus ------------------------------------------------------ */

static void test_daily_bonus(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    kp_err err;
    kp_plan p = plan("seven", 1000, 7, 1);
    int created;
    assert_int_equal(s->ops->plan_put(s, &p, &created, &err), KP_OK);
    add_user(s, "usr_1", "", "", "free");     /* 5 a day */
    add_user(s, "usr_2", "", "", "seven");    /* 7 a day */
    add_user(s, "usr_3", "", "", "business"); /* 10 a day */
    assert_int_equal(apply(s, change("usr_3", 0, 40, "admin_grant", "m3"), NULL), KP_OK);

    /* Batches of 2 over 3 users. */
    assert_int_equal(run_bonus(s, "2025-03-01", 2), 3);
    assert_int_equal(balance(s, "usr_1").daily, 5);
    assert_int_equal(balance(s, "usr_2").daily, 7);
    kp_balance b3 = balance(s, "usr_3");
    assert_int_equal(b3.daily, 10);
    assert_int_equal(b3.monthly, 40); /* monthly credits untouched */

    kp_ledger_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(s->ops->ledger_list(s, "usr_3", 0, 1, &e, &n, &err), KP_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].idem_key, "daily:2025-03-01:usr_3");
    assert_string_equal(e[0].reason, "daily_bonus");
    assert_int_equal(e[0].delta_daily, 10);
    assert_int_equal(e[0].delta_monthly, 0);
    assert_int_equal(e[0].balance_daily, 10);
    assert_int_equal(e[0].balance_monthly, 40);
    free(e);

    /* Same date again: nobody is granted, nothing changes. */
    kp_balance before1 = balance(s, "usr_1");
    assert_int_equal(run_bonus(s, "2025-03-01", 2), 0);
    assert_int_equal(run_bonus(s, "2025-03-01", 100), 0);
    kp_balance after1 = balance(s, "usr_1");
    assert_int_equal(after1.daily, before1.daily);
    assert_int_equal(after1.version, before1.version);
    assert_int_equal(ledger_count(s, "usr_1"), 1);

    /* Spend some, receive extra; the next day resets daily to the bonus. */
    assert_int_equal(apply(s, change("usr_1", -3, 0, "generation", "s1"), NULL), KP_OK);
    assert_int_equal(apply(s, change("usr_3", 4, 0, "admin_grant", "d3"), NULL), KP_OK);
    assert_int_equal(run_bonus(s, "2025-03-02", 1000), 3);
    assert_int_equal(balance(s, "usr_1").daily, 5);
    assert_int_equal(balance(s, "usr_2").daily, 7);
    assert_int_equal(balance(s, "usr_3").daily, 10);
    assert_int_equal(balance(s, "usr_3").monthly, 40);
    assert_int_equal(s->ops->ledger_list(s, "usr_1", 0, 1, &e, &n, &err), KP_OK);
    assert_int_equal(e[0].delta_daily, 3);
    free(e);
    assert_int_equal(s->ops->ledger_list(s, "usr_2", 0, 1, &e, &n, &err), KP_OK);
    assert_int_equal(e[0].delta_daily, 0); /* recorded although nothing moved */
    assert_string_equal(e[0].idem_key, "daily:2025-03-02:usr_2");
    free(e);
    assert_int_equal(s->ops->ledger_list(s, "usr_3", 0, 1, &e, &n, &err), KP_OK);
    assert_int_equal(e[0].delta_daily, -4);
    free(e);
    assert_ledger_matches_balance(s, "usr_1");
    assert_ledger_matches_balance(s, "usr_2");
    assert_ledger_matches_balance(s, "usr_3");

    /* Pages of 1 and 2 give every page the same result; bad dates are refused. */
    assert_int_equal(run_bonus(s, "2025-03-03", 1), 3);
    assert_int_equal(run_bonus(s, "2025-03-03", 2), 0);
    size_t granted = 0;
    assert_int_equal(kp_credits_daily_bonus(s, "x:y", 10, &granted, &err), KP_EINVAL);
    assert_int_equal(kp_credits_daily_bonus(s, "2025-03-04", 0, &granted, &err), KP_EINVAL);
}

/* users_bonus_page: each user once with what the rule needs, in pages of at most limit, "" at the end; segments
 * split the users without overlap. */
static void test_users_bonus_page(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    enum { USERS = 23 };
    char ids[USERS][KP_ID_MAX], seen[USERS + 1][KP_ID_MAX];
    kp_err err;
    for (int i = 0; i < USERS; i++) {
        snprintf(ids[i], sizeof ids[i], "usr_%02d", i);
        add_user(s, ids[i], "", "", i % 2 ? "business" : "free");
    }
    assert_int_equal(apply(s, change("usr_03", 2, 7, "admin_grant", "g3"), NULL), KP_OK);
    assert_int_equal(s->ops->user_set_email_verified(s, "usr_05", &err), KP_OK);

    /* one page: every field */
    kp_bonus_candidate *page = NULL;
    size_t n = 0;
    char next[KP_PAGE_TOKEN_MAX];
    assert_int_equal(s->ops->users_bonus_page(s, "usr_02", 0, 1, 3, &page, &n, next, &err), KP_OK);
    assert_int_equal(n, 3);
    assert_string_equal(page[0].user_id, "usr_03");
    assert_int_equal(page[0].daily_bonus, 10);
    assert_int_equal(page[0].balance.daily, 2);
    assert_int_equal(page[0].balance.monthly, 7);
    assert_int_equal(page[0].balance.version, balance(s, "usr_03").version);
    assert_int_equal(page[1].daily_bonus, 5);
    assert_int_equal(page[2].email_verified, 1);
    assert_int_equal(page[2].verification_required, 0);
    assert_true(next[0] != '\0');
    free(page);

    /* whole walks in pages of 1, 5, 23 and 100: every user once, in order */
    static const size_t limits[] = {1, 5, USERS, 100};
    for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
        assert_int_equal(walk_users(s, 0, 1, limits[l], seen, USERS + 1), USERS);
        for (int i = 0; i < USERS; i++)
            assert_string_equal(seen[i], ids[i]);
    }

    /* 4 segments: together every user exactly once */
    int times[USERS] = {0};
    size_t total = 0;
    for (unsigned seg = 0; seg < 4; seg++) {
        size_t got = walk_users(s, seg, 4, 2, seen, USERS + 1);
        total += got;
        for (size_t i = 0; i < got; i++)
            times[atoi(seen[i] + 4)]++;
    }
    assert_int_equal(total, USERS);
    for (int i = 0; i < USERS; i++)
        assert_int_equal(times[i], 1);

    /* refused: a segment outside the total, no segments, an empty page, a token too long to be an id */
    char long_token[KP_PAGE_TOKEN_MAX];
    memset(long_token, 'x', sizeof long_token - 1);
    long_token[sizeof long_token - 1] = '\0';
    assert_int_equal(s->ops->users_bonus_page(s, "", 4, 4, 10, &page, &n, next, &err), KP_EINVAL);
    assert_int_equal(s->ops->users_bonus_page(s, "", 0, 0, 10, &page, &n, next, &err), KP_EINVAL);
    assert_int_equal(s->ops->users_bonus_page(s, "", 0, 1, 0, &page, &n, next, &err), KP_EINVAL);
    assert_int_equal(s->ops->users_bonus_page(s, long_token, 0, 1, 10, &page, &n, next, &err), KP_EINVAL);
}

/* credits_apply_many: each change on its own, one transaction, every outcome reported. */
static void test_credits_apply_many(void **state)
{
    fixture *f = *state;
    kp_store *s = f->s;
    kp_err err;
    add_user(s, "usr_a", "", "", "free");
    add_user(s, "usr_b", "", "", "free");
    assert_int_equal(apply(s, change("usr_a", 3, 0, "admin_grant", "used"), NULL), KP_OK);
    int64_t va = balance(s, "usr_a").version;

    kp_credit_change c[7];
    c[0] = change("usr_a", 2, 0, "test", "k0");   /* applies */
    c[1] = change("usr_b", 1, 1, "test", "used"); /* key used before: skipped */
    c[2] = change("usr_a", -1, 0, "test", "k2");  /* CAS on a stale version */
    c[2].expected_version = va;                   /* (c[0] moved it) */
    c[3] = change("usr_b", -1, 0, "test", "k3");  /* short */
    c[4] = change("usr_zz", 1, 0, "test", "k4");  /* no such user */
    c[5] = change("usr_b", 4, 0, "test", "");     /* no key */
    c[6] = change("usr_b", 4, 2, "test", "k0");   /* the key c[0] used in this very call */
    kp_status results[7];
    assert_int_equal(s->ops->credits_apply_many(s, c, 7, results, &err), KP_OK);
    assert_int_equal(results[0], KP_OK);
    assert_int_equal(results[1], KP_EDUPLICATE);
    assert_int_equal(results[2], KP_ECONFLICT);
    assert_int_equal(results[3], KP_ECREDITS);
    assert_int_equal(results[4], KP_ENOTFOUND);
    assert_int_equal(results[5], KP_EINVAL);
    assert_int_equal(results[6], KP_EDUPLICATE);
    assert_int_equal(balance(s, "usr_a").daily, 5);
    assert_int_equal(balance(s, "usr_b").daily, 0);
    assert_int_equal(ledger_count(s, "usr_b"), 0);
    assert_ledger_matches_balance(s, "usr_a");

    /* zero-delta changes with record_zero write their row; none: nothing at all */
    kp_credit_change z = change("usr_b", 0, 0, "daily_bonus", "z1");
    z.record_zero = 1;
    z.expected_version = balance(s, "usr_b").version;
    assert_int_equal(s->ops->credits_apply_many(s, &z, 1, results, &err), KP_OK);
    assert_int_equal(results[0], KP_OK);
    assert_int_equal(ledger_count(s, "usr_b"), 1);
    assert_int_equal(s->ops->credits_apply_many(s, NULL, 0, results, &err), KP_OK);

    /* 70 changes (rows written in groups): a key repeated from a written group and one from a waiting group */
    enum { MANY = 70 };
    kp_credit_change many[MANY];
    kp_status many_results[MANY];
    char keys[MANY][16];
    for (int i = 0; i < MANY; i++) {
        snprintf(keys[i], sizeof keys[i], "m%d", i == 69 ? 3 : i == 40 ? 35 : i);
        many[i] = change(i % 2 ? "usr_a" : "usr_b", 1, 0, "test", keys[i]);
    }
    size_t before_a = ledger_count(s, "usr_a"), before_b = ledger_count(s, "usr_b");
    assert_int_equal(s->ops->credits_apply_many(s, many, MANY, many_results, &err), KP_OK);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(many_results[i], i == 69 || i == 40 ? KP_EDUPLICATE : KP_OK);
    assert_int_equal(ledger_count(s, "usr_a"), before_a + 34);
    assert_int_equal(ledger_count(s, "usr_b"), before_b + 34);
    assert_ledger_matches_balance(s, "usr_a");
    assert_ledger_matches_balance(s, "usr_b");
}

static void test_daily_bonus_concurrent_processes(void **state)
{
    fixture *f = *state;
    enum { PROCS = 2, USERS = 3000 };
    int fds[2];
    pid_t pids[PROCS];
    close_store(f);
    bulk_users(f->path, USERS);

    assert_int_equal(pipe(fds), 0);
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            kp_store *s = NULL;
            kp_err err;
            size_t granted = 0;
            close(fds[0]);
            if (kp_sqlite_open(f->path, &s, &err) != KP_OK)
                _exit(1);
            granted = run_bonus(s, "2025-04-01", 50);
            s->ops->close(s);
            _exit(write(fds[1], &granted, sizeof granted) == sizeof granted ? 0 : 1);
        }
    }
    close(fds[1]);
    size_t total = 0, one;
    for (int p = 0; p < PROCS; p++) {
        assert_int_equal(read(fds[0], &one, sizeof one), sizeof one);
        total += one;
    }
    close(fds[0]);
    for (int p = 0; p < PROCS; p++)
        wait_child(pids[p]);

    assert_int_equal(total, USERS);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM ledger WHERE reason = 'daily_bonus'"), USERS);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM balances AS b JOIN users AS u ON u.id = b.user_id "
                                              "JOIN plans AS p ON p.id = u.plan_id "
                                              "WHERE b.daily <> p.daily_bonus OR b.version <> 1"),
                     0);
}

static void test_daily_bonus_100k(void **state)
{
    fixture *f = *state;
    enum { USERS = 100000 };
    close_store(f);
    double t0 = now_seconds();
    bulk_users(f->path, USERS);
    double t1 = now_seconds();
    reopen(f);

    double t2 = now_seconds();
    size_t granted = run_bonus(f->s, "2025-05-01", 1000);
    double t3 = now_seconds();
    size_t again = run_bonus(f->s, "2025-05-01", 1000);
    double t4 = now_seconds();

    assert_int_equal(granted, USERS);
    assert_int_equal(again, 0);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM ledger"), USERS);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(DISTINCT user_id) FROM ledger"), USERS);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM balances AS b JOIN users AS u ON u.id = b.user_id "
                                              "JOIN plans AS p ON p.id = u.plan_id "
                                              "WHERE b.daily <> p.daily_bonus OR b.version <> 1"),
                     0);
    assert_int_equal(kp_test_sql_int(f->path,
                                     "SELECT COUNT(*) FROM ledger AS l JOIN balances AS b ON b.user_id = l.user_id "
                                     "WHERE l.balance_daily <> b.daily OR l.delta_daily <> b.daily"),
                     0);
    print_message("100k users: insert %.3fs, daily bonus %.3fs (batches of 1000), re-run %.3fs\n", t1 - t0, t3 - t2,
                  t4 - t3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_seeds_plans, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_twice_applies_nothing, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_open_before_migrate_fails, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_concurrent_processes, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_users, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_plans, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_credits_grant_spend, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_credits_cas, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_reservations, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_decide_change_about_other_rows, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_ledger_sum_after_mix, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_spends_threads, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_keeps_each_outcome, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_many_batches, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_spends_processes, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_daily_bonus, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_users_bonus_page, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_credits_apply_many, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_daily_bonus_concurrent_processes, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_daily_bonus_100k, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_reads_share_one_view, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_no_statement_scans_per_row, setup_store, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
