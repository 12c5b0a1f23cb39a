/*
 * test_blob_fs.c - what only the file system blob store has: its on-disk
 * layout, names the file system cannot hold, foreign files, emptied
 * directories, open errors and open_read. The blob contract itself (round
 * trips, keys, listing, deletion, concurrency) is test_blob_contract.c, run
 * on every backend.
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
#include "testutil.h"

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

static int teardown(void **state)
{
    fixture *f = *state;
    f->b->ops->close(f->b);
    kp_test_rmrf(f->tmp);
    free(f);
    return 0;
}

static int exists(const char *root, const char *rel)
{
    char path[1024];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", root, rel);
    return stat(path, &sb) == 0;
}

/* ---- list helper ---- */

/* ---- tests ---- */

/* ---- group sync ---- */

#define SYNC_THREADS 8
#define SYNC_PUTS 20

typedef struct putter {
    kp_blob *b;
    int id;
    int failed;
} putter;

/* SYNC_PUTS versions of three files each, as a publish stores them. */
static void *put_versions(void *arg)
{
    putter *p = arg;
    for (int v = 0; v < SYNC_PUTS; v++) {
        char keys[3][64];
        kp_blob_item items[3];
        for (int i = 0; i < 3; i++) {
            snprintf(keys[i], sizeof keys[i], "apps/p%d/v%d/file%d.txt", p->id, v, i);
            items[i] = (kp_blob_item){.key = keys[i], .data = keys[i], .len = strlen(keys[i]), .content_type = NULL};
        }
        kp_err err;
        if (p->b->ops->put_many(p->b, items, 3, &err) != KP_OK)
            p->failed++;
    }
    return NULL;
}

/* A put returns after a sync of its own (one begun after its writes); puts at the same time share
 * them; every blob reads back. */
static void test_puts_share_syncs(void **state)
{
    fixture *f = *state;
    kp_err err;
    unsigned long before = kp_blob_fs_syncs(f->b);
    assert_int_equal(f->b->ops->put(f->b, "one/blob", "x", 1, NULL, &err), KP_OK);
    assert_int_equal(kp_blob_fs_syncs(f->b), before + 1);
    kp_blob_item none[1];
    assert_int_equal(f->b->ops->put_many(f->b, none, 0, &err), KP_OK); /* nothing stored: nothing to sync */
    assert_int_equal(kp_blob_fs_syncs(f->b), before + 1);

    pthread_t t[SYNC_THREADS];
    putter p[SYNC_THREADS];
    before = kp_blob_fs_syncs(f->b);
    for (int i = 0; i < SYNC_THREADS; i++) {
        p[i] = (putter){.b = f->b, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, put_versions, &p[i]), 0);
    }
    for (int i = 0; i < SYNC_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(p[i].failed, 0);
    }
    unsigned long syncs = kp_blob_fs_syncs(f->b) - before;
    assert_true(syncs >= 1);
    assert_true(syncs <= SYNC_THREADS * SYNC_PUTS);
    printf("group sync: %lu syncs for %d puts of 3 files\n", syncs, SYNC_THREADS * SYNC_PUTS);
    for (int i = 0; i < SYNC_THREADS; i++) {
        kp_buf got = KP_BUF_INIT;
        char key[64], ct[KP_BLOB_CT_MAX];
        snprintf(key, sizeof key, "apps/p%d/v%d/file2.txt", i, SYNC_PUTS - 1);
        assert_int_equal(f->b->ops->get(f->b, key, &got, ct, &err), KP_OK);
        assert_memory_equal(got.data, key, strlen(key));
        kp_buf_free(&got);
    }
}

static void test_on_disk_layout(void **state)
{
    fixture *f = *state;
    kp_test_blob_put(f->b, "apps/p1/v1/app.js", "let a;", "text/javascript");
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

/* What is the file store's own: names it cannot hold, foreign files, emptied directories. */
static void test_segment_too_long(void **state)
{
    fixture *f = *state;
    kp_err err;
    /* a segment too long for the file system is refused, not an I/O error */
    char seg[300];
    memset(seg, 's', sizeof seg - 1);
    seg[sizeof seg - 1] = '\0';
    assert_int_equal(f->b->ops->put(f->b, seg, "x", 1, NULL, &err), KP_EINVAL);
}

static void test_list_ignores_foreign_files(void **state)
{
    fixture *f = *state;
    kp_test_blob_put(f->b, "apps/p1/v1/index.html", "1", "text/html");
    char path[512];
    snprintf(path, sizeof path, "%s/apps/p1/v1/~tmp.abc123", f->root);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(path, sizeof path, "%s/README", f->root);
    assert_non_null(fp = fopen(path, "w"));
    fclose(fp);
    kp_test_blob_assert_list(f->b, "", "apps/p1/v1/index.html,");
}

static void test_deletes_remove_empty_directories(void **state)
{
    fixture *f = *state;
    kp_blob *b = f->b;
    kp_err err;
    kp_test_blob_put(b, "apps/p1/v1/index.html", "1", "text/html");
    kp_test_blob_put(b, "apps/p1/v1/js/app.js", "2", "text/javascript");
    kp_test_blob_put(b, "apps/p2/v1/index.html", "4", "text/html");
    assert_int_equal(b->ops->delete (b, "apps/p1/v1/js/app.js", &err), KP_OK);
    assert_false(exists(f->root, "apps/p1/v1/js"));
    assert_true(exists(f->root, "apps/p1/v1"));
    assert_int_equal(b->ops->delete_prefix(b, "apps/p1/", &err), KP_OK);
    assert_false(exists(f->root, "apps/p1"));
    assert_true(exists(f->root, "apps/p2/v1"));
    assert_int_equal(b->ops->delete_prefix(b, "apps", &err), KP_OK);
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
    kp_test_blob_put(f->b, "shared", "s", "text/plain");
    assert_int_equal(kp_blob_fs_open(f->root, &b2, &err), KP_OK);
    kp_test_blob_assert(b2, "shared", "s", "text/plain");
    b2->ops->close(b2);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_on_disk_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segment_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_ignores_foreign_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deletes_remove_empty_directories, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_into_blocked_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_puts_share_syncs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
