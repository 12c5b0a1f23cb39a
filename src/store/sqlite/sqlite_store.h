/*
 * sqlite_store.h - the SQLite backend of the repository interface (store.h).
 *
 * One database file, in WAL mode, shared by every thread and process of a
 * deployment. kp_sqlite_migrate creates or upgrades its schema (the
 * `koumpa migrate` command); kp_sqlite_open then gives one kp_store handle per
 * thread. Writers serialize on SQLite's write lock (BEGIN IMMEDIATE plus a
 * busy timeout) across processes; within a process they queue at the file's
 * write gate first, and the credit writes are group-committed
 * (sqlite_writer.h).
 */
#ifndef KP_SQLITE_STORE_H
#define KP_SQLITE_STORE_H

#include "core/err.h"
#include "store/store.h"

/*
 * Creates the database file if needed, switches it to WAL and applies the
 * schema migrations it lacks, each in its own transaction. Safe to re-run and
 * to run from several processes at once. *applied (may be NULL) receives the
 * number of migrations applied by this call.
 */
kp_status kp_sqlite_migrate(const char *db_path, int *applied, kp_err *err);

/*
 * Opens a handle on an existing, migrated database. KP_EUNAVAILABLE ("run
 * koumpa migrate") when the file is missing or its schema is older than this
 * build's (a newer schema is accepted, with a warning in the log). The handle is for one thread at a time; the caller
 * releases it with (*out)->ops->close(*out).
 */
kp_status kp_sqlite_open(const char *db_path, kp_store **out, kp_err *err);

/* For tests: calls each with the SQL of every statement the handle has prepared so far (its
 * statement cache), so that their query plans can be checked. s must be a handle of this backend. */
void kp_sqlite_each_statement(kp_store *s, void (*each)(const char *sql, void *ud), void *ud);

#endif
