/*
 * store.h - the repository interface: users, plans, the credit ledger (and,
 * later, projects). A backend (sqlite/, later dynamodb/) fills a kp_store_ops
 * table; the domain layer (src/domain/) holds every business rule and calls
 * only these operations, so backends only store and load.
 *
 * Concurrency: one kp_store handle is used by one thread at a time; open one
 * per thread. Handles on the same database (threads or processes) see each
 * other's committed writes. Atomicity that the domain needs is expressed as
 * compare-and-swap (expected_version) and uniqueness (idempotency keys,
 * emails), which every backend can provide (SQLite transactions, DynamoDB
 * condition expressions).
 *
 * Ownership: records are plain structs with fixed-size fields, filled into
 * caller-provided memory; list results are arrays the caller frees with free().
 * Every operation returns a kp_status and fills err on failure.
 */
#ifndef KP_STORE_H
#define KP_STORE_H

#include <stdint.h>
#include <stddef.h>

#include "core/err.h"

#define KP_ID_MAX 48
#define KP_EMAIL_MAX 256
#define KP_PWHASH_MAX 160
#define KP_SUB_MAX 256
#define KP_PLAN_ID_MAX 64
#define KP_NAME_MAX 128
#define KP_REASON_MAX 64
#define KP_IDEM_MAX 200

typedef struct kp_user {
    char id[KP_ID_MAX];       /* "usr_" + 28 hex chars (core/id.h) */
    char email[KP_EMAIL_MAX]; /* normalised (trimmed, lower-case); may be "" for external users without email */
    char password_hash[KP_PWHASH_MAX]; /* Argon2id encoded string; "" for external users */
    char external_sub[KP_SUB_MAX];     /* "{issuer}|{sub}" for identity-provider users; "" for local */
    char plan_id[KP_PLAN_ID_MAX];
    int is_admin;
    int64_t created_at;        /* unix seconds */
    int email_verified;        /* the address is proven: a verification link, or the identity provider's word */
    int verification_required; /* the daily bonus waits for a verified address (signed up while SMTP was on) */
} kp_user;

/* A single-use e-mail verification token, known by its hash only. */
typedef struct kp_verification {
    char user_id[KP_ID_MAX];
    int64_t created_at;
    int64_t expires_at;
    int64_t used_at; /* 0: not used */
} kp_verification;

typedef struct kp_plan {
    char id[KP_PLAN_ID_MAX]; /* [a-z0-9_-]{1,63} */
    char name[KP_NAME_MAX];
    int64_t price_cents; /* per month, in currency */
    char currency[4];    /* "EUR" */
    int64_t monthly_credits;
    int64_t daily_bonus;
    int64_t max_concurrent_generations;
    char stripe_price_id[KP_NAME_MAX]; /* "" until set */
    int active;
    int64_t updated_at;
} kp_plan;

typedef struct kp_balance {
    int64_t daily;
    int64_t monthly;
    int64_t version; /* bumps on every change; the CAS token */
} kp_balance;

#define KP_SUB_STATUS_MAX 32 /* Stripe's subscription status: "active", "past_due", "canceled", ... */

/* What an account shows of the user's current Stripe subscription (the one
 * their billing link names, as the webhooks last described it). status ""
 * when there is none, or only a checkout knows of it so far. */
typedef struct kp_account_subscription {
    char status[KP_SUB_STATUS_MAX];
    char plan_id[KP_PLAN_ID_MAX]; /* "" when no plan has its price */
    int64_t current_period_end;   /* unix seconds; 0 unknown */
    int cancel_at_period_end;
} kp_account_subscription;

/* A user as authentication sees them: the row, its plan, its balance, their
 * subscription (GET /v1/me shows all of it from this one read). */
typedef struct kp_account {
    kp_user user;
    kp_plan plan;
    kp_balance balance;
    kp_account_subscription subscription;
} kp_account;

typedef struct kp_ledger_entry {
    /* orders one user's entries: larger is newer. Only the order within a
     * user is promised (SQLite's happens to be global; a DynamoDB backend
     * can use the balance version the entry's change produced). */
    int64_t seq;
    char user_id[KP_ID_MAX];
    int64_t delta_daily;
    int64_t delta_monthly;
    int64_t balance_daily; /* balance after this entry */
    int64_t balance_monthly;
    char reason[KP_REASON_MAX];     /* e.g. "daily_bonus", "generation", "refund", "admin_grant" */
    char idem_key[KP_IDEM_MAX];     /* unique across the database */
    char reservation_id[KP_ID_MAX]; /* "" when not linked to a reservation */
    int64_t created_at;
} kp_ledger_entry;

typedef enum kp_reservation_state {
    KP_RES_NONE = 0, /* "no reservation yet" (only as a from-state) */
    KP_RES_RESERVED,
    KP_RES_COMMITTED,
    KP_RES_REFUNDED
} kp_reservation_state;

typedef struct kp_reservation {
    char id[KP_ID_MAX];
    char user_id[KP_ID_MAX];
    int64_t daily; /* credits taken from each bucket (positive) */
    int64_t monthly;
    kp_reservation_state state;
    int64_t created_at;
    int64_t updated_at;
} kp_reservation;

/*
 * One atomic change of a user's credits. All of it happens or none of it:
 *   - if idem_key was used before: nothing changes, returns KP_EDUPLICATE and
 *     *out holds the current balance;
 *   - if expected_version >= 0 and differs from the balance's version:
 *     KP_ECONFLICT (the caller re-reads and retries);
 *   - if either resulting bucket would be negative: KP_ECREDITS;
 *   - if res_id is set: the reservation must be in res_from (KP_RES_NONE means
 *     it must not exist; it is then created with res_daily/res_monthly) and
 *     moves to res_to, else KP_ECONFLICT;
 *   - a ledger row is appended unless both deltas are 0 (and record_zero is 0).
 */
typedef struct kp_credit_change {
    const char *user_id;
    int64_t delta_daily;
    int64_t delta_monthly;
    const char *reason;
    const char *idem_key;
    int64_t expected_version; /* -1: no CAS */
    const char *res_id;       /* NULL: no reservation involved */
    kp_reservation_state res_from;
    kp_reservation_state res_to;
    int64_t res_daily; /* amounts recorded when the reservation is created */
    int64_t res_monthly;
    int record_zero; /* append the ledger row even when both deltas are 0 (a charge that says why) */
} kp_credit_change;

/* What credits_decide read for the domain's rule, inside its write. */
typedef struct kp_credit_state {
    kp_reservation res; /* the reservation asked for, when res_found */
    int res_found;
    kp_balance balance; /* the user's (or the reservation's user's), when balance_found */
    int balance_found;
} kp_credit_state;

/*
 * The domain's rule (domain/credits.c) as credits_decide applies it: from
 * what the store read (*st), returns KP_OK with *apply = 1 and *c filled (a
 * change applied as credits_apply applies it; its strings point into *st or
 * arg), KP_OK with *apply = 0 (nothing to write), or a refusal, which
 * credits_decide returns as is. It may be called more than once per
 * credits_decide (a backend that lost a race reads again), never after it
 * returns.
 */
typedef kp_status (*kp_credit_rule_fn)(const kp_credit_state *st, void *arg, kp_credit_change *c, int *apply,
                                       kp_err *err);

typedef enum kp_version_status { KP_VER_GENERATING = 1, KP_VER_READY, KP_VER_FAILED } kp_version_status;

typedef struct kp_project {
    char id[KP_ID_MAX]; /* "prj_..." (core/id.h: sorts by creation time) */
    char user_id[KP_ID_MAX];
    char name[KP_NAME_MAX]; /* <= 100 chars */
    int64_t latest_version; /* highest version number created (>= 1) */
    int64_t latest_ready;   /* highest version that is ready, 0 if none */
    int64_t created_at;     /* milliseconds since the epoch (the time in its id) */
    int64_t updated_at;     /* milliseconds */
} kp_project;

/*
 * A version of a project. The heap fields (prompt, message, files_json,
 * events_json, error_message) are owned by the struct: release them with
 * kp_version_clear(). When writing, NULL heap fields mean "" (or "[]").
 */
typedef struct kp_version {
    char project_id[KP_ID_MAX];
    int64_t n; /* 1, 2, ... */
    kp_version_status status;
    char reservation_id[KP_ID_MAX]; /* the credits it reserved */
    int settled;                    /* 1 once its reservation was committed or refunded */
    char error_code[64];            /* "" unless failed: "too_long", "invalid_output", "interrupted", ... */
    char *error_message;
    char *prompt;
    char *message;    /* the model's free text outside file blocks */
    char *files_json; /* JSON array: [{"path","size","content_type"}] of the whole app at this version */
    /* writing (version_finish, version_end): the events not stored yet, a JSON array
     * [{"id","event","data"}], appended to the event store in the same write (idempotent per id);
     * the row keeps none. Reading: always "[]" (the events are in the event store: events_list). */
    char *events_json;
    char model[KP_NAME_MAX];
    int64_t input_tokens;
    int64_t output_tokens;
    int64_t duration_ms;
    /* failed versions: whether the credit was refunded, and why it was refunded
     * or charged (domain/credits.h kp_credits_outcome reasons; "" before 2026-12) */
    int refunded;
    char credit_reason[KP_REASON_MAX];
    int64_t created_at; /* milliseconds since the epoch */
    int64_t updated_at; /* milliseconds */
    /* the lease on a generating version (see kp_lease): the instance running it and until when (ms) it
     * may; "" and 0 for rows written by older builds (an expired lease). Written by admit and, as given,
     * by project_create and version_create; renewed by leases_renew. */
    char owner[KP_ID_MAX];
    int64_t lease_until;
} kp_version;

/* Frees a version's heap fields (the struct itself is the caller's). */
void kp_version_clear(kp_version *v);
/* Frees an array of n versions from the store, and their heap fields. */
void kp_version_free_array(kp_version *v, size_t n);

/*
 * What admitting a generation writes, all in ONE transaction (store_ops.admit):
 *   1. when max_generating >= 0: the user's generating versions must be fewer,
 *      else KP_ERATE;
 *   2. the charge (a reservation: res_from KP_RES_NONE, res_to RESERVED), as
 *      credits_apply would apply it (KP_ECONFLICT on a stale expected_version,
 *      KP_ECREDITS when short); NULL for a free generation. Or, instead of a
 *      charge made beforehand, charge_rule: the store reads the user's
 *      balance as part of the admission and the domain's rule decides the
 *      charge on it, as credits_decide does (a refusal of the rule refuses
 *      the admission; *out, when given, then holds the balance read). A
 *      backend that writes under one lock (SQLite) decides inside the
 *      transaction, so admissions of one user never conflict; one that
 *      writes conditionally (DynamoDB) reads first and returns KP_ECONFLICT
 *      when the balance moved before its write;
 *   3. with project: the project (latest_version 1) and version 1, as
 *      project_create; else version->n of version->project_id, as
 *      version_create (KP_ECONFLICT while one generates or when n is not next),
 *      its lease held by owner until lease_until (ms; version->owner and
 *      version->lease_until are not read).
 * Any failure writes nothing; a crash anywhere leaves nothing of it either.
 */
typedef struct kp_admission {
    const char *user_id;
    int64_t max_generating;
    const kp_credit_change *charge;
    kp_credit_rule_fn charge_rule; /* with charge NULL: decides the charge on the balance read (see above) */
    void *charge_arg;
    const kp_project *project;
    const kp_version *version;
    const char *owner;   /* the instance that will run it (NULL or "": none, recoverable at once) */
    int64_t lease_until; /* ms since the epoch */
} kp_admission;

/*
 * A lease on a generating version (leases_renew). The instance that admitted
 * a generation owns its version until the lease runs out, and renews it while
 * it runs; a version whose lease ran out (or that has no owner) belongs to
 * recovery (versions_expired), in any instance. A lease that has run out is
 * lost for good: it can no longer be renewed, only ended. Ending a version
 * (version_end) is conditional on it still generating, so whichever of the
 * owner and a recoverer writes first ends it, and only once.
 */
typedef struct kp_lease {
    char project_id[KP_ID_MAX];
    int64_t n;
    int held;             /* out: 1 renewed; 0 lost (not generating, another owner, or run out) */
    int cancel_requested; /* out, when held: a cancel was requested (version_request_cancel) */
} kp_lease;

/*
 * One event of a generation (the SSE events a reader sees), in the event
 * store: append-only, keyed by (project, version, id); ids start at 1 and are
 * contiguous per version. The running generation appends its events in
 * batches as they happen, and version_end the last ones; readers on any
 * instance list them after the last id they saw. (DynamoDB: partition
 * "{project}#{n}", sort key id, a conditional put per event.)
 */
#define KP_EVENT_TYPE_MAX 16
typedef struct kp_event {
    int64_t id;
    char type[KP_EVENT_TYPE_MAX]; /* "project", "delta", "file", "done", "error" */
    char *data;                   /* its JSON text; in events_list results owned by the array */
} kp_event;

/* The events of one version for events_append_many (borrowed). */
typedef struct kp_event_batch {
    const char *project_id;
    int64_t n;
    const kp_event *events;
    size_t count;
} kp_event_batch;

/* Frees an array of n events from events_list, and their data. */
void kp_event_free_array(kp_event *e, size_t n);

typedef struct kp_store kp_store;

/* The version's stored events with id > after_id as a JSON array [{"id","event","data"}] (events_list, a
 * page at a time). *out malloc'd. */
kp_status kp_store_events_json(kp_store *s, const char *project_id, int64_t n, int64_t after_id, char **out,
                               kp_err *err);

/* ---- the daily bonus: walking every user -------------------------------- */

#define KP_PAGE_TOKEN_MAX 1024 /* an opaque page token, with its NUL */

/* What the daily bonus rule (domain/credits.h kp_credits_bonus_change) needs
 * of one user: one joined read on SQLite, one item of a Scan on DynamoDB. */
typedef struct kp_bonus_candidate {
    char user_id[KP_ID_MAX];
    int64_t daily_bonus; /* their plan's */
    kp_balance balance;  /* as read: its version is the grant's compare-and-swap token */
    int email_verified;
    int verification_required;
} kp_bonus_candidate;

/* The daily bonus rule as bonus_page_grant applies it (domain/credits.c,
 * kp_credits_bonus_change behind it): returns 1 and fills *c when user u gets
 * a change, its idempotency key written into key (KP_IDEM_MAX bytes) and
 * c->user_id, c->idem_key pointing into u and key; 0 when not. */
typedef int (*kp_bonus_rule_fn)(const kp_bonus_candidate *u, void *arg, char *key, kp_credit_change *c);

/* One page of the daily bonus as bonus_page_grant read and granted it. */
typedef struct kp_bonus_page {
    kp_bonus_candidate *users; /* malloc'd, n of them as read; the caller frees it with free() */
    kp_status *results;        /* malloc'd, one per user (below); the caller frees it with free() */
    size_t n;
    size_t granted; /* users granted by this call */
} kp_bonus_page;

/* ---- billing (Stripe): customers, subscriptions, processed events ---- */

#define KP_STRIPE_ID_MAX 128 /* Stripe object ids: "cus_...", "sub_...", "evt_...", "in_..." */

/* A user's link to Stripe: their customer, and the subscription that decides
 * their plan (their "current" one; domain/billing.h says which that is). */
typedef struct kp_billing_customer {
    char user_id[KP_ID_MAX];
    char customer_id[KP_STRIPE_ID_MAX];     /* "" until Checkout made one */
    char subscription_id[KP_STRIPE_ID_MAX]; /* "" when none */
    int64_t updated_at;                     /* unix seconds */
} kp_billing_customer;

/* A Stripe subscription as the webhooks last described it. */
typedef struct kp_subscription {
    char id[KP_STRIPE_ID_MAX];          /* "sub_..." */
    char user_id[KP_ID_MAX];            /* "" until linked to a user */
    char customer_id[KP_STRIPE_ID_MAX]; /* "cus_..." */
    char status[KP_SUB_STATUS_MAX];     /* Stripe's status; "" while only known by a checkout */
    char price_id[KP_NAME_MAX];         /* its first item's price */
    char plan_id[KP_PLAN_ID_MAX];       /* the plan with that stripe_price_id; "" when none */
    int64_t current_period_end;         /* unix seconds; 0 unknown */
    int cancel_at_period_end;
    int64_t event_created; /* `created` of the last event applied to it (unix seconds) */
    int64_t version;       /* bumps on every write; the CAS token (0: not stored yet) */
    int64_t updated_at;    /* unix seconds */
} kp_subscription;

/*
 * What one Stripe event changes, all in ONE transaction (store_ops.billing_apply):
 *   1. event_id is recorded; if it was recorded before, nothing changes and
 *      the result is KP_EDUPLICATE;
 *   2. subscription (may be NULL) is written if the stored row's version equals
 *      subscription->version (0: the row must not exist), its version becoming
 *      one more; else KP_ECONFLICT (the caller re-reads and decides again);
 *   3. customer (may be NULL) is written (by user_id); KP_ECONFLICT when its
 *      customer_id already belongs to another user;
 *   4. plan_user_id + plan_id (both or neither): the user's plan is set
 *      (KP_ENOTFOUND for an unknown user or plan);
 *   5. credit (may be NULL) is applied as credits_apply would; its idempotency
 *      key already used is not an error (*credited = 0), else *credited = 1.
 * Any failure writes nothing.
 */
typedef struct kp_billing_write {
    const char *event_id;
    const char *event_type;
    int64_t event_created;
    const kp_subscription *subscription;
    const kp_billing_customer *customer;
    const char *plan_user_id;
    const char *plan_id;
    const kp_credit_change *credit;
} kp_billing_write;

typedef struct kp_store_ops {
    /* users */
    kp_status (*user_create)(kp_store *s, const kp_user *u,
                             kp_err *err); /* KP_ECONFLICT on duplicate email or external_sub */
    kp_status (*user_get)(kp_store *s, const char *id, kp_user *out, kp_err *err); /* KP_ENOTFOUND */
    /* user_create and the credit change c (its first credits, as credits_apply) in ONE transaction. */
    kp_status (*user_create_credited)(kp_store *s, const kp_user *u, const kp_credit_change *c, kp_err *err);
    kp_status (*user_get_by_email)(kp_store *s, const char *email, kp_user *out, kp_err *err);
    kp_status (*user_get_by_sub)(kp_store *s, const char *external_sub, kp_user *out, kp_err *err);
    kp_status (*user_set_admin)(kp_store *s, const char *id, int is_admin, kp_err *err);
    kp_status (*user_set_plan)(kp_store *s, const char *id, const char *plan_id,
                               kp_err *err); /* KP_ENOTFOUND for user or plan */

    /* e-mail verification */
    /* Marks the user's address verified. KP_ENOTFOUND. */
    kp_status (*user_set_email_verified)(kp_store *s, const char *id, kp_err *err);
    /* Stores a token (by its hash) for the user, dropping the user's earlier unused ones. */
    kp_status (*verification_create)(kp_store *s, const char *token_hash, const kp_verification *v, kp_err *err);
    /* Atomically: if the token is unused and expires after now, marks it used at now and its user's
     * address verified (KP_OK). Else KP_ENOTFOUND (unknown) or KP_ECONFLICT (used or expired).
     * *out (may be NULL) receives the token's record as it was. */
    kp_status (*verification_consume)(kp_store *s, const char *token_hash, int64_t now, kp_verification *out,
                                      kp_err *err);

    /* plans */
    kp_status (*plan_get)(kp_store *s, const char *id, kp_plan *out, kp_err *err);
    /* All plans (active_only: only active ones), ordered by price then id. *out is malloc'd. */
    kp_status (*plan_list)(kp_store *s, int active_only, kp_plan **out, size_t *n, kp_err *err);
    /* Creates or replaces a plan; *created set to 1 if it did not exist. */
    kp_status (*plan_put)(kp_store *s, const kp_plan *p, int *created, kp_err *err);

    /* credits */
    kp_status (*balance_get)(kp_store *s, const char *user_id, kp_balance *out, kp_err *err);
    /* A user with their plan, balance and current subscription (kp_account), read consistently (every
     * authenticated request's; GET /v1/me shows it all). */
    kp_status (*account_get)(kp_store *s, const char *user_id, kp_account *out, kp_err *err);
    kp_status (*credits_apply)(kp_store *s, const kp_credit_change *c, kp_balance *out, kp_err *err);
    kp_status (*reservation_get)(kp_store *s, const char *id, kp_reservation *out, kp_err *err);
    /*
     * A credit change decided on what it changes, in one step: reads reservation res_id (NULL: none) and
     * the balance of user_id (NULL: of the reservation's user, if found), calls rule on them, and applies
     * the change it returns as credits_apply would (its outcomes, KP_EDUPLICATE, KP_ECONFLICT,
     * KP_ECREDITS, come back as credits_apply's), where no other write comes between the read and the
     * write on SQLite (one transaction); DynamoDB reads, then writes with the balance's version, and a
     * race lost comes back as KP_ECONFLICT (the caller calls again). *out (may be NULL) receives the
     * balance after the change, or as read.
     */
    kp_status (*credits_decide)(kp_store *s, const char *user_id, const char *res_id, kp_credit_rule_fn rule, void *arg,
                                kp_balance *out, kp_err *err);
    /* A user's ledger, newest first, entries with seq < before_seq (0: from the newest). *out malloc'd. */
    kp_status (*ledger_list)(kp_store *s, const char *user_id, int64_t before_seq, size_t limit, kp_ledger_entry **out,
                             size_t *n, kp_err *err);
    /* Sum of the user's ledger deltas (an audit check: must equal the balance). */
    kp_status (*ledger_sum)(kp_store *s, const char *user_id, kp_balance *out, kp_err *err);

    /*
     * Applies n credit changes, each as credits_apply would and each on its
     * own: results[i] receives change i's outcome (KP_OK, KP_EDUPLICATE,
     * KP_ECONFLICT, KP_ECREDITS, KP_ENOTFOUND, KP_EINVAL), and a change that
     * fails writes nothing while the others go on. A backend may write them
     * together (SQLite: one transaction per call) or one by one (DynamoDB:
     * one TransactWriteItems each). Returns non-OK only when the store itself
     * failed; then any subset may have been applied, and since every change
     * carries its idempotency key, running them again is safe.
     */
    kp_status (*credits_apply_many)(kp_store *s, const kp_credit_change *c, size_t n, kp_status *results, kp_err *err);

    /*
     * One page of a walk over every user with a balance (for the daily
     * bonus): at most limit candidates into *out (malloc'd; *n of them) and
     * the token of the next page into next, "" when the walk is done. token
     * is "" for the first page, then the previous page's next; tokens are
     * opaque (SQLite: the page's last user id; DynamoDB: LastEvaluatedKey)
     * and belong to their segment. A page may be short, even empty, before
     * the end. The walk may be split into total_segments (>= 1) disjoint
     * parts, segment 0 .. total_segments - 1, walked independently (in
     * parallel: DynamoDB's parallel Scan): every user is in exactly one. A
     * user created during the walk may or may not be in it; the balance is
     * as it was when read (a write that relies on it uses its version).
     */
    kp_status (*users_bonus_page)(kp_store *s, const char *token, unsigned segment, unsigned total_segments,
                                  size_t limit, kp_bonus_candidate **out, size_t *n, char next[KP_PAGE_TOKEN_MAX],
                                  kp_err *err);

    /*
     * The daily bonus over one page, read and granted in one step: reads the
     * page as users_bonus_page does (token, segments, limit, next alike) into
     * out->users, asks rule (with arg) for each user's change and applies
     * the changes as credits_apply_many does, each on its own. A change must
     * be for its own user, without a reservation; the keys of one page must
     * differ (else KP_EINVAL and nothing applied). out->results[i] is user
     * i's outcome: KP_OK (granted now, or the rule made no change),
     * KP_EDUPLICATE (key used before), KP_ECONFLICT (the balance moved since
     * the page was read: read the user again), KP_ENOTFOUND (gone),
     * KP_ECREDITS or KP_EINVAL (the change refused); out->granted counts the
     * KP_OK ones that were granted. SQLite reads and writes the page in one
     * transaction (so never KP_ECONFLICT), in a few statements per page;
     * DynamoDB composes users_bonus_page and credits_apply_many (its requests
     * per user unchanged). Returns non-OK only when the store failed; then out
     * is empty (freed) and, as with credits_apply_many, running it again is
     * safe.
     */
    kp_status (*bonus_page_grant)(kp_store *s, const char *token, unsigned segment, unsigned total_segments,
                                  size_t limit, kp_bonus_rule_fn rule, void *arg, kp_bonus_page *out,
                                  char next[KP_PAGE_TOKEN_MAX], kp_err *err);

    /* projects and versions */
    /* Creates project p (latest_version 1) with its first version v (n 1, generating) atomically. */
    kp_status (*project_create)(kp_store *s, const kp_project *p, const kp_version *v, kp_err *err);
    kp_status (*project_get)(kp_store *s, const char *id, kp_project *out, kp_err *err);
    /* A user's projects, newest first (created_at, then id, descending), strictly after the cursor
     * (before_created_at, before_id) when before_id is non-empty. *out malloc'd. */
    kp_status (*project_list)(kp_store *s, const char *user_id, int64_t before_created_at, const char *before_id,
                              size_t limit, kp_project **out, size_t *n, kp_err *err);
    /* Deletes the project, its versions and their events. KP_ENOTFOUND if absent; KP_ECONFLICT while one of its
     * versions is generating (checked in the same transaction as the delete). */
    kp_status (*project_delete)(kp_store *s, const char *id, kp_err *err);
    /* on: marks the project as being deleted, checking in the same transaction that no version generates
     * (KP_ECONFLICT); from then on version_create and admit refuse it (KP_ENOTFOUND). off: clears the mark.
     * KP_ENOTFOUND if absent. */
    kp_status (*project_mark_deleting)(kp_store *s, const char *id, int on, kp_err *err);
    /* Adds version v->n to its project, which must have latest_version == v->n - 1 and no version
     * generating (else KP_ECONFLICT); bumps latest_version and updated_at. */
    kp_status (*version_create)(kp_store *s, const kp_version *v, kp_err *err);
    kp_status (*version_get)(kp_store *s, const char *project_id, int64_t n, kp_version *out, kp_err *err);
    /* All versions of a project, oldest first. *out malloc'd (kp_version_free_array). */
    kp_status (*version_list)(kp_store *s, const char *project_id, kp_version **out, size_t *n, kp_err *err);
    /* Ends a generating version: status READY or FAILED plus the result fields of v (error_*, message,
     * files_json, model, tokens, duration); v->events_json's events are appended to the event store in the
     * same transaction. KP_ECONFLICT if it is not generating. On READY the
     * project's latest_ready becomes v->n. Updates the project's updated_at. */
    kp_status (*version_finish)(kp_store *s, const kp_version *v, kp_err *err);
    kp_status (*version_set_settled)(kp_store *s, const char *project_id, int64_t n, kp_err *err);
    /* Ends a generating version and settles it in ONE transaction: applies the credit change c (as
     * credits_apply; NULL: none, a free generation), finishes the row as version_finish does (with
     * v->refunded and v->credit_reason) and marks it settled. Any failure changes nothing; c's
     * outcomes (KP_EDUPLICATE, KP_ECONFLICT, KP_ECREDITS) come back as credits_apply's do. *out
     * (may be NULL) receives the balance after c. */
    kp_status (*version_end)(kp_store *s, const kp_version *v, const kp_credit_change *c, kp_balance *out, kp_err *err);
    /* How many versions of the user's projects are generating. */
    kp_status (*versions_generating_count)(kp_store *s, const char *user_id, int64_t *count, kp_err *err);
    /* Versions that ended (ready or failed) but are not settled, which only older builds left; for
     * recovery. *out malloc'd. */
    kp_status (*versions_unsettled)(kp_store *s, kp_version **out, size_t *n, kp_err *err);
    /* Generating versions whose lease ran out before now_ms (lease_until < now_ms; rows without an owner
     * included), oldest lease first, at most limit; for recovery. *out malloc'd (kp_version_free_array). */
    kp_status (*versions_expired)(kp_store *s, int64_t now_ms, size_t limit, kp_version **out, size_t *n, kp_err *err);
    /* Renews owner's leases: for each of leases[0..n), one conditional write: if the version is
     * generating, owned by owner and its lease has not run out (lease_until >= now_ms), its lease_until
     * becomes until_ms and held is 1; else held is 0 and nothing changes. The writes are independent (the
     * call is not one transaction on every backend); an error leaves the held flags undefined. */
    kp_status (*leases_renew)(kp_store *s, const char *owner, int64_t now_ms, int64_t until_ms, kp_lease *leases,
                              size_t n, kp_err *err);
    /* Hands a lease over (a generation admitted by one instance, resumed by another: gen/generator.h
     * kp_gen_resume): one conditional write: if version n of project_id is generating, owned by from_owner and
     * its lease has not run out (lease_until >= now_ms), its owner becomes to_owner and its lease_until
     * until_ms. KP_ECONFLICT when it is not (ended, another owner, run out, no such version): nothing changes. */
    kp_status (*lease_transfer)(kp_store *s, const char *project_id, int64_t n, const char *from_owner,
                                const char *to_owner, int64_t now_ms, int64_t until_ms, kp_err *err);
    /* Asks whoever runs version n of project_id to cancel it (a cancel through another instance than the
     * one generating it): one conditional write marks it cancel-requested if it is generating; marking it
     * again is KP_OK and changes nothing. Its owner learns it from its next leases_renew
     * (kp_lease.cancel_requested). KP_ECONFLICT when it is not generating (ended, no such version). */
    kp_status (*version_request_cancel)(kp_store *s, const char *project_id, int64_t n, kp_err *err);

    /* the event store (kp_event) */
    /* Appends events[0..count) of version n (any ids >= 1, each with its type and JSON data). Idempotent per
     * id: an event whose id is stored already is left as it was (a retried batch adds nothing twice). */
    kp_status (*events_append)(kp_store *s, const char *project_id, int64_t n, const kp_event *events, size_t count,
                               kp_err *err);
    /* events_append for several versions at once (batches[0..n)), idempotent per id as it is: SQLite writes
     * them in ONE transaction (all or none), DynamoDB version by version. KP_EINVAL (nothing written) when
     * any batch is invalid. */
    kp_status (*events_append_many)(kp_store *s, const kp_event_batch *batches, size_t n, kp_err *err);
    /* The version's events with id > after_id, in id order, at most limit. *out malloc'd (kp_event_free_array). */
    kp_status (*events_list)(kp_store *s, const char *project_id, int64_t n, int64_t after_id, size_t limit,
                             kp_event **out, size_t *count, kp_err *err);
    /* The highest stored event id of the version (0: none). */
    kp_status (*events_last_id)(kp_store *s, const char *project_id, int64_t n, int64_t *last_id, kp_err *err);

    /* Admits a generation atomically (see kp_admission). *out (may be NULL) receives the balance after the
     * charge, or the current one when the charge was refused. */
    kp_status (*admit)(kp_store *s, const kp_admission *a, kp_balance *out, kp_err *err);
    /* Reservations still reserved that no version refers to (for crash recovery). *out malloc'd. */
    kp_status (*reservations_orphaned)(kp_store *s, kp_reservation **out, size_t *n, kp_err *err);

    /* billing (Stripe) */
    /* The user's link to Stripe. KP_ENOTFOUND when the user never went through Checkout. */
    kp_status (*billing_customer_get)(kp_store *s, const char *user_id, kp_billing_customer *out, kp_err *err);
    /* The same, found by Stripe customer id. KP_ENOTFOUND. */
    kp_status (*billing_customer_find)(kp_store *s, const char *customer_id, kp_billing_customer *out, kp_err *err);
    kp_status (*subscription_get)(kp_store *s, const char *id, kp_subscription *out, kp_err *err); /* KP_ENOTFOUND */
    /* Applies one event's changes (see kp_billing_write). *credited (may be NULL): whether credit was applied now. */
    kp_status (*billing_apply)(kp_store *s, const kp_billing_write *w, int *credited, kp_err *err);

    /* snapshots: after snapshot_begin, the handle's reads may share one view of the data, taken at the
     * first of them, until snapshot_end; any write through the handle ends it first (so the handle's
     * own writes, and its reads after them, see the latest data). For a caller that can take data as
     * old as the snapshot's start: the HTTP host ends one at each turn of its event loop, so that the
     * requests of one turn (which all arrived before it began) share one SQLite read transaction
     * instead of taking the WAL's read locks each (docs/ARCHITECTURE.md, "Request flow"). A backend
     * with nothing to share (DynamoDB: a request per read) does nothing. Both may be called at any
     * time: begin with one open, or end with none, does nothing. */
    void (*snapshot_begin)(kp_store *s);
    void (*snapshot_end)(kp_store *s);

    /* health */
    kp_status (*ping)(kp_store *s, kp_err *err);
    void (*close)(kp_store *s);
} kp_store_ops;

struct kp_store {
    const kp_store_ops *ops;
    void *impl;
};

/* The name of the first operation ops leaves NULL ("" when complete): a backend still being built
 * (store/dynamodb/) is refused by serve with that name. */
const char *kp_store_missing_op(const kp_store_ops *ops);

/* ops->snapshot_begin / snapshot_end, doing nothing for a NULL handle or op (test doubles). */
void kp_store_snapshot_begin(kp_store *s);
void kp_store_snapshot_end(kp_store *s);

#endif
