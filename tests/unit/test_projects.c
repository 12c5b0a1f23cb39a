/*
 * test_projects.c - deleting a project (domain/projects.c) on a real SQLite
 * database and a filesystem blob store wrapped so that removing files can be
 * made to fail: the project is then kept and the caller told
 * (KP_EUNAVAILABLE), never deleted with its files left behind; a retry
 * finishes. A generating project is refused before anything is removed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "blob/blob_fs.h"
#include "domain/projects.h"
#include "testutil.h"

/* A blob store that forwards to a real one, except delete_prefix when failing. */
typedef struct failing_blob {
    kp_blob base;
    kp_blob *real;
    int fail_deletes;
} failing_blob;

static kp_status fb_put(kp_blob *b, const char *key, const void *data, size_t len, const char *ct, kp_err *err)
{
    kp_blob *real = ((failing_blob *)b->impl)->real;
    return real->ops->put(real, key, data, len, ct, err);
}

static kp_status fb_get(kp_blob *b, const char *key, kp_buf *out, char ct[KP_BLOB_CT_MAX], kp_err *err)
{
    kp_blob *real = ((failing_blob *)b->impl)->real;
    return real->ops->get(real, key, out, ct, err);
}

static kp_status fb_delete(kp_blob *b, const char *key, kp_err *err)
{
    kp_blob *real = ((failing_blob *)b->impl)->real;
    return real->ops->delete (real, key, err);
}

static kp_status fb_delete_prefix(kp_blob *b, const char *prefix, kp_err *err)
{
    failing_blob *f = b->impl;
    if (f->fail_deletes) {
        /* removes one file, then fails: as a disk that errors half way */
        char key[KP_BLOB_KEY_MAX];
        snprintf(key, sizeof key, "%sv1/index.html", prefix);
        f->real->ops->delete (f->real, key, err);
        return kp_err_set(err, KP_EIO, "injected: cannot remove %s", prefix);
    }
    return f->real->ops->delete_prefix(f->real, prefix, err);
}

static kp_status fb_list(kp_blob *b, const char *prefix, kp_blob_list_fn fn, void *ud, kp_err *err)
{
    kp_blob *real = ((failing_blob *)b->impl)->real;
    return real->ops->list(real, prefix, fn, ud, err);
}

static void fb_close(kp_blob *b)
{
    (void)b;
}

static const kp_blob_ops fb_ops = {.put = fb_put,
                                   .get = fb_get,
                                   .delete = fb_delete,
                                   .delete_prefix = fb_delete_prefix,
                                   .list = fb_list,
                                   .close = fb_close};

typedef struct fixture {
    char dir[256];
    char db[512];
    kp_store *s;
    failing_blob blob;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->db, sizeof f->db);
    f->blob.real = kp_test_blob(f->dir);
    f->blob.base.ops = &fb_ops;
    f->blob.base.impl = &f->blob;
    kp_test_user(f->s, "usr_a", "a@example.com", "pro");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    f->blob.real->ops->close(f->blob.real);
    f->s->ops->close(f->s);
    kp_test_rmrf(f->dir);
    free(f);
    return 0;
}

static int files_of(fixture *f, const char *id)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "apps/%s/", id);
    return kp_test_blob_count(f->blob.real, prefix);
}

/* A project with version 1 (ready: two files, or still generating). */
static kp_project make_project(fixture *f, const char *id, kp_version_status status)
{
    kp_err err = {0};
    kp_project p = {.user_id = "usr_a", .name = "An app", .latest_version = 1};
    kp_version v = {.n = 1, .status = KP_VER_GENERATING};
    snprintf(p.id, sizeof p.id, "%s", id);
    snprintf(v.project_id, sizeof v.project_id, "%s", id);
    assert_int_equal(f->s->ops->project_create(f->s, &p, &v, &err), KP_OK);
    if (status == KP_VER_READY) {
        char key[128];
        snprintf(key, sizeof key, "apps/%s/v1/index.html", id);
        assert_int_equal(f->blob.real->ops->put(f->blob.real, key, "<p>hi", 5, "text/html", &err), KP_OK);
        snprintf(key, sizeof key, "apps/%s/v1/app.js", id);
        assert_int_equal(f->blob.real->ops->put(f->blob.real, key, "1;", 2, "text/javascript", &err), KP_OK);
        v.status = KP_VER_READY;
        assert_int_equal(f->s->ops->version_finish(f->s, &v, &err), KP_OK);
    }
    return p;
}

static void test_delete_removes_files_and_rows(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_project p = make_project(f, "prj_ok", KP_VER_READY);
    assert_int_equal(files_of(f, "prj_ok"), 2);
    assert_int_equal(kp_projects_delete(f->s, &f->blob.base, &p, &err), KP_OK);
    assert_int_equal(files_of(f, "prj_ok"), 0);
    assert_int_equal(f->s->ops->project_get(f->s, "prj_ok", &p, &err), KP_ENOTFOUND);
}

/* Files that cannot be removed: the project is kept and the caller told;
 * a retry once the store works finishes the deletion. */
static void test_delete_with_failing_files_keeps_project(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_project p = make_project(f, "prj_stuck", KP_VER_READY), got;
    f->blob.fail_deletes = 1;
    assert_int_equal(kp_projects_delete(f->s, &f->blob.base, &p, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "could not be removed"));
    assert_int_equal(f->s->ops->project_get(f->s, "prj_stuck", &got, &err), KP_OK);
    assert_int_equal(files_of(f, "prj_stuck"), 1); /* half removed, and still findable */

    f->blob.fail_deletes = 0;
    assert_int_equal(kp_projects_delete(f->s, &f->blob.base, &p, &err), KP_OK);
    assert_int_equal(files_of(f, "prj_stuck"), 0);
    assert_int_equal(f->s->ops->project_get(f->s, "prj_stuck", &got, &err), KP_ENOTFOUND);
}

/* While a version generates, nothing is removed. */
static void test_delete_generating_refused(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_project p = make_project(f, "prj_busy", KP_VER_GENERATING), got;
    char key[] = "apps/prj_busy/v1/partial.html";
    assert_int_equal(f->blob.real->ops->put(f->blob.real, key, "x", 1, "text/html", &err), KP_OK);
    assert_int_equal(kp_projects_delete(f->s, &f->blob.base, &p, &err), KP_ECONFLICT);
    assert_int_equal(files_of(f, "prj_busy"), 1);
    assert_int_equal(f->s->ops->project_get(f->s, "prj_busy", &got, &err), KP_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_delete_removes_files_and_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_with_failing_files_keeps_project, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_generating_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
