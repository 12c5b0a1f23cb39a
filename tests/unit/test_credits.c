/*
 * test_credits.c - the credit rules (domain/credits.c) on a real SQLite
 * database: reservations end exactly once, daily credits are spent first,
 * balances never go negative, concurrent spenders (threads and processes)
 * can never overspend, and the daily bonus rule grants each user once per
 * date, also from several runners at once and while balances move.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/id.h"
#include "domain/credits.h"
#include "store/sqlite/sqlite_store.h"
#include "testutil.h"

typedef struct fixture {
    char dir[256];
    char db[512];
    kp_store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->db, sizeof f->db);
    kp_test_user(f->s, "usr_a", "a@example.com", "pro");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    f->s->ops->close(f->s);
    kp_test_rmrf(f->dir);
    free(f);
    return 0;
}

static void grant(kp_store *s, int64_t daily, int64_t monthly, const char *key)
{
    kp_err err = {0};
    int applied = 0;
    assert_int_equal(kp_credits_grant(s, "usr_a", daily, monthly, "test", key, NULL, &applied, &err), KP_OK);
    assert_int_equal(applied, 1);
}

static void assert_balance(kp_store *s, int64_t daily, int64_t monthly)
{
    kp_balance b, sum;
    kp_err err = {0};
    assert_int_equal(kp_credits_balance(s, "usr_a", &b, &err), KP_OK);
    assert_int_equal(b.daily, daily);
    assert_int_equal(b.monthly, monthly);
    assert_int_equal(s->ops->ledger_sum(s, "usr_a", &sum, &err), KP_OK);
    assert_int_equal(sum.daily, daily);
    assert_int_equal(sum.monthly, monthly);
}

static void test_grant_is_idempotent(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    int applied = 1;
    grant(f->s, 3, 7, "g1");
    assert_int_equal(kp_credits_grant(f->s, "usr_a", 3, 7, "test", "g1", NULL, &applied, &err), KP_OK);
    assert_int_equal(applied, 0);
    assert_balance(f->s, 3, 7);
    assert_int_equal(kp_credits_grant(f->s, "usr_a", -1, 0, "test", "g2", NULL, NULL, &err), KP_EINVAL);
}

static void test_reserve_takes_daily_first(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_reservation r;
    grant(f->s, 2, 10, "g");
    assert_int_equal(kp_credits_reserve(f->s, "usr_a", "res_1", 3, "generation", NULL, &err), KP_OK);
    assert_balance(f->s, 0, 9);
    assert_int_equal(f->s->ops->reservation_get(f->s, "res_1", &r, &err), KP_OK);
    assert_int_equal(r.daily, 2);
    assert_int_equal(r.monthly, 1);
    assert_int_equal(r.state, KP_RES_RESERVED);
    /* the same reservation again is a no-op */
    assert_int_equal(kp_credits_reserve(f->s, "usr_a", "res_1", 3, "generation", NULL, &err), KP_OK);
    assert_balance(f->s, 0, 9);
}

static void test_reserve_short_changes_nothing(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    grant(f->s, 1, 1, "g");
    assert_int_equal(kp_credits_reserve(f->s, "usr_a", "res_1", 3, "generation", NULL, &err), KP_ECREDITS);
    assert_non_null(strstr(err.msg, "you have 2"));
    assert_balance(f->s, 1, 1);
    assert_int_equal(kp_credits_reserve(f->s, "usr_a", "res_2", 0, "generation", NULL, &err), KP_EINVAL);
}

static void test_refund_exactly_once(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    int refunded = 0;
    grant(f->s, 1, 5, "g");
    assert_int_equal(kp_credits_reserve(f->s, "usr_a", "res_1", 2, "generation", NULL, &err), KP_OK);
    assert_balance(f->s, 0, 4);
    assert_int_equal(kp_credits_refund(f->s, "res_1", &refunded, NULL, &err), KP_OK);
    assert_int_equal(refunded, 1);
    assert_balance(f->s, 1, 5);
    assert_int_equal(kp_credits_refund(f->s, "res_1", &refunded, NULL, &err), KP_OK);
    assert_int_equal(refunded, 0);
    assert_balance(f->s, 1, 5);
    assert_int_equal(kp_credits_commit(f->s, "res_1", &err), KP_ECONFLICT);
    assert_balance(f->s, 1, 5);
}

/* A refund after the daily reset gives back no more than lifts the daily
 * bucket to the plan's bonus (5 -> 4 -> reset 5 -> refund 5, not 6). */
static void test_refund_after_reset_stays_at_bonus(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    size_t granted = 0;
    assert_int_equal(kp_credits_daily_bonus(f->s, "2026-01-01", 100, &granted, &err), KP_OK);
    assert_int_equal(granted, 1);
    grant(f->s, 0, 2, "g");
    assert_balance(f->s, 5, 2);
    assert_int_equal(kp_credits_reserve(f->s, "usr_a", "res_1", 1, "generation", NULL, &err), KP_OK);
    assert_int_equal(kp_credits_reserve(f->s, "usr_a", "res_2", 6, "generation", NULL, &err), KP_OK);
    assert_balance(f->s, 0, 0);
    assert_int_equal(kp_credits_daily_bonus(f->s, "2026-01-02", 100, &granted, &err), KP_OK);
    assert_balance(f->s, 5, 0);
    assert_int_equal(kp_credits_refund(f->s, "res_1", NULL, NULL, &err), KP_OK);
    assert_balance(f->s, 5, 0);
    /* the monthly part always comes back whole */
    assert_int_equal(kp_credits_refund(f->s, "res_2", NULL, NULL, &err), KP_OK);
    assert_balance(f->s, 5, 2);

    /* below the bonus, a refund fills up to it and no further */
    assert_int_equal(kp_credits_refund_daily(3, 4, 5), 1);
    assert_int_equal(kp_credits_refund_daily(3, 1, 5), 3);
    assert_int_equal(kp_credits_refund_daily(3, 7, 5), 0);
    assert_int_equal(kp_credits_refund_daily(0, 0, 5), 0);
}

/* The one decision every failure path takes. */
static void test_failure_outcome_policy(void **state)
{
    (void)state;
    const kp_refund_policy p = {.rejected_refunds_per_day = 3, .cancel_refund_chars = 1000};
    static const struct {
        const char *code;
        int64_t chars, rejected_today;
        int refunded;
        const char *reason;
    } cases[] = {
        {"interrupted", 1000000, 1000, 1, "service_failure"},
        {"provider_error", 1000000, 1000, 1, "service_failure"},
        {"overloaded", 5000, 3, 1, "service_failure"},
        {"timeout", 5000, 3, 1, "service_failure"},
        {"network_error", 5000, 3, 1, "service_failure"},
        {"storage_error", 5000, 3, 1, "service_failure"},
        {"internal_error", 5000, 3, 1, "service_failure"},
        {"invalid_output", 50000, 2, 1, "rejected_output_allowance"},
        {"too_long", 0, 3, 0, "rejected_output_allowance_used"},
        {"canceled", 999, 0, 1, "canceled_early"},
        {"canceled", 1000, 0, 0, "canceled_after_output"},
        {"timed_out", 1000000, 1000, 1, "time_limit"},
        {"timed_out", 0, 0, 1, "time_limit"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kp_credits_outcome o;
        kp_credits_failure_outcome(&p, cases[i].code, cases[i].chars, cases[i].rejected_today, &o);
        assert_int_equal(o.refunded, cases[i].refunded);
        assert_string_equal(o.reason, cases[i].reason);
    }
}

static void test_commit_exactly_once(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    int refunded = 1;
    grant(f->s, 1, 0, "g");
    assert_int_equal(kp_credits_reserve(f->s, "usr_a", "res_1", 1, "generation", NULL, &err), KP_OK);
    assert_int_equal(kp_credits_commit(f->s, "res_1", &err), KP_OK);
    assert_int_equal(kp_credits_commit(f->s, "res_1", &err), KP_OK);
    assert_int_equal(kp_credits_refund(f->s, "res_1", &refunded, NULL, &err), KP_ECONFLICT);
    assert_balance(f->s, 0, 0);
    assert_int_equal(kp_credits_commit(f->s, "res_missing", &err), KP_ENOTFOUND);
}

/* Admission is all or nothing: a refused or failed admission leaves no
 * reservation, no ledger row and no row. */
static void test_admit_is_all_or_nothing(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_balance bal;
    grant(f->s, 0, 2, "g");
    kp_project p = {.id = "prj_1", .user_id = "usr_a", .name = "An app", .latest_version = 1};
    kp_version v = {.project_id = "prj_1", .n = 1, .status = KP_VER_GENERATING, .reservation_id = "res_1"};
    kp_admit_request r = {
        .user_id = "usr_a", .res_id = "res_1", .amount = 1, .max_generating = 1, .project = &p, .version = &v};
    assert_int_equal(kp_credits_admit(f->s, &r, &bal, &err), KP_OK);
    assert_balance(f->s, 0, 1);

    /* the plan's limit: one at a time */
    kp_project p2 = {.id = "prj_2", .user_id = "usr_a", .name = "Another"};
    kp_version v2 = {.project_id = "prj_2", .n = 1, .status = KP_VER_GENERATING, .reservation_id = "res_2"};
    kp_admit_request r2 = {
        .user_id = "usr_a", .res_id = "res_2", .amount = 1, .max_generating = 1, .project = &p2, .version = &v2};
    assert_int_equal(kp_credits_admit(f->s, &r2, &bal, &err), KP_ERATE);
    /* a follow-up while version 1 generates: refused after the reservation was written, rolled back */
    kp_version v3 = {.project_id = "prj_1", .n = 2, .status = KP_VER_GENERATING, .reservation_id = "res_3"};
    kp_admit_request r3 = {.user_id = "usr_a", .res_id = "res_3", .amount = 1, .max_generating = -1, .version = &v3};
    assert_int_equal(kp_credits_admit(f->s, &r3, &bal, &err), KP_ECONFLICT);
    /* short of credits */
    r2.max_generating = -1;
    r2.amount = 5;
    assert_int_equal(kp_credits_admit(f->s, &r2, &bal, &err), KP_ECREDITS);
    assert_int_equal(bal.monthly, 1);

    kp_reservation res;
    assert_int_equal(f->s->ops->reservation_get(f->s, "res_2", &res, &err), KP_ENOTFOUND);
    assert_int_equal(f->s->ops->reservation_get(f->s, "res_3", &res, &err), KP_ENOTFOUND);
    assert_int_equal(f->s->ops->project_get(f->s, "prj_2", &p2, &err), KP_ENOTFOUND);
    assert_balance(f->s, 0, 1);
    int64_t running = 0;
    assert_int_equal(f->s->ops->versions_generating_count(f->s, "usr_a", &running, &err), KP_OK);
    assert_int_equal(running, 1);
}

/* --- concurrency: 200 spends of 1 against a balance of 10 --- */

#define SPENDS 200
#define THREADS 8

typedef struct spender {
    const char *db;
    int first, count;
    int ok;
} spender;

static void *spend_loop(void *arg)
{
    spender *sp = arg;
    kp_store *s = NULL;
    kp_err err = {0};
    if (kp_sqlite_open(sp->db, &s, &err) != KP_OK)
        return NULL;
    for (int i = sp->first; i < sp->first + sp->count; i++) {
        char res[KP_ID_MAX];
        snprintf(res, sizeof res, "res_%d_%d", (int)getpid(), i);
        kp_status rc = kp_credits_reserve(s, "usr_a", res, 1, "generation", NULL, &err);
        if (rc == KP_OK)
            sp->ok++;
        else if (rc != KP_ECREDITS)
            sp->ok += 1000; /* any other outcome is a failure the test must see */
    }
    s->ops->close(s);
    return NULL;
}

/* Runs n spends over THREADS threads in this process; returns the successes. */
static int spend_in_threads(const char *db, int first, int n)
{
    pthread_t t[THREADS];
    spender sp[THREADS];
    int per = n / THREADS, total = 0;
    for (int i = 0; i < THREADS; i++) {
        sp[i] = (spender){.db = db, .first = first + i * per, .count = per};
        pthread_create(&t[i], NULL, spend_loop, &sp[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += sp[i].ok;
    }
    return total;
}

static void test_concurrent_spends_threads(void **state)
{
    fixture *f = *state;
    grant(f->s, 10, 0, "g");
    assert_int_equal(spend_in_threads(f->db, 0, SPENDS), 10);
    assert_balance(f->s, 0, 0);
}

/* --- concurrency: admissions of one user, decided on the balance read inside each write --- */

typedef struct admitter {
    const char *db;
    int first, count;
    int64_t max_generating;
    int ok, refused_credits, refused_rate, other;
} admitter;

static void *admit_loop(void *arg)
{
    admitter *ad = arg;
    kp_store *s = NULL;
    kp_err err = {0};
    if (kp_sqlite_open(ad->db, &s, &err) != KP_OK) {
        ad->other++;
        return NULL;
    }
    for (int i = ad->first; i < ad->first + ad->count; i++) {
        kp_project p = {.user_id = "usr_a", .name = "An app", .latest_version = 1};
        kp_version v = {.n = 1, .status = KP_VER_GENERATING};
        snprintf(p.id, sizeof p.id, "prj_%d", i);
        snprintf(v.project_id, sizeof v.project_id, "prj_%d", i);
        snprintf(v.reservation_id, sizeof v.reservation_id, "res_%d", i);
        kp_admit_request r = {.user_id = "usr_a",
                              .res_id = v.reservation_id,
                              .amount = 1,
                              .max_generating = ad->max_generating,
                              .project = &p,
                              .version = &v};
        kp_status rc = kp_credits_admit(s, &r, NULL, &err);
        ad->ok += rc == KP_OK;
        ad->refused_credits += rc == KP_ECREDITS;
        ad->refused_rate += rc == KP_ERATE;
        ad->other += rc != KP_OK && rc != KP_ECREDITS && rc != KP_ERATE;
    }
    s->ops->close(s);
    return NULL;
}

/* THREADS threads admit n generations of usr_a at once; returns the outcomes summed. */
static admitter admit_in_threads(const char *db, int n, int64_t max_generating)
{
    pthread_t t[THREADS];
    admitter ad[THREADS], sum = {0};
    for (int i = 0; i < THREADS; i++) {
        ad[i] =
            (admitter){.db = db, .first = i * (n / THREADS), .count = n / THREADS, .max_generating = max_generating};
        pthread_create(&t[i], NULL, admit_loop, &ad[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        sum.ok += ad[i].ok;
        sum.refused_credits += ad[i].refused_credits;
        sum.refused_rate += ad[i].refused_rate;
        sum.other += ad[i].other;
    }
    return sum;
}

/* 200 admissions at once against 10 credits: exactly 10 in, each with its reservation and rows; the ledger
 * adds up to the balance. */
static void test_concurrent_admissions_spend_exactly_the_balance(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    grant(f->s, 4, 6, "g");
    admitter sum = admit_in_threads(f->db, SPENDS, -1);
    assert_int_equal(sum.ok, 10);
    assert_int_equal(sum.refused_credits, SPENDS - 10);
    assert_int_equal(sum.other, 0);
    assert_balance(f->s, 0, 0);
    kp_balance ledger;
    assert_int_equal(f->s->ops->ledger_sum(f->s, "usr_a", &ledger, &err), KP_OK);
    assert_int_equal(ledger.daily, 0);
    assert_int_equal(ledger.monthly, 0);
    int64_t running = 0;
    assert_int_equal(f->s->ops->versions_generating_count(f->s, "usr_a", &running, &err), KP_OK);
    assert_int_equal(running, 10);
}

/* 200 admissions at once under a plan's limit of 5 at a time: exactly 5 in, 5 credits reserved. */
static void test_concurrent_admissions_keep_the_plan_limit(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    grant(f->s, 0, 100, "g");
    admitter sum = admit_in_threads(f->db, SPENDS, 5);
    assert_int_equal(sum.ok, 5);
    assert_int_equal(sum.refused_rate, SPENDS - 5);
    assert_int_equal(sum.other, 0);
    assert_balance(f->s, 0, 95);
    int64_t running = 0;
    assert_int_equal(f->s->ops->versions_generating_count(f->s, "usr_a", &running, &err), KP_OK);
    assert_int_equal(running, 5);
}

static void test_concurrent_spends_two_processes(void **state)
{
    fixture *f = *state;
    int fds[2];
    grant(f->s, 4, 6, "g");
    assert_int_equal(pipe(fds), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        int ok = spend_in_threads(f->db, 0, SPENDS / 2);
        ssize_t w = write(fds[1], &ok, sizeof ok);
        _exit(w == sizeof ok ? 0 : 1);
    }
    int mine = spend_in_threads(f->db, SPENDS / 2, SPENDS / 2);
    int theirs = -1, status = 0;
    assert_int_equal(read(fds[0], &theirs, sizeof theirs), (ssize_t)sizeof theirs);
    waitpid(child, &status, 0);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(mine + theirs, 10);
    assert_balance(f->s, 0, 0);
}

static void test_daily_bonus_once_per_date(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    size_t granted = 0;
    kp_test_user(f->s, "usr_b", "b@example.com", "business");
    assert_int_equal(kp_credits_daily_bonus(f->s, "2026-11-20", 1, &granted, &err), KP_OK);
    assert_int_equal(granted, 2);
    assert_balance(f->s, 5, 0);
    assert_int_equal(kp_credits_daily_bonus(f->s, "2026-11-20", 1, &granted, &err), KP_OK);
    assert_int_equal(granted, 0);
    assert_balance(f->s, 5, 0);
    assert_int_equal(kp_credits_daily_bonus(f->s, "2026-02-31", 1, &granted, &err), KP_EINVAL);
    assert_int_equal(kp_credits_daily_bonus(f->s, "tomorrow", 1, &granted, &err), KP_EINVAL);
}

static void test_welcome_then_daily_run_grants_once(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    size_t granted = 9;
    char today[11];
    kp_date_utc_today(today);
    assert_int_equal(kp_credits_welcome(f->s, "usr_a", &err), KP_OK);
    assert_balance(f->s, 5, 0);
    assert_int_equal(kp_credits_daily_bonus(f->s, today, 100, &granted, &err), KP_OK);
    assert_int_equal(granted, 0);
    assert_balance(f->s, 5, 0);
}

/* The rule alone: who gets the bonus, and the change that sets daily to the plan's bonus. */
static void test_bonus_change_rule(void **state)
{
    (void)state;
    char key[KP_IDEM_MAX];
    kp_credit_change c;
    kp_bonus_candidate u = {.user_id = "usr_x", .daily_bonus = 5, .balance = {.daily = 7, .monthly = 40, .version = 9}};
    assert_int_equal(kp_credits_bonus_change(&u, "2026-11-20", key, &c), 1);
    assert_string_equal(c.user_id, "usr_x");
    assert_string_equal(c.idem_key, "daily:2026-11-20:usr_x");
    assert_string_equal(c.reason, "daily_bonus");
    assert_int_equal(c.delta_daily, -2); /* no carry-over: down to the bonus */
    assert_int_equal(c.delta_monthly, 0);
    assert_int_equal(c.expected_version, 9);
    assert_true(c.record_zero);
    assert_null(c.res_id);
    u.balance.daily = 5;
    assert_int_equal(kp_credits_bonus_change(&u, "2026-11-20", key, &c), 1);
    assert_int_equal(c.delta_daily, 0); /* still a row: it records the date as done */
    u.balance.daily = 0;
    assert_int_equal(kp_credits_bonus_change(&u, "2026-11-20", key, &c), 1);
    assert_int_equal(c.delta_daily, 5);
    /* signed up while verification was on: only once verified */
    u.verification_required = 1;
    assert_int_equal(kp_credits_bonus_change(&u, "2026-11-20", key, &c), 0);
    u.email_verified = 1;
    assert_int_equal(kp_credits_bonus_change(&u, "2026-11-20", key, &c), 1);
}

/* A store that reads a page, then sees usr_a's balance move (a spend between
 * the page read and the write), then applies the rule's changes (as
 * DynamoDB does, one by one): the bonus meets a stale version. */
static const kp_store_ops *real_ops;
static kp_status grant_after_a_move(kp_store *s, const char *token, unsigned segment, unsigned total_segments,
                                    size_t limit, kp_bonus_rule_fn rule, void *arg, kp_bonus_page *out,
                                    char next[KP_PAGE_TOKEN_MAX], kp_err *err)
{
    kp_store real = {.ops = real_ops, .impl = s->impl};
    kp_credit_change g = {
        .user_id = "usr_a", .delta_daily = 2, .reason = "test", .idem_key = "moved", .expected_version = -1};
    kp_balance b;
    *out = (kp_bonus_page){0};
    kp_status rc =
        real_ops->users_bonus_page(&real, token, segment, total_segments, limit, &out->users, &out->n, next, err);
    if (rc == KP_OK)
        rc = real_ops->credits_apply(&real, &g, &b, err);
    if (rc == KP_EDUPLICATE)
        rc = KP_OK;
    out->results = calloc(out->n + 1, sizeof *out->results);
    for (size_t i = 0; rc == KP_OK && i < out->n; i++) {
        char key[KP_IDEM_MAX];
        kp_credit_change c;
        out->results[i] = KP_OK;
        if (rule(&out->users[i], arg, key, &c)) {
            kp_err one = {0};
            out->results[i] = real_ops->credits_apply(&real, &c, &b, &one);
            out->granted += out->results[i] == KP_OK;
        }
    }
    return rc;
}

static void test_daily_bonus_rereads_a_moved_balance(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    size_t granted = 0;
    grant(f->s, 1, 3, "g");
    kp_store_ops ops = *f->s->ops;
    real_ops = f->s->ops;
    ops.bonus_page_grant = grant_after_a_move;
    kp_store moving = {.ops = &ops, .impl = f->s->impl};
    assert_int_equal(kp_credits_daily_bonus(&moving, "2026-11-21", 10, &granted, &err), KP_OK);
    assert_int_equal(granted, 1);
    assert_balance(f->s, 5, 3); /* 1 + 2 moved, then set to the bonus: not 1 + 4 */
    kp_ledger_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->ledger_list(f->s, "usr_a", 0, 1, &e, &n, &err), KP_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].idem_key, "daily:2026-11-21:usr_a");
    assert_int_equal(e[0].delta_daily, 2);
    free(e);
}

/* --- two runners of the bonus (and a spender) at once --- */

#define BONUS_USERS 300

typedef struct bonus_runner {
    const char *db;
    unsigned segment, total;
    size_t granted;
    kp_status rc;
} bonus_runner;

static void *bonus_loop(void *arg)
{
    bonus_runner *r = arg;
    kp_store *s = NULL;
    kp_err err = {0};
    r->rc = kp_sqlite_open(r->db, &s, &err);
    if (r->rc != KP_OK)
        return NULL;
    r->rc = kp_credits_daily_bonus_segment(s, "2026-12-24", r->segment, r->total, 7, &r->granted, &err);
    s->ops->close(s);
    return NULL;
}

/* Grants 1 credit to every user in turn while the runners run (their CAS must notice). */
static void *moving_loop(void *arg)
{
    bonus_runner *r = arg;
    kp_store *s = NULL;
    kp_err err = {0};
    r->rc = kp_sqlite_open(r->db, &s, &err);
    for (int i = 0; i < BONUS_USERS && r->rc == KP_OK; i++) {
        char id[KP_ID_MAX], key[KP_IDEM_MAX];
        snprintf(id, sizeof id, "usr_b%03d", i);
        snprintf(key, sizeof key, "move:%d", i);
        r->rc = kp_credits_grant(s, id, 1, 1, "test", key, NULL, NULL, &err);
    }
    if (s)
        s->ops->close(s);
    return NULL;
}

/* Every user with exactly one bonus row for the date, and every ledger summing to its balance. */
static void assert_bonus_once(fixture *f, int users)
{
    kp_err err = {0};
    for (int i = 0; i < users; i++) {
        char id[KP_ID_MAX];
        kp_balance b, sum;
        snprintf(id, sizeof id, "usr_b%03d", i);
        assert_int_equal(f->s->ops->balance_get(f->s, id, &b, &err), KP_OK);
        assert_int_equal(f->s->ops->ledger_sum(f->s, id, &sum, &err), KP_OK);
        assert_int_equal(sum.daily, b.daily);
        assert_int_equal(sum.monthly, b.monthly);
        assert_true(b.daily == 5 || b.daily == 6); /* the bonus, and the spender's grant if it came after */
    }
    assert_int_equal(kp_test_sql_int(f->db, "SELECT COUNT(*) FROM ledger WHERE idem_key LIKE 'daily:2026-12-24:%'"),
                     users + 1);
    assert_int_equal(kp_test_sql_int(f->db, "SELECT COUNT(DISTINCT user_id) FROM ledger "
                                            "WHERE idem_key LIKE 'daily:2026-12-24:%'"),
                     users + 1);
    /* right after its bonus, each balance held exactly the bonus (a stale read would have added to a grant) */
    assert_int_equal(kp_test_sql_int(f->db, "SELECT COUNT(*) FROM ledger "
                                            "WHERE idem_key LIKE 'daily:2026-12-24:%' AND balance_daily <> 5"),
                     0);
}

/* Runs `runners` bonus threads (segments of total, or all segment 0 of 1) and a spender; returns users granted. */
static size_t run_bonus_threads(fixture *f, int runners, unsigned total)
{
    pthread_t t[4], mover;
    bonus_runner r[4], m = {.db = f->db};
    size_t granted = 0;
    for (int i = 0; i < BONUS_USERS; i++) {
        char id[KP_ID_MAX];
        snprintf(id, sizeof id, "usr_b%03d", i);
        kp_test_user(f->s, id, "", "pro");
    }
    pthread_create(&mover, NULL, moving_loop, &m);
    for (int i = 0; i < runners; i++) {
        r[i] = (bonus_runner){.db = f->db, .segment = total > 1 ? (unsigned)i : 0, .total = total};
        pthread_create(&t[i], NULL, bonus_loop, &r[i]);
    }
    for (int i = 0; i < runners; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].rc, KP_OK);
        granted += r[i].granted;
    }
    pthread_join(mover, NULL);
    assert_int_equal(m.rc, KP_OK);
    return granted;
}

static void test_daily_bonus_two_runners_at_once(void **state)
{
    fixture *f = *state;
    assert_int_equal(run_bonus_threads(f, 2, 1), BONUS_USERS + 1);
    assert_bonus_once(f, BONUS_USERS);
}

static void test_daily_bonus_in_segments(void **state)
{
    fixture *f = *state;
    assert_int_equal(run_bonus_threads(f, 3, 3), BONUS_USERS + 1);
    assert_bonus_once(f, BONUS_USERS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_grant_is_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_takes_daily_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_short_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refund_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refund_after_reset_stays_at_bonus, setup, teardown),
        cmocka_unit_test(test_failure_outcome_policy),
        cmocka_unit_test_setup_teardown(test_commit_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admit_is_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_admissions_spend_exactly_the_balance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_admissions_keep_the_plan_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_spends_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_spends_two_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_daily_bonus_once_per_date, setup, teardown),
        cmocka_unit_test_setup_teardown(test_welcome_then_daily_run_grants_once, setup, teardown),
        cmocka_unit_test(test_bonus_change_rule),
        cmocka_unit_test_setup_teardown(test_daily_bonus_rereads_a_moved_balance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_daily_bonus_two_runners_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_daily_bonus_in_segments, setup, teardown),
    };
    return cmocka_run_group_tests_name("credits", tests, NULL, NULL);
}
