/*
 * test_blob_contract.c - the blob contract (blob/blob.h), one suite run on
 * every backend: round trips, key and content type rules, prefix listing
 * and deletion, concurrent puts, gets and deletes (never a torn blob), and
 * the optional get_tagged where a backend has it.
 *
 *   test_blob_contract          the file store (make unit), then S3 if
 *                               KOUMPA_TEST_S3_BUCKET is set
 *   test_blob_contract s3       S3 only (tests/integration/blob-s3.test.mjs
 *                               runs it against moto behind the verifying
 *                               SigV4 front: AWS_ENDPOINT_URL_S3, credentials,
 *                               KOUMPA_S3_PATH_STYLE=1 in the environment)
 *
 * The S3 bucket is emptied before and after each test. What only the file
 * store has (its on-disk layout, open_read) is in test_blob_fs.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blob/blob_fs.h"
#include "blob/s3/blob_s3.h"
#include "core/buf.h"
#include "testutil.h"

typedef enum backend { FS, S3 } backend;

typedef struct fixture {
    backend kind;
    char tmp[64]; /* FS: mkdtemp directory */
    kp_blob *b;
} fixture;

/* Deletes every blob (delete_prefix("") is refused by the contract). */
static void empty_store(kp_blob *b)
{
    kp_buf all = KP_BUF_INIT;
    kp_err err;
    assert_int_equal(b->ops->list(b, "", kp_test_blob_collect, &all, &err), KP_OK);
    for (char *k = all.data, *comma; k && (comma = strchr(k, ',')) != NULL; k = comma + 1) {
        *comma = '\0';
        assert_int_equal(b->ops->delete (b, k, &err), KP_OK);
    }
    kp_buf_free(&all);
}

static int setup_backend(void **state, backend kind)
{
    fixture *f = calloc(1, sizeof *f);
    kp_err err;
    f->kind = kind;
    if (kind == FS) {
        char root[128];
        snprintf(f->tmp, sizeof f->tmp, "/tmp/kp-blobc-XXXXXX");
        assert_non_null(mkdtemp(f->tmp));
        snprintf(root, sizeof root, "%s/blobs", f->tmp);
        assert_int_equal(kp_blob_fs_open(root, &f->b, &err), KP_OK);
    } else {
        const char *ps = getenv("KOUMPA_S3_PATH_STYLE");
        kp_blob_s3_options o = {.bucket = getenv("KOUMPA_TEST_S3_BUCKET"), .path_style = ps && strcmp(ps, "1") == 0};
        if (kp_blob_s3_open(&o, &f->b, &err) != KP_OK)
            fail_msg("open S3 bucket %s: %s", o.bucket ? o.bucket : "(unset)", err.msg);
        empty_store(f->b);
    }
    *state = f;
    return 0;
}

static int setup_fs(void **state)
{
    return setup_backend(state, FS);
}

static int setup_s3(void **state)
{
    return setup_backend(state, S3);
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->kind == S3)
        empty_store(f->b);
    f->b->ops->close(f->b);
    if (f->kind == FS)
        kp_test_rmrf(f->tmp);
    free(f);
    return 0;
}

/* ---- tests ---- */

static void test_round_trip(void **state)
{
    fixture *f = *state;
    kp_blob *b = f->b;
    kp_err err;
    kp_test_blob_put(b, "apps/p1/v1/index.html", "<!doctype html><p>hi</p>", "text/html; charset=utf-8");
    kp_test_blob_assert(b, "apps/p1/v1/index.html", "<!doctype html><p>hi</p>", "text/html; charset=utf-8");

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
    kp_test_blob_put(b, "apps/p1/v1/index.html", "x", "text/plain");
    kp_test_blob_assert(b, "apps/p1/v1/index.html", "x", "text/plain");
}

/* kp_blob_put_many: the store's own (file store) or put for each (S3): every blob stored, in the
 * order given; at a bad item it stops, the ones before it stored and the rest not. */
static void test_put_many(void **state)
{
    fixture *f = *state;
    kp_blob *b = f->b;
    kp_err err;
    kp_test_blob_put(b, "apps/p1/v2/index.html", "old", "text/plain");
    const kp_blob_item items[] = {
        {"apps/p1/v2/index.html", "<p>new</p>", 10, "text/html"},
        {"apps/p1/v2/app.js", "go()", 4, "text/javascript"},
        {"apps/p1/v2/css/site.css", "p{}", 3, NULL},
        {"apps/p1/v2/empty.txt", "", 0, "text/plain"},
    };
    assert_int_equal(kp_blob_put_many(b, items, 4, &err), KP_OK);
    kp_test_blob_assert(b, "apps/p1/v2/index.html", "<p>new</p>", "text/html");
    kp_test_blob_assert(b, "apps/p1/v2/app.js", "go()", "text/javascript");
    kp_test_blob_assert(b, "apps/p1/v2/css/site.css", "p{}", "application/octet-stream");
    kp_test_blob_assert(b, "apps/p1/v2/empty.txt", "", "text/plain");
    assert_int_equal(kp_blob_put_many(b, items, 0, &err), KP_OK);

    const kp_blob_item bad[] = {
        {"apps/p2/v1/index.html", "a", 1, "text/html"},
        {"apps/p2/v1/../x", "b", 1, "text/plain"},
        {"apps/p2/v1/after.txt", "c", 1, "text/plain"},
    };
    assert_int_equal(kp_blob_put_many(b, bad, 3, &err), KP_EINVAL);
    kp_test_blob_assert_list(b, "apps/p2/", "apps/p2/v1/index.html,");
    const kp_blob_item bad_type[] = {{"apps/p3/v1/a", "a", 1, "text/\x01"}};
    assert_int_equal(kp_blob_put_many(b, bad_type, 1, &err), KP_EINVAL);
    kp_test_blob_assert_list(b, "apps/p3/", "");
}

static void test_key_and_folder_can_coexist(void **state)
{
    fixture *f = *state;
    kp_test_blob_put(f->b, "a", "file a", "text/plain");
    kp_test_blob_put(f->b, "a/b", "file a/b", "text/plain");
    kp_test_blob_put(f->b, "a/b/c", "file a/b/c", "text/plain");
    kp_test_blob_assert(f->b, "a", "file a", "text/plain");
    kp_test_blob_assert(f->b, "a/b", "file a/b", "text/plain");
    kp_test_blob_assert(f->b, "a/b/c", "file a/b/c", "text/plain");
    kp_test_blob_assert_list(f->b, "a", "a,a/b,a/b/c,");
}

static void test_missing(void **state)
{
    fixture *f = *state;
    kp_buf out = KP_BUF_INIT;
    kp_err err;
    kp_buf_puts(&out, "old");
    assert_int_equal(f->b->ops->get(f->b, "nope", &out, NULL, &err), KP_ENOTFOUND);
    assert_int_equal(out.len, 0);
    kp_test_blob_put(f->b, "file", "x", "text/plain");
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
    assert_int_equal(b->ops->list(b, "", kp_test_blob_collect, &all, &err), KP_OK);
    assert_int_equal(all.len, 0);
    kp_buf_free(&all);
    kp_buf_free(&out);

    /* prefixes */
    assert_true(kp_blob_prefix_valid(""));
    assert_true(kp_blob_prefix_valid("apps/"));
    assert_true(kp_blob_prefix_valid("apps/p1/v1"));
    assert_true(kp_blob_prefix_valid("apps/.."));   /* may continue as "..x" */
    assert_false(kp_blob_prefix_valid("apps/../")); /* a finished ".." segment */
    assert_false(kp_blob_prefix_valid("/apps"));
    assert_false(kp_blob_prefix_valid("a//"));
    assert_int_equal(b->ops->list(b, "../", kp_test_blob_collect, &all, &err), KP_EINVAL);
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
    kp_test_blob_assert(f->b, "k", "x", long_ct);
}

static void test_list(void **state)
{
    fixture *f = *state;
    kp_blob *b = f->b;
    kp_test_blob_put(b, "apps/p1/v1/index.html", "1", "text/html");
    kp_test_blob_put(b, "apps/p1/v1/js/app.js", "2", "text/javascript");
    kp_test_blob_put(b, "apps/p1/v10/index.html", "3", "text/html");
    kp_test_blob_put(b, "apps/p1/v2/index.html", "4", "text/html");
    kp_test_blob_put(b, "apps/p2/v1/index.html", "5", "text/html");
    kp_test_blob_put(b, "apps/p1-old", "6", "text/plain");
    kp_test_blob_put(b, "other", "7", "text/plain");

    kp_test_blob_assert_list(b, "",
                             "apps/p1-old,apps/p1/v1/index.html,apps/p1/v1/js/app.js,apps/p1/v10/index.html,"
                             "apps/p1/v2/index.html,apps/p2/v1/index.html,other,");
    kp_test_blob_assert_list(b, "apps/p1/",
                             "apps/p1/v1/index.html,apps/p1/v1/js/app.js,apps/p1/v10/index.html,"
                             "apps/p1/v2/index.html,");
    kp_test_blob_assert_list(b, "apps/p1/v1", "apps/p1/v1/index.html,apps/p1/v1/js/app.js,apps/p1/v10/index.html,");
    kp_test_blob_assert_list(b, "apps/p1/v1/", "apps/p1/v1/index.html,apps/p1/v1/js/app.js,");
    kp_test_blob_assert_list(b, "apps/p1",
                             "apps/p1-old,apps/p1/v1/index.html,apps/p1/v1/js/app.js,apps/p1/v10/index.html,"
                             "apps/p1/v2/index.html,");
    kp_test_blob_assert_list(b, "apps/p1/v1/index.html", "apps/p1/v1/index.html,");
    kp_test_blob_assert_list(b, "apps/p3/", "");
    kp_test_blob_assert_list(b, "nothing/here/", "");
    kp_test_blob_assert_list(b, "apps/..", "");
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
    kp_test_blob_put(f->b, "k1", "1", "text/plain");
    kp_test_blob_put(f->b, "k2", "2", "text/plain");
    kp_test_blob_put(f->b, "k3", "3", "text/plain");
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
    kp_test_blob_put(b, "apps/p1/v1/index.html", "1", "text/html");
    kp_test_blob_put(b, "apps/p1/v1/js/app.js", "2", "text/javascript");
    kp_test_blob_put(b, "apps/p1/v10/index.html", "3", "text/html");
    kp_test_blob_put(b, "apps/p2/v1/index.html", "4", "text/html");

    assert_int_equal(b->ops->delete (b, "apps/p1/v1/js/app.js", &err), KP_OK);
    kp_buf out = KP_BUF_INIT;
    assert_int_equal(b->ops->get(b, "apps/p1/v1/js/app.js", &out, NULL, &err), KP_ENOTFOUND);
    kp_buf_free(&out);
    kp_test_blob_assert_list(b, "apps/p1/v1/", "apps/p1/v1/index.html,");

    assert_int_equal(b->ops->delete_prefix(b, "apps/p1/v1/", &err), KP_OK);
    kp_test_blob_assert_list(b, "", "apps/p1/v10/index.html,apps/p2/v1/index.html,");

    kp_test_blob_put(b, "apps/p1/v1/index.html", "again", "text/html");
    assert_int_equal(b->ops->delete_prefix(b, "apps/p1/", &err), KP_OK);
    kp_test_blob_assert_list(b, "", "apps/p2/v1/index.html,");
    assert_int_equal(b->ops->delete_prefix(b, "apps/p9/", &err), KP_OK); /* nothing to do */

    assert_int_equal(b->ops->delete_prefix(b, "apps", &err), KP_OK);
    kp_test_blob_assert_list(b, "", "");
}

/* More blobs than one listing page (1000) or one DeleteObjects batch holds. */
static void test_many_blobs(void **state)
{
    fixture *f = *state;
    kp_err err;
    char key[64];
    for (int i = 0; i < 1005; i++) {
        snprintf(key, sizeof key, "apps/p/v1/f%04d.txt", i);
        kp_test_blob_put(f->b, key, "x", "text/plain");
    }
    kp_test_blob_put(f->b, "apps/q", "y", "text/plain");
    kp_buf got = KP_BUF_INIT;
    assert_int_equal(f->b->ops->list(f->b, "apps/p/", kp_test_blob_collect, &got, &err), KP_OK);
    size_t n = 0;
    for (const char *p = got.data; p && (p = strchr(p, ',')) != NULL; p++)
        n++;
    assert_int_equal(n, 1005);
    assert_non_null(strstr(got.data, "apps/p/v1/f0000.txt,apps/p/v1/f0001.txt,"));
    assert_non_null(strstr(got.data, "apps/p/v1/f0999.txt,apps/p/v1/f1000.txt,"));
    kp_buf_free(&got);
    assert_int_equal(f->b->ops->delete_prefix(f->b, "apps/p/", &err), KP_OK);
    kp_test_blob_assert_list(f->b, "", "apps/q,");
}

/* The optional get_tagged: the store's ETag, stable for the same bytes, new
 * for others, and If-None-Match answered by the store. */
static void test_get_tagged(void **state)
{
    fixture *f = *state;
    kp_blob *b = f->b;
    if (!b->ops->get_tagged) {
        /* an optional operation this backend leaves to callers (blob.h) */
        assert_int_equal(f->kind, FS);
        return;
    }
    kp_err err;
    kp_buf out = KP_BUF_INIT;
    char etag[KP_BLOB_ETAG_MAX], etag2[KP_BLOB_ETAG_MAX], inm[KP_BLOB_ETAG_MAX + 8];
    int nm = -1;
    kp_test_blob_put(b, "apps/p/v1/index.html", "hello", "text/html");
    assert_int_equal(b->ops->get_tagged(b, "apps/p/v1/index.html", NULL, &out, etag, &nm, &err), KP_OK);
    assert_int_equal(nm, 0);
    assert_string_equal(kp_buf_cstr(&out), "hello");
    assert_true(etag[0] == '"' && etag[strlen(etag) - 1] == '"');
    if (f->kind == S3) /* S3's ETag of a single-part PUT: the MD5 of the bytes */
        assert_string_equal(etag, "\"5d41402abc4b2a76b9719d911017c592\"");

    assert_int_equal(b->ops->get_tagged(b, "apps/p/v1/index.html", etag, &out, etag2, &nm, &err), KP_OK);
    assert_int_equal(nm, 1);
    assert_int_equal(out.len, 0);
    assert_string_equal(etag2, etag);

    snprintf(inm, sizeof inm, "\"other\"");
    assert_int_equal(b->ops->get_tagged(b, "apps/p/v1/index.html", inm, &out, etag2, &nm, &err), KP_OK);
    assert_int_equal(nm, 0);
    assert_string_equal(kp_buf_cstr(&out), "hello");

    kp_test_blob_put(b, "apps/p/v1/index.html", "hello!", "text/html");
    assert_int_equal(b->ops->get_tagged(b, "apps/p/v1/index.html", etag, &out, etag2, &nm, &err), KP_OK);
    assert_int_equal(nm, 0);
    assert_string_equal(kp_buf_cstr(&out), "hello!");
    assert_string_not_equal(etag2, etag);

    assert_int_equal(b->ops->get_tagged(b, "apps/p/v1/none", NULL, &out, etag2, &nm, &err), KP_ENOTFOUND);
    assert_int_equal(b->ops->get_tagged(b, "../x", NULL, &out, etag2, &nm, &err), KP_EINVAL);
    kp_buf_free(&out);
}

/* ---- concurrency ---- */

#define BIG_A 200000
#define BIG_B 70000

typedef struct race {
    kp_blob *b;
    char *a, *bb;
    int rounds;
    int torn;
    int failures;
    char failure[256];
} race;

static void *writer(void *arg)
{
    race *r = arg;
    kp_err err;
    for (int i = 0; i < r->rounds; i++) {
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
    for (int i = 0; i < r->rounds * 2; i++) {
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

/* Puts under a prefix that another thread keeps deleting. */
static void *dir_putter(void *arg)
{
    race *r = arg;
    kp_err err;
    char key[64];
    for (int i = 0; i < r->rounds * 2; i++) {
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
    for (int i = 0; i < r->rounds * 4; i++)
        if (r->b->ops->delete_prefix(r->b, "churn/", &err) != KP_OK) {
            __atomic_add_fetch(&r->failures, 1, __ATOMIC_SEQ_CST);
            snprintf(r->failure, sizeof r->failure, "%s", err.msg);
        }
    return NULL;
}

static void test_concurrent_access(void **state)
{
    fixture *f = *state;
    /* S3 calls cross a local Python server: fewer rounds, the same races */
    race r = {f->b, malloc(BIG_A), malloc(BIG_B), f->kind == FS ? 150 : 15, 0, 0, ""};
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
        fail_msg("%d failed calls, e.g. %s", r.failures, r.failure);
    assert_int_equal(r.torn, 0);
    free(r.a);
    free(r.bb);
}

#define CONTRACT(setup)                                                                                                \
    {                                                                                                                  \
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),                                             \
            cmocka_unit_test_setup_teardown(test_put_many, setup, teardown),                                           \
            cmocka_unit_test_setup_teardown(test_key_and_folder_can_coexist, setup, teardown),                         \
            cmocka_unit_test_setup_teardown(test_missing, setup, teardown),                                            \
            cmocka_unit_test_setup_teardown(test_invalid_keys, setup, teardown),                                       \
            cmocka_unit_test_setup_teardown(test_invalid_content_types, setup, teardown),                              \
            cmocka_unit_test_setup_teardown(test_list, setup, teardown),                                               \
            cmocka_unit_test_setup_teardown(test_list_stops, setup, teardown),                                         \
            cmocka_unit_test_setup_teardown(test_delete_and_delete_prefix, setup, teardown),                           \
            cmocka_unit_test_setup_teardown(test_many_blobs, setup, teardown),                                         \
            cmocka_unit_test_setup_teardown(test_get_tagged, setup, teardown),                                         \
            cmocka_unit_test_setup_teardown(test_concurrent_access, setup, teardown),                                  \
    }

int main(int argc, char **argv)
{
    const struct CMUnitTest fs_tests[] = CONTRACT(setup_fs);
    const struct CMUnitTest s3_tests[] = CONTRACT(setup_s3);
    int only_s3 = argc > 1 && strcmp(argv[1], "s3") == 0;
    int failed = 0;
    if (!only_s3)
        failed += cmocka_run_group_tests_name("blob contract: files", fs_tests, NULL, NULL);
    if (only_s3 || getenv("KOUMPA_TEST_S3_BUCKET"))
        failed += cmocka_run_group_tests_name("blob contract: S3", s3_tests, NULL, NULL);
    else
        printf("# blob contract on S3: run by tests/integration/blob-s3.test.mjs against moto "
               "(here KOUMPA_TEST_S3_BUCKET is not set)\n");
    return failed;
}
