/*
 * stripe_event.h - a Stripe webhook event, read into the few fields billing
 * needs (domain/billing.h decides what they change).
 *
 * Stripe moved fields between API versions; both layouts are read, the
 * current one first:
 *   - a subscription's current_period_end: on its items since 2025-03-31
 *     ("basil": items.data[0].current_period_end), on the subscription
 *     before (current_period_end);
 *   - an invoice's subscription: parent.subscription_details.subscription
 *     (basil), invoice.subscription before; its metadata (where the checkout
 *     puts koumpa_user_id): parent.subscription_details.metadata, or
 *     subscription_details.metadata before;
 *   - an invoice line's price: lines.data[0].pricing.price_details.price
 *     (basil), lines.data[0].price.id before.
 * Any id may come as a string or, when expanded, as an object with an "id".
 *
 * Parsing only reads: it checks that the body is an event (an object with a
 * non-empty id, type, created and data.object) and never decides anything.
 */
#ifndef KP_STRIPE_EVENT_H
#define KP_STRIPE_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "store/store.h"

#define KP_STRIPE_TYPE_MAX 96

typedef enum kp_stripe_event_kind {
    KP_STRIPE_EV_OTHER = 0,            /* a type billing does not handle */
    KP_STRIPE_EV_CHECKOUT_COMPLETED,   /* checkout.session.completed */
    KP_STRIPE_EV_SUBSCRIPTION_CREATED, /* customer.subscription.created */
    KP_STRIPE_EV_SUBSCRIPTION_UPDATED, /* customer.subscription.updated */
    KP_STRIPE_EV_SUBSCRIPTION_DELETED, /* customer.subscription.deleted */
    KP_STRIPE_EV_INVOICE_PAID,         /* invoice.paid */
    KP_STRIPE_EV_INVOICE_FAILED        /* invoice.payment_failed */
} kp_stripe_event_kind;

/* What an event says, whatever its API version. Strings are "" when absent. */
typedef struct kp_stripe_event {
    char id[KP_STRIPE_ID_MAX]; /* "evt_..." */
    char type[KP_STRIPE_TYPE_MAX];
    kp_stripe_event_kind kind;
    int64_t created; /* unix seconds: when Stripe made the event */
    int livemode;

    char object_id[KP_STRIPE_ID_MAX];       /* data.object.id: "cs_...", "sub_...", "in_..." */
    char customer_id[KP_STRIPE_ID_MAX];     /* the object's customer */
    char subscription_id[KP_STRIPE_ID_MAX]; /* the subscription it is (sub events) or belongs to */
    char metadata_user_id[KP_ID_MAX];       /* metadata.koumpa_user_id ("" also when too long to be one) */

    /* checkout.session.completed */
    char client_reference_id[KP_ID_MAX];
    char mode[16]; /* "subscription", "payment", "setup" */

    /* subscriptions */
    char status[KP_SUB_STATUS_MAX]; /* Stripe's status; deleted events say "canceled" */
    int64_t current_period_end;     /* 0 unknown */
    int cancel_at_period_end;

    /* subscriptions (first item) and invoices (first line) */
    char price_id[KP_NAME_MAX];
} kp_stripe_event;

/* Reads body (len bytes of JSON) into ev. KP_EINVAL with a message saying
 * what is missing when it is not JSON or not an event; ids too long for
 * their fields count as not an event. */
kp_status kp_stripe_event_parse(const char *body, size_t len, kp_stripe_event *ev, kp_err *err);

/* The kind of a type string (KP_STRIPE_EV_OTHER for the rest). */
kp_stripe_event_kind kp_stripe_event_kind_of(const char *type);

#endif
