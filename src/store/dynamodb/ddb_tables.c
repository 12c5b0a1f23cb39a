/*
 * ddb_tables.c - the table's one definition and its migration (see
 * ddb_tables.h). Keys are generic (PK, SK and two sparse GSIs) so that
 * every aggregate lives in one table; ddb_items.h says which item uses what.
 */
#include "store/dynamodb/ddb_tables.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "store/dynamodb/ddb_items.h"

/* The definition (CreateTable, TableName added at run time). GSI1: a user's projects newest first.
 * GSI2: generating versions by lease expiry (recovery). Both sparse: only items that carry the keys. */
static const char TABLE_JSON[] =
    "{\"BillingMode\":\"PAY_PER_REQUEST\","
    "\"AttributeDefinitions\":["
    "{\"AttributeName\":\"PK\",\"AttributeType\":\"S\"},"
    "{\"AttributeName\":\"SK\",\"AttributeType\":\"S\"},"
    "{\"AttributeName\":\"GSI1PK\",\"AttributeType\":\"S\"},"
    "{\"AttributeName\":\"GSI1SK\",\"AttributeType\":\"S\"},"
    "{\"AttributeName\":\"GSI2PK\",\"AttributeType\":\"S\"},"
    "{\"AttributeName\":\"GSI2SK\",\"AttributeType\":\"S\"}],"
    "\"KeySchema\":[{\"AttributeName\":\"PK\",\"KeyType\":\"HASH\"},{\"AttributeName\":\"SK\",\"KeyType\":\"RANGE\"}],"
    "\"GlobalSecondaryIndexes\":["
    "{\"IndexName\":\"GSI1\",\"KeySchema\":[{\"AttributeName\":\"GSI1PK\",\"KeyType\":\"HASH\"},"
    "{\"AttributeName\":\"GSI1SK\",\"KeyType\":\"RANGE\"}],\"Projection\":{\"ProjectionType\":\"ALL\"}},"
    "{\"IndexName\":\"GSI2\",\"KeySchema\":[{\"AttributeName\":\"GSI2PK\",\"KeyType\":\"HASH\"},"
    "{\"AttributeName\":\"GSI2SK\",\"KeyType\":\"RANGE\"}],\"Projection\":{\"ProjectionType\":\"KEYS_ONLY\"}}]}";

json_t *kp_ddb_table_definition(const char *table_name)
{
    json_t *t = json_loads(TABLE_JSON, 0, NULL);
    if (t && json_object_set_new(t, "TableName", json_string(table_name)) != 0) {
        json_decref(t);
        return NULL;
    }
    return t;
}

/* The table's status ("ACTIVE", "CREATING", ...) or "" when it does not exist. */
static kp_status table_status(kp_ddb *d, char *status, size_t cap, kp_err *err)
{
    json_t *req = json_pack("{s:s}", "TableName", d->table);
    json_t *out = NULL;
    kp_status rc = kp_ddb_call(d, "DescribeTable", req, &out, err);
    status[0] = '\0';
    if (rc != KP_OK && strcmp(d->last_code, "ResourceNotFoundException") == 0) {
        kp_err_clear(err);
        rc = KP_OK;
    } else if (rc == KP_OK) {
        const char *s = json_string_value(json_object_get(json_object_get(out, "Table"), "TableStatus"));
        snprintf(status, cap, "%s", s ? s : "");
    }
    json_decref(req);
    json_decref(out);
    return rc;
}

/* The three base plans, as SQLite's migration 1 seeds them. */
static kp_status seed_plans(kp_ddb *d, kp_err *err)
{
    static const kp_plan base[] = {
        {"free", "Free", 0, "EUR", 0, 5, 1, "", 1, 0},
        {"pro", "Pro", 2500, "EUR", 100, 5, 3, "", 1, 0},
        {"business", "Business", 5000, "EUR", 300, 10, 10, "", 1, 0},
    };
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        kp_plan p = base[i];
        p.updated_at = (int64_t)time(NULL);
        json_t *req = json_pack("{s:s, s:o, s:s}", "TableName", d->table, "Item", kp_ddb_plan_item(&p),
                                "ConditionExpression", "attribute_not_exists(PK)");
        kp_status rc = req ? kp_ddb_call(d, "PutItem", req, NULL, err) : kp_err_set(err, KP_ENOMEM, "out of memory");
        json_decref(req);
        if (rc == KP_ECONFLICT) /* already there: an admin may have changed it */
            kp_err_clear(err);
        else if (rc != KP_OK)
            return rc;
    }
    return KP_OK;
}

kp_status kp_ddb_migrate(kp_ddb *d, long wait_s, int *created, kp_err *err)
{
    char status[32];
    if (created)
        *created = 0;
    kp_status rc = table_status(d, status, sizeof status, err);
    if (rc == KP_OK && !status[0]) {
        json_t *req = kp_ddb_table_definition(d->table);
        rc = req ? kp_ddb_call(d, "CreateTable", req, NULL, err) : kp_err_set(err, KP_ENOMEM, "out of memory");
        json_decref(req);
        if (rc == KP_OK && created)
            *created = 1;
        if (rc == KP_ECONFLICT) /* ResourceInUseException: another migrate created it meanwhile */
            kp_err_clear(err), rc = KP_OK;
        if (rc == KP_OK)
            kp_log(KP_LOG_INFO, "dynamodb: creating table %s", d->table);
    }
    /* bounded wait for ACTIVE: every 200 ms */
    for (long i = 0; rc == KP_OK && strcmp(status, "ACTIVE") != 0; i++) {
        if (i > wait_s * 5)
            return kp_err_set(err, KP_EUNAVAILABLE, "DynamoDB table %s not ACTIVE after %ld s (%s)", d->table, wait_s,
                              status[0] ? status : "missing");
        if (i > 0)
            usleep(200 * 1000);
        rc = table_status(d, status, sizeof status, err);
    }
    if (rc == KP_OK)
        rc = seed_plans(d, err);
    return rc;
}
