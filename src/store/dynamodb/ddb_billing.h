/*
 * ddb_billing.h - the DynamoDB backend's billing ops (store.h "billing
 * (Stripe)"): billing_customer_get/find, subscription_get, billing_apply, and
 * account_get, which reads the user's subscription with the user.
 * ddb_store.c wires them into its ops table.
 */
#ifndef KP_DDB_BILLING_H
#define KP_DDB_BILLING_H

#include "store/store.h"

kp_status kp_ddb_billing_customer_get(kp_store *s, const char *user_id, kp_billing_customer *out, kp_err *err);
kp_status kp_ddb_billing_customer_find(kp_store *s, const char *customer_id, kp_billing_customer *out, kp_err *err);
kp_status kp_ddb_subscription_get(kp_store *s, const char *id, kp_subscription *out, kp_err *err);
/* account_get (store.h): the user, their plan and their current subscription in 2 BatchGetItems. */
kp_status kp_ddb_account_get(kp_store *s, const char *user_id, kp_account *out, kp_err *err);
kp_status kp_ddb_billing_apply(kp_store *s, const kp_billing_write *w, int *credited, kp_err *err);

#endif
