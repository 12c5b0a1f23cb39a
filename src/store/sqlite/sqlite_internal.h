/*
 * sqlite_internal.h - what the files of the SQLite backend share: the handle,
 * the statement cache, transactions and the column helpers (defined in
 * sqlite_store.c), what one file of operations lends another (credits inside
 * other writes), and the operations each file implements, which
 * sqlite_store.c puts in the ops table.
 *
 * Internal to src/store/sqlite/: nothing outside includes it.
 */
#ifndef KP_SQLITE_INTERNAL_H
#define KP_SQLITE_INTERNAL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "store/store.h"

/* The statement cache's slots: each file owns a range (base, size). */
#define SQ_SLOTS_CORE 0
#define SQ_SLOTS_CORE_N 8
#define SQ_SLOTS_ACCOUNTS 8
#define SQ_SLOTS_ACCOUNTS_N 24
#define SQ_SLOTS_CREDITS 32
#define SQ_SLOTS_CREDITS_N 16
#define SQ_SLOTS_PROJECTS 48
#define SQ_SLOTS_PROJECTS_N 32
#define SQ_SLOTS_BILLING 80
#define SQ_SLOTS_BILLING_N 16
#define SQ_SLOTS_EVENTS 96
#define SQ_SLOTS_EVENTS_N 8
#define SQ_SLOTS_BONUS 104
#define SQ_SLOTS_BONUS_N 8
#define SQ_STMT_SLOTS 112

typedef struct sq_store sq_store;

sq_store *sq_impl(kp_store *s);
sqlite3 *sq_db(sq_store *h);

/* The statement of slot (prepared from sql on first use, then cached for the
 * handle's life); reset it with sq_stmt_done after use. */
kp_status sq_stmt_cached(sq_store *h, unsigned slot, const char *sql, sqlite3_stmt **out, kp_err *err);
void sq_stmt_done(sqlite3_stmt *st);

/* Text parameters (NULL binds ""); the string must outlive the statement's use. */
void sq_bind_text(sqlite3_stmt *st, int idx, const char *s);
/* Copies a text column into dst (truncated to cap - 1 bytes, NUL-terminated). */
void sq_column_copy(sqlite3_stmt *st, int col, char *dst, size_t cap);
/* 1 when s is non-NULL and fits with its NUL in cap bytes (sq_nonempty_fits: and is not ""). */
int sq_fits(const char *s, size_t cap);
int sq_nonempty_fits(const char *s, size_t cap);

/* Steps a bound statement into a new array of elem-sized items, each filled
 * by read_row; resets st. On failure frees what it read (free_items, or
 * free() when NULL) and leaves *out untouched. */
typedef kp_status (*sq_row_reader)(sqlite3_stmt *st, void *item, kp_err *err);
kp_status sq_collect_rows(sq_store *h, sqlite3_stmt *st, size_t elem, sq_row_reader read_row,
                          void (*free_items)(void *items, size_t n), const char *what, void **out, size_t *n,
                          kp_err *err);
/* A list limit as SQL's integer. */
int64_t sq_limit(size_t limit);

/* A snapshot (store.h snapshot_begin): a read transaction (BEGIN DEFERRED)
 * that the handle's SELECTs share until sq_snapshot_end. Fetching any other
 * cached statement, sq_tx_begin and sq_run_balance_write end it first, so a
 * handle's writes, and its reads after them, always see the latest data.
 * Both are no-ops when there is nothing to do. */
void sq_snapshot_begin(sq_store *h);
void sq_snapshot_end(sq_store *h);

/* BEGIN IMMEDIATE, and its end: commit when rc is KP_OK, else roll back; returns the final status. */
kp_status sq_tx_begin(sq_store *h, kp_err *err);
kp_status sq_tx_end(sq_store *h, kp_status rc, kp_err *err);

/* A write that reports a balance, run in its own transaction: *out (may be
 * NULL) receives what body left in its balance, also on failure. */
typedef kp_status (*sq_balance_write_fn)(sq_store *h, const void *arg, kp_balance *out, kp_err *err);
kp_status sq_run_balance_write(sq_store *h, sq_balance_write_fn body, const void *arg, kp_balance *out, kp_err *err);

/* Inside a transaction: credits_apply's work (store.h kp_credit_change), and its argument check. */
int sq_credit_change_valid(const kp_credit_change *c);
kp_status sq_credits_apply_locked(sq_store *h, const kp_credit_change *c, int64_t now, kp_balance *out, kp_err *err);
/* Inside a write: reads what rule needs (the reservation res_id, when given; the balance of user_id, or of
 * the reservation's user), lets it decide, applies its change. *read (may be NULL): the balance read;
 * *out: the balance read, then as written. */
kp_status sq_credits_decide_locked(sq_store *h, const char *user_id, const char *res_id, kp_credit_rule_fn rule,
                                   void *arg, kp_balance *read, kp_balance *out, kp_err *err);
/* Binds one ledger row of change c (user_id, delta_daily, delta_monthly, balance_daily, balance_monthly, reason,
 * idem_key, reservation_id, created_at: 9 parameters) from parameter first on. */
void sq_ledger_bind(sqlite3_stmt *st, int first, const kp_credit_change *c, const kp_balance *after, int64_t now);
/* Inside a transaction: sets a user's plan (KP_ENOTFOUND for an unknown user or plan). */
kp_status sq_user_plan_write(sq_store *h, const char *user_id, const char *plan_id, kp_err *err);

/* sqlite_credits.c: a RESERVATION row (id, user_id, daily, monthly, state, created_at, updated_at) into a
 * kp_reservation (an sq_row_reader). */
kp_status sq_read_reservation(sqlite3_stmt *st, void *item, kp_err *err);

/* The operations (store.h), by file. */
kp_status sq_user_create(kp_store *s, const kp_user *u, kp_err *err);
kp_status sq_user_create_credited(kp_store *s, const kp_user *u, const kp_credit_change *c, kp_err *err);
kp_status sq_user_get(kp_store *s, const char *id, kp_user *out, kp_err *err);
kp_status sq_user_get_by_email(kp_store *s, const char *email, kp_user *out, kp_err *err);
kp_status sq_user_get_by_sub(kp_store *s, const char *external_sub, kp_user *out, kp_err *err);
kp_status sq_user_set_admin(kp_store *s, const char *id, int is_admin, kp_err *err);
kp_status sq_user_set_plan(kp_store *s, const char *id, const char *plan_id, kp_err *err);
kp_status sq_user_set_email_verified(kp_store *s, const char *id, kp_err *err);
kp_status sq_verification_create(kp_store *s, const char *token_hash, const kp_verification *v, kp_err *err);
kp_status sq_verification_consume(kp_store *s, const char *token_hash, int64_t now, kp_verification *out, kp_err *err);
kp_status sq_plan_get(kp_store *s, const char *id, kp_plan *out, kp_err *err);
kp_status sq_plan_list(kp_store *s, int active_only, kp_plan **out, size_t *n, kp_err *err);
kp_status sq_plan_put(kp_store *s, const kp_plan *p, int *created, kp_err *err);
kp_status sq_account_get(kp_store *s, const char *user_id, kp_account *out, kp_err *err);

kp_status sq_balance_get(kp_store *s, const char *user_id, kp_balance *out, kp_err *err);
kp_status sq_credits_apply(kp_store *s, const kp_credit_change *c, kp_balance *out, kp_err *err);
kp_status sq_reservation_get(kp_store *s, const char *id, kp_reservation *out, kp_err *err);
kp_status sq_credits_decide(kp_store *s, const char *user_id, const char *res_id, kp_credit_rule_fn rule, void *arg,
                            kp_balance *out, kp_err *err);
kp_status sq_ledger_list(kp_store *s, const char *user_id, int64_t before_seq, size_t limit, kp_ledger_entry **out,
                         size_t *n, kp_err *err);
kp_status sq_ledger_sum(kp_store *s, const char *user_id, kp_balance *out, kp_err *err);
kp_status sq_credits_apply_many(kp_store *s, const kp_credit_change *c, size_t n, kp_status *results, kp_err *err);
kp_status sq_users_bonus_page(kp_store *s, const char *token, unsigned segment, unsigned total_segments, size_t limit,
                              kp_bonus_candidate **out, size_t *n, char next[KP_PAGE_TOKEN_MAX], kp_err *err);
/* sqlite_bonus.c */
kp_status sq_bonus_page_grant(kp_store *s, const char *token, unsigned segment, unsigned total_segments, size_t limit,
                              kp_bonus_rule_fn rule, void *arg, kp_bonus_page *out, char next[KP_PAGE_TOKEN_MAX],
                              kp_err *err);

kp_status sq_project_create(kp_store *s, const kp_project *p, const kp_version *v, kp_err *err);
kp_status sq_project_get(kp_store *s, const char *id, kp_project *out, kp_err *err);
kp_status sq_project_list(kp_store *s, const char *user_id, int64_t before_created_at, const char *before_id,
                          size_t limit, kp_project **out, size_t *n, kp_err *err);
kp_status sq_project_delete(kp_store *s, const char *id, kp_err *err);
kp_status sq_project_mark_deleting(kp_store *s, const char *id, int on, kp_err *err);
kp_status sq_version_create(kp_store *s, const kp_version *v, kp_err *err);
kp_status sq_version_get(kp_store *s, const char *project_id, int64_t n, kp_version *out, kp_err *err);
kp_status sq_version_list(kp_store *s, const char *project_id, kp_version **out, size_t *n, kp_err *err);
kp_status sq_version_finish(kp_store *s, const kp_version *v, kp_err *err);
kp_status sq_version_set_settled(kp_store *s, const char *project_id, int64_t n, kp_err *err);
kp_status sq_version_end(kp_store *s, const kp_version *v, const kp_credit_change *c, kp_balance *out, kp_err *err);
kp_status sq_versions_generating_count(kp_store *s, const char *user_id, int64_t *count, kp_err *err);
kp_status sq_versions_unsettled(kp_store *s, kp_version **out, size_t *n, kp_err *err);
kp_status sq_versions_expired(kp_store *s, int64_t now_ms, size_t limit, kp_version **out, size_t *n, kp_err *err);
kp_status sq_leases_renew(kp_store *s, const char *owner, int64_t now_ms, int64_t until_ms, kp_lease *leases, size_t n,
                          kp_err *err);
kp_status sq_lease_transfer(kp_store *s, const char *project_id, int64_t n, const char *from_owner,
                            const char *to_owner, int64_t now_ms, int64_t until_ms, kp_err *err);
kp_status sq_version_request_cancel(kp_store *s, const char *project_id, int64_t n, kp_err *err);
kp_status sq_admit(kp_store *s, const kp_admission *a, kp_balance *out, kp_err *err);
kp_status sq_reservations_orphaned(kp_store *s, kp_reservation **out, size_t *n, kp_err *err);

kp_status sq_events_append(kp_store *s, const char *project_id, int64_t n, const kp_event *events, size_t count,
                           kp_err *err);
kp_status sq_events_append_many(kp_store *s, const kp_event_batch *batches, size_t n, kp_err *err);
kp_status sq_events_list(kp_store *s, const char *project_id, int64_t n, int64_t after_id, size_t limit, kp_event **out,
                         size_t *count, kp_err *err);
kp_status sq_events_last_id(kp_store *s, const char *project_id, int64_t n, int64_t *last_id, kp_err *err);
/* sqlite_events.c, inside a transaction: appends a JSON array of events [{"id","event","data"}] (NULL or
 * "[]": none), idempotent per id; deletes a project's events. */
kp_status sq_events_append_json_locked(sq_store *h, const char *project_id, int64_t n, const char *events_json,
                                       kp_err *err);
kp_status sq_events_delete_project_locked(sq_store *h, const char *project_id, kp_err *err);

kp_status sq_billing_customer_get(kp_store *s, const char *user_id, kp_billing_customer *out, kp_err *err);
kp_status sq_billing_customer_find(kp_store *s, const char *customer_id, kp_billing_customer *out, kp_err *err);
kp_status sq_subscription_get(kp_store *s, const char *id, kp_subscription *out, kp_err *err);
kp_status sq_billing_apply(kp_store *s, const kp_billing_write *w, int *credited, kp_err *err);

#endif
