/*
 * credits.h - the credit rules. Two buckets per user: `daily` (reset to the
 * plan's daily_bonus each UTC day, no carry-over) and `monthly` (granted per
 * paid billing period, carried over). Spending takes from daily first, then
 * monthly. Every change is a ledger row with an idempotency key; a balance
 * never goes negative.
 *
 * Generation spends through reservations: reserve before calling the model,
 * then commit when the version is published or refund on any failure. Each
 * reservation ends exactly once: commit and refund are idempotent, and the one
 * that comes second after the other fails with KP_ECONFLICT.
 *
 * The rules live here once; the store only provides atomic compare-and-swap
 * (store.h credits_apply), so every backend behaves the same.
 */
#ifndef KP_CREDITS_H
#define KP_CREDITS_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

kp_status kp_credits_balance(kp_store *s, const char *user_id, kp_balance *out, kp_err *err);

/* Adds credits (amounts >= 0); a repeated idem_key is a no-op that returns KP_OK
 * with *applied = 0. out and applied may be NULL. */
kp_status kp_credits_grant(kp_store *s, const char *user_id, int64_t daily, int64_t monthly, const char *reason,
                           const char *idem_key, kp_balance *out, int *applied, kp_err *err);

/* Takes amount (> 0) credits, daily first, into reservation res_id (caller-made
 * id, unique). KP_ECREDITS (message with the balance) when short. Reserving the
 * same res_id twice is a no-op. */
kp_status kp_credits_reserve(kp_store *s, const char *user_id, const char *res_id, int64_t amount, const char *reason,
                             kp_balance *out, kp_err *err);

/* A generation to admit: see kp_credits_admit. */
typedef struct kp_admit_request {
    const char *user_id;
    const char *res_id;        /* the reservation's id (caller-made, unique); "" or NULL: free, nothing reserved */
    int64_t amount;            /* credits to reserve (> 0 with res_id) */
    int64_t max_generating;    /* the plan's generations at a time; < 0: no limit */
    const kp_project *project; /* a new project with version 1, or NULL for version->n of an existing one */
    const kp_version *version;
    const char *owner;   /* the instance that runs it, holding its lease (store.h kp_lease) */
    int64_t lease_until; /* ms since the epoch */
} kp_admit_request;

/*
 * Admits a generation in ONE store transaction (store.h admit): the plan's
 * at-a-time limit (KP_ERATE), the reservation, daily first (KP_ECREDITS with
 * the balance in the message when short), and the project/version rows
 * (KP_ECONFLICT while a version generates). All of it or none of it, so a
 * crash can never leave a reservation without its version. The reservation
 * is decided by the same rule as kp_credits_reserve's, on the balance the
 * store reads as it admits (store.h kp_admission.charge_rule): on SQLite,
 * inside the write, so admissions of one user never conflict; elsewhere a
 * balance that moved before the write is read again. *out (may be NULL)
 * receives the balance.
 */
kp_status kp_credits_admit(kp_store *s, const kp_admit_request *r, kp_balance *out, kp_err *err);

/* Refunds every reservation that no version refers to (start-up recovery: an
 * admission cut short by an older build). *settled (may be NULL) counts them. */
kp_status kp_credits_refund_orphans(kp_store *s, size_t *settled, kp_err *err);

/* Makes a reservation final. Idempotent; KP_ECONFLICT if it was refunded. */
kp_status kp_credits_commit(kp_store *s, const char *res_id, kp_err *err);

/* Gives a reservation's credits back to the buckets they came from, the
 * daily part capped by kp_credits_refund_daily. Idempotent (*refunded = 0
 * when already refunded); KP_ECONFLICT if committed. refunded and out may be
 * NULL. */
kp_status kp_credits_refund(kp_store *s, const char *res_id, int *refunded, kp_balance *out, kp_err *err);

/* How much of a reservation's reserved_daily credits a refund puts back into
 * a daily bucket holding current_daily: never more than lifts it to the plan's
 * daily_bonus (a refund after the daily reset must not stack yesterday's
 * credit on today's bonus); the rest goes nowhere. */
int64_t kp_credits_refund_daily(int64_t reserved_daily, int64_t current_daily, int64_t daily_bonus);

/*
 * The credit policy for a generation that failed: refund what the service
 * caused, charge what the user consumed.
 *   - provider and network failures, timeouts, storage and internal errors,
 *     "interrupted": always refunded ("service_failure");
 *   - rejected output ("invalid_output", "too_long"): refunded up to
 *     rejected_refunds_per_day times per user and UTC day
 *     ("rejected_output_allowance"), charged after it
 *     ("rejected_output_allowance_used");
 *   - "canceled": refunded while the model had written fewer than
 *     cancel_refund_chars characters ("canceled_early"), charged after
 *     ("canceled_after_output");
 *   - KP_CREDITS_TIMED_OUT: the generation reached its time limit (its total
 *     timeout or the function's deadline, gen/timeout.c): always refunded
 *     ("time_limit").
 */
#define KP_CREDITS_TIMED_OUT "timed_out" /* the error code of a generation stopped by its time limit */

typedef struct kp_refund_policy {
    int64_t rejected_refunds_per_day; /* KOUMPA_REJECTED_REFUNDS_PER_DAY (default 3) */
    int64_t cancel_refund_chars;      /* KOUMPA_CANCEL_REFUND_CHARS (default 1000) */
} kp_refund_policy;

#define KP_REFUND_POLICY_DEFAULT                                                                                       \
    {                                                                                                                  \
        3, 1000                                                                                                        \
    }

typedef struct kp_credits_outcome {
    int refunded;
    const char *reason; /* static: one of the reasons above, or "already_refunded" / "already_charged" */
} kp_credits_outcome;

/* THE decision, for every path (live failure, cancel, recovery): what a
 * failure with this code costs, after output_chars characters of model
 * output, when the user already had rejected_refunds_today refunds of
 * rejected output today. Pure. */
void kp_credits_failure_outcome(const kp_refund_policy *p, const char *code, int64_t output_chars,
                                int64_t rejected_refunds_today, kp_credits_outcome *out);

/* Fills what depends on the outcome into the version about to be written
 * (e.g. its persisted error event). Returns 0, or -1 when out of memory. */
typedef int (*kp_credits_describe_fn)(void *ud, const kp_credits_outcome *outcome, kp_version *v);

typedef struct kp_failed_generation {
    const char *user_id;
    const char *res_id; /* its reservation; "" or NULL for a free generation */
    const char *code;   /* the failure's error code */
    int64_t output_chars;
} kp_failed_generation;

/*
 * Ends a generating version as failed and settles its reservation per the
 * policy, in one store transaction (store.h version_end): refunded (the daily
 * part capped as kp_credits_refund) or committed, the ledger row's reason
 * "refund:{reason}" or "charge:{reason}". The day's rejected-output refunds
 * are counted by the store atomically: each takes one of the user's
 * allowance keys "allowance:{date}:{user}:{k}", k = 1..per_day, unique in
 * the ledger. v is the finished row (status FAILED, error fields); its
 * refunded and credit_reason are set here, and describe (may be NULL) is
 * called before each attempt. *out (may be NULL) receives the outcome.
 * KP_ECONFLICT (nothing written) when the version no longer generates:
 * another ending won (a recoverer after the lease ran out, or a cancel).
 */
kp_status kp_credits_end_failed(kp_store *s, const kp_refund_policy *p, const kp_failed_generation *f, kp_version *v,
                                kp_credits_describe_fn describe, void *ud, kp_credits_outcome *out, kp_err *err);

/* Ends a generating version as ready and commits its reservation (res_id ""
 * or NULL: free), in one store transaction. KP_ECONFLICT if it was refunded. */
kp_status kp_credits_end_ready(kp_store *s, const char *res_id, kp_version *v, kp_err *err);

/*
 * The daily bonus rule for one user on date (YYYY-MM-DD): whether they get
 * it (an address verified, or none required: accounts made while e-mail
 * verification was on wait for theirs) and, when they do, the change into *c:
 * the daily bucket set to the plan's daily_bonus (no carry-over, so the delta
 * is bonus - current, possibly negative or 0; the row is written even at 0,
 * since it is what records the date as done), monthly untouched, reason
 * "daily_bonus", key "daily:{date}:{user_id}" (written into key, KP_IDEM_MAX
 * bytes; the same key as the welcome bonus, so the two never both grant),
 * compare-and-swap on the balance's version as read. Returns 1 when the user
 * gets a change, 0 when not. *c points into u and key. Pure.
 */
int kp_credits_bonus_change(const kp_bonus_candidate *u, const char *date, char *key, kp_credit_change *c);

/*
 * Grants the daily bonus for date (YYYY-MM-DD) to every user: walks the users
 * a page of `batch` at a time with store.h bonus_page_grant, which reads the
 * page, asks this rule (kp_credits_bonus_change) for each user's change and
 * writes them (SQLite: read and written in one transaction). Per user: a key
 * already used means granted before (by an earlier or a concurrent run, or
 * the welcome bonus): skipped; a balance that moved since the page was read
 * (a spend meanwhile) is read again alone and granted on its new version.
 * So the bonus is idempotent per user and date, also from several runners at
 * once, and every balance still equals its ledger's sum. *granted (may be
 * NULL) counts the users granted by this call.
 */
kp_status kp_credits_daily_bonus(kp_store *s, const char *date, size_t batch, size_t *granted, kp_err *err);

/* The same over one segment (0 .. total_segments - 1) of the users: runners
 * of every segment together grant everyone once (e.g. in parallel, as
 * DynamoDB's parallel Scan). kp_credits_daily_bonus is segment 0 of 1. */
kp_status kp_credits_daily_bonus_segment(kp_store *s, const char *date, unsigned segment, unsigned total_segments,
                                         size_t batch, size_t *granted, kp_err *err);

/* Creates user u (a new account) and grants it today's daily bonus of its
 * plan (unless u->verification_required: then the bonus waits for the
 * verified address), in one transaction: never an account without its bonus, nor a bonus
 * without its account. The same key as the daily run, so the two never both
 * grant. Errors as user_create (KP_ECONFLICT for a taken email). */
kp_status kp_credits_create_user(kp_store *s, const kp_user *u, kp_err *err);

/* Grants today's daily bonus to one user (e.g. once their address is
 * verified), with the same key as the daily run so the two never both grant. */
kp_status kp_credits_welcome(kp_store *s, const char *user_id, kp_err *err);

/* Validates a YYYY-MM-DD date. Returns 1 if valid. */
int kp_credits_valid_date(const char *date);

#endif
