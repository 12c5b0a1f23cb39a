/*
 * test_store_leases.c - generations are leased (store.h kp_lease): admission
 * records the owner and the lease; leases_renew renews only the owner's
 * generating versions whose lease still runs; versions_expired lists the
 * others (rows without an owner included) from the partial index; and
 * recovery (gen/generator.h kp_gen_recover) ends and refunds each expired
 * version exactly once, also with two recoverers at once, never touching a
 * version whose lease runs. An owner ending its version after a recoverer
 * did gets KP_ECONFLICT and writes nothing.
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

#include "core/err.h"
#include "core/id.h"
#include "domain/credits.h"
#include "gen/generator.h"
#include "store/sqlite/sqlite_store.h"
#include "store/store.h"
#include "testutil.h"

#define HOUR_MS 3600000LL

typedef struct fixture {
    char dir[64];
    char path[128];
    kp_store *s;
    kp_blob *blob;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    kp_err err = {0};
    assert_non_null(f);
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->path, sizeof f->path);
    f->blob = kp_test_blob(f->dir);
    kp_test_user(f->s, "usr_a", "a@example.com", "business"); /* 10 at a time */
    assert_int_equal(kp_credits_grant(f->s, "usr_a", 0, 100, "admin_grant", "grant:a", NULL, NULL, &err), KP_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    f->s->ops->close(f->s);
    f->blob->ops->close(f->blob);
    kp_test_rmrf(f->dir);
    free(f);
    return 0;
}

/* Admits a new project pid (version 1, 1 credit reserved as res_{pid}) owned by owner until lease_until. */
static void admit(fixture *f, const char *pid, const char *owner, int64_t lease_until)
{
    kp_err err = {0};
    kp_project p;
    kp_version v;
    char res[KP_ID_MAX];
    memset(&p, 0, sizeof p);
    memset(&v, 0, sizeof v);
    snprintf(p.id, sizeof p.id, "%s", pid);
    snprintf(p.user_id, sizeof p.user_id, "usr_a");
    snprintf(p.name, sizeof p.name, "leased");
    p.latest_version = 1;
    snprintf(v.project_id, sizeof v.project_id, "%s", pid);
    snprintf(res, sizeof res, "res_%s", pid);
    snprintf(v.reservation_id, sizeof v.reservation_id, "%s", res);
    v.n = 1;
    v.status = KP_VER_GENERATING;
    v.prompt = "make an app";
    kp_admit_request r = {.user_id = "usr_a",
                          .res_id = res,
                          .amount = 1,
                          .max_generating = -1,
                          .project = &p,
                          .version = &v,
                          .owner = owner,
                          .lease_until = lease_until};
    if (kp_credits_admit(f->s, &r, NULL, &err) != KP_OK)
        fail_msg("admit %s: %s", pid, err.msg);
}

/* Publishes version 1 of pid (committing its credit), as its owner would. */
static void end_ready(fixture *f, const char *pid)
{
    kp_err err = {0};
    kp_version end;
    char res[KP_ID_MAX];
    memset(&end, 0, sizeof end);
    snprintf(end.project_id, sizeof end.project_id, "%s", pid);
    snprintf(res, sizeof res, "res_%s", pid);
    end.n = 1;
    end.status = KP_VER_READY;
    assert_int_equal(kp_credits_end_ready(f->s, res, &end, &err), KP_OK);
}

static kp_version get_version(fixture *f, const char *pid)
{
    kp_err err = {0};
    kp_version v;
    if (f->s->ops->version_get(f->s, pid, 1, &v, &err) != KP_OK)
        fail_msg("version_get %s: %s", pid, err.msg);
    return v;
}

static kp_lease lease_of(const char *pid)
{
    kp_lease l;
    memset(&l, 0, sizeof l);
    snprintf(l.project_id, sizeof l.project_id, "%s", pid);
    l.n = 1;
    l.held = -1;
    return l;
}

static int64_t total(fixture *f)
{
    kp_err err = {0};
    kp_balance b, sum;
    assert_int_equal(f->s->ops->balance_get(f->s, "usr_a", &b, &err), KP_OK);
    assert_int_equal(f->s->ops->ledger_sum(f->s, "usr_a", &sum, &err), KP_OK);
    assert_int_equal(b.daily, sum.daily); /* the balance is always the ledger's sum */
    assert_int_equal(b.monthly, sum.monthly);
    return b.daily + b.monthly;
}

static int64_t ledger_rows(fixture *f, const char *where)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM ledger WHERE %s", where);
    return kp_test_sql_int(f->path, sql);
}

/* ---- admission ---------------------------------------------------------- */

static void test_admit_records_owner_and_lease(void **state)
{
    fixture *f = *state;
    int64_t until = kp_time_now_ms() + 30000;
    admit(f, "prj_1", "ins_a", until);
    kp_version v = get_version(f, "prj_1");
    assert_int_equal(v.status, KP_VER_GENERATING);
    assert_string_equal(v.owner, "ins_a");
    assert_int_equal(v.lease_until, until);
    kp_version_clear(&v);

    /* project_create (no admission) writes what the version says: here nothing, an expired lease */
    kp_err err = {0};
    kp_project p;
    kp_version nv;
    memset(&p, 0, sizeof p);
    memset(&nv, 0, sizeof nv);
    snprintf(p.id, sizeof p.id, "prj_2");
    snprintf(p.user_id, sizeof p.user_id, "usr_a");
    snprintf(nv.project_id, sizeof nv.project_id, "prj_2");
    nv.n = 1;
    assert_int_equal(f->s->ops->project_create(f->s, &p, &nv, &err), KP_OK);
    v = get_version(f, "prj_2");
    assert_string_equal(v.owner, "");
    assert_int_equal(v.lease_until, 0);
    kp_version_clear(&v);
}

/* ---- renewal ------------------------------------------------------------ */

static void test_renew_only_own_running_leases(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    int64_t now = kp_time_now_ms();
    admit(f, "prj_mine", "ins_a", now + 10000);
    admit(f, "prj_theirs", "ins_b", now + 10000);
    admit(f, "prj_ran_out", "ins_a", now - 1);
    admit(f, "prj_ended", "ins_a", now + 10000);
    end_ready(f, "prj_ended");

    kp_lease ls[5] = {lease_of("prj_mine"), lease_of("prj_theirs"), lease_of("prj_ran_out"), lease_of("prj_ended"),
                      lease_of("prj_none")};
    assert_int_equal(f->s->ops->leases_renew(f->s, "ins_a", now, now + 60000, ls, 5, &err), KP_OK);
    assert_int_equal(ls[0].held, 1);
    assert_int_equal(ls[1].held, 0); /* another owner's */
    assert_int_equal(ls[2].held, 0); /* ran out: lost for good, recovery's now */
    assert_int_equal(ls[3].held, 0); /* not generating */
    assert_int_equal(ls[4].held, 0); /* no such version */

    kp_version v = get_version(f, "prj_mine");
    assert_int_equal(v.lease_until, now + 60000);
    kp_version_clear(&v);
    v = get_version(f, "prj_theirs");
    assert_int_equal(v.lease_until, now + 10000);
    kp_version_clear(&v);
    v = get_version(f, "prj_ran_out");
    assert_int_equal(v.lease_until, now - 1);
    kp_version_clear(&v);

    /* a renewal never shortens a lease */
    assert_int_equal(f->s->ops->leases_renew(f->s, "ins_a", now, now + 5, ls, 1, &err), KP_OK);
    assert_int_equal(ls[0].held, 1);
    v = get_version(f, "prj_mine");
    assert_int_equal(v.lease_until, now + 60000);
    kp_version_clear(&v);

    assert_int_equal(f->s->ops->leases_renew(f->s, "", now, now + 1, ls, 1, &err), KP_EINVAL);
    assert_int_equal(f->s->ops->leases_renew(f->s, "ins_a", now, now + 1, NULL, 0, &err), KP_OK);
}

/* ---- the expired list ---------------------------------------------------- */

static void test_expired_lists_ran_out_and_ownerless(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    int64_t now = kp_time_now_ms();
    admit(f, "prj_live", "ins_a", now + HOUR_MS);
    admit(f, "prj_old", "ins_b", now - 2000);
    admit(f, "prj_older", "ins_b", now - 5000);
    admit(f, "prj_legacy", NULL, 0); /* a row of an older build: no owner */
    admit(f, "prj_done", "ins_b", now - 9000);
    end_ready(f, "prj_done");

    kp_version *vs = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->versions_expired(f->s, now, 10, &vs, &n, &err), KP_OK);
    assert_int_equal(n, 3); /* oldest lease first; neither the live one nor the ready one */
    assert_string_equal(vs[0].project_id, "prj_legacy");
    assert_string_equal(vs[0].owner, "");
    assert_string_equal(vs[1].project_id, "prj_older");
    assert_string_equal(vs[1].owner, "ins_b");
    assert_string_equal(vs[2].project_id, "prj_old");
    assert_string_equal(vs[2].reservation_id, "res_prj_old");
    kp_version_free_array(vs, n);

    assert_int_equal(f->s->ops->versions_expired(f->s, now, 2, &vs, &n, &err), KP_OK);
    assert_int_equal(n, 2);
    kp_version_free_array(vs, n);
    assert_int_equal(f->s->ops->versions_expired(f->s, now + 2 * HOUR_MS, 10, &vs, &n, &err), KP_OK);
    assert_int_equal(n, 4); /* later, the live one's lease has run out too */
    kp_version_free_array(vs, n);
}

/* The recovery query reads the partial index on generating versions by lease. */
static void test_expired_query_uses_the_lease_index(void **state)
{
    fixture *f = *state;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int found = 0;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "EXPLAIN QUERY PLAN SELECT project_id FROM versions "
                                        "WHERE status = 1 AND lease_until < 5 ORDER BY lease_until LIMIT 10",
                                        -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW)
        found |= strstr((const char *)sqlite3_column_text(st, 3), "versions_lease") != NULL;
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_true(found);
}

/* ---- recovery ------------------------------------------------------------ */

static void test_recovery_takes_only_expired(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    size_t repaired = 0;
    int64_t now = kp_time_now_ms();
    admit(f, "prj_live", "ins_a", now + HOUR_MS);
    admit(f, "prj_dead", "ins_b", now - 1);
    char key[] = "apps/prj_dead/v1/index.html";
    assert_int_equal(f->blob->ops->put(f->blob, key, "x", 1, NULL, &err), KP_OK);
    assert_int_equal(total(f), 98);

    assert_int_equal(kp_gen_recover(f->s, f->blob, &repaired, &err), KP_OK);
    assert_int_equal(repaired, 1);
    kp_version v = get_version(f, "prj_dead");
    assert_int_equal(v.status, KP_VER_FAILED);
    assert_string_equal(v.error_code, "interrupted");
    assert_int_equal(v.refunded, 1);
    assert_int_equal(v.settled, 1);
    kp_version_clear(&v);
    assert_int_equal(kp_test_blob_count(f->blob, "apps/prj_dead/"), 0);
    v = get_version(f, "prj_live");
    assert_int_equal(v.status, KP_VER_GENERATING); /* a running lease is never touched */
    kp_version_clear(&v);
    assert_int_equal(total(f), 99);

    /* again: nothing more */
    assert_int_equal(kp_gen_recover(f->s, f->blob, &repaired, &err), KP_OK);
    assert_int_equal(repaired, 0);
    assert_int_equal(total(f), 99);
}

/* The owner ends its version after a recoverer did (its lease had run out):
 * KP_ECONFLICT, quickly, and nothing of it is written. */
static void test_late_owner_end_conflicts(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    admit(f, "prj_late", "ins_b", kp_time_now_ms() - 1);
    assert_int_equal(kp_gen_recover(f->s, f->blob, NULL, &err), KP_OK);
    assert_int_equal(total(f), 100);
    int64_t rows = ledger_rows(f, "1");

    static const kp_refund_policy policy = KP_REFUND_POLICY_DEFAULT;
    kp_version v;
    memset(&v, 0, sizeof v);
    snprintf(v.project_id, sizeof v.project_id, "prj_late");
    v.n = 1;
    v.status = KP_VER_FAILED;
    snprintf(v.error_code, sizeof v.error_code, "canceled");
    kp_failed_generation failed = {
        .user_id = "usr_a", .res_id = "res_prj_late", .code = "canceled", .output_chars = 5000};
    assert_int_equal(kp_credits_end_failed(f->s, &policy, &failed, &v, NULL, NULL, NULL, &err), KP_ECONFLICT);
    kp_version_clear(&v);
    memset(&v, 0, sizeof v);
    snprintf(v.project_id, sizeof v.project_id, "prj_late");
    v.n = 1;
    v.status = KP_VER_READY;
    assert_int_equal(kp_credits_end_ready(f->s, "res_prj_late", &v, &err), KP_ECONFLICT);
    assert_int_equal(ledger_rows(f, "1"), rows);
    assert_int_equal(total(f), 100);
    v = get_version(f, "prj_late");
    assert_string_equal(v.error_code, "interrupted");
    kp_version_clear(&v);
}

/* ---- two recoverers at once ---------------------------------------------- */

#define RACE_VERSIONS 30
#define RACE_ROUNDS 4

typedef struct recoverer {
    const char *path;
    pthread_barrier_t *start;
    kp_blob *blob;
    size_t repaired;
    kp_status rc;
} recoverer;

static void *recover_thread(void *arg)
{
    recoverer *r = arg;
    kp_store *s = NULL;
    kp_err err = {0};
    r->rc = kp_sqlite_open(r->path, &s, &err);
    pthread_barrier_wait(r->start);
    if (r->rc == KP_OK)
        r->rc = kp_gen_recover(s, r->blob, &r->repaired, &err);
    if (r->rc != KP_OK)
        fprintf(stderr, "recover: %s\n", err.msg);
    if (s)
        s->ops->close(s);
    return NULL;
}

static void test_two_recoverers_refund_once(void **state)
{
    fixture *f = *state;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        char pid[KP_ID_MAX];
        int64_t now = kp_time_now_ms();
        for (int i = 0; i < RACE_VERSIONS; i++) {
            snprintf(pid, sizeof pid, "prj_r%d_%02d", round, i);
            admit(f, pid, "ins_dead", now - 1 - i);
        }
        char live_id[KP_ID_MAX];
        snprintf(live_id, sizeof live_id, "prj_live_%d", round);
        admit(f, live_id, "ins_live", now + HOUR_MS); /* another instance's, running */
        int64_t before = total(f);

        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        recoverer a = {f->path, &start, f->blob, 0, KP_OK}, b = {f->path, &start, f->blob, 0, KP_OK};
        pthread_t ta, tb;
        pthread_create(&ta, NULL, recover_thread, &a);
        pthread_create(&tb, NULL, recover_thread, &b);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&start);
        assert_int_equal(a.rc, KP_OK);
        assert_int_equal(b.rc, KP_OK);
        assert_int_equal(a.repaired + b.repaired, RACE_VERSIONS); /* each ended by exactly one */

        assert_int_equal(total(f), before + RACE_VERSIONS); /* one credit back per version, once */
        char where[128];
        snprintf(where, sizeof where, "reservation_id LIKE 'res_prj_r%d_%%' AND reason LIKE 'refund:%%'", round);
        assert_int_equal(ledger_rows(f, where), RACE_VERSIONS);
        for (int i = 0; i < RACE_VERSIONS; i++) {
            snprintf(pid, sizeof pid, "prj_r%d_%02d", round, i);
            kp_version v = get_version(f, pid);
            assert_int_equal(v.status, KP_VER_FAILED);
            assert_int_equal(v.settled, 1);
            kp_version_clear(&v);
        }
        kp_version live = get_version(f, live_id);
        assert_int_equal(live.status, KP_VER_GENERATING);
        kp_version_clear(&live);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_admit_records_owner_and_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renew_only_own_running_leases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_lists_ran_out_and_ownerless, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_query_uses_the_lease_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_takes_only_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_owner_end_conflicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_recoverers_refund_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
