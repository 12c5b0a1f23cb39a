/*
 * sqlite_walbuf.h - the VFS of the batch connection (sqlite_writer.h): the
 * default VFS, except that its WAL file gathers the frames SQLite writes one
 * by one (a header and a page each, two pwrite calls per page) and writes
 * them in one call at the commit's sync, before SQLite publishes them in the
 * WAL index, so other connections never read a frame not yet in the file.
 * Internal to src/store/sqlite/.
 *
 * With sync deferred (sq_walbuf_defer_sync), the WAL's sync writes the
 * gathered frames and returns without fdatasync: the caller syncs the WAL
 * file itself after the commit, outside the write gate (sqlite_store.c
 * batch_sync), and reports no write done before. Without it (the default,
 * and what a reopened WAL file gets), every sync is a real one.
 */
#ifndef KP_SQLITE_WALBUF_H
#define KP_SQLITE_WALBUF_H

#include <sqlite3.h>

#define SQ_WALBUF_VFS "koumpa-walbuf"

/* Registers the VFS (once per process; not the default). SQLITE_OK, or
 * SQLite's error when it cannot. */
int sq_walbuf_register(void);

/* Defers (on = 1) or not the syncs of db's WAL file, when db was opened with
 * the VFS and its WAL is open; else does nothing. Returns 1 when set. */
int sq_walbuf_defer_sync(sqlite3 *db, int on);

#endif
