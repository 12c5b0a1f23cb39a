/*
 * testutil.h - shared helpers for the unit tests: temporary directories and a
 * freshly migrated SQLite database.
 */
#ifndef KP_TESTUTIL_H
#define KP_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "blob/blob.h"
#include "store/store.h"

/* Creates a new directory under /tmp into out; aborts the test on failure. */
void kp_test_tmpdir(char *out, size_t n);
/* Removes a directory tree (best effort). */
void kp_test_rmrf(const char *path);
/* Creates {dir}/koumpa.db, migrated; writes its path into db_path and opens a handle. */
kp_store *kp_test_db(const char *dir, char *db_path, size_t n);
/* One integer from a SQL query on a separate raw connection (-1 on failure). */
int64_t kp_test_sql_int(const char *db_path, const char *sql);
/* Runs SQL (several statements) on a separate raw connection; fails the test on error.
 * Also how tests inject store failures: a trigger that RAISEs. */
void kp_test_sql_exec(const char *db_path, const char *sql);
/* Opens a filesystem blob store in {dir}/blobs; aborts the test on failure. */
kp_blob *kp_test_blob(const char *dir);
/* How many blobs there are under prefix; aborts the test on failure. */
int kp_test_blob_count(kp_blob *b, const char *prefix);
/* Creates a user with the given id/email on plan_id; aborts on failure. */
void kp_test_user(kp_store *s, const char *id, const char *email, const char *plan_id);

#endif
