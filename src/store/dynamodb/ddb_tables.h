/*
 * ddb_tables.h - THE definition of Koumpa's DynamoDB table (one table,
 * single-table design; docs/ARCHITECTURE.md "DynamoDB data model"), and
 * `koumpa migrate` for DynamoDB.
 *
 * The definition is a CreateTable request without its TableName
 * (kp_ddb_table_definition()). `koumpa migrate` creates the table from it
 * when missing, waits until it is ACTIVE and seeds the plans; the Terraform
 * of issue 12 is checked against it (`build/tests/store_contract dynamodb
 * PREFIX tables` prints it; a test compares the two).
 */
#ifndef KP_DDB_TABLES_H
#define KP_DDB_TABLES_H

#include "core/err.h"
#include "store/dynamodb/ddb_client.h"

/* The CreateTable request for table_name (new reference). */
json_t *kp_ddb_table_definition(const char *table_name);

/* Creates the table if missing (waiting up to wait_s seconds for ACTIVE) and seeds the base plans where
 * absent. *created (may be NULL): 1 when the table was created now. */
kp_status kp_ddb_migrate(kp_ddb *d, long wait_s, int *created, kp_err *err);

#endif
