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

/* A reservation; one still RESERVED carries GSI2's keys RESV#{shard} / {id} (open reservations, for
 * reservations_orphaned) until its state moves on. */
json_t *kp_ddb_reservation_item(const kp_reservation *r);
void kp_ddb_reservation_from(const json_t *item, kp_reservation *r);

/* ---- projects and versions (ddb_projects.c, ddb_generations.c) ---- */

#define KP_DDB_PROJ "PROJ#"   /* SK "A": a project; SK "V#{n:010}": its versions */
#define KP_DDB_UPROJ "UPROJ#" /* GSI1PK of a user's projects */
#define KP_DDB_SK_RESREF "V"  /* RES#{id} / "V": the version that refers to the reservation (pid, n) */
/* GSI2PK prefixes (each spread over KP_DDB_SHARDS partitions by the project or reservation id):
 * generating versions by lease, ended versions not settled, open reservations */
#define KP_DDB_GSI2_LEASE "LEASE#"
#define KP_DDB_GSI2_UNSETTLED "UNSET#"
#define KP_DDB_GSI2_OPENRES "RESV#"
#define KP_DDB_SHARDS 8

/* "{prefix}{shard of id}" into out (cap KP_DDB_KEY_MAX). */
void kp_ddb_shard_key(char *out, const char *prefix, const char *id);
/* GSI2SK of a generating version: "{lease_until:015}#{pid}#{n}" (oldest lease first). */
void kp_ddb_lease_sk(char *out, int64_t lease_until, const char *pid, int64_t n);
/* GSI2SK of an ended, unsettled version: "{pid}#{n:010}". */
void kp_ddb_unsettled_sk(char *out, const char *pid, int64_t n);
json_t *kp_ddb_project_key(const char *pid);
json_t *kp_ddb_version_key(const char *pid, int64_t n);
/* A new project (latest_version 1, gen_n 1) with GSI1's keys. */
json_t *kp_ddb_project_item(const kp_project *p, int64_t created_at);
void kp_ddb_project_from(const json_t *item, kp_project *p);
/* A new generating version n of pid (v's prompt, reservation, model, files), held by owner until lease_until,
 * with GSI2's lease keys. */
json_t *kp_ddb_version_item(const char *pid, int64_t n, const kp_version *v, int64_t created_at, const char *owner,
                            int64_t lease_until);
/* Fills v from item; KP_ENOMEM when a heap field could not be copied (v cleared). */
kp_status kp_ddb_version_from(const json_t *item, kp_version *v, kp_err *err);
/* The Update (a TransactWriteItems item) of the user's generating counter (the admission counter) by delta,
 * conditional on the user existing. */
json_t *kp_ddb_generating_update(const char *table, const char *user_id, int delta);
/* The Put of RES#{res_id} / V naming version n of pid (a version refers to the reservation). */
json_t *kp_ddb_resref_put(const char *table, const char *res_id, const char *pid, int64_t n);

#endif
