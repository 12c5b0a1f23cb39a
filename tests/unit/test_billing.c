/*
 * test_billing.c - what Stripe events do (src/domain/billing.c), on a real
 * migrated SQLite database: linking users, the plan of the current
 * subscription, ordering (only forward; canceled stays canceled), monthly
 * credits once per invoice, unknown prices, both field layouts, and the same
 * event (or events on one subscription) applied from several threads at once.
 *
 * Events are JSON bodies shaped like Stripe's, read by kp_stripe_event_parse.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/buf.h"
#include "domain/billing.h"
#include "domain/stripe_event.h"
#include "store/sqlite/sqlite_store.h"
#include "testutil.h"

typedef struct fixture {
    char dir[256];
    char db[512];
    kp_store *s;
} fixture;

static void set_price(kp_store *s, const char *plan_id, const char *price)
{
    kp_plan p;
    kp_err err = {0};
    int created = 0;
    assert_int_equal(s->ops->plan_get(s, plan_id, &p, &err), KP_OK);
    snprintf(p.stripe_price_id, sizeof p.stripe_price_id, "%s", price);
    assert_int_equal(s->ops->plan_put(s, &p, &created, &err), KP_OK);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->db, sizeof f->db);
    kp_test_user(f->s, "usr_a", "a@example.com", "free");
    kp_test_user(f->s, "usr_b", "b@example.com", "free");
    set_price(f->s, "pro", "price_pro");
    set_price(f->s, "business", "price_biz");
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

/* ---- events, shaped like Stripe's ---- */

static void parse(const kp_buf *body, kp_stripe_event *ev)
{
    kp_err err = {0};
    if (kp_stripe_event_parse(body->data, body->len, ev, &err) != KP_OK)
        fail_msg("test event refused: %s", err.msg);
}

static void metadata(kp_buf *b, const char *user)
{
    if (user)
        kp_buf_printf(b, "\"metadata\":{\"koumpa_user_id\":\"%s\"},", user);
    else
        kp_buf_puts(b, "\"metadata\":{},");
}

/* customer.subscription.{kind}: basil layout (period end on the item), or legacy. user: metadata or NULL. */
static kp_stripe_event sub_event(const char *evt, const char *kind, int64_t created, const char *sub,
                                 const char *status, const char *price, const char *user, int legacy)
{
    kp_buf b = KP_BUF_INIT;
    kp_stripe_event ev;
    kp_buf_printf(&b,
                  "{\"id\":\"%s\",\"object\":\"event\",\"created\":%lld,\"type\":\"customer.subscription.%s\","
                  "\"data\":{\"object\":{\"id\":\"%s\",\"object\":\"subscription\",\"customer\":\"cus_%s\","
                  "\"status\":\"%s\",\"cancel_at_period_end\":false,",
                  evt, (long long)created, kind, sub, sub + 4, status);
    metadata(&b, user);
    if (legacy)
        kp_buf_printf(&b, "\"current_period_end\":%lld,\"items\":{\"data\":[{\"price\":{\"id\":\"%s\"}}]}}}}",
                      (long long)created + 2592000, price);
    else
        kp_buf_printf(&b, "\"items\":{\"data\":[{\"current_period_end\":%lld,\"price\":{\"id\":\"%s\"}}]}}}}",
                      (long long)created + 2592000, price);
    parse(&b, &ev);
    kp_buf_free(&b);
    return ev;
}

/* invoice.{kind} (paid, payment_failed) of sub: basil layout, or legacy. */
static kp_stripe_event invoice_event(const char *evt, const char *kind, int64_t created, const char *invoice,
                                     const char *sub, const char *price, const char *user, int legacy)
{
    kp_buf b = KP_BUF_INIT;
    kp_stripe_event ev;
    kp_buf_printf(&b,
                  "{\"id\":\"%s\",\"object\":\"event\",\"created\":%lld,\"type\":\"invoice.%s\",\"data\":{\"object\":"
                  "{\"id\":\"%s\",\"object\":\"invoice\",\"customer\":\"cus_%s\",",
                  evt, (long long)created, kind, invoice, sub + 4);
    if (legacy) {
        kp_buf_printf(&b, "\"subscription\":\"%s\",\"subscription_details\":{", sub);
        metadata(&b, user);
        kp_buf_printf(&b, "\"x\":0},\"lines\":{\"data\":[{\"price\":{\"id\":\"%s\"}}]}}}}", price);
    } else {
        kp_buf_printf(&b, "\"parent\":{\"type\":\"subscription_details\",\"subscription_details\":{");
        metadata(&b, user);
        kp_buf_printf(&b,
                      "\"subscription\":\"%s\"}},\"lines\":{\"data\":[{\"pricing\":{\"type\":\"price_details\","
                      "\"price_details\":{\"price\":\"%s\"}}}]}}}}",
                      sub, price);
    }
    parse(&b, &ev);
    kp_buf_free(&b);
    return ev;
}

/* checkout.session.completed for sub, client_reference_id ref (NULL: none), metadata user (NULL: none). */
static kp_stripe_event checkout_event(const char *evt, int64_t created, const char *sub, const char *ref,
                                      const char *user)
{
    kp_buf b = KP_BUF_INIT;
    kp_stripe_event ev;
    kp_buf_printf(&b,
                  "{\"id\":\"%s\",\"object\":\"event\",\"created\":%lld,\"type\":\"checkout.session.completed\","
                  "\"data\":{\"object\":{\"id\":\"cs_%s\",\"object\":\"checkout.session\",\"mode\":\"subscription\","
                  "\"customer\":\"cus_%s\",\"subscription\":\"%s\",",
                  evt, (long long)created, evt, sub + 4, sub);
    if (ref)
        kp_buf_printf(&b, "\"client_reference_id\":\"%s\",", ref);
    metadata(&b, user);
    kp_buf_puts(&b, "\"status\":\"complete\"}}}");
    parse(&b, &ev);
    kp_buf_free(&b);
    return ev;
}

/* ---- checks ---- */

static kp_billing_result handle(kp_store *s, const kp_stripe_event *ev, kp_billing_outcome want)
{
    kp_billing_result r;
    kp_err err = {0};
    kp_status st = kp_billing_handle(s, ev, &r, &err);
    if (st != KP_OK)
        fail_msg("%s: %s", ev->id, err.msg);
    if (r.outcome != want)
        fail_msg("%s: outcome %s (%s), wanted %s", ev->id, kp_billing_outcome_name(r.outcome), r.note,
                 kp_billing_outcome_name(want));
    return r;
}

static void assert_plan(kp_store *s, const char *user, const char *plan)
{
    kp_user u;
    kp_err err = {0};
    assert_int_equal(s->ops->user_get(s, user, &u, &err), KP_OK);
    assert_string_equal(u.plan_id, plan);
}

/* The monthly bucket, checked against the ledger's sum. */
static void assert_monthly(kp_store *s, const char *user, int64_t monthly)
{
    kp_balance b, sum;
    kp_err err = {0};
    assert_int_equal(s->ops->balance_get(s, user, &b, &err), KP_OK);
    assert_int_equal(s->ops->ledger_sum(s, user, &sum, &err), KP_OK);
    assert_int_equal(b.monthly, monthly);
    assert_int_equal(sum.monthly, b.monthly);
    assert_int_equal(sum.daily, b.daily);
}

static kp_subscription sub_row(kp_store *s, const char *id)
{
    kp_subscription sub;
    kp_err err = {0};
    assert_int_equal(s->ops->subscription_get(s, id, &sub, &err), KP_OK);
    return sub;
}

static kp_billing_customer link_of(kp_store *s, const char *user)
{
    kp_billing_customer c;
    kp_err err = {0};
    assert_int_equal(s->ops->billing_customer_get(s, user, &c, &err), KP_OK);
    return c;
}

/* ---- linking ---- */

static void test_checkout_then_subscription(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = checkout_event("evt_c1", 100, "sub_1", "usr_a", NULL);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    kp_billing_customer c = link_of(f->s, "usr_a");
    assert_string_equal(c.customer_id, "cus_1");
    assert_string_equal(c.subscription_id, "sub_1");
    assert_plan(f->s, "usr_a", "free"); /* the subscription's status is not known yet */

    ev = sub_event("evt_s1", "created", 101, "sub_1", "active", "price_pro", NULL, 0);
    kp_billing_result r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_string_equal(r.user_id, "usr_a");
    assert_string_equal(r.plan_id, "pro");
    assert_plan(f->s, "usr_a", "pro");
    kp_subscription sub = sub_row(f->s, "sub_1");
    assert_string_equal(sub.user_id, "usr_a");
    assert_string_equal(sub.status, "active");
    assert_string_equal(sub.plan_id, "pro");
    assert_int_equal(sub.event_created, 101);
    assert_int_equal(sub.current_period_end, 101 + 2592000); /* basil: from the item */
}

/* A subscription event for no known user is stored, then applied when the checkout links it. */
static void test_subscription_before_checkout(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = sub_event("evt_s1", "created", 100, "sub_1", "active", "price_pro", NULL, 0);
    kp_billing_result r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_string_equal(r.user_id, "");
    assert_string_equal(sub_row(f->s, "sub_1").user_id, "");
    assert_plan(f->s, "usr_a", "free");

    ev = checkout_event("evt_c1", 100, "sub_1", "usr_a", NULL);
    r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_string_equal(r.plan_id, "pro");
    assert_plan(f->s, "usr_a", "pro");
    assert_string_equal(sub_row(f->s, "sub_1").user_id, "usr_a");
    assert_int_equal(sub_row(f->s, "sub_1").event_created, 100); /* the checkout does not move its state */
}

/* metadata.koumpa_user_id alone links the user (no checkout needed first); a user id that names nobody is skipped. */
static void test_metadata_links(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = sub_event("evt_s1", "created", 100, "sub_1", "active", "price_biz", "usr_b", 1);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_plan(f->s, "usr_b", "business");
    assert_string_equal(link_of(f->s, "usr_b").customer_id, "cus_1");
    assert_int_equal(sub_row(f->s, "sub_1").current_period_end, 100 + 2592000); /* legacy: on the subscription */

    ev = sub_event("evt_s2", "created", 100, "sub_2", "active", "price_biz", "usr_nobody", 0);
    kp_billing_result r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_string_equal(r.user_id, "");
    assert_string_equal(sub_row(f->s, "sub_2").user_id, "");
}

/* A later invoice finds the user through the customer the checkout linked. */
static void test_user_from_customer(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = checkout_event("evt_c1", 100, "sub_1", NULL, "usr_a");
    handle(f->s, &ev, KP_BILLING_APPLIED);
    kp_test_sql_exec(f->db, "DELETE FROM subscriptions"); /* only the customer's link is left to find the user */
    ev = invoice_event("evt_i1", "paid", 101, "in_1", "sub_1", "price_pro", NULL, 1);
    kp_billing_result r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_string_equal(r.user_id, "usr_a");
    assert_int_equal(r.credited, 100);
    assert_monthly(f->s, "usr_a", 100);
}

static void test_checkout_for_nobody(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = checkout_event("evt_c1", 100, "sub_1", "usr_nobody", NULL);
    handle(f->s, &ev, KP_BILLING_NO_USER);
    handle(f->s, &ev, KP_BILLING_DUPLICATE); /* recorded */
}

/* A customer already linked to one user is never linked to another (the store would refuse it for ever). */
static void test_customer_of_another_user(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = checkout_event("evt_1", 100, "sub_1", "usr_a", NULL);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    ev = sub_event("evt_2", "created", 101, "sub_1", "active", "price_pro", "usr_b", 0); /* customer cus_1 */
    kp_billing_result r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_string_equal(r.user_id, "usr_b");
    assert_string_equal(link_of(f->s, "usr_a").customer_id, "cus_1");
    assert_string_equal(link_of(f->s, "usr_b").customer_id, "");
    assert_string_equal(sub_row(f->s, "sub_1").user_id, "usr_a"); /* a row's user, once set, stays */
}

/* ---- ordering ---- */

static void test_newer_update_before_older_create(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = sub_event("evt_u", "updated", 200, "sub_1", "active", "price_biz", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_plan(f->s, "usr_a", "business");
    ev = sub_event("evt_c", "created", 100, "sub_1", "active", "price_pro", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_STALE);
    assert_plan(f->s, "usr_a", "business");
    kp_subscription sub = sub_row(f->s, "sub_1");
    assert_string_equal(sub.price_id, "price_biz");
    assert_int_equal(sub.event_created, 200);
    handle(f->s, &ev, KP_BILLING_DUPLICATE); /* a stale event is recorded too */
}

static void test_deleted_stays_deleted(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = sub_event("evt_1", "created", 100, "sub_1", "active", "price_pro", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    ev = invoice_event("evt_2", "paid", 100, "in_1", "sub_1", "price_pro", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    ev = sub_event("evt_3", "deleted", 200, "sub_1", "canceled", "price_pro", "usr_a", 0);
    kp_billing_result r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_string_equal(r.plan_id, "free");
    assert_plan(f->s, "usr_a", "free");
    assert_monthly(f->s, "usr_a", 100); /* granted credits are kept */
    /* a late update, even one stamped after the deletion, does not bring it back */
    ev = sub_event("evt_4", "updated", 300, "sub_1", "active", "price_biz", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_STALE);
    ev = sub_event("evt_5", "updated", 150, "sub_1", "active", "price_biz", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_STALE);
    assert_plan(f->s, "usr_a", "free");
    assert_string_equal(sub_row(f->s, "sub_1").status, "canceled");
}

/* ---- the plan rule ---- */

static void test_plan_by_status(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *status;
        const char *plan;
    } steps[] = {
        {"incomplete", "free"},        /* no change yet */
        {"trialing", "pro"},           /* its price's plan */
        {"active", "pro"},             /* */
        {"past_due", "pro"},           /* kept while Stripe retries */
        {"unpaid", "free"},            /* Free at once */
        {"active", "pro"},             /* paid again */
        {"paused", "free"},            /* */
        {"active", "pro"},             /* */
        {"incomplete", "pro"},         /* no change */
        {"canceled", "free"},          /* */
        {"incomplete_expired", "free"} /* terminal too */
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char evt[32];
        snprintf(evt, sizeof evt, "evt_%zu", i);
        kp_stripe_event ev =
            sub_event(evt, "updated", 100 + (int64_t)i, "sub_1", steps[i].status, "price_pro", "usr_a", 0);
        handle(f->s, &ev, KP_BILLING_APPLIED);
        assert_plan(f->s, "usr_a", steps[i].plan);
        assert_string_equal(sub_row(f->s, "sub_1").status, steps[i].status);
    }
}

static void test_unknown_price(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = sub_event("evt_1", "created", 100, "sub_1", "active", "price_pro", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    ev = sub_event("evt_2", "updated", 200, "sub_1", "active", "price_nobody_sells", "usr_a", 0);
    kp_billing_result r = handle(f->s, &ev, KP_BILLING_UNKNOWN_PRICE);
    assert_string_equal(r.plan_id, "");
    assert_plan(f->s, "usr_a", "pro"); /* unchanged */
    assert_string_equal(sub_row(f->s, "sub_1").plan_id, "");
    ev = invoice_event("evt_3", "paid", 200, "in_1", "sub_1", "price_nobody_sells", "usr_a", 0);
    r = handle(f->s, &ev, KP_BILLING_UNKNOWN_PRICE);
    assert_int_equal(r.credited, 0);
    assert_monthly(f->s, "usr_a", 0);
}

/* Only the current subscription moves the plan; a second live one takes over once the first has ended. */
static void test_current_subscription(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = sub_event("evt_1", "created", 100, "sub_1", "active", "price_pro", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    ev = sub_event("evt_2", "created", 110, "sub_2", "active", "price_biz", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_plan(f->s, "usr_a", "pro");
    assert_string_equal(link_of(f->s, "usr_a").subscription_id, "sub_1");
    ev = sub_event("evt_3", "deleted", 120, "sub_1", "canceled", "price_pro", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_plan(f->s, "usr_a", "free");
    ev = sub_event("evt_4", "updated", 130, "sub_2", "active", "price_biz", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_plan(f->s, "usr_a", "business");
    assert_string_equal(link_of(f->s, "usr_a").subscription_id, "sub_2");
    /* a checkout makes its subscription current at once */
    ev = checkout_event("evt_5", 140, "sub_3", "usr_a", NULL);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_string_equal(link_of(f->s, "usr_a").subscription_id, "sub_3");
    ev = sub_event("evt_6", "created", 141, "sub_3", "active", "price_pro", NULL, 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_plan(f->s, "usr_a", "pro");
}

/* ---- invoices ---- */

static void test_invoice_once(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = invoice_event("evt_1", "paid", 100, "in_1", "sub_1", "price_pro", "usr_a", 0);
    kp_billing_result r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_int_equal(r.credited, 100);
    assert_monthly(f->s, "usr_a", 100);
    r = handle(f->s, &ev, KP_BILLING_DUPLICATE); /* the same event again */
    assert_int_equal(r.credited, 0);
    /* the same invoice in another event (basil and legacy alike) */
    ev = invoice_event("evt_2", "paid", 101, "in_1", "sub_1", "price_pro", "usr_a", 1);
    r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_int_equal(r.credited, 0);
    assert_monthly(f->s, "usr_a", 100);
    /* the next period's invoice */
    ev = invoice_event("evt_3", "paid", 2600000, "in_2", "sub_1", "price_pro", "usr_a", 1);
    r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_int_equal(r.credited, 100);
    assert_monthly(f->s, "usr_a", 200);
}

/* An invoice without a price of its own is granted by its subscription's. */
static void test_invoice_price_from_subscription(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = sub_event("evt_1", "created", 100, "sub_1", "active", "price_biz", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    ev = invoice_event("evt_2", "paid", 100, "in_1", "sub_1", "", NULL, 0);
    kp_billing_result r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_int_equal(r.credited, 300);
}

static void test_payment_failed_then_paid(void **state)
{
    fixture *f = *state;
    kp_stripe_event ev = sub_event("evt_1", "created", 100, "sub_1", "active", "price_biz", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    ev = invoice_event("evt_2", "payment_failed", 200, "in_1", "sub_1", "price_biz", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_string_equal(sub_row(f->s, "sub_1").status, "past_due");
    assert_plan(f->s, "usr_a", "business");
    ev = invoice_event("evt_3", "paid", 300, "in_1", "sub_1", "price_biz", "usr_a", 1);
    kp_billing_result r = handle(f->s, &ev, KP_BILLING_APPLIED);
    assert_int_equal(r.credited, 300);
    assert_string_equal(sub_row(f->s, "sub_1").status, "active");
    assert_plan(f->s, "usr_a", "business");
    assert_monthly(f->s, "usr_a", 300);
    /* a failure older than what the subscription shows changes nothing */
    ev = invoice_event("evt_4", "payment_failed", 250, "in_1", "sub_1", "price_biz", "usr_a", 0);
    handle(f->s, &ev, KP_BILLING_STALE);
    assert_string_equal(sub_row(f->s, "sub_1").status, "active");
}

/* A paid invoice whose user cannot be found yet stores nothing: Stripe delivers it again later. */
static void test_invoice_not_linked_yet(void **state)
{
    fixture *f = *state;
    kp_stripe_event inv = invoice_event("evt_1", "paid", 100, "in_1", "sub_1", "price_pro", NULL, 1);
    handle(f->s, &inv, KP_BILLING_NOT_LINKED);
    handle(f->s, &inv, KP_BILLING_NOT_LINKED); /* not recorded */
    kp_stripe_event ev = checkout_event("evt_2", 100, "sub_1", "usr_a", NULL);
    handle(f->s, &ev, KP_BILLING_APPLIED);
    kp_billing_result r = handle(f->s, &inv, KP_BILLING_APPLIED);
    assert_int_equal(r.credited, 100);
    assert_monthly(f->s, "usr_a", 100);
}

static void test_unhandled(void **state)
{
    fixture *f = *state;
    kp_buf b = KP_BUF_INIT;
    kp_stripe_event ev;
    kp_buf_puts(&b, "{\"id\":\"evt_x\",\"created\":1,\"type\":\"customer.created\",\"data\":{\"object\":"
                    "{\"id\":\"cus_1\"}}}");
    parse(&b, &ev);
    handle(f->s, &ev, KP_BILLING_IGNORED);
    kp_buf_reset(&b);
    kp_buf_puts(&b, "{\"id\":\"evt_y\",\"created\":1,\"type\":\"checkout.session.completed\",\"data\":{\"object\":"
                    "{\"id\":\"cs_1\",\"mode\":\"payment\",\"client_reference_id\":\"usr_a\"}}}");
    parse(&b, &ev);
    handle(f->s, &ev, KP_BILLING_IGNORED);
    kp_buf_free(&b);
    assert_int_equal(kp_test_sql_int(f->db, "SELECT count(*) FROM stripe_events"), 0);
}

/* ---- concurrency ---- */

#define THREADS 5

typedef struct worker {
    const char *db;
    kp_stripe_event ev;
    kp_billing_result r;
    kp_status st;
} worker;

static void *run_worker(void *arg)
{
    worker *w = arg;
    kp_store *s = NULL;
    kp_err err = {0};
    w->st = kp_sqlite_open(w->db, &s, &err);
    if (w->st == KP_OK) {
        w->st = kp_billing_handle(s, &w->ev, &w->r, &err);
        s->ops->close(s);
    }
    return NULL;
}

static void run_workers(worker *w)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, run_worker, &w[i]), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
}

/* The same event five times at once: exactly one applies. */
static void test_same_event_concurrently(void **state)
{
    fixture *f = *state;
    worker w[THREADS];
    int applied = 0;
    kp_stripe_event ev = invoice_event("evt_1", "paid", 100, "in_1", "sub_1", "price_pro", "usr_a", 0);
    for (int i = 0; i < THREADS; i++)
        w[i] = (worker){.db = f->db, .ev = ev};
    run_workers(w);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(w[i].st, KP_OK);
        applied += w[i].r.outcome == KP_BILLING_APPLIED;
        if (w[i].r.outcome != KP_BILLING_APPLIED)
            assert_int_equal(w[i].r.outcome, KP_BILLING_DUPLICATE);
    }
    assert_int_equal(applied, 1);
    assert_monthly(f->s, "usr_a", 100);
}

/* Five different events on one subscription at once: each applies (conflicts are decided again), newest wins. */
static void test_events_on_one_subscription_concurrently(void **state)
{
    fixture *f = *state;
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        char evt[16];
        snprintf(evt, sizeof evt, "evt_%d", i);
        w[i] = (worker){.db = f->db,
                        .ev = sub_event(evt, i == 0 ? "created" : "updated", 100 + i, "sub_1", "active",
                                        i % 2 ? "price_biz" : "price_pro", "usr_a", 0)};
    }
    run_workers(w);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(w[i].st, KP_OK);
        assert_true(w[i].r.outcome == KP_BILLING_APPLIED || w[i].r.outcome == KP_BILLING_STALE);
    }
    kp_subscription sub = sub_row(f->s, "sub_1");
    assert_int_equal(sub.event_created, 104);
    assert_string_equal(sub.price_id, "price_pro");
    assert_plan(f->s, "usr_a", "pro");
    assert_int_equal(kp_test_sql_int(f->db, "SELECT count(*) FROM stripe_events"), THREADS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_checkout_then_subscription, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscription_before_checkout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metadata_links, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_from_customer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkout_for_nobody, setup, teardown),
        cmocka_unit_test_setup_teardown(test_customer_of_another_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_update_before_older_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_stays_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_by_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_price, setup, teardown),
        cmocka_unit_test_setup_teardown(test_current_subscription, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invoice_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invoice_price_from_subscription, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payment_failed_then_paid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invoice_not_linked_yet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unhandled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_event_concurrently, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_on_one_subscription_concurrently, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
