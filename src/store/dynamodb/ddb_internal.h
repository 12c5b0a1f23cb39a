/*
 * ddb_internal.h - what the DynamoDB backend's op modules (ddb_store.c,
 * ddb_billing.c, ...) share: the handle's client, consistent reads, one
 * TransactWriteItems, and the credit change's read and items, so that an op
 * that changes credits (billing_apply) joins its transaction instead of
 * writing them another way. Not for use outside src/store/dynamodb/.
 *
 * Ownership: json_t results are new references the caller decrefs; items
 * arrays given to kp_ddb_put_new take the item's reference.
 */
#ifndef KP_DDB_INTERNAL_H
#define KP_DDB_INTERNAL_H

#include <jansson.h>

#include "store/dynamodb/ddb_client.h"
#include "store/store.h"

/* The client of a store opened by kp_ddb_store_open. */
kp_ddb *kp_ddb_of(kp_store *s);

/* GetItem (consistent) of pk/sk: *item is the item or NULL when absent. */
kp_status kp_ddb_get_item(kp_ddb *d, const char *pk, const char *sk, json_t **item, kp_err *err);
/* The same of prefix+id / sk for an item that must exist: KP_ENOTFOUND "{what} not found" when absent
 * (or id empty or not shorter than id_cap). */
kp_status kp_ddb_get_existing(kp_ddb *d, const char *prefix, const char *id, size_t id_cap, const char *sk,
                              const char *what, json_t **item, kp_err *err);
/* Calls fn on every item of a Query (all pages); req is borrowed (ExclusiveStartKey is set on it). */
typedef kp_status (*kp_ddb_item_fn)(const json_t *item, void *ctx, kp_err *err);
kp_status kp_ddb_query_all(kp_ddb *d, json_t *req, kp_ddb_item_fn fn, void *ctx, kp_err *err);
/* One page of a Query: fn on each of its items. When DynamoDB ended the page before the last item
 * (LastEvaluatedKey), req's ExclusiveStartKey is set to where the next page starts and *more (if
 * not NULL) is 1; else *more is 0. req is borrowed. */
kp_status kp_ddb_query_page(kp_ddb *d, json_t *req, kp_ddb_item_fn fn, void *ctx, int *more, kp_err *err);
/* Appends a Put of item (reference taken), conditional on it not existing, to items; nonzero on failure. */
int kp_ddb_put_new(json_t *items, const char *table, json_t *item);
/* One TransactWriteItems of items (borrowed); a cancellation is KP_ECONFLICT with kp_ddb_reason_*. */
kp_status kp_ddb_transact(kp_ddb *d, json_t *items, kp_err *err);

/* What a credit change reads first, in one consistent BatchGetItem. */
typedef struct kp_ddb_credit_state {
    json_t *user; /* NULL: no such user */
    int idem_used;
    json_t *res; /* NULL: no such reservation (or none asked) */
} kp_ddb_credit_state;

int kp_ddb_credit_change_valid(const kp_credit_change *c);
kp_status kp_ddb_credit_read(kp_ddb *d, const kp_credit_change *c, kp_ddb_credit_state *st, kp_err *err);
void kp_ddb_credit_state_clear(kp_ddb_credit_state *st);
/* Decides change c from what st read (its balance into *b): KP_ENOTFOUND, KP_EDUPLICATE (key used),
 * KP_ECONFLICT (stale expected_version or reservation state), KP_ECREDITS; else KP_OK with *nb the balance
 * after it and *items the transaction's items: 0 the user item's balance update (CAS on bal_version),
 * 1 the idempotency key (attribute_not_exists), then the ledger entry and the reservation (*res_i; -1). */
kp_status kp_ddb_credit_prepare(kp_ddb *d, const kp_credit_change *c, const kp_ddb_credit_state *st, int64_t now,
                                kp_balance *b, kp_balance *nb, json_t **items, long *res_i, kp_err *err);

#endif
