/*
 * billing.h - what Stripe's webhook events do to users: their plan, their
 * monthly credits, their link to Stripe. The rules live here once; the store
 * writes each event's changes in one transaction (store.h billing_apply).
 *
 * Who an event is about. A user is found from metadata.koumpa_user_id (the
 * checkout puts it on the session and on the subscription; an invoice carries
 * its subscription's at parent.subscription_details.metadata), else from the
 * subscription's stored row, else from the Stripe customer linked to a user,
 * else (checkout.session.completed) from client_reference_id. An id that
 * names no user is skipped. A subscription event for no known user is still
 * stored (user_id "") and applied when checkout.session.completed links it.
 *
 * A subscription's state only moves forward. An event whose `created` is
 * older than the one its row last took is stale: recorded, nothing else. A
 * canceled or incomplete_expired subscription (terminal in Stripe) never
 * moves back. Ties (the same second) apply in arrival order.
 *
 * The plan follows the user's CURRENT subscription only
 * (kp_billing_customer.subscription_id):
 *   active, trialing, past_due          -> the plan whose stripe_price_id is the
 *                                          first item's price (none: the user
 *                                          is unchanged, KP_BILLING_UNKNOWN_PRICE)
 *   canceled, unpaid, incomplete_expired,
 *   paused                              -> the Free plan at once (monthly
 *                                          credits already granted are kept)
 *   incomplete, anything else           -> no change
 * A subscription becomes current when checkout.session.completed names it
 * (the user's latest purchase), or when it is active/trialing/past_due/
 * incomplete and the user has no current one, or when it is
 * active/trialing/past_due and the current one has ended (canceled, unpaid,
 * incomplete_expired, paused). A second live subscription never takes over
 * from a live current one by itself.
 *
 * Invoices. invoice.paid grants the plan's monthly_credits (the plan of the
 * invoice's first priced line, else of its subscription's price) once per
 * invoice id (ledger key "invoice:{id}", reason "subscription"), whichever
 * events carry it; it also brings a past_due or unpaid subscription back to
 * active. invoice.payment_failed turns an active or trialing subscription
 * past_due (the plan stays until Stripe cancels). A paid invoice whose user
 * cannot be found yet (its subscription not linked) is refused
 * (KP_BILLING_NOT_LINKED) so that Stripe delivers it again later.
 *
 * Idempotent by event id: billing_apply records the id in the same
 * transaction as the changes, so a redelivery - also five at once - changes
 * nothing (KP_BILLING_DUPLICATE). A subscription row is written with
 * compare-and-swap on its version: on a conflict the state is read again and
 * the event decided again (at most KP_BILLING_ATTEMPTS times).
 *
 * No network: everything comes from the event and the store.
 */
#ifndef KP_BILLING_H
#define KP_BILLING_H

#include <stdint.h>

#include "domain/stripe_event.h"
#include "store/store.h"

#define KP_BILLING_FREE_PLAN "free"
#define KP_BILLING_ATTEMPTS 8

typedef enum kp_billing_outcome {
    KP_BILLING_APPLIED = 0,   /* the event's changes were written (maybe none but its id) */
    KP_BILLING_DUPLICATE,     /* the event was applied before: nothing changed */
    KP_BILLING_IGNORED,       /* a type or object billing does not handle: nothing stored */
    KP_BILLING_STALE,         /* older than what its subscription shows: only its id recorded */
    KP_BILLING_UNKNOWN_PRICE, /* a price no plan has: the user is unchanged (operators must see it) */
    KP_BILLING_NO_USER,       /* a checkout for no known user: only its id recorded */
    KP_BILLING_NOT_LINKED     /* a paid invoice for no known user yet: nothing stored, to be delivered again */
} kp_billing_outcome;

typedef struct kp_billing_result {
    kp_billing_outcome outcome;
    char user_id[KP_ID_MAX];      /* the user the event is about, "" when none */
    char plan_id[KP_PLAN_ID_MAX]; /* the plan the user was moved to now, "" when unchanged */
    int64_t credited;             /* monthly credits granted now */
    const char *note;             /* static text for the log: what was decided and why */
} kp_billing_result;

/* Applies event ev. KP_OK with out->outcome saying what happened; another
 * status when the store failed (or stayed in conflict): nothing was applied,
 * and Stripe should deliver the event again. */
kp_status kp_billing_handle(kp_store *s, const kp_stripe_event *ev, kp_billing_result *out, kp_err *err);

/* "applied", "duplicate", "ignored", "stale", "unknown_price", "no_user", "not_linked". */
const char *kp_billing_outcome_name(kp_billing_outcome o);

#endif
