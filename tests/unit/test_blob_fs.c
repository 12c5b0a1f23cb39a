/*
 * test_blob_fs.c - the file system blob store, through the kp_blob interface:
 * round trips, key rules, prefix listing and deletion, the on-disk layout,
 * and concurrent puts, gets and deletes (never a torn blob).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blob/blob_fs.h"
#include "core/buf.h"

typedef struct fixture {
    char tmp[64]; /* mkdtemp directory */
    char root[128];
    kp_blob *b;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->tmp, sizeof f->tmp, "/tmp/kp-blob-XXXXXX");
    assert_non_null(mkdtemp(f->tmp));
    snprintf(f->root, sizeof f->root, "%s/data/blobs/", f->tmp); /* created, with parents */
    kp_err err;
    assert_int_equal(kp_blob_fs_open(f->root, &f->b, &err), KP_OK);
    f->root[strlen(f->root) - 1] = '\0';
    *state = f;
    return 0;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            remove_tree(sub);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int teardown(void **state)
{
    fixture *f = *state;
    f->b->ops->close(f->b);
    remove_tree(f->tmp);
    free(f);
    return 0;
}

static void put(kp_blob *b, const char *key, const char *data, const char *ct)
{
    kp_err err;
    kp_status st = b->ops->put(b, key, data, strlen(data), ct, &err);
    if (st != KP_OK)
        fail_msg("put %s: %s", key, err.msg);
}

static void assert_blob(kp_blob *b, const char *key, const char *data, const char *ct)
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

static int exists(const char *root, const char *rel)
{
    char path[1024];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", root, rel);
    return stat(path, &sb) == 0;
}

/* ---- list helper ---- */

static kp_status collect(void *ud, const char *key, kp_err *err)
{
    (void)err;
    kp_buf *b = ud;
    kp_buf_puts(b, key);
    kp_buf_puts(b, ",");
    return KP_OK;
}

static void assert_list(kp_blob *b, const char *prefix, const char *expected)
{
    kp_buf got = KP_BUF_INIT;
    kp_err err;
    assert_int_equal(b->ops->list(b, prefix, collect, &got, &err), KP_OK);
    assert_string_equal(kp_buf_cstr(&got), expected);
    kp_buf_free(&got);
}

/* ---- tests ---- */

static void test_round_trip(void **state)
{
    fixture *f = *state;
    kp_blob *b = f->b;
    kp_err err;
    put(b, "apps/p1/v1/index.html", "<!doctype html><p>hi</p>", "text/html; charset=utf-8");
    assert_blob(b, "apps/p1/v1/index.html", "<!doctype html><p>hi</p>", "text/html; charset=utf-8");

    /* binary data, NUL bytes and newlines included */
    static const char bin[] = "a\0b\nc\r\n\xff";
    assert_int_equal(b->ops->put(b, "bin", bin, sizeof bin, "application/x-thing", &err), KP_OK);
    kp_buf out = KP_BUF_INIT;
    char ct[KP_BLOB_CT_MAX];
    assert_int_equal(b->ops->get(b, "bin", &out, ct, &err), KP_OK);
    assert_int_equal(out.len, sizeof bin);
    assert_memory_equal(out.data, bin, sizeof bin);

    /* empty blob, default content type, content type not wanted */
    assert_int_equal(b->ops->put(b, "empty", "", 0, NULL, &err), KP_OK);
    kp_buf_puts(&out, "stale");
    assert_int_equal(b->ops->get(b, "empty", &out, ct, &err), KP_OK);
    assert_int_equal(out.len, 0); /* out is replaced, not appended to */
    assert_string_equal(ct, "application/octet-stream");
    assert_int_equal(b->ops->get(b, "empty", &out, NULL, &err), KP_OK);
    kp_buf_free(&out);

    /* overwrite with something shorter and another type */
    put(b, "apps/p1/v1/index.html", "x", "text/plain");
    assert_blob(b, "apps/p1/v1/index.html", "x", "text/plain");
}

static void test_on_disk_layout(void **state)
{
    fixture *f = *state;
    put(f->b, "apps/p1/v1/app.js", "let a;", "text/javascript");
    char path[512];
    snprintf(path, sizeof path, "%s/apps/p1/v1/app.js~", f->root);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char buf[64] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    assert_int_equal(n, strlen("text/javascript\nlet a;"));
    assert_string_equal(buf, "text/javascript\nlet a;");
    /* no temporary file is left behind */
    DIR *d;
    snprintf(path, sizeof path, "%s/apps/p1/v1", f->root);
    assert_non_null(d = opendir(path));
    struct dirent *de;
    int entries = 0;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            entries++;
    closedir(d);
    assert_int_equal(entries, 1);
}

static void test_key_and_folder_can_coexist(void **state)
{
    fixture *f = *state;
    put(f->b, "a", "file a", "text/plain");
    put(f->b, "a/b", "file a/b", "text/plain");
    put(f->b, "a/b/c", "file a/b/c", "text/plain");
    assert_blob(f->b, "a", "file a", "text/plain");
    assert_blob(f->b, "a/b", "file a/b", "text/plain");
    assert_blob(f->b, "a/b/c", "file a/b/c", "text/plain");
    assert_list(f->b, "a", "a,a/b,a/b/c,");
}

static void test_missing(void **state)
{
    fixture *f = *state;
    kp_buf out = KP_BUF_INIT;
    kp_err err;
    kp_buf_puts(&out, "old");
    assert_int_equal(f->b->ops->get(f->b, "nope", &out, NULL, &err), KP_ENOTFOUND);
    assert_int_equal(out.len, 0);
    put(f->b, "file", "x", "text/plain");
    /* a path through a blob is just another missing key */
    assert_int_equal(f->b->ops->get(f->b, "file/x", &out, NULL, &err), KP_ENOTFOUND);
    assert_int_equal(f->b->ops->get(f->b, "dir/nope", &out, NULL, &err), KP_ENOTFOUND);
    assert_int_equal(f->b->ops->delete (f->b, "nope", &err), KP_OK);
    assert_int_equal(f->b->ops->delete (f->b, "x/y/z", &err), KP_OK);
    kp_buf_free(&out);
}

static void test_invalid_keys(void **state)
{
    fixture *f = *state;
    kp_blob *b = f->b;
    char long_key[KP_BLOB_KEY_MAX + 2];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    const char *bad[] = {"",    "/x",  "../x", "a/../b", "a//b",        "a/",  "a b",   "a~",
                         "./a", "a/.", "..",   "a\\b",   "caf\xC3\xA9", "x\n", long_key};
    kp_buf out = KP_BUF_INIT;
    kp_err err;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(kp_blob_key_valid(bad[i]));
        assert_int_equal(b->ops->put(b, bad[i], "x", 1, "text/plain", &err), KP_EINVAL);
        assert_int_equal(b->ops->get(b, bad[i], &out, NULL, &err), KP_EINVAL);
        assert_int_equal(b->ops->delete (b, bad[i], &err), KP_EINVAL);
    }
    long_key[KP_BLOB_KEY_MAX] = '\0';
    assert_true(kp_blob_key_valid(long_key));
    assert_true(kp_blob_key_valid("apps/p_1/v2/.well-known/a..b-c.txt"));
    assert_false(kp_blob_key_valid(NULL));
    /* nothing was created by the refused calls */
    kp_buf all = KP_BUF_INIT;
    assert_int_equal(b->ops->list(b, "", collect, &all, &err), KP_OK);
    assert_int_equal(all.len, 0);
    kp_buf_free(&all);
    kp_buf_free(&out);

    /* a segment too long for the file system is refused, not an I/O error */
    char seg[300];
    memset(seg, 's', sizeof seg - 1);
    seg[sizeof seg - 1] = '\0';
    assert_int_equal(b->ops->put(b, seg, "x", 1, NULL, &err), KP_EINVAL);

    /* prefixes */
    assert_true(kp_blob_prefix_valid(""));
    assert_true(kp_blob_prefix_valid("apps/"));
    assert_true(kp_blob_prefix_valid("apps/p1/v1"));
    assert_true(kp_blob_prefix_valid("apps/.."));   /* may continue as "..x" */
    assert_false(kp_blob_prefix_valid("apps/../")); /* a finished ".." segment */
    assert_false(kp_blob_prefix_valid("/apps"));
    assert_false(kp_blob_prefix_valid("a//"));
    assert_int_equal(b->ops->list(b, "../", collect, &all, &err), KP_EINVAL);
    assert_int_equal(b->ops->delete_prefix(b, "", &err), KP_EINVAL);
    assert_int_equal(b->ops->delete_prefix(b, "a//", &err), KP_EINVAL);
}

static void test_invalid_content_types(void **state)
{
    fixture *f = *state;
    kp_err err;
    char long_ct[KP_BLOB_CT_MAX + 1];
    memset(long_ct, 'c', sizeof long_ct - 1);
    long_ct[sizeof long_ct - 1] = '\0';
    assert_int_equal(f->b->ops->put(f->b, "k", "x", 1, "", &err), KP_EINVAL);
    assert_int_equal(f->b->ops->put(f->b, "k", "x", 1, "text/html\nX: y", &err), KP_EINVAL);
    assert_int_equal(f->b->ops->put(f->b, "k", "x", 1, long_ct, &err), KP_EINVAL);
    long_ct[KP_BLOB_CT_MAX - 1] = '\0'; /* 127 characters: the most that fits */
    assert_int_equal(f->b->ops->put(f->b, "k", "x", 1, long_ct, &err), KP_OK);
    assert_blob(f->b, "k", "x", long_ct);
}

static void test_list(void **state)
{
    fixture *f = *state;
    kp_blob *b = f->b;
    put(b, "apps/p1/v1/index.html", "1", "text/html");
    put(b, "apps/p1/v1/js/app.js", "2", "text/javascript");
    put(b, "apps/p1/v10/index.html", "3", "text/html");
    put(b, "apps/p1/v2/index.html", "4", "text/html");
    put(b, "apps/p2/v1/index.html", "5", "text/html");
    put(b, "apps/p1-old", "6", "text/plain");
    put(b, "other", "7", "text/plain");

    /* files that are not blobs are ignored */
    char path[512];
    snprintf(path, sizeof path, "%s/apps/p1/v1/~tmp.abc123", f->root);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(path, sizeof path, "%s/README", f->root);
    assert_non_null(fp = fopen(path, "w"));
    fclose(fp);

    assert_list(b, "",
                "apps/p1-old,apps/p1/v1/index.html,apps/p1/v1/js/app.js,apps/p1/v10/index.html,"
                "apps/p1/v2/index.html,apps/p2/v1/index.html,other,");
    assert_list(b, "apps/p1/",
                "apps/p1/v1/index.html,apps/p1/v1/js/app.js,apps/p1/v10/index.html,"
                "apps/p1/v2/index.html,");
    assert_list(b, "apps/p1/v1", "apps/p1/v1/index.html,apps/p1/v1/js/app.js,apps/p1/v10/index.html,");
    assert_list(b, "apps/p1/v1/", "apps/p1/v1/index.html,apps/p1/v1/js/app.js,");
    assert_list(b, "apps/p1",
                "apps/p1-old,apps/p1/v1/index.html,apps/p1/v1/js/app.js,apps/p1/v10/index.html,"
                "apps/p1/v2/index.html,");
    assert_list(b, "apps/p1/v1/index.html", "apps/p1/v1/index.html,");
    assert_list(b, "apps/p3/", "");
    assert_list(b, "nothing/here/", "");
    assert_list(b, "apps/..", "");
}

static kp_status stop_at_second(void *ud, const char *key, kp_err *err)
{
    (void)key;
    int *calls = ud;
    if (++*calls == 2)
        return kp_err_set(err, KP_EINTERNAL, "enough");
    return KP_OK;
}

static void test_list_stops(void **state)
{
    fixture *f = *state;
    kp_err err;
    put(f->b, "k1", "1", "text/plain");
    put(f->b, "k2", "2", "text/plain");
    put(f->b, "k3", "3", "text/plain");
    int calls = 0;
    assert_int_equal(f->b->ops->list(f->b, "k", stop_at_second, &calls, &err), KP_EINTERNAL);
    assert_string_equal(err.msg, "enough");
    assert_int_equal(calls, 2);
}

static void test_delete_and_delete_prefix(void **state)
{
    fixture *f = *state;
    kp_blob *b = f->b;
    kp_err err;
    put(b, "apps/p1/v1/index.html", "1", "text/html");
    put(b, "apps/p1/v1/js/app.js", "2", "text/javascript");
    put(b, "apps/p1/v10/index.html", "3", "text/html");
    put(b, "apps/p2/v1/index.html", "4", "text/html");

    assert_int_equal(b->ops->delete (b, "apps/p1/v1/js/app.js", &err), KP_OK);
    kp_buf out = KP_BUF_INIT;
    assert_int_equal(b->ops->get(b, "apps/p1/v1/js/app.js", &out, NULL, &err), KP_ENOTFOUND);
    assert_false(exists(f->root, "apps/p1/v1/js")); /* the emptied directory went too */
    assert_true(exists(f->root, "apps/p1/v1"));

    assert_int_equal(b->ops->delete_prefix(b, "apps/p1/v1/", &err), KP_OK);
    assert_list(b, "", "apps/p1/v10/index.html,apps/p2/v1/index.html,");
    assert_false(exists(f->root, "apps/p1/v1"));

    put(b, "apps/p1/v1/index.html", "again", "text/html");
    assert_int_equal(b->ops->delete_prefix(b, "apps/p1/", &err), KP_OK);
    assert_list(b, "", "apps/p2/v1/index.html,");
    assert_false(exists(f->root, "apps/p1"));
    assert_true(exists(f->root, "apps/p2/v1"));
    assert_int_equal(b->ops->delete_prefix(b, "apps/p9/", &err), KP_OK); /* nothing to do */

    assert_int_equal(b->ops->delete_prefix(b, "apps", &err), KP_OK);
    assert_list(b, "", "");
    assert_true(exists(f->tmp, "data/blobs")); /* the root stays */
}

static void test_put_into_blocked_path(void **state)
{
    fixture *f = *state;
    kp_err err;
    /* a foreign regular file where a directory is needed */
    char path[512];
    snprintf(path, sizeof path, "%s/blocked", f->root);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(f->b->ops->put(f->b, "blocked/x", "x", 1, NULL, &err), KP_EIO);
    assert_non_null(strstr(err.msg, "blocked/x"));
}

static void test_open_errors(void **state)
{
    fixture *f = *state;
    kp_blob *b2;
    kp_err err;
    char path[512];
    assert_int_equal(kp_blob_fs_open("", &b2, &err), KP_EINVAL);
    snprintf(path, sizeof path, "%s/plainfile", f->tmp);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(kp_blob_fs_open(path, &b2, &err), KP_EIO);
    /* a second handle on the same root sees the same blobs */
    put(f->b, "shared", "s", "text/plain");
    assert_int_equal(kp_blob_fs_open(f->root, &b2, &err), KP_OK);
    assert_blob(b2, "shared", "s", "text/plain");
    b2->ops->close(b2);
}

/* ---- concurrency ---- */

#define BIG_A 200000
#define BIG_B 70000
#define ROUNDS 150

typedef struct race {
    kp_blob *b;
    char *a, *bb;
    int torn;
    int failures;
    char failure[256];
} race;

static void *writer(void *arg)
{
    race *r = arg;
    kp_err err;
    for (int i = 0; i < ROUNDS; i++) {
        int use_a = i % 2;
        if (r->b->ops->put(r->b, "race/blob", use_a ? r->a : r->bb, use_a ? BIG_A : BIG_B, use_a ? "text/a" : "text/b",
                           &err) != KP_OK) {
            __atomic_add_fetch(&r->failures, 1, __ATOMIC_SEQ_CST);
            snprintf(r->failure, sizeof r->failure, "%s", err.msg);
        }
    }
    return NULL;
}

static void *reader(void *arg)
{
    race *r = arg;
    kp_buf out = KP_BUF_INIT;
    char ct[KP_BLOB_CT_MAX];
    kp_err err;
    for (int i = 0; i < ROUNDS * 2; i++) {
        if (r->b->ops->get(r->b, "race/blob", &out, ct, &err) != KP_OK)
            continue; /* not written yet */
        int ok = (out.len == BIG_A && strcmp(ct, "text/a") == 0 && memcmp(out.data, r->a, BIG_A) == 0) ||
                 (out.len == BIG_B && strcmp(ct, "text/b") == 0 && memcmp(out.data, r->bb, BIG_B) == 0);
        if (!ok)
            __atomic_add_fetch(&r->torn, 1, __ATOMIC_SEQ_CST);
    }
    kp_buf_free(&out);
    return NULL;
}

/* Puts into a directory that another thread keeps emptying (and so removing). */
static void *dir_putter(void *arg)
{
    race *r = arg;
    kp_err err;
    char key[64];
    for (int i = 0; i < ROUNDS * 2; i++) {
        snprintf(key, sizeof key, "churn/d/k%d", i);
        if (r->b->ops->put(r->b, key, "v", 1, NULL, &err) != KP_OK) {
            __atomic_add_fetch(&r->failures, 1, __ATOMIC_SEQ_CST);
            snprintf(r->failure, sizeof r->failure, "%s", err.msg);
        }
    }
    return NULL;
}

static void *dir_deleter(void *arg)
{
    race *r = arg;
    kp_err err;
    for (int i = 0; i < ROUNDS * 4; i++)
        r->b->ops->delete_prefix(r->b, "churn/", &err);
    return NULL;
}

static void test_open_read(void **state)
{
    fixture *f = *state;
    kp_blob *b = f->b;
    kp_err err;
    static const char bin[] = "line one\nline two\0\xff";
    assert_int_equal(b->ops->put(b, "apps/p/v1/f.bin", bin, sizeof bin, "application/x-thing", &err), KP_OK);
    int fd = -1;
    int64_t offset = -1, len = -1;
    assert_int_equal(b->ops->open_read(b, "apps/p/v1/f.bin", &fd, &offset, &len, &err), KP_OK);
    assert_true(fd >= 0);
    assert_int_equal(len, (int64_t)sizeof bin);
    char got[sizeof bin];
    assert_int_equal(pread(fd, got, sizeof got, (off_t)offset), (ssize_t)sizeof got);
    assert_memory_equal(got, bin, sizeof bin);
    close(fd);
    assert_int_equal(b->ops->open_read(b, "apps/p/v1/none", &fd, &offset, &len, &err), KP_ENOTFOUND);
    assert_int_equal(fd, -1);
    assert_int_equal(b->ops->open_read(b, "../x", &fd, &offset, &len, &err), KP_EINVAL);
}

static void test_concurrent_access(void **state)
{
    fixture *f = *state;
    race r = {f->b, malloc(BIG_A), malloc(BIG_B), 0, 0, ""};
    memset(r.a, 'a', BIG_A);
    memset(r.bb, 'b', BIG_B);
    pthread_t t[6];
    pthread_create(&t[0], NULL, writer, &r);
    pthread_create(&t[1], NULL, writer, &r);
    pthread_create(&t[2], NULL, reader, &r);
    pthread_create(&t[3], NULL, reader, &r);
    pthread_create(&t[4], NULL, dir_putter, &r);
    pthread_create(&t[5], NULL, dir_deleter, &r);
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    if (r.failures)
        fail_msg("%d failed puts, e.g. %s", r.failures, r.failure);
    assert_int_equal(r.torn, 0);
    free(r.a);
    free(r.bb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_disk_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_and_folder_can_coexist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_content_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_and_delete_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_into_blocked_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_access, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
