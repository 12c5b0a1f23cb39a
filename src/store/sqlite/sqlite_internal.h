/*
 * sqlite_internal.h - what the files of the SQLite backend share: the handle,
 * the statement cache, transactions and the column helpers (defined in
 * sqlite_store.c), and the operations the other files implement
 * (sqlite_billing.c), which sqlite_store.c puts in the ops table.
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

/* Statement slots for the files other than sqlite_store.c; each file owns a
 * range (sqlite_billing.c: 0..15). */
#define SQ_MODULE_STMTS 16

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

/* BEGIN IMMEDIATE, and its end: commit when rc is KP_OK, else roll back; returns the final status. */
kp_status sq_tx_begin(sq_store *h, kp_err *err);
kp_status sq_tx_end(sq_store *h, kp_status rc, kp_err *err);

/* Inside a transaction: credits_apply's work (store.h kp_credit_change), and its argument check. */
int sq_credit_change_valid(const kp_credit_change *c);
kp_status sq_credits_apply_locked(sq_store *h, const kp_credit_change *c, int64_t now, kp_balance *out, kp_err *err);
/* Inside a transaction: sets a user's plan (KP_ENOTFOUND for an unknown user or plan). */
kp_status sq_user_plan_write(sq_store *h, const char *user_id, const char *plan_id, kp_err *err);

/* sqlite_billing.c: the billing operations (store.h). */
kp_status sq_billing_customer_get(kp_store *s, const char *user_id, kp_billing_customer *out, kp_err *err);
kp_status sq_billing_customer_find(kp_store *s, const char *customer_id, kp_billing_customer *out, kp_err *err);
kp_status sq_subscription_get(kp_store *s, const char *id, kp_subscription *out, kp_err *err);
kp_status sq_billing_apply(kp_store *s, const kp_billing_write *w, int *credited, kp_err *err);

#endif
