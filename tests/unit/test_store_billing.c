/*
 * test_store_billing.c - the billing operations of the SQLite backend
 * against store.h's contract: an event applies once (also from racing
 * threads), subscriptions change only from the version that was read, a
 * customer belongs to one user, plans and credits change in the same
 * transaction as the event, and a failure anywhere writes nothing.
 *
 * Every test works in its own temporary directory under /tmp, removed after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "store/sqlite/sqlite_store.h"
#include "store/store.h"
#include "testutil.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    kp_store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->path, sizeof f->path);
    kp_test_user(f->s, "usr_a", "a@example.com", "free");
    kp_test_user(f->s, "usr_b", "b@example.com", "free");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->s)
        f->s->ops->close(f->s);
    kp_test_rmrf(f->dir);
    free(f);
    return 0;
}

static kp_subscription sub_rec(const char *id, const char *user, const char *status, int64_t created, int64_t version)
{
    kp_subscription sub;
    memset(&sub, 0, sizeof sub);
    snprintf(sub.id, sizeof sub.id, "%s", id);
    snprintf(sub.user_id, sizeof sub.user_id, "%s", user);
    snprintf(sub.customer_id, sizeof sub.customer_id, "cus_1");
    snprintf(sub.status, sizeof sub.status, "%s", status);
    snprintf(sub.price_id, sizeof sub.price_id, "price_pro");
    snprintf(sub.plan_id, sizeof sub.plan_id, "pro");
    sub.current_period_end = 1800000000;
    sub.event_created = created;
    sub.version = version;
    return sub;
}

static kp_billing_customer customer_rec(const char *user, const char *customer, const char *sub)
{
    kp_billing_customer c;
    memset(&c, 0, sizeof c);
    snprintf(c.user_id, sizeof c.user_id, "%s", user);
    snprintf(c.customer_id, sizeof c.customer_id, "%s", customer);
    snprintf(c.subscription_id, sizeof c.subscription_id, "%s", sub);
    return c;
}

static kp_credit_change grant(const char *user, int64_t monthly, const char *key)
{
    kp_credit_change c;
    memset(&c, 0, sizeof c);
    c.user_id = user;
    c.delta_monthly = monthly;
    c.reason = "subscription";
    c.idem_key = key;
    c.expected_version = -1;
    return c;
}

static char *plan_of(fixture *f, const char *user)
{
    static char plan[KP_PLAN_ID_MAX];
    kp_user u;
    kp_err err;
    assert_int_equal(f->s->ops->user_get(f->s, user, &u, &err), KP_OK);
    snprintf(plan, sizeof plan, "%s", u.plan_id);
    return plan;
}

static int64_t monthly_of(fixture *f, const char *user)
{
    kp_balance b;
    kp_err err;
    assert_int_equal(f->s->ops->balance_get(f->s, user, &b, &err), KP_OK);
    return b.monthly;
}

/* ---- tests ------------------------------------------------------------- */

static void test_reads_of_missing_rows(void **state)
{
    fixture *f = *state;
    kp_billing_customer c;
    kp_subscription sub;
    kp_err err;
    assert_int_equal(f->s->ops->billing_customer_get(f->s, "usr_a", &c, &err), KP_ENOTFOUND);
    assert_int_equal(f->s->ops->billing_customer_find(f->s, "cus_x", &c, &err), KP_ENOTFOUND);
    assert_int_equal(f->s->ops->billing_customer_find(f->s, "", &c, &err), KP_ENOTFOUND);
    assert_int_equal(f->s->ops->subscription_get(f->s, "sub_x", &sub, &err), KP_ENOTFOUND);
}

static void test_event_applies_everything_once(void **state)
{
    fixture *f = *state;
    kp_subscription sub = sub_rec("sub_1", "usr_a", "active", 100, 0);
    kp_billing_customer cust = customer_rec("usr_a", "cus_1", "sub_1");
    kp_credit_change credit = grant("usr_a", 100, "invoice:in_1");
    kp_billing_write w = {.event_id = "evt_1",
                          .event_type = "invoice.paid",
                          .event_created = 100,
                          .subscription = &sub,
                          .customer = &cust,
                          .plan_user_id = "usr_a",
                          .plan_id = "pro",
                          .credit = &credit};
    kp_err err;
    int credited = -1;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, &credited, &err), KP_OK);
    assert_int_equal(credited, 1);
    assert_string_equal(plan_of(f, "usr_a"), "pro");
    assert_int_equal(monthly_of(f, "usr_a"), 100);

    kp_subscription got;
    assert_int_equal(f->s->ops->subscription_get(f->s, "sub_1", &got, &err), KP_OK);
    assert_string_equal(got.status, "active");
    assert_string_equal(got.user_id, "usr_a");
    assert_int_equal(got.version, 1);
    assert_int_equal(got.event_created, 100);
    assert_int_equal(got.current_period_end, 1800000000);
    kp_billing_customer c;
    assert_int_equal(f->s->ops->billing_customer_find(f->s, "cus_1", &c, &err), KP_OK);
    assert_string_equal(c.user_id, "usr_a");
    assert_string_equal(c.subscription_id, "sub_1");

    /* The same event again: nothing changes, not even with other contents. */
    sub.version = 1;
    snprintf(sub.status, sizeof sub.status, "canceled");
    credited = -1;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, &credited, &err), KP_EDUPLICATE);
    assert_int_equal(credited, 0);
    assert_int_equal(monthly_of(f, "usr_a"), 100);
    assert_int_equal(f->s->ops->subscription_get(f->s, "sub_1", &got, &err), KP_OK);
    assert_string_equal(got.status, "active");
    assert_int_equal(got.version, 1);
}

static void test_same_invoice_in_two_events_credits_once(void **state)
{
    fixture *f = *state;
    kp_credit_change credit = grant("usr_a", 100, "invoice:in_1");
    kp_billing_write w = {.event_id = "evt_1", .event_type = "invoice.paid", .event_created = 1, .credit = &credit};
    kp_err err;
    int credited = 0;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, &credited, &err), KP_OK);
    assert_int_equal(credited, 1);
    w.event_id = "evt_2";
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, &credited, &err), KP_OK);
    assert_int_equal(credited, 0);
    assert_int_equal(monthly_of(f, "usr_a"), 100);
    /* the second event is recorded all the same */
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM stripe_events"), 2);
}

static void test_subscription_cas(void **state)
{
    fixture *f = *state;
    kp_subscription sub = sub_rec("sub_1", "", "incomplete", 10, 0);
    kp_billing_write w = {.event_id = "evt_1", .event_type = "customer.subscription.created", .subscription = &sub};
    kp_err err;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_OK);

    /* A second insert (version 0) of the same subscription conflicts. */
    w.event_id = "evt_2";
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_ECONFLICT);
    /* A stale version conflicts; the event id is not kept, so a retry can apply it. */
    sub.version = 7;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_ECONFLICT);
    sub.version = 1;
    snprintf(sub.status, sizeof sub.status, "active");
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_OK);
    kp_subscription got;
    assert_int_equal(f->s->ops->subscription_get(f->s, "sub_1", &got, &err), KP_OK);
    assert_int_equal(got.version, 2);
    assert_string_equal(got.status, "active");
}

static void test_failure_writes_nothing(void **state)
{
    fixture *f = *state;
    kp_subscription sub = sub_rec("sub_1", "usr_a", "active", 10, 0);
    kp_credit_change credit = grant("usr_a", 100, "invoice:in_1");
    kp_billing_write w = {.event_id = "evt_1",
                          .event_type = "customer.subscription.created",
                          .subscription = &sub,
                          .plan_user_id = "usr_a",
                          .plan_id = "no_such_plan",
                          .credit = &credit};
    kp_err err;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_ENOTFOUND);
    kp_subscription got;
    assert_int_equal(f->s->ops->subscription_get(f->s, "sub_1", &got, &err), KP_ENOTFOUND);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM stripe_events"), 0);
    assert_int_equal(monthly_of(f, "usr_a"), 0);
    assert_string_equal(plan_of(f, "usr_a"), "free");

    /* an unknown user is refused the same way */
    w.plan_user_id = "usr_nobody";
    w.plan_id = "pro";
    w.credit = NULL;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_ENOTFOUND);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM subscriptions"), 0);
}

static void test_customer_belongs_to_one_user(void **state)
{
    fixture *f = *state;
    kp_billing_customer a = customer_rec("usr_a", "cus_1", "");
    kp_billing_write w = {.event_id = "evt_1", .event_type = "checkout.session.completed", .customer = &a};
    kp_err err;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_OK);
    kp_billing_customer b = customer_rec("usr_b", "cus_1", "");
    w.event_id = "evt_2";
    w.customer = &b;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_ECONFLICT);
    kp_billing_customer got;
    assert_int_equal(f->s->ops->billing_customer_get(f->s, "usr_b", &got, &err), KP_ENOTFOUND);
    /* A user's row is replaced by their next link. */
    a = customer_rec("usr_a", "cus_1", "sub_9");
    w.event_id = "evt_3";
    w.customer = &a;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_OK);
    assert_int_equal(f->s->ops->billing_customer_get(f->s, "usr_a", &got, &err), KP_OK);
    assert_string_equal(got.subscription_id, "sub_9");
    /* A user not in the database cannot be linked. */
    kp_billing_customer ghost = customer_rec("usr_ghost", "cus_2", "");
    w.event_id = "evt_4";
    w.customer = &ghost;
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_ENOTFOUND);
}

static void test_invalid_writes_refused(void **state)
{
    fixture *f = *state;
    kp_err err;
    kp_billing_write w = {.event_id = "", .event_type = "x"};
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_EINVAL);
    w.event_id = "evt_1";
    w.plan_user_id = "usr_a"; /* without plan_id */
    assert_int_equal(f->s->ops->billing_apply(f->s, &w, NULL, &err), KP_EINVAL);
    assert_int_equal(f->s->ops->billing_apply(f->s, NULL, NULL, &err), KP_EINVAL);
}

typedef struct racer {
    const char *path;
    int result;
} racer;

static void *race_apply(void *arg)
{
    racer *r = arg;
    kp_store *s = NULL;
    kp_err err;
    if (kp_sqlite_open(r->path, &s, &err) != KP_OK) {
        r->result = -1;
        return NULL;
    }
    kp_credit_change credit = grant("usr_a", 100, "invoice:in_1");
    kp_billing_write w = {.event_id = "evt_same", .event_type = "invoice.paid", .credit = &credit};
    r->result = s->ops->billing_apply(s, &w, NULL, &err);
    s->ops->close(s);
    return NULL;
}

static void test_racing_copies_apply_once(void **state)
{
    fixture *f = *state;
    enum { N = 5 };
    pthread_t t[N];
    racer r[N];
    for (int i = 0; i < N; i++) {
        r[i] = (racer){f->path, -2};
        assert_int_equal(pthread_create(&t[i], NULL, race_apply, &r[i]), 0);
    }
    int ok = 0, dup = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ok += r[i].result == KP_OK;
        dup += r[i].result == KP_EDUPLICATE;
    }
    assert_int_equal(ok, 1);
    assert_int_equal(dup, N - 1);
    assert_int_equal(monthly_of(f, "usr_a"), 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_of_missing_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_applies_everything_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_invoice_in_two_events_credits_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscription_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_customer_belongs_to_one_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_writes_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_racing_copies_apply_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
