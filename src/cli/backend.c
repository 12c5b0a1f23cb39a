/*
 * backend.c - the store backend chosen by KOUMPA_DB, as the commands see it:
 * sqlite or dynamodb (both complete). serve and the one-shot commands other
 * than migrate refuse a backend that lacks any store operation
 * (kp_store_missing_op), naming it: a guard for backends being built.
 */
#include <string.h>

#include "cli/cli.h"
#include "store/dynamodb/ddb_store.h"

kp_status kp_cli_check_backend(const kp_config *cfg, kp_err *err)
{
    kp_store *store = NULL;
    if (strcmp(cfg->db, "dynamodb") != 0)
        return KP_OK;
    kp_status rc = kp_ddb_store_open(cfg->dynamodb_table_prefix, &store, err);
    if (rc != KP_OK)
        return rc;
    const char *missing = kp_store_missing_op(store->ops);
    if (*missing)
        rc = kp_err_set(err, KP_EUNAVAILABLE,
                        "KOUMPA_DB=dynamodb: the DynamoDB store is not complete (no %s operation); "
                        "only `koumpa migrate` works on it - use KOUMPA_DB=sqlite",
                        missing);
    store->ops->close(store);
    return rc;
}
