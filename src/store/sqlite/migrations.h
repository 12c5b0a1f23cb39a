/*
 * migrations.h - schema versioning and connection setup for the SQLite
 * backend (internal to src/store/sqlite/; the public entry points are in
 * sqlite_store.h).
 *
 * The schema is an ordered list of migrations; migration i (1-based) brings
 * the database to version i. Applied versions are recorded in the table
 * schema_migrations(version, applied_at). kp_sqlite_migrate (declared in
 * sqlite_store.h, defined in migrations.c) applies the missing ones.
 */
#ifndef KP_SQLITE_MIGRATIONS_H
#define KP_SQLITE_MIGRATIONS_H

#include <sqlite3.h>

#include "core/err.h"

/* Milliseconds a connection waits for another writer before SQLITE_BUSY. */
#define KP_SQLITE_BUSY_TIMEOUT_MS 10000

/* PRAGMA synchronous of every connection (WAL): a commit reaches the WAL
 * file, synced at checkpoints; a power loss may undo the last commits, never
 * corrupts. The batch connection that commits the credit writes (spends,
 * admissions, ends of generations: sqlite_writer.h) runs with FULL: SQLite
 * syncs its WAL at every commit, which its VFS (sqlite_walbuf.h) turns into
 * writing the gathered frames out, and the leader fdatasyncs the WAL file
 * after giving the gate back, before it reports the batch's writes done; so
 * a spend reported done survives a power loss, with every commit before it. */
#define KP_SQLITE_SYNCHRONOUS "NORMAL"
#define KP_SQLITE_SYNCHRONOUS_CREDITS "FULL"

/* WAL frames after which a batch's leader checkpoints, outside the gate
 * (SQLite's own automatic checkpoint would run inside the batch's COMMIT):
 * the WAL restarts from its start once it passes about this many frames of a
 * page each (4 KiB: about 32 MiB). The hot pages (balances, the right edges
 * of time-ordered keys) are copied once per checkpoint, so fewer checkpoints
 * copy fewer pages: bench/spends.c measured (before migration 9) 12,900/s at
 * 1,000 frames, 14,200 at 4,000, 14,800-15,000 at 8,000, 15,300 at 16,000.
 * The other connections keep SQLite's automatic checkpoint (1,000 frames): at
 * 8,000 there, the events' appends wrote as much and took more CPU
 * (docs/DEVELOPMENT.md, "Benchmarks"). */
#define KP_SQLITE_CHECKPOINT_FRAMES 8000

/* The schema version this build needs (the number of migrations). */
/* Process-wide SQLite settings, applied once before any connection opens:
 * memory statistics off (they take a global mutex on every allocation, which
 * serialises the HTTP threads' reads); statement journals in memory, in
 * small chunks (migrations.c). */
void kp_sqlite_global_init(void);

int kp_sqlite_schema_target(void);

/* Reads the version a database is at (0 when it was never migrated). */
kp_status kp_sqlite_schema_version(sqlite3 *db, int *version, kp_err *err);

/* Per-connection settings: busy timeout, WAL, synchronous=NORMAL and, when
 * foreign_keys is non-zero, foreign key enforcement. */
kp_status kp_sqlite_configure(sqlite3 *db, int foreign_keys, kp_err *err);

/* Logs the connection's last SQLite error (operation name, SQLite message and
 * code) at error level and sets err to KP_EDB with a message naming only the
 * operation. Returns KP_EDB. */
kp_status kp_sqlite_db_error(sqlite3 *db, const char *what, kp_err *err);

#endif
