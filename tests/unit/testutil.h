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
/* A kp_blob_list_fn appending "key," to the kp_buf ud. */
kp_status kp_test_blob_collect(void *ud, const char *key, kp_err *err);
/* Puts a NUL-terminated blob; fails the test (naming the error) on failure. */
void kp_test_blob_put(kp_blob *b, const char *key, const char *data, const char *ct);
/* Asserts that key holds exactly data with content type ct. */
void kp_test_blob_assert(kp_blob *b, const char *key, const char *data, const char *ct);
/* Asserts that list(prefix) gives exactly expected ("k1,k2," in order). */
void kp_test_blob_assert_list(kp_blob *b, const char *prefix, const char *expected);
/* Creates a user with the given id/email on plan_id; aborts on failure. */
void kp_test_user(kp_store *s, const char *id, const char *email, const char *plan_id);

#endif
