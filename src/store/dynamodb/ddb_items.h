/*
 * ddb_items.h - the items of Koumpa's DynamoDB table: their keys (one place
 * that spells "USER#...", "PLAN#...") and the conversions between store.h's
 * structs and DynamoDB items. docs/ARCHITECTURE.md "DynamoDB data model"
 * lists every item; this is its code.
 *
 * Every function returning json_t returns a new reference (NULL: out of
 * memory); kp_ddb_key() fills the caller's buffer.
 */
#ifndef KP_DDB_ITEMS_H
#define KP_DDB_ITEMS_H

#include <jansson.h>

#include "store/store.h"

#define KP_DDB_KEY_MAX 320

/* "{prefix}{id}" into out (cap KP_DDB_KEY_MAX). Prefixes: */
#define KP_DDB_USER "USER#"   /* a user's partition: SK "A" the user + balance, "L#{seq}" the ledger */
#define KP_DDB_EMAIL "EMAIL#" /* SK "A": the claim on an e-mail address (uid) */
#define KP_DDB_XSUB "XSUB#"   /* SK "A": the claim on an external subject (uid) */
#define KP_DDB_IDEM "IDEM#"   /* SK "A": an idempotency key used (uid, seq) */
#define KP_DDB_RES "RES#"     /* SK "A": a reservation */
#define KP_DDB_PLANS "PLAN"   /* PK of every plan; SK "PLAN#{id}" */
#define KP_DDB_SK_MAIN "A"
void kp_ddb_key(char *out, const char *prefix, const char *id);
/* {"PK": {"S": pk}, "SK": {"S": sk}} */
json_t *kp_ddb_key_item(const char *pk, const char *sk);
/* The ledger's SK for seq: "L#" + 19 zero-padded digits (sorts as the number). */
void kp_ddb_ledger_sk(char *out, int64_t seq);

json_t *kp_ddb_plan_item(const kp_plan *p);
void kp_ddb_plan_from(const json_t *item, kp_plan *p);

/* The user item, with its balance (b; NULL: zero, version 0) and generating counter 0. */
json_t *kp_ddb_user_item(const kp_user *u, const kp_balance *b);
void kp_ddb_user_from(const json_t *item, kp_user *u);
void kp_ddb_balance_from(const json_t *item, kp_balance *b);

json_t *kp_ddb_ledger_item(const kp_ledger_entry *e);
void kp_ddb_ledger_from(const json_t *item, kp_ledger_entry *e);

json_t *kp_ddb_reservation_item(const kp_reservation *r);
void kp_ddb_reservation_from(const json_t *item, kp_reservation *r);

#endif
