/*
 * billing.c - see billing.h. Each attempt reads the state an event needs
 * (read_state: plans, the subscription's row, the user, their link and their
 * current subscription), decides what to write (decide_*: pure functions of
 * the event and that state), and hands the decision to the store in one
 * billing_apply. A conflict on the subscription's version means another event
 * wrote it meanwhile: read again, decide again.
 */
#include "domain/billing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one attempt read. */
typedef struct state {
    kp_plan *plans;
    size_t nplans;
    int have_sub;
    kp_subscription sub; /* the event's subscription as stored */
    int have_owner;
    kp_billing_customer owner; /* the link that holds the event's customer */
    int have_user;
    kp_user user; /* who the event is about */
    int have_link;
    kp_billing_customer link; /* that user's link */
    int have_current;
    kp_subscription current; /* that user's current subscription, when it is another one */
} state;

/* What one attempt decided to write. */
typedef struct decision {
    int write_sub;
    kp_subscription sub;
    int write_link;
    kp_billing_customer link;
    const char *plan_id; /* the user's new plan, or NULL */
    int grant;
    kp_credit_change credit;
    char idem_key[KP_IDEM_MAX];
    kp_billing_result result;
} decision;

/* ---- Stripe's subscription statuses ---- */

static int status_in(const char *status, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(status, *set) == 0)
            return 1;
    return 0;
}

/* Paid for: the plan of its price. */
static int status_live(const char *status)
{
    static const char *const set[] = {"active", "trialing", "past_due", NULL};
    return status_in(status, set);
}

/* Over, or not paid: the Free plan. */
static int status_ended(const char *status)
{
    static const char *const set[] = {"canceled", "unpaid", "incomplete_expired", "paused", NULL};
    return status_in(status, set);
}

/* Never leaves this status in Stripe. */
static int status_terminal(const char *status)
{
    static const char *const set[] = {"canceled", "incomplete_expired", NULL};
    return status_in(status, set);
}

/* ---- reading ---- */

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src);
}

static void state_free(state *st)
{
    free(st->plans);
    memset(st, 0, sizeof *st);
}

/* Reads one optional record: *have = 1 on KP_OK, 0 on KP_ENOTFOUND; other errors fail. */
static kp_status optional(kp_status rc, int *have, kp_err *err)
{
    *have = rc == KP_OK;
    if (rc == KP_ENOTFOUND) {
        kp_err_clear(err);
        return KP_OK;
    }
    return rc;
}

/* Takes candidate as the event's user when it names one. */
static kp_status try_user(kp_store *s, const char *candidate, state *st, kp_err *err)
{
    if (st->have_user || !candidate || !*candidate)
        return KP_OK;
    return optional(s->ops->user_get(s, candidate, &st->user, err), &st->have_user, err);
}

/* The user, in order: metadata, the subscription's row, the customer's link, client_reference_id. */
static kp_status resolve_user(kp_store *s, const kp_stripe_event *ev, state *st, kp_err *err)
{
    kp_status rc = try_user(s, ev->metadata_user_id, st, err);
    if (rc == KP_OK && st->have_sub)
        rc = try_user(s, st->sub.user_id, st, err);
    if (rc == KP_OK && st->have_owner)
        rc = try_user(s, st->owner.user_id, st, err);
    if (rc == KP_OK && ev->kind == KP_STRIPE_EV_CHECKOUT_COMPLETED)
        rc = try_user(s, ev->client_reference_id, st, err);
    return rc;
}

static kp_status read_link(kp_store *s, const kp_stripe_event *ev, state *st, kp_err *err)
{
    kp_status rc = optional(s->ops->billing_customer_get(s, st->user.id, &st->link, err), &st->have_link, err);
    const char *current = st->have_link ? st->link.subscription_id : "";
    if (rc == KP_OK && *current && strcmp(current, ev->subscription_id) != 0)
        rc = optional(s->ops->subscription_get(s, current, &st->current, err), &st->have_current, err);
    return rc;
}

static kp_status read_state(kp_store *s, const kp_stripe_event *ev, state *st, kp_err *err)
{
    memset(st, 0, sizeof *st);
    kp_status rc = s->ops->plan_list(s, 0, &st->plans, &st->nplans, err);
    if (rc == KP_OK && *ev->subscription_id)
        rc = optional(s->ops->subscription_get(s, ev->subscription_id, &st->sub, err), &st->have_sub, err);
    if (rc == KP_OK && *ev->customer_id)
        rc = optional(s->ops->billing_customer_find(s, ev->customer_id, &st->owner, err), &st->have_owner, err);
    if (rc == KP_OK)
        rc = resolve_user(s, ev, st, err);
    if (rc == KP_OK && st->have_user)
        rc = read_link(s, ev, st, err);
    return rc;
}

/* ---- deciding ---- */

static const kp_plan *plan_for_price(const state *st, const char *price_id)
{
    for (size_t i = 0; *price_id && i < st->nplans; i++)
        if (strcmp(st->plans[i].stripe_price_id, price_id) == 0)
            return &st->plans[i];
    return NULL;
}

static void note(decision *d, kp_billing_outcome outcome, const char *why)
{
    d->result.outcome = outcome;
    d->result.note = why;
}

/* Whether sub takes over as the user's current subscription (see billing.h). */
static int becomes_current(const state *st, const kp_subscription *sub)
{
    const char *current = st->have_link ? st->link.subscription_id : "";
    if (!*current)
        return status_live(sub->status) || strcmp(sub->status, "incomplete") == 0 || !*sub->status;
    return st->have_current && status_ended(st->current.status) && status_live(sub->status);
}

/* The plan sub gives its user: a plan id, or NULL for no change (also for a price no plan has). */
static const char *target_plan(const state *st, const kp_subscription *sub)
{
    if (status_ended(sub->status))
        return KP_BILLING_FREE_PLAN;
    if (!status_live(sub->status))
        return NULL;
    const kp_plan *p = plan_for_price(st, sub->price_id);
    return p ? p->id : NULL;
}

/* The user's link with customer in it, unless that customer is another user's. */
static void link_customer(const state *st, const char *customer_id, decision *d)
{
    if (!*customer_id || strcmp(d->link.customer_id, customer_id) == 0)
        return;
    if (st->have_owner && strcmp(st->owner.user_id, st->user.id) != 0) {
        d->result.note = "the customer is linked to another user: link unchanged";
        return;
    }
    copy_str(d->link.customer_id, sizeof d->link.customer_id, customer_id);
    d->write_link = 1;
}

/* With d->sub decided: the user's link (customer, current subscription) and plan. force: d->sub is current now. */
static void link_and_plan(const state *st, decision *d, int force)
{
    if (!st->have_user)
        return;
    if (st->have_link)
        d->link = st->link;
    else
        copy_str(d->link.user_id, sizeof d->link.user_id, st->user.id);
    if (!*d->link.customer_id || force)
        link_customer(st, d->sub.customer_id, d);
    int current = strcmp(d->link.subscription_id, d->sub.id) == 0;
    if (!current && (force || becomes_current(st, &d->sub))) {
        copy_str(d->link.subscription_id, sizeof d->link.subscription_id, d->sub.id);
        d->write_link = current = 1;
    }
    const char *plan = current ? target_plan(st, &d->sub) : NULL;
    if (plan && strcmp(plan, st->user.plan_id) != 0)
        d->plan_id = plan;
}

/* The subscription's row as the event describes it, on top of the stored one. */
static void take_subscription(const kp_stripe_event *ev, const state *st, decision *d)
{
    const kp_plan *p = plan_for_price(st, ev->price_id);
    if (st->have_sub)
        d->sub = st->sub;
    copy_str(d->sub.id, sizeof d->sub.id, ev->subscription_id);
    if (*ev->customer_id)
        copy_str(d->sub.customer_id, sizeof d->sub.customer_id, ev->customer_id);
    if (!*d->sub.user_id && st->have_user)
        copy_str(d->sub.user_id, sizeof d->sub.user_id, st->user.id);
    copy_str(d->sub.status, sizeof d->sub.status, ev->status);
    copy_str(d->sub.price_id, sizeof d->sub.price_id, ev->price_id);
    copy_str(d->sub.plan_id, sizeof d->sub.plan_id, p ? p->id : "");
    d->sub.current_period_end = ev->current_period_end;
    d->sub.cancel_at_period_end = ev->cancel_at_period_end;
    d->sub.event_created = ev->created;
    d->write_sub = 1;
}

static void decide_subscription(const kp_stripe_event *ev, const state *st, decision *d)
{
    if (!*ev->status) {
        note(d, KP_BILLING_IGNORED, "a subscription without a status");
        return;
    }
    if (st->have_sub && status_terminal(st->sub.status) && !status_terminal(ev->status)) {
        note(d, KP_BILLING_STALE, "the subscription has ended: it stays so");
        return;
    }
    if (st->have_sub && ev->created < st->sub.event_created) {
        note(d, KP_BILLING_STALE, "older than the subscription's last applied event");
        return;
    }
    take_subscription(ev, st, d);
    note(d, KP_BILLING_APPLIED, st->have_user ? "subscription stored" : "subscription stored for no known user yet");
    link_and_plan(st, d, 0);
    if (status_live(ev->status) && !plan_for_price(st, ev->price_id))
        note(d, KP_BILLING_UNKNOWN_PRICE, "the subscription's price is no plan's stripe_price_id: user unchanged");
}

static void decide_checkout(const kp_stripe_event *ev, const state *st, decision *d)
{
    if (strcmp(ev->mode, "subscription") != 0 || !*ev->subscription_id) {
        note(d, KP_BILLING_IGNORED, "not a subscription checkout");
        return;
    }
    if (!st->have_user) {
        note(d, KP_BILLING_NO_USER, "no known user in metadata, customer or client_reference_id");
        return;
    }
    note(d, KP_BILLING_APPLIED, "customer and subscription linked to the user");
    if (st->have_sub) {
        d->sub = st->sub;
        d->write_sub = !*st->sub.user_id;
    } else { /* known only by this checkout until its own events come */
        copy_str(d->sub.id, sizeof d->sub.id, ev->subscription_id);
        copy_str(d->sub.customer_id, sizeof d->sub.customer_id, ev->customer_id);
        d->write_sub = 1;
    }
    if (!*d->sub.user_id)
        copy_str(d->sub.user_id, sizeof d->sub.user_id, st->user.id);
    if (!*d->sub.customer_id)
        copy_str(d->sub.customer_id, sizeof d->sub.customer_id, ev->customer_id);
    link_and_plan(st, d, 1);
}

static void decide_invoice_paid(const kp_stripe_event *ev, const state *st, decision *d)
{
    if (!*ev->subscription_id) {
        note(d, KP_BILLING_IGNORED, "not a subscription's invoice");
        return;
    }
    if (!st->have_user) {
        note(d, KP_BILLING_NOT_LINKED, "the invoice's subscription is linked to no user yet");
        return;
    }
    const kp_plan *p = plan_for_price(st, *ev->price_id ? ev->price_id : st->have_sub ? st->sub.price_id : "");
    if (!p) {
        note(d, KP_BILLING_UNKNOWN_PRICE, "the invoice's price is no plan's stripe_price_id: nothing granted");
        return;
    }
    note(d, KP_BILLING_APPLIED, "invoice paid");
    if (p->monthly_credits > 0) {
        snprintf(d->idem_key, sizeof d->idem_key, "invoice:%s", ev->object_id);
        d->credit.user_id = st->user.id;
        d->credit.delta_monthly = p->monthly_credits;
        d->credit.reason = "subscription";
        d->credit.idem_key = d->idem_key;
        d->credit.expected_version = -1;
        d->grant = 1;
    }
    if (st->have_sub && (strcmp(st->sub.status, "past_due") == 0 || strcmp(st->sub.status, "unpaid") == 0) &&
        ev->created >= st->sub.event_created) {
        d->sub = st->sub;
        copy_str(d->sub.status, sizeof d->sub.status, "active");
        d->sub.event_created = ev->created;
        d->write_sub = 1;
        link_and_plan(st, d, 0);
    }
}

static void decide_invoice_failed(const kp_stripe_event *ev, const state *st, decision *d)
{
    if (!st->have_sub || !*ev->subscription_id) {
        note(d, KP_BILLING_IGNORED, "an invoice of no stored subscription");
        return;
    }
    if (ev->created < st->sub.event_created) {
        note(d, KP_BILLING_STALE, "older than the subscription's last applied event");
        return;
    }
    if (strcmp(st->sub.status, "active") != 0 && strcmp(st->sub.status, "trialing") != 0) {
        note(d, KP_BILLING_APPLIED, "the subscription is not active: unchanged");
        return;
    }
    note(d, KP_BILLING_APPLIED, "payment failed: the subscription is past_due, the plan kept");
    d->sub = st->sub;
    copy_str(d->sub.status, sizeof d->sub.status, "past_due");
    d->sub.event_created = ev->created;
    d->write_sub = 1;
}

static void decide(const kp_stripe_event *ev, const state *st, decision *d)
{
    memset(d, 0, sizeof *d);
    if (st->have_user)
        copy_str(d->result.user_id, sizeof d->result.user_id, st->user.id);
    switch (ev->kind) {
    case KP_STRIPE_EV_CHECKOUT_COMPLETED: decide_checkout(ev, st, d); break;
    case KP_STRIPE_EV_SUBSCRIPTION_CREATED:
    case KP_STRIPE_EV_SUBSCRIPTION_UPDATED:
    case KP_STRIPE_EV_SUBSCRIPTION_DELETED: decide_subscription(ev, st, d); break;
    case KP_STRIPE_EV_INVOICE_PAID: decide_invoice_paid(ev, st, d); break;
    case KP_STRIPE_EV_INVOICE_FAILED: decide_invoice_failed(ev, st, d); break;
    case KP_STRIPE_EV_OTHER: note(d, KP_BILLING_IGNORED, "an event type billing does not handle"); break;
    }
}

/* ---- applying ---- */

static kp_status apply(kp_store *s, const kp_stripe_event *ev, decision *d, kp_err *err)
{
    kp_billing_write w = {0};
    int credited = 0;
    w.event_id = ev->id;
    w.event_type = ev->type;
    w.event_created = ev->created;
    w.subscription = d->write_sub ? &d->sub : NULL;
    w.customer = d->write_link ? &d->link : NULL;
    w.plan_user_id = d->plan_id ? d->result.user_id : NULL;
    w.plan_id = d->plan_id;
    w.credit = d->grant ? &d->credit : NULL;
    kp_status rc = s->ops->billing_apply(s, &w, &credited, err);
    if (rc == KP_OK) {
        d->result.credited = credited ? d->credit.delta_monthly : 0;
        if (d->plan_id)
            copy_str(d->result.plan_id, sizeof d->result.plan_id, d->plan_id);
    }
    return rc;
}

/* Outcomes that store nothing, not even the event id. */
static int stores_nothing(kp_billing_outcome o)
{
    return o == KP_BILLING_IGNORED || o == KP_BILLING_NOT_LINKED;
}

kp_status kp_billing_handle(kp_store *s, const kp_stripe_event *ev, kp_billing_result *out, kp_err *err)
{
    kp_status rc = KP_ECONFLICT;
    memset(out, 0, sizeof *out);
    if (ev->kind == KP_STRIPE_EV_OTHER) {
        out->outcome = KP_BILLING_IGNORED;
        out->note = "an event type billing does not handle";
        return KP_OK;
    }
    for (int attempt = 0; attempt < KP_BILLING_ATTEMPTS && rc == KP_ECONFLICT; attempt++) {
        state st;
        decision d;
        rc = read_state(s, ev, &st, err);
        if (rc == KP_OK) {
            decide(ev, &st, &d);
            rc = stores_nothing(d.result.outcome) ? KP_OK : apply(s, ev, &d, err);
            *out = d.result;
        }
        state_free(&st);
    }
    if (rc == KP_EDUPLICATE) {
        out->outcome = KP_BILLING_DUPLICATE;
        out->note = "event applied before: nothing changed";
        out->plan_id[0] = '\0';
        out->credited = 0;
        kp_err_clear(err);
        return KP_OK;
    }
    if (rc == KP_ECONFLICT)
        return kp_err_set(err, KP_ECONFLICT, "event %s: still in conflict after %d attempts", ev->id,
                          KP_BILLING_ATTEMPTS);
    return rc;
}

const char *kp_billing_outcome_name(kp_billing_outcome o)
{
    switch (o) {
    case KP_BILLING_APPLIED: return "applied";
    case KP_BILLING_DUPLICATE: return "duplicate";
    case KP_BILLING_IGNORED: return "ignored";
    case KP_BILLING_STALE: return "stale";
    case KP_BILLING_UNKNOWN_PRICE: return "unknown_price";
    case KP_BILLING_NO_USER: return "no_user";
    case KP_BILLING_NOT_LINKED: return "not_linked";
    }
    return "unknown";
}
