/*
 * backend.c - the store backend chosen by KOUMPA_DB, as the commands see it:
 * sqlite or dynamodb (both complete), which serve and the one-shot commands
 * other than migrate refuse if it lacks any store operation
 * (kp_store_missing_op, naming it: a guard for a backend being built); and
 * the one place that opens the chosen store for them. Before that, the store
 * is pinged, so wrong AWS credentials or a missing table stop start-up.
 */
#include <string.h>

#include "cli/cli.h"
#include "store/dynamodb/ddb_store.h"
#include "store/sqlite/sqlite_store.h"

kp_status kp_cli_open_store(const kp_config *cfg, const char *db_path, kp_store **out, kp_err *err)
{
    if (strcmp(cfg->db, "dynamodb") == 0)
        return kp_ddb_store_open(cfg->dynamodb_table_prefix, out, err);
    return kp_sqlite_open(db_path, out, err);
}

kp_status kp_cli_check_backend(const kp_config *cfg, kp_err *err)
{
    kp_store *store = NULL;
    if (strcmp(cfg->db, "dynamodb") != 0)
        return KP_OK;
    kp_status rc = kp_ddb_store_open(cfg->dynamodb_table_prefix, &store, err);
    if (rc != KP_OK)
        return rc;
    /* A ping first (one GetItem): wrong credentials, a refused signature or
     * a missing table stop the command here, with AWS's reason. */
    kp_err why = {0};
    if (store->ops->ping(store, &why) != KP_OK)
        rc = kp_err_set(err, why.status, "KOUMPA_DB=dynamodb: the table cannot be read: %s", why.msg);
    const char *missing = kp_store_missing_op(store->ops);
    if (rc == KP_OK && *missing)
        rc = kp_err_set(err, KP_EUNAVAILABLE,
                        "KOUMPA_DB=dynamodb: the DynamoDB store is not complete (no %s operation); "
                        "only `koumpa migrate` works on it - use KOUMPA_DB=sqlite",
                        missing);
    store->ops->close(store);
    return rc;
}
