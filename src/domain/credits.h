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

/* Grants the daily bonus for date (YYYY-MM-DD) to every user, batch users per
 * transaction. Idempotent per user and date, also across processes.
 * *granted (may be NULL) counts users granted by this call. */
kp_status kp_credits_daily_bonus(kp_store *s, const char *date, size_t batch, size_t *granted, kp_err *err);

/* Grants today's daily bonus to one user (at sign-up), with the same key as the
 * daily run so the two never both grant. */
kp_status kp_credits_welcome(kp_store *s, const char *user_id, kp_err *err);

/* Validates a YYYY-MM-DD date. Returns 1 if valid. */
int kp_credits_valid_date(const char *date);

#endif
