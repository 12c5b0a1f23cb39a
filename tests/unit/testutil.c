/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <ftw.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <sqlite3.h>

#include "blob/blob_fs.h"
#include "store/sqlite/sqlite_store.h"

void kp_test_tmpdir(char *out, size_t n)
{
    snprintf(out, n, "/tmp/koumpa-test-XXXXXX");
    assert_non_null(mkdtemp(out));
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void kp_test_rmrf(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

kp_store *kp_test_db(const char *dir, char *db_path, size_t n)
{
    kp_err err = {0};
    kp_store *s = NULL;
    snprintf(db_path, n, "%s/koumpa.db", dir);
    assert_int_equal(kp_sqlite_migrate(db_path, NULL, &err), KP_OK);
    assert_int_equal(kp_sqlite_open(db_path, &s, &err), KP_OK);
    return s;
}

void kp_test_user(kp_store *s, const char *id, const char *email, const char *plan_id)
{
    kp_user u;
    kp_err err = {0};
    memset(&u, 0, sizeof u);
    snprintf(u.id, sizeof u.id, "%s", id);
    snprintf(u.email, sizeof u.email, "%s", email);
    snprintf(u.plan_id, sizeof u.plan_id, "%s", plan_id);
    u.created_at = (int64_t)time(NULL);
    assert_int_equal(s->ops->user_create(s, &u, &err), KP_OK);
}

static kp_status count_key(void *ud, const char *key, kp_err *err)
{
    (void)key;
    (void)err;
    (*(int *)ud)++;
    return KP_OK;
}

kp_blob *kp_test_blob(const char *dir)
{
    char path[600];
    kp_blob *b = NULL;
    kp_err err = {0};
    snprintf(path, sizeof path, "%s/blobs", dir);
    assert_int_equal(kp_blob_fs_open(path, &b, &err), KP_OK);
    return b;
}

int kp_test_blob_count(kp_blob *b, const char *prefix)
{
    int n = 0;
    kp_err err = {0};
    assert_int_equal(b->ops->list(b, prefix, count_key, &n, &err), KP_OK);
    return n;
}

kp_status kp_test_blob_collect(void *ud, const char *key, kp_err *err)
{
    (void)err;
    kp_buf *b = ud;
    kp_buf_puts(b, key);
    kp_buf_puts(b, ",");
    return KP_OK;
}

void kp_test_blob_put(kp_blob *b, const char *key, const char *data, const char *ct)
{
    kp_err err;
    if (b->ops->put(b, key, data, strlen(data), ct, &err) != KP_OK)
        fail_msg("put %s: %s", key, err.msg);
}

void kp_test_blob_assert(kp_blob *b, const char *key, const char *data, const char *ct)
{
    kp_buf out = KP_BUF_INIT;
    char got_ct[KP_BLOB_CT_MAX];
    kp_err err;
    assert_int_equal(b->ops->get(b, key, &out, got_ct, &err), KP_OK);
    assert_int_equal(out.len, strlen(data));
    assert_memory_equal(out.data, data, out.len);
    assert_string_equal(got_ct, ct);
    kp_buf_free(&out);
}

void kp_test_blob_assert_list(kp_blob *b, const char *prefix, const char *expected)
{
    kp_buf got = KP_BUF_INIT;
    kp_err err;
    assert_int_equal(b->ops->list(b, prefix, kp_test_blob_collect, &got, &err), KP_OK);
    assert_string_equal(kp_buf_cstr(&got), expected);
    kp_buf_free(&got);
}

void kp_test_sql_exec(const char *db_path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        fail_msg("sql_exec: %s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

int64_t kp_test_sql_int(const char *db_path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 10000);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        else
            fprintf(stderr, "sql_int: %s\n", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}
