/*
 * ddb_store.h - the DynamoDB store backend (KOUMPA_DB=dynamodb): store.h's
 * kp_store_ops over one DynamoDB table (ddb_tables.h), through the JSON
 * client (ddb_client.h). docs/ARCHITECTURE.md "DynamoDB data model" gives
 * the items, keys and the request cost of every operation.
 *
 * Implemented: ping; plan_get/list/put; user_create,
 * user_create_credited, user_get, user_get_by_email, user_get_by_sub,
 * user_set_admin, user_set_plan, user_set_email_verified;
 * verification_create, verification_consume; balance_get,
 * account_get, credits_apply, reservation_get, ledger_list, ledger_sum;
 * and in ddb_projects.c project_create/get/list, version_create/get/list,
 * version_set_settled, project_mark_deleting, project_delete;
 * admit, version_end, version_finish, leases_renew, lease_transfer, version_request_cancel,
 * versions_generating_count, versions_expired, versions_unsettled,
 * reservations_orphaned (ddb_generations.c);
 * billing_customer_get/find, subscription_get, billing_apply (ddb_billing.c);
 * users_bonus_page, credits_apply_many (ddb_bonus.c); events_append,
 * events_list, events_last_id (ddb_events.c).
 * That is every op of store.h (kp_store_missing_op() returns "").
 */
#ifndef KP_DDB_STORE_H
#define KP_DDB_STORE_H

#include "store/store.h"

/* Opens a handle on table {prefix}koumpa (AWS settings from the environment, src/aws). Does not call AWS
 * (ping does). Free with store->ops->close(). */
kp_status kp_ddb_store_open(const char *prefix, kp_store **out, kp_err *err);
/* `koumpa migrate` on DynamoDB: creates the table if missing, waits for ACTIVE, seeds the plans. */
kp_status kp_ddb_store_migrate(const char *prefix, int *created, kp_err *err);
/* AWS operations this handle sent (tests of the request budget). */
unsigned long kp_ddb_store_requests(kp_store *s);
/* The handle's client (borrowed), for the ops in other files (ddb_projects.c). */
struct kp_ddb *kp_ddb_store_client(kp_store *s);

#endif
