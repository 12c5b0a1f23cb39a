/* credits.c - see credits.h. */
#include "domain/credits.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The reservation of amount credits from balance bal, daily first. KP_ECREDITS when short. */
static kp_status reservation_change(const kp_balance *bal, const char *user_id, const char *res_id, int64_t amount,
                                    const char *reason, const char *key, kp_credit_change *c, kp_err *err)
{
    if (bal->daily + bal->monthly < amount)
        return kp_err_set(err, KP_ECREDITS, "this needs %lld credit%s; you have %lld (%lld daily + %lld monthly)",
                          (long long)amount, amount == 1 ? "" : "s", (long long)(bal->daily + bal->monthly),
                          (long long)bal->daily, (long long)bal->monthly);
    int64_t from_daily = bal->daily < amount ? bal->daily : amount;
    *c = (kp_credit_change){.user_id = user_id,
                            .delta_daily = -from_daily,
                            .delta_monthly = -(amount - from_daily),
                            .reason = reason,
                            .idem_key = key,
                            .expected_version = bal->version,
                            .res_id = res_id,
                            .res_from = KP_RES_NONE,
                            .res_to = KP_RES_RESERVED,
                            .res_daily = from_daily,
                            .res_monthly = amount - from_daily};
    return KP_OK;
}

/* What a reservation needs of its rule (reserve_rule). */
typedef struct reserve_arg {
    const char *user_id;
    const char *res_id;
    const char *reason;
    int64_t amount;
    char key[KP_IDEM_MAX];
} reserve_arg;

/* The reservation decided on the balance the store read (kp_credit_rule_fn). */
static kp_status reserve_rule(const kp_credit_state *st, void *arg, kp_credit_change *c, int *apply, kp_err *err)
{
    const reserve_arg *a = arg;
    if (!st->balance_found)
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    *apply = 1;
    return reservation_change(&st->balance, a->user_id, a->res_id, a->amount, a->reason, a->key, c, err);
}

kp_status kp_credits_admit(kp_store *s, const kp_admit_request *r, kp_balance *out, kp_err *err)
{
    kp_balance bal = {0, 0, 0}, now;
    int charged = r->res_id && r->res_id[0];
    reserve_arg ra = {.user_id = r->user_id, .res_id = r->res_id, .reason = "generation", .amount = r->amount};
    kp_admission a = {.user_id = r->user_id,
                      .max_generating = r->max_generating,
                      .charge_rule = charged ? reserve_rule : NULL,
                      .charge_arg = &ra,
                      .project = r->project,
                      .version = r->version,
                      .owner = r->owner,
                      .lease_until = r->lease_until};
    if (charged && r->amount <= 0)
        return kp_err_set(err, KP_EINVAL, "a reservation must be positive");
    if (charged)
        snprintf(ra.key, sizeof ra.key, "res:%s:reserve", r->res_id);
    for (int attempt = 0; attempt < CAS_MAX_TRIES; attempt++) {
        kp_status rc = s->ops->admit(s, &a, &bal, err);
        if (out)
            *out = bal;
        if (rc != KP_ECONFLICT || !charged)
            return rc;
        /* A conflict is the balance moving before the write (a backend that writes conditionally: retry)
         * unless the balance is as the rule read it. */
        kp_err conflict = *err;
        if (s->ops->balance_get(s, r->user_id, &now, err) != KP_OK || now.version == bal.version) {
            *err = conflict;
            return KP_ECONFLICT;
        }
        kp_err_clear(err);
        if (attempt > 8)
            sched_yield();
    }
    return kp_err_set(err, KP_EINTERNAL, "credits: too much contention on %s", r->user_id);
}

kp_status kp_credits_reserve(kp_store *s, const char *user_id, const char *res_id, int64_t amount, const char *reason,
                             kp_balance *out, kp_err *err)
{
    reserve_arg a = {.user_id = user_id, .res_id = res_id, .reason = reason, .amount = amount};
    if (amount <= 0)
        return kp_err_set(err, KP_EINVAL, "a reservation must be positive");
    snprintf(a.key, sizeof a.key, "res:%s:reserve", res_id);
    for (int attempt = 0; attempt < CAS_MAX_TRIES; attempt++) {
        kp_status rc = s->ops->credits_decide(s, user_id, NULL, reserve_rule, &a, out, err);
        if (rc == KP_EDUPLICATE) {
            kp_err_clear(err);
            return KP_OK;
        }
        if (rc != KP_ECONFLICT)
            return rc;
        kp_err_clear(err); /* the balance moved between the read and the write (DynamoDB): again */
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
 * balance and the plan from s, so it is applied with the balance's version;
 * a commit reads nothing: s may be NULL). */
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

/* ---- the policy for failed generations ---- */

static int is_rejected_output(const char *code)
{
    return strcmp(code, "invalid_output") == 0 || strcmp(code, "too_long") == 0;
}

void kp_credits_failure_outcome(const kp_refund_policy *p, const char *code, int64_t output_chars,
                                int64_t rejected_refunds_today, kp_credits_outcome *out)
{
    code = code ? code : "";
    if (is_rejected_output(code)) {
        out->refunded = rejected_refunds_today < p->rejected_refunds_per_day;
        out->reason = out->refunded ? "rejected_output_allowance" : "rejected_output_allowance_used";
    } else if (strcmp(code, "canceled") == 0) {
        out->refunded = output_chars < p->cancel_refund_chars;
        out->reason = out->refunded ? "canceled_early" : "canceled_after_output";
    } else if (strcmp(code, KP_CREDITS_TIMED_OUT) == 0) {
        /* the service's time limit stopped it: the model's speed and the function's deadline are not the
         * user's doing, and the output is bounded per call (max_tokens) and in calls (continuations) */
        out->refunded = 1;
        out->reason = "time_limit";
    } else {
        out->refunded = 1;
        out->reason = "service_failure";
    }
}

/* The change that settles reservation r with outcome o. A refund of rejected
 * output takes allowance key `slot` (1-based) of the user's day. */
static kp_status settling_change(kp_store *s, const kp_reservation *r, const kp_credits_outcome *o, int slot,
                                 char reason[KP_REASON_MAX], char key[KP_IDEM_MAX], kp_credit_change *c, kp_err *err)
{
    char date[11];
    snprintf(reason, KP_REASON_MAX, "%s:%s", o->refunded ? "refund" : "charge", o->reason);
    if (o->refunded && slot > 0) {
        kp_date_utc_today(date);
        snprintf(key, KP_IDEM_MAX, "allowance:%s:%s:%d", date, r->user_id, slot);
    } else {
        snprintf(key, KP_IDEM_MAX, "res:%s:%s", r->id, o->refunded ? "refund" : "commit");
    }
    kp_status rc = ending_change(s, r, o->refunded ? KP_RES_REFUNDED : KP_RES_COMMITTED, reason, key, c, err);
    c->record_zero = 1; /* a charge's row says why, with deltas 0 */
    return rc;
}

static void set_outcome(kp_version *v, const kp_credits_outcome *o)
{
    v->refunded = o->refunded;
    snprintf(v->credit_reason, sizeof v->credit_reason, "%s", o->reason);
}

/* After version_end's KP_ECONFLICT: KP_OK when the version still generates
 * (the balance or the reservation moved: look again), KP_ECONFLICT when it
 * ended meanwhile (another instance or recovery wrote its end: nothing to
 * retry). */
static kp_status still_generating(kp_store *s, const kp_version *v, kp_err *err)
{
    kp_version cur;
    kp_status rc = s->ops->version_get(s, v->project_id, v->n, &cur, err);
    if (rc != KP_OK)
        return rc;
    int generating = cur.status == KP_VER_GENERATING;
    kp_version_clear(&cur);
    if (generating)
        return KP_OK;
    return kp_err_set(err, KP_ECONFLICT, "version %lld of %s already ended", (long long)v->n, v->project_id);
}

kp_status kp_credits_end_failed(kp_store *s, const kp_refund_policy *p, const kp_failed_generation *f, kp_version *v,
                                kp_credits_describe_fn describe, void *ud, kp_credits_outcome *out, kp_err *err)
{
    const char *res_id = f->res_id ? f->res_id : "";
    int rejected = is_rejected_output(f->code ? f->code : "");
    int64_t used = 0; /* allowance keys found taken so far */
    kp_credits_outcome o;
    kp_reservation r;
    kp_credit_change c;
    char reason[KP_REASON_MAX], key[KP_IDEM_MAX];
    for (int attempt = 0; attempt < CAS_MAX_TRIES; attempt++) {
        kp_credit_change *change = NULL;
        kp_status rc = KP_OK;
        int slot = 0;
        if (!res_id[0]) {
            kp_credits_failure_outcome(p, f->code, f->output_chars, 0, &o);
        } else if ((rc = s->ops->reservation_get(s, res_id, &r, err)) != KP_OK) {
            return rc;
        } else if (r.state != KP_RES_RESERVED) {
            o.refunded = r.state == KP_RES_REFUNDED; /* settled before: the row only says so */
            o.reason = o.refunded ? "already_refunded" : "already_charged";
        } else {
            kp_credits_failure_outcome(p, f->code, f->output_chars, used, &o);
            slot = rejected && o.refunded ? (int)used + 1 : 0;
            rc = settling_change(s, &r, &o, slot, reason, key, &c, err);
            change = &c;
        }
        set_outcome(v, &o);
        if (rc == KP_OK && describe && describe(ud, &o, v) != 0)
            rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        if (rc == KP_OK)
            rc = s->ops->version_end(s, v, change, NULL, err);
        if (rc == KP_OK) {
            if (out)
                *out = o;
            return KP_OK;
        }
        if (rc == KP_EDUPLICATE && slot > 0)
            used++; /* that allowance key was taken: the next one, or a charge */
        else if (rc != KP_ECONFLICT && rc != KP_EDUPLICATE)
            return rc;
        else if (rc == KP_ECONFLICT && (rc = still_generating(s, v, err)) != KP_OK)
            return rc;
        kp_err_clear(err); /* the balance or the reservation moved: look again */
        if (attempt > 8)
            sched_yield();
    }
    return kp_err_set(err, KP_EINTERNAL, "credits: too much contention on %s", res_id);
}

kp_status kp_credits_end_ready(kp_store *s, const char *res_id, kp_version *v, kp_err *err)
{
    kp_reservation r;
    kp_credit_change c;
    char key[KP_IDEM_MAX];
    kp_credit_change *change = NULL;
    v->refunded = 0;
    v->credit_reason[0] = '\0';
    if (res_id && res_id[0]) {
        kp_status rc = s->ops->reservation_get(s, res_id, &r, err);
        if (rc != KP_OK)
            return rc;
        if (r.state == KP_RES_REFUNDED)
            return already_ended(&r, err);
        snprintf(key, sizeof key, "res:%s:commit", res_id);
        if (r.state == KP_RES_RESERVED) {
            ending_change(s, &r, KP_RES_COMMITTED, "generation", key, &c, err);
            change = &c;
        }
    }
    return s->ops->version_end(s, v, change, NULL, err);
}

kp_status kp_credits_refund_orphans(kp_store *s, size_t *settled, kp_err *err)
{
    static const kp_refund_policy policy = KP_REFUND_POLICY_DEFAULT;
    kp_reservation *rs = NULL;
    kp_credits_outcome o;
    char reason[KP_REASON_MAX];
    size_t n = 0, done = 0;
    int changed = 0;
    if (settled)
        *settled = 0;
    kp_status rc = s->ops->reservations_orphaned(s, &rs, &n, err);
    /* the admission was interrupted: the same decision as any interrupted version */
    kp_credits_failure_outcome(&policy, "interrupted", 0, 0, &o);
    snprintf(reason, sizeof reason, "refund:%s", o.reason);
    for (size_t i = 0; i < n && rc == KP_OK; i++) {
        rc = finish_reservation(s, rs[i].id, KP_RES_REFUNDED, reason, &changed, NULL, err);
        done += changed;
    }
    free(rs);
    if (settled)
        *settled = done;
    return rc;
}

/* What committing a reservation needs of its rule (commit_rule). */
typedef struct commit_arg {
    char key[KP_IDEM_MAX];
    int refunded; /* the rule found it refunded: KP_ECONFLICT is final */
} commit_arg;

/* The commit decided on the reservation the store read (kp_credit_rule_fn):
 * nothing to do when it is committed already. */
static kp_status commit_rule(const kp_credit_state *st, void *arg, kp_credit_change *c, int *apply, kp_err *err)
{
    commit_arg *a = arg;
    a->refunded = 0;
    if (!st->res_found)
        return kp_err_set(err, KP_ENOTFOUND, "reservation not found");
    if (st->res.state == KP_RES_COMMITTED)
        return KP_OK;
    if (st->res.state != KP_RES_RESERVED) {
        a->refunded = 1;
        return already_ended(&st->res, err);
    }
    *apply = 1;
    return ending_change(NULL, &st->res, KP_RES_COMMITTED, "generation", a->key, c, err);
}

kp_status kp_credits_commit(kp_store *s, const char *res_id, kp_err *err)
{
    commit_arg a = {.refunded = 0};
    if (!res_id || !*res_id)
        return kp_err_set(err, KP_ENOTFOUND, "reservation not found");
    snprintf(a.key, sizeof a.key, "res:%s:commit", res_id);
    for (int attempt = 0; attempt < CAS_MAX_TRIES; attempt++) {
        kp_status rc = s->ops->credits_decide(s, NULL, res_id, commit_rule, &a, NULL, err);
        if ((rc != KP_ECONFLICT && rc != KP_EDUPLICATE) || a.refunded)
            return rc;
        kp_err_clear(err); /* another finisher won, or the reservation moved (DynamoDB): look again */
        if (attempt > 8)
            sched_yield();
    }
    return kp_err_set(err, KP_EINTERNAL, "credits: too much contention on %s", res_id);
}

kp_status kp_credits_refund(kp_store *s, const char *res_id, int *refunded, kp_balance *out, kp_err *err)
{
    int changed;
    kp_status rc = finish_reservation(s, res_id, KP_RES_REFUNDED, "refund", &changed, out, err);
    if (refunded)
        *refunded = changed;
    return rc;
}

/* ---- the daily bonus ---- */

/* The key that grants a user the bonus of a date: one per user and date. */
static void bonus_key(const char *date, const char *user_id, char key[KP_IDEM_MAX])
{
    snprintf(key, KP_IDEM_MAX, "daily:%s:%s", date, user_id);
}

int kp_credits_bonus_change(const kp_bonus_candidate *u, const char *date, char *key, kp_credit_change *c)
{
    if (u->verification_required && !u->email_verified)
        return 0;
    bonus_key(date, u->user_id, key);
    *c = (kp_credit_change){.user_id = u->user_id,
                            .delta_daily = u->daily_bonus - u->balance.daily,
                            .reason = "daily_bonus",
                            .idem_key = key,
                            .expected_version = u->balance.version,
                            .record_zero = 1};
    return 1;
}

/* Grants one user whose balance moved after their page was read: reads them
 * again (account_get: the same fields as a page's) until the change applies
 * or is not needed. *applied is 1 when granted now. */
static kp_status bonus_regrant(kp_store *s, const char *date, const char *user_id, int *applied, kp_err *err)
{
    char key[KP_IDEM_MAX];
    *applied = 0;
    for (int attempt = 0; attempt < CAS_MAX_TRIES; attempt++) {
        kp_account a;
        kp_balance after;
        kp_credit_change c;
        kp_status rc = s->ops->account_get(s, user_id, &a, err);
        if (rc == KP_ENOTFOUND) /* gone since the page was read */
            kp_err_clear(err);
        if (rc != KP_OK)
            return rc == KP_ENOTFOUND ? KP_OK : rc;
        kp_bonus_candidate u = {.daily_bonus = a.plan.daily_bonus,
                                .balance = a.balance,
                                .email_verified = a.user.email_verified,
                                .verification_required = a.user.verification_required};
        memcpy(u.user_id, a.user.id, sizeof u.user_id);
        if (!kp_credits_bonus_change(&u, date, key, &c))
            return KP_OK;
        rc = s->ops->credits_apply(s, &c, &after, err);
        if (rc == KP_OK)
            *applied = 1;
        if (rc != KP_ECONFLICT) {
            if (rc == KP_EDUPLICATE)
                kp_err_clear(err);
            return rc == KP_EDUPLICATE ? KP_OK : rc;
        }
        kp_err_clear(err);
        if (attempt > 8)
            sched_yield();
    }
    return kp_err_set(err, KP_EINTERNAL, "credits: too much contention on %s", user_id);
}

/* The rule as the store applies it (store.h kp_bonus_rule_fn); arg is the date. */
static int bonus_rule(const kp_bonus_candidate *u, void *arg, char *key, kp_credit_change *c)
{
    return kp_credits_bonus_change(u, arg, key, c);
}

/* Counts one page's grants and grants again, alone, the users whose balance
 * moved since the page was read. */
static kp_status bonus_page_settle(kp_store *s, const char *date, const kp_bonus_page *p, size_t *granted, kp_err *err)
{
    kp_status rc = KP_OK;
    *granted += p->granted;
    for (size_t i = 0; i < p->n && rc == KP_OK; i++) {
        int applied = 0;
        if (p->results[i] == KP_ECONFLICT)
            rc = bonus_regrant(s, date, p->users[i].user_id, &applied, err);
        else if (p->results[i] != KP_OK && p->results[i] != KP_EDUPLICATE && p->results[i] != KP_ENOTFOUND)
            rc = kp_err_set(err, p->results[i], "daily bonus for %s refused (%s)", p->users[i].user_id,
                            kp_status_name(p->results[i]));
        *granted += (size_t)applied;
    }
    return rc;
}

kp_status kp_credits_daily_bonus_segment(kp_store *s, const char *date, unsigned segment, unsigned total_segments,
                                         size_t batch, size_t *granted, kp_err *err)
{
    char token[KP_PAGE_TOKEN_MAX] = "", next[KP_PAGE_TOKEN_MAX];
    size_t total = 0;
    kp_status rc = KP_OK;
    if (granted)
        *granted = 0;
    if (!kp_credits_valid_date(date))
        return kp_err_set(err, KP_EINVAL, "invalid date %s: expected YYYY-MM-DD", date);
    if (batch == 0 || total_segments == 0 || segment >= total_segments)
        return kp_err_set(err, KP_EINVAL, "invalid daily bonus run (batch %zu, segment %u of %u)", batch, segment,
                          total_segments);
    do {
        kp_bonus_page page;
        rc = s->ops->bonus_page_grant(s, token, segment, total_segments, batch, bonus_rule, (void *)date, &page, next,
                                      err);
        if (rc == KP_OK) { /* else the store left the page empty */
            rc = bonus_page_settle(s, date, &page, &total, err);
            free(page.users);
            free(page.results);
        }
        memcpy(token, next, sizeof token);
    } while (rc == KP_OK && token[0]);
    if (rc == KP_OK && granted)
        *granted = total;
    return rc;
}

kp_status kp_credits_daily_bonus(kp_store *s, const char *date, size_t batch, size_t *granted, kp_err *err)
{
    return kp_credits_daily_bonus_segment(s, date, 0, 1, batch, granted, err);
}

/* The ledger change that grants today's bonus of plan p to a user whose
 * daily bucket holds current (key: "daily:{date}:{user}", as the daily run). */
static void welcome_change(const char *user_id, const kp_plan *p, int64_t current, char key[KP_IDEM_MAX],
                           kp_credit_change *c)
{
    char date[11];
    kp_date_utc_today(date);
    bonus_key(date, user_id, key);
    *c = (kp_credit_change){.user_id = user_id,
                            .delta_daily = p->daily_bonus - current,
                            .reason = "daily_bonus",
                            .idem_key = key,
                            .expected_version = -1,
                            .record_zero = 1};
}

kp_status kp_credits_create_user(kp_store *s, const kp_user *u, kp_err *err)
{
    kp_plan p;
    kp_credit_change c;
    char key[KP_IDEM_MAX];
    kp_status rc = s->ops->plan_get(s, u->plan_id, &p, err);
    if (rc != KP_OK)
        return rc;
    if (u->verification_required) /* the day's bonus waits for a verified address */
        return s->ops->user_create(s, u, err);
    welcome_change(u->id, &p, 0, key, &c);
    return s->ops->user_create_credited(s, u, &c, err);
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
    bonus_key(date, user_id, key);
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
