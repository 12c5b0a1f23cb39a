/* credits.c - see credits.h. */
#include "domain/credits.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/id.h"

#define CAS_MAX_TRIES 10000

kp_status kp_credits_balance(kp_store *s, const char *user_id, kp_balance *out, kp_err *err)
{
    return s->ops->balance_get(s, user_id, out, err);
}

kp_status kp_credits_grant(kp_store *s, const char *user_id, int64_t daily, int64_t monthly, const char *reason,
                           const char *idem_key, kp_balance *out, int *applied, kp_err *err)
{
    kp_balance tmp;
    if (applied)
        *applied = 0;
    if (daily < 0 || monthly < 0)
        return kp_err_set(err, KP_EINVAL, "a grant cannot be negative");
    kp_credit_change c = {.user_id = user_id,
                          .delta_daily = daily,
                          .delta_monthly = monthly,
                          .reason = reason,
                          .idem_key = idem_key,
                          .expected_version = -1};
    kp_status rc = s->ops->credits_apply(s, &c, out ? out : &tmp, err);
    if (rc == KP_EDUPLICATE) {
        kp_err_clear(err);
        return KP_OK;
    }
    if (rc == KP_OK && applied)
        *applied = 1;
    return rc;
}

kp_status kp_credits_reserve(kp_store *s, const char *user_id, const char *res_id, int64_t amount, const char *reason,
                             kp_balance *out, kp_err *err)
{
    char key[KP_IDEM_MAX];
    kp_balance bal;
    if (amount <= 0)
        return kp_err_set(err, KP_EINVAL, "a reservation must be positive");
    snprintf(key, sizeof key, "res:%s:reserve", res_id);
    for (int attempt = 0; attempt < CAS_MAX_TRIES; attempt++) {
        kp_status rc = s->ops->balance_get(s, user_id, &bal, err);
        if (rc != KP_OK)
            return rc;
        if (bal.daily + bal.monthly < amount)
            return kp_err_set(err, KP_ECREDITS, "this needs %lld credit%s; you have %lld (%lld daily + %lld monthly)",
                              (long long)amount, amount == 1 ? "" : "s", (long long)(bal.daily + bal.monthly),
                              (long long)bal.daily, (long long)bal.monthly);
        int64_t from_daily = bal.daily < amount ? bal.daily : amount;
        int64_t from_monthly = amount - from_daily;
        kp_credit_change c = {.user_id = user_id,
                              .delta_daily = -from_daily,
                              .delta_monthly = -from_monthly,
                              .reason = reason,
                              .idem_key = key,
                              .expected_version = bal.version,
                              .res_id = res_id,
                              .res_from = KP_RES_NONE,
                              .res_to = KP_RES_RESERVED,
                              .res_daily = from_daily,
                              .res_monthly = from_monthly};
        rc = s->ops->credits_apply(s, &c, out ? out : &bal, err);
        if (rc == KP_EDUPLICATE) {
            kp_err_clear(err);
            return KP_OK;
        }
        if (rc != KP_ECONFLICT)
            return rc;
        if (attempt > 8)
            sched_yield(); /* heavy contention: let the winner finish */
    }
    return kp_err_set(err, KP_EINTERNAL, "credits: too much contention on %s", user_id);
}

/* The reservation's state as an error: it ended the other way already. */
static kp_status already_ended(const kp_reservation *r, kp_err *err)
{
    return kp_err_set(err, KP_ECONFLICT, "reservation %s was already %s", r->id,
                      r->state == KP_RES_COMMITTED ? "committed" : "refunded");
}

/*
 * What a refund gives back to the daily bucket: what the reservation took
 * from it, but never more than lifts the bucket to the plan's daily_bonus
 * (after the daily reset, yesterday's daily credit does not come on top of
 * today's bonus; the excess goes nowhere). The monthly part comes back whole.
 */
int64_t kp_credits_refund_daily(int64_t reserved_daily, int64_t current_daily, int64_t daily_bonus)
{
    int64_t room = daily_bonus - current_daily;
    if (room <= 0)
        return 0;
    return reserved_daily < room ? reserved_daily : room;
}

/* The ledger change that ends reservation r as `to` (a refund reads the
 * balance and the plan, so it is applied with the balance's version). */
static kp_status ending_change(kp_store *s, const kp_reservation *r, kp_reservation_state to, const char *reason,
                               const char *key, kp_credit_change *c, kp_err *err)
{
    memset(c, 0, sizeof *c);
    c->user_id = r->user_id;
    c->reason = reason;
    c->idem_key = key;
    c->expected_version = -1;
    c->res_id = r->id;
    c->res_from = KP_RES_RESERVED;
    c->res_to = to;
    if (to != KP_RES_REFUNDED)
        return KP_OK;
    kp_account a;
    kp_status rc = s->ops->account_get(s, r->user_id, &a, err);
    if (rc != KP_OK)
        return rc;
    c->delta_daily = kp_credits_refund_daily(r->daily, a.balance.daily, a.plan.daily_bonus);
    c->delta_monthly = r->monthly;
    c->expected_version = a.balance.version;
    return KP_OK;
}

/* Moves a reservation to `to`; when it already is there, succeeds as a no-op. */
static kp_status finish_reservation(kp_store *s, const char *res_id, kp_reservation_state to, const char *reason,
                                    int *changed, kp_balance *out, kp_err *err)
{
    kp_reservation r;
    kp_balance bal;
    kp_credit_change c;
    char key[KP_IDEM_MAX];
    *changed = 0;
    snprintf(key, sizeof key, "res:%s:%s", res_id, to == KP_RES_REFUNDED ? "refund" : "commit");
    for (int attempt = 0; attempt < CAS_MAX_TRIES; attempt++) {
        kp_status rc = s->ops->reservation_get(s, res_id, &r, err);
        if (rc != KP_OK)
            return rc;
        if (r.state == to)
            return KP_OK;
        if (r.state != KP_RES_RESERVED)
            return already_ended(&r, err);
        rc = ending_change(s, &r, to, reason, key, &c, err);
        if (rc == KP_OK)
            rc = s->ops->credits_apply(s, &c, out ? out : &bal, err);
        if (rc == KP_OK) {
            *changed = 1;
            return KP_OK;
        }
        if (rc != KP_ECONFLICT && rc != KP_EDUPLICATE)
            return rc;
        /* The balance moved, or another finisher won: look again. */
        kp_err_clear(err);
        if (attempt > 8)
            sched_yield();
    }
    return kp_err_set(err, KP_EINTERNAL, "credits: too much contention on %s", res_id);
}

kp_status kp_credits_commit(kp_store *s, const char *res_id, kp_err *err)
{
    int changed;
    return finish_reservation(s, res_id, KP_RES_COMMITTED, "generation", &changed, NULL, err);
}

kp_status kp_credits_refund(kp_store *s, const char *res_id, int *refunded, kp_balance *out, kp_err *err)
{
    int changed;
    kp_status rc = finish_reservation(s, res_id, KP_RES_REFUNDED, "refund", &changed, out, err);
    if (refunded)
        *refunded = changed;
    return rc;
}

kp_status kp_credits_daily_bonus(kp_store *s, const char *date, size_t batch, size_t *granted, kp_err *err)
{
    char after[KP_ID_MAX] = "";
    char last[KP_ID_MAX];
    size_t total = 0;
    if (!kp_credits_valid_date(date))
        return kp_err_set(err, KP_EINVAL, "invalid date %s: expected YYYY-MM-DD", date);
    for (;;) {
        size_t n = 0;
        kp_status rc = s->ops->daily_bonus_batch(s, date, after, batch, last, &n, err);
        if (rc != KP_OK)
            return rc;
        total += n;
        if (!last[0])
            break;
        memcpy(after, last, sizeof after);
    }
    if (granted)
        *granted = total;
    return KP_OK;
}

kp_status kp_credits_welcome(kp_store *s, const char *user_id, kp_err *err)
{
    kp_user u;
    kp_plan p;
    char date[11], key[KP_IDEM_MAX];
    kp_status rc = s->ops->user_get(s, user_id, &u, err);
    if (rc == KP_OK)
        rc = s->ops->plan_get(s, u.plan_id, &p, err);
    if (rc != KP_OK)
        return rc;
    kp_date_utc_today(date);
    snprintf(key, sizeof key, "daily:%s:%s", date, user_id);
    return kp_credits_grant(s, user_id, p.daily_bonus, 0, "daily_bonus", key, NULL, NULL, err);
}

int kp_credits_valid_date(const char *date)
{
    struct tm tm = {0};
    if (!date || strlen(date) != 10)
        return 0;
    const char *end = strptime(date, "%Y-%m-%d", &tm);
    if (!end || *end)
        return 0;
    /* round-trip to reject 2026-02-31 */
    char back[11];
    time_t t = timegm(&tm);
    struct tm norm;
    gmtime_r(&t, &norm);
    strftime(back, sizeof back, "%Y-%m-%d", &norm);
    return strcmp(back, date) == 0;
}
