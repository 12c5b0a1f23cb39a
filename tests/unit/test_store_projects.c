/*
 * test_store_projects.c - projects and versions in the SQLite backend,
 * against the store.h contract: creation and reading, listing newest first
 * with a (created_at, id) cursor, deletion with its versions, the rules of
 * version_create and version_finish, the per-user count of generating
 * versions, the unsettled list used for crash recovery, heap fields that
 * round-trip byte for byte, racing creators, and the upgrade of a database
 * that was at schema version 1.
 *
 * Every test works in its own temporary directory under /tmp, removed after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_store.h"
#include "store/store.h"
#include "testutil.h"

/* What migration 5 added, dropped to make a database of an older schema. */
#define KP_TEST_DROP_EVENTS "DROP TABLE version_events;"
#define KP_TEST_DROP_BILLING                                                                                           \
    KP_TEST_DROP_EVENTS "DROP TABLE billing_customers; DROP TABLE subscriptions; DROP TABLE stripe_events;"
/* What migrations 6 (leases) and 8 (cancel requests) added to versions. */
#define KP_TEST_DROP_LEASES                                                                                            \
    "DROP INDEX versions_lease; ALTER TABLE versions DROP COLUMN owner; ALTER TABLE versions DROP COLUMN lease_until;" \
    "ALTER TABLE versions DROP COLUMN cancel_requested;"

typedef struct fixture {
    char dir[64];
    char path[128];
    kp_store *s;
} fixture;

/* ---- fixture and helpers ---------------------------------------------- */

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->path, sizeof f->path);
    kp_test_user(f->s, "usr_a", "a@example.com", "free");
    kp_test_user(f->s, "usr_b", "b@example.com", "pro");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->s)
        f->s->ops->close(f->s);
    kp_test_rmrf(f->dir);
    free(f);
    return 0;
}

static kp_project project_rec(const char *id, const char *user, const char *name, int64_t created_at)
{
    kp_project p;
    memset(&p, 0, sizeof p);
    snprintf(p.id, sizeof p.id, "%s", id);
    snprintf(p.user_id, sizeof p.user_id, "%s", user);
    snprintf(p.name, sizeof p.name, "%s", name);
    p.created_at = p.updated_at = created_at;
    return p;
}

/* A new version record; prompt is borrowed. */
static kp_version version_rec(const char *project_id, int64_t n, const char *prompt, int64_t created_at)
{
    kp_version v;
    memset(&v, 0, sizeof v);
    snprintf(v.project_id, sizeof v.project_id, "%s", project_id);
    snprintf(v.reservation_id, sizeof v.reservation_id, "res_%s_%lld", project_id, (long long)n);
    v.n = n;
    v.status = KP_VER_GENERATING;
    v.prompt = (char *)prompt;
    v.created_at = v.updated_at = created_at;
    return v;
}

/* Creates project id of user (with version 1, generating); fails the test otherwise. */
static void create_project(kp_store *s, const char *id, const char *user, int64_t created_at)
{
    kp_project p = project_rec(id, user, "An app", created_at);
    kp_version v = version_rec(id, 1, "make an app", created_at);
    kp_err err = {0};
    if (s->ops->project_create(s, &p, &v, &err) != KP_OK)
        fail_msg("project_create %s: %s", id, err.msg);
}

static kp_status create_version(kp_store *s, const char *project_id, int64_t n, int64_t created_at, kp_err *err)
{
    kp_version v = version_rec(project_id, n, "change it", created_at);
    return s->ops->version_create(s, &v, err);
}

/* Ends version n as status, with no result fields (NULL heap fields). */
static kp_status finish(kp_store *s, const char *project_id, int64_t n, kp_version_status status, int64_t at,
                        kp_err *err)
{
    kp_version v;
    memset(&v, 0, sizeof v);
    snprintf(v.project_id, sizeof v.project_id, "%s", project_id);
    v.n = n;
    v.status = status;
    v.updated_at = at;
    if (status == KP_VER_FAILED)
        snprintf(v.error_code, sizeof v.error_code, "invalid_output");
    return s->ops->version_finish(s, &v, err);
}

static kp_project get_project(kp_store *s, const char *id)
{
    kp_project p;
    kp_err err = {0};
    if (s->ops->project_get(s, id, &p, &err) != KP_OK)
        fail_msg("project_get %s: %s", id, err.msg);
    return p;
}

static int64_t generating(kp_store *s, const char *user)
{
    int64_t count = -1;
    kp_err err = {0};
    assert_int_equal(s->ops->versions_generating_count(s, user, &count, &err), KP_OK);
    return count;
}

/* ---- create and get --------------------------------------------------- */

static void test_create_and_get(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_project p = project_rec("prj_one", "usr_a", "Café — 日本", 1700000000);
    p.latest_version = 7; /* ignored: a new project is at version 1 */
    p.latest_ready = 3;
    kp_version v = version_rec("prj_one", 1, "a todo list", 1700000000);
    v.status = KP_VER_READY; /* ignored: the first version is generating */
    v.settled = 1;
    assert_int_equal(f->s->ops->project_create(f->s, &p, &v, &err), KP_OK);

    kp_project got = get_project(f->s, "prj_one");
    assert_string_equal(got.id, "prj_one");
    assert_string_equal(got.user_id, "usr_a");
    assert_string_equal(got.name, "Café — 日本");
    assert_int_equal(got.latest_version, 1);
    assert_int_equal(got.latest_ready, 0);
    assert_int_equal(got.created_at, 1700000000);
    assert_int_equal(got.updated_at, 1700000000);

    kp_version gv;
    assert_int_equal(f->s->ops->version_get(f->s, "prj_one", 1, &gv, &err), KP_OK);
    assert_string_equal(gv.project_id, "prj_one");
    assert_int_equal(gv.n, 1);
    assert_int_equal(gv.status, KP_VER_GENERATING);
    assert_int_equal(gv.settled, 0);
    assert_string_equal(gv.reservation_id, "res_prj_one_1");
    assert_string_equal(gv.prompt, "a todo list");
    assert_string_equal(gv.error_code, "");
    assert_string_equal(gv.error_message, "");
    assert_string_equal(gv.message, "");
    assert_string_equal(gv.files_json, "[]");
    assert_string_equal(gv.events_json, "[]");
    assert_string_equal(gv.model, "");
    assert_int_equal(gv.input_tokens, 0);
    assert_int_equal(gv.created_at, 1700000000);
    kp_version_clear(&gv);
    assert_null(gv.prompt);

    /* Missing things. */
    assert_int_equal(f->s->ops->project_get(f->s, "prj_nope", &got, &err), KP_ENOTFOUND);
    assert_int_equal(f->s->ops->project_get(f->s, "", &got, &err), KP_ENOTFOUND);
    assert_int_equal(f->s->ops->version_get(f->s, "prj_one", 2, &gv, &err), KP_ENOTFOUND);
    assert_null(gv.prompt); /* nothing to free after a failure */
    assert_int_equal(f->s->ops->version_get(f->s, "prj_nope", 1, &gv, &err), KP_ENOTFOUND);

    /* Without created_at, the store uses the current time. */
    kp_project now = project_rec("prj_now", "usr_a", "Now", 0);
    kp_version nv = version_rec("", 0, NULL, 0);
    assert_int_equal(f->s->ops->project_create(f->s, &now, &nv, &err), KP_OK);
    assert_true(get_project(f->s, "prj_now").created_at > 1700000000);
    assert_int_equal(f->s->ops->version_get(f->s, "prj_now", 1, &gv, &err), KP_OK);
    assert_true(gv.created_at > 1700000000);
    assert_string_equal(gv.prompt, ""); /* NULL was written as "" */
    kp_version_clear(&gv);
}

static void test_create_errors(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    create_project(f->s, "prj_dup", "usr_a", 100);

    /* Same id again, even for another user: a conflict, and nothing changes. */
    kp_project p = project_rec("prj_dup", "usr_b", "Other", 200);
    kp_version v = version_rec("prj_dup", 1, "other prompt", 200);
    assert_int_equal(f->s->ops->project_create(f->s, &p, &v, &err), KP_ECONFLICT);
    assert_int_equal(err.status, KP_ECONFLICT);
    assert_null(strstr(err.msg, "SQL"));
    kp_project got = get_project(f->s, "prj_dup");
    assert_string_equal(got.user_id, "usr_a");
    assert_int_equal(generating(f->s, "usr_b"), 0);

    /* Unknown user: not found, and no project nor version left behind. */
    p = project_rec("prj_orphan", "usr_ghost", "Ghost", 100);
    v = version_rec("prj_orphan", 1, "boo", 100);
    assert_int_equal(f->s->ops->project_create(f->s, &p, &v, &err), KP_ENOTFOUND);
    assert_string_equal(err.msg, "user not found");
    assert_int_equal(f->s->ops->project_get(f->s, "prj_orphan", &got, &err), KP_ENOTFOUND);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM versions WHERE project_id = 'prj_orphan'"), 0);

    /* Invalid records. */
    p = project_rec("", "usr_a", "No id", 100);
    v = version_rec("", 1, "x", 100);
    assert_int_equal(f->s->ops->project_create(f->s, &p, &v, &err), KP_EINVAL);
    p = project_rec("prj_x", "usr_a", "Mismatch", 100);
    v = version_rec("prj_y", 1, "x", 100);
    assert_int_equal(f->s->ops->project_create(f->s, &p, &v, &err), KP_EINVAL);
    v = version_rec("prj_x", 2, "x", 100);
    assert_int_equal(f->s->ops->project_create(f->s, &p, &v, &err), KP_EINVAL);
    assert_int_equal(f->s->ops->project_create(f->s, &p, NULL, &err), KP_EINVAL);
    assert_int_equal(f->s->ops->project_get(f->s, "prj_x", &got, &err), KP_ENOTFOUND);
}

/* ---- list ------------------------------------------------------------- */

static void assert_ids(const kp_project *items, size_t n, const char *const *want, size_t want_n)
{
    assert_int_equal(n, want_n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(items[i].id, want[i]);
}

static void test_list_order_and_paging(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    /* Three projects share created_at 200: their ids order them. */
    create_project(f->s, "prj_b", "usr_a", 200);
    create_project(f->s, "prj_old", "usr_a", 100);
    create_project(f->s, "prj_new", "usr_a", 300);
    create_project(f->s, "prj_other", "usr_b", 250);
    create_project(f->s, "prj_c", "usr_a", 200);
    create_project(f->s, "prj_a", "usr_a", 200);

    static const char *const all[] = {"prj_new", "prj_c", "prj_b", "prj_a", "prj_old"};
    kp_project *items = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->project_list(f->s, "usr_a", 0, "", 100, &items, &n, &err), KP_OK);
    assert_ids(items, n, all, 5);
    free(items);
    assert_int_equal(f->s->ops->project_list(f->s, "usr_a", 0, NULL, 100, &items, &n, &err), KP_OK);
    assert_ids(items, n, all, 5);
    free(items);

    /* Pages of two, each after the previous page's last (created_at, id):
     * the cursor falls inside the run of equal times. */
    int64_t at = 0;
    char after[KP_ID_MAX] = "";
    size_t seen = 0;
    for (int page = 0; page < 4; page++) {
        assert_int_equal(f->s->ops->project_list(f->s, "usr_a", at, after, 2, &items, &n, &err), KP_OK);
        assert_true(n <= 2);
        for (size_t i = 0; i < n; i++)
            assert_string_equal(items[i].id, all[seen + i]);
        seen += n;
        if (n) {
            at = items[n - 1].created_at;
            snprintf(after, sizeof after, "%s", items[n - 1].id);
        }
        free(items);
        if (page < 2)
            assert_int_equal(n, 2);
        else if (page == 2)
            assert_int_equal(n, 1);
        else
            assert_int_equal(n, 0);
    }
    assert_int_equal(seen, 5);

    /* A cursor between entries: strictly after (200, "prj_bb"). */
    assert_int_equal(f->s->ops->project_list(f->s, "usr_a", 200, "prj_bb", 10, &items, &n, &err), KP_OK);
    static const char *const tail[] = {"prj_b", "prj_a", "prj_old"};
    assert_ids(items, n, tail, 3);
    free(items);

    /* Another user's list; an unknown user; limit 0. */
    assert_int_equal(f->s->ops->project_list(f->s, "usr_b", 0, "", 10, &items, &n, &err), KP_OK);
    static const char *const other[] = {"prj_other"};
    assert_ids(items, n, other, 1);
    free(items);
    assert_int_equal(f->s->ops->project_list(f->s, "usr_ghost", 0, "", 10, &items, &n, &err), KP_OK);
    assert_int_equal(n, 0);
    free(items);
    assert_int_equal(f->s->ops->project_list(f->s, "usr_a", 0, "", 0, &items, &n, &err), KP_OK);
    assert_int_equal(n, 0);
    free(items);
}

/* ---- delete ----------------------------------------------------------- */

static void test_delete_cascades(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    create_project(f->s, "prj_del", "usr_a", 100);
    assert_int_equal(finish(f->s, "prj_del", 1, KP_VER_READY, 110, &err), KP_OK);
    assert_int_equal(create_version(f->s, "prj_del", 2, 120, &err), KP_OK);
    create_project(f->s, "prj_keep", "usr_a", 100);
    assert_int_equal(generating(f->s, "usr_a"), 2);

    /* refused while version 2 generates, in the delete's own transaction */
    assert_int_equal(f->s->ops->project_delete(f->s, "prj_del", &err), KP_ECONFLICT);
    assert_non_null(strstr(err.msg, "version 2"));
    assert_int_equal(generating(f->s, "usr_a"), 2);
    assert_int_equal(finish(f->s, "prj_del", 2, KP_VER_FAILED, 130, &err), KP_OK);
    assert_int_equal(f->s->ops->project_delete(f->s, "prj_del", &err), KP_OK);
    kp_project p;
    kp_version v;
    assert_int_equal(f->s->ops->project_get(f->s, "prj_del", &p, &err), KP_ENOTFOUND);
    assert_int_equal(f->s->ops->version_get(f->s, "prj_del", 1, &v, &err), KP_ENOTFOUND);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM versions WHERE project_id = 'prj_del'"), 0);
    assert_int_equal(generating(f->s, "usr_a"), 1);

    kp_version *vs = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->version_list(f->s, "prj_del", &vs, &n, &err), KP_OK);
    assert_int_equal(n, 0);
    kp_version_free_array(vs, n);

    /* The other project is untouched; deleting again is not found. */
    assert_int_equal(f->s->ops->version_get(f->s, "prj_keep", 1, &v, &err), KP_OK);
    kp_version_clear(&v);
    assert_int_equal(f->s->ops->project_delete(f->s, "prj_del", &err), KP_ENOTFOUND);
    assert_int_equal(f->s->ops->project_delete(f->s, "", &err), KP_ENOTFOUND);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM projects"), 1);
}

/* ---- version_create --------------------------------------------------- */

static void test_version_create_rules(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    create_project(f->s, "prj_v", "usr_a", 100);

    /* Version 1 is still generating. */
    assert_int_equal(create_version(f->s, "prj_v", 2, 150, &err), KP_ECONFLICT);
    assert_non_null(strstr(err.msg, "generating"));
    assert_int_equal(finish(f->s, "prj_v", 1, KP_VER_READY, 160, &err), KP_OK);

    /* Not the next number. */
    assert_int_equal(create_version(f->s, "prj_v", 3, 170, &err), KP_ECONFLICT);
    assert_non_null(strstr(err.msg, "not the next"));
    assert_int_equal(create_version(f->s, "prj_v", 1, 170, &err), KP_ECONFLICT);
    assert_int_equal(get_project(f->s, "prj_v").latest_version, 1);

    /* The next one: bumps latest_version and updated_at. */
    assert_int_equal(create_version(f->s, "prj_v", 2, 180, &err), KP_OK);
    kp_project p = get_project(f->s, "prj_v");
    assert_int_equal(p.latest_version, 2);
    assert_int_equal(p.latest_ready, 1);
    assert_int_equal(p.created_at, 100);
    assert_int_equal(p.updated_at, 180);
    kp_version v;
    assert_int_equal(f->s->ops->version_get(f->s, "prj_v", 2, &v, &err), KP_OK);
    assert_int_equal(v.status, KP_VER_GENERATING);
    assert_int_equal(v.settled, 0);
    assert_string_equal(v.prompt, "change it");
    assert_string_equal(v.reservation_id, "res_prj_v_2");
    assert_int_equal(v.created_at, 180);
    kp_version_clear(&v);

    /* A failed version does not block the next one. */
    assert_int_equal(finish(f->s, "prj_v", 2, KP_VER_FAILED, 190, &err), KP_OK);
    assert_int_equal(create_version(f->s, "prj_v", 3, 200, &err), KP_OK);

    /* Unknown project; invalid records. */
    assert_int_equal(create_version(f->s, "prj_none", 2, 200, &err), KP_ENOTFOUND);
    assert_int_equal(create_version(f->s, "", 2, 200, &err), KP_EINVAL);
    assert_int_equal(create_version(f->s, "prj_v", 0, 200, &err), KP_EINVAL);
    assert_int_equal(f->s->ops->version_create(f->s, NULL, &err), KP_EINVAL);

    kp_version *vs = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->version_list(f->s, "prj_v", &vs, &n, &err), KP_OK);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(vs[i].n, (int64_t)i + 1); /* oldest first */
    assert_int_equal(vs[0].status, KP_VER_READY);
    assert_int_equal(vs[1].status, KP_VER_FAILED);
    assert_int_equal(vs[2].status, KP_VER_GENERATING);
    kp_version_free_array(vs, n);
}

typedef struct race_arg {
    const char *path;
    kp_status rc;
} race_arg;

static void *race_create(void *p)
{
    race_arg *a = p;
    kp_store *s = NULL;
    kp_err err = {0};
    a->rc = KP_EINTERNAL;
    if (kp_sqlite_open(a->path, &s, &err) != KP_OK)
        return NULL;
    a->rc = create_version(s, "prj_race", 2, 300, &err);
    s->ops->close(s);
    return NULL;
}

/* Two handles add version 2 at once: exactly one wins. */
static void test_version_create_race(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    create_project(f->s, "prj_race", "usr_a", 100);
    assert_int_equal(finish(f->s, "prj_race", 1, KP_VER_READY, 110, &err), KP_OK);

    enum { THREADS = 4 };
    pthread_t t[THREADS];
    race_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i].path = f->path;
        assert_int_equal(pthread_create(&t[i], NULL, race_create, &args[i]), 0);
    }
    int ok = 0, conflict = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        ok += args[i].rc == KP_OK;
        conflict += args[i].rc == KP_ECONFLICT;
    }
    assert_int_equal(ok, 1);
    assert_int_equal(conflict, THREADS - 1);
    assert_int_equal(get_project(f->s, "prj_race").latest_version, 2);
    assert_int_equal(generating(f->s, "usr_a"), 1);
}

/* ---- version_finish --------------------------------------------------- */

static void test_finish_ready_and_failed(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    create_project(f->s, "prj_f", "usr_a", 100);

    kp_version v;
    memset(&v, 0, sizeof v);
    snprintf(v.project_id, sizeof v.project_id, "prj_f");
    v.n = 1;
    v.status = KP_VER_READY;
    v.message = "Here is your app.";
    v.files_json = "[{\"path\":\"index.html\",\"size\":12,\"content_type\":\"text/html\"}]";
    v.events_json = "[{\"id\":1,\"event\":\"done\",\"data\":{\"version\":1}}]";
    snprintf(v.model, sizeof v.model, "claude-test");
    v.input_tokens = 1200;
    v.output_tokens = 3400;
    v.duration_ms = 5678;
    v.updated_at = 150;
    assert_int_equal(f->s->ops->version_finish(f->s, &v, &err), KP_OK);

    kp_project p = get_project(f->s, "prj_f");
    assert_int_equal(p.latest_ready, 1);
    assert_int_equal(p.updated_at, 150);
    kp_version got;
    assert_int_equal(f->s->ops->version_get(f->s, "prj_f", 1, &got, &err), KP_OK);
    assert_int_equal(got.status, KP_VER_READY);
    assert_string_equal(got.message, "Here is your app.");
    assert_string_equal(got.files_json, v.files_json);
    assert_string_equal(got.events_json, "[]"); /* the events went to the event store */
    char *stored = NULL;
    assert_int_equal(kp_store_events_json(f->s, "prj_f", 1, 0, &stored, &err), KP_OK);
    assert_string_equal(stored, v.events_json);
    free(stored);
    assert_string_equal(got.model, "claude-test");
    assert_int_equal(got.input_tokens, 1200);
    assert_int_equal(got.output_tokens, 3400);
    assert_int_equal(got.duration_ms, 5678);
    assert_int_equal(got.updated_at, 150);
    assert_int_equal(got.created_at, 100);
    assert_string_equal(got.prompt, "make an app"); /* finish leaves the prompt */
    assert_string_equal(got.reservation_id, "res_prj_f_1");
    assert_int_equal(got.settled, 0);
    kp_version_clear(&got);

    /* Finishing again, either way, is a conflict and changes nothing. */
    assert_int_equal(finish(f->s, "prj_f", 1, KP_VER_FAILED, 160, &err), KP_ECONFLICT);
    assert_non_null(strstr(err.msg, "ready"));
    assert_int_equal(f->s->ops->version_finish(f->s, &v, &err), KP_ECONFLICT);
    assert_int_equal(get_project(f->s, "prj_f").updated_at, 150);

    /* Version 2 fails: latest_ready stays 1, updated_at moves. */
    assert_int_equal(create_version(f->s, "prj_f", 2, 170, &err), KP_OK);
    memset(&v, 0, sizeof v);
    snprintf(v.project_id, sizeof v.project_id, "prj_f");
    v.n = 2;
    v.status = KP_VER_FAILED;
    snprintf(v.error_code, sizeof v.error_code, "too_long");
    v.error_message = "the app is too long";
    v.updated_at = 180;
    assert_int_equal(f->s->ops->version_finish(f->s, &v, &err), KP_OK);
    p = get_project(f->s, "prj_f");
    assert_int_equal(p.latest_version, 2);
    assert_int_equal(p.latest_ready, 1);
    assert_int_equal(p.updated_at, 180);
    assert_int_equal(f->s->ops->version_get(f->s, "prj_f", 2, &got, &err), KP_OK);
    assert_int_equal(got.status, KP_VER_FAILED);
    assert_string_equal(got.error_code, "too_long");
    assert_string_equal(got.error_message, "the app is too long");
    assert_string_equal(got.message, "");
    assert_string_equal(got.files_json, "[]"); /* NULL written as [] */
    assert_string_equal(got.events_json, "[]");
    kp_version_clear(&got);
    assert_int_equal(finish(f->s, "prj_f", 2, KP_VER_READY, 190, &err), KP_ECONFLICT);
    assert_non_null(strstr(err.msg, "failed"));

    /* Version 3 ready: latest_ready follows. */
    assert_int_equal(create_version(f->s, "prj_f", 3, 200, &err), KP_OK);
    assert_int_equal(finish(f->s, "prj_f", 3, KP_VER_READY, 210, &err), KP_OK);
    p = get_project(f->s, "prj_f");
    assert_int_equal(p.latest_ready, 3);
    assert_int_equal(p.updated_at, 210);

    /* Missing version; a status that does not end a version. */
    assert_int_equal(finish(f->s, "prj_f", 9, KP_VER_READY, 220, &err), KP_ENOTFOUND);
    assert_int_equal(finish(f->s, "prj_none", 1, KP_VER_READY, 220, &err), KP_ENOTFOUND);
    assert_int_equal(create_version(f->s, "prj_f", 4, 230, &err), KP_OK);
    assert_int_equal(finish(f->s, "prj_f", 4, KP_VER_GENERATING, 240, &err), KP_EINVAL);
    assert_int_equal(f->s->ops->version_finish(f->s, NULL, &err), KP_EINVAL);
    assert_int_equal(generating(f->s, "usr_a"), 1);
}

/* ---- counts and recovery ---------------------------------------------- */

static void test_generating_count_per_user(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    assert_int_equal(generating(f->s, "usr_a"), 0);
    create_project(f->s, "prj_a1", "usr_a", 100);
    create_project(f->s, "prj_a2", "usr_a", 101);
    create_project(f->s, "prj_b1", "usr_b", 102);
    assert_int_equal(generating(f->s, "usr_a"), 2);
    assert_int_equal(generating(f->s, "usr_b"), 1);

    assert_int_equal(finish(f->s, "prj_a1", 1, KP_VER_READY, 110, &err), KP_OK);
    assert_int_equal(generating(f->s, "usr_a"), 1);
    assert_int_equal(generating(f->s, "usr_b"), 1);
    assert_int_equal(finish(f->s, "prj_b1", 1, KP_VER_FAILED, 110, &err), KP_OK);
    assert_int_equal(generating(f->s, "usr_b"), 0);

    /* A new version of a project generates again. */
    assert_int_equal(create_version(f->s, "prj_a1", 2, 120, &err), KP_OK);
    assert_int_equal(generating(f->s, "usr_a"), 2);
    assert_int_equal(generating(f->s, "usr_ghost"), 0);
    assert_int_equal(generating(f->s, ""), 0);
}

static void test_unsettled_and_set_settled(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    create_project(f->s, "prj_u1", "usr_a", 100);
    create_project(f->s, "prj_u2", "usr_b", 100);
    assert_int_equal(finish(f->s, "prj_u1", 1, KP_VER_READY, 110, &err), KP_OK);
    assert_int_equal(create_version(f->s, "prj_u1", 2, 120, &err), KP_OK);

    kp_version *vs = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->versions_unsettled(f->s, &vs, &n, &err), KP_OK);
    assert_int_equal(n, 1); /* ended but unsettled only: generating versions are recovered by lease */
    assert_string_equal(vs[0].project_id, "prj_u1");
    assert_int_equal(vs[0].n, 1);
    assert_int_equal(vs[0].status, KP_VER_READY);
    assert_string_equal(vs[0].reservation_id, "res_prj_u1_1");
    assert_string_equal(vs[0].prompt, "make an app");
    assert_int_equal(vs[0].settled, 0);
    kp_version_free_array(vs, n);
    assert_int_equal(finish(f->s, "prj_u2", 1, KP_VER_FAILED, 115, &err), KP_OK);
    assert_int_equal(f->s->ops->versions_unsettled(f->s, &vs, &n, &err), KP_OK);
    assert_int_equal(n, 2);
    assert_string_equal(vs[1].project_id, "prj_u2");
    assert_int_equal(vs[1].status, KP_VER_FAILED);
    kp_version_free_array(vs, n);

    assert_int_equal(f->s->ops->version_set_settled(f->s, "prj_u1", 1, &err), KP_OK);
    assert_int_equal(f->s->ops->version_set_settled(f->s, "prj_u1", 1, &err), KP_OK); /* idempotent */
    assert_int_equal(f->s->ops->version_set_settled(f->s, "prj_u2", 1, &err), KP_OK);
    assert_int_equal(f->s->ops->version_set_settled(f->s, "prj_u2", 5, &err), KP_ENOTFOUND);
    assert_int_equal(f->s->ops->version_set_settled(f->s, "prj_none", 1, &err), KP_ENOTFOUND);

    assert_int_equal(f->s->ops->versions_unsettled(f->s, &vs, &n, &err), KP_OK);
    assert_int_equal(n, 0); /* prj_u1 v2 generates: not in the list */
    kp_version_free_array(vs, n);

    kp_version v;
    assert_int_equal(f->s->ops->version_get(f->s, "prj_u2", 1, &v, &err), KP_OK);
    assert_int_equal(v.settled, 1);
    kp_version_clear(&v);

    /* Settling is independent of finishing: a settled version still finishes. */
    assert_int_equal(f->s->ops->version_set_settled(f->s, "prj_u1", 2, &err), KP_OK);
    assert_int_equal(finish(f->s, "prj_u1", 2, KP_VER_READY, 130, &err), KP_OK);
    assert_int_equal(f->s->ops->versions_unsettled(f->s, &vs, &n, &err), KP_OK);
    assert_int_equal(n, 0);
    kp_version_free_array(vs, n);
}

/* ---- heap fields ------------------------------------------------------ */

/* A long text mixing ASCII, quotes, backslashes, newlines and multi-byte UTF-8. */
static char *long_text(size_t len)
{
    static const char *const pieces[] = {"Build a \"todo\" app; ", "l'été à Noël — ",
                                         "日本語のテキスト ",      "emoji 🚀✨ ",
                                         "back\\slash\n",          "{\"json\": [1, 2]} "};
    char *s = malloc(len + 1);
    assert_non_null(s);
    size_t at = 0;
    for (size_t i = 0; at < len; i++) {
        const char *p = pieces[i % (sizeof pieces / sizeof pieces[0])];
        size_t plen = strlen(p);
        if (at + plen > len) {
            memset(s + at, 'x', len - at);
            at = len;
            break;
        }
        memcpy(s + at, p, plen);
        at += plen;
    }
    s[len] = '\0';
    return s;
}

static void assert_heap_fields(const kp_version *v, const char *prompt, const char *message, const char *files,
                               const char *events, const char *error_message)
{
    assert_int_equal(strlen(v->prompt), strlen(prompt));
    assert_string_equal(v->prompt, prompt);
    assert_string_equal(v->message, message);
    assert_string_equal(v->files_json, files);
    assert_string_equal(v->events_json, events);
    assert_string_equal(v->error_message, error_message);
}

static void test_heap_fields_roundtrip(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    char *prompt = long_text(20000);
    const char *events = "[]"; /* the row keeps none (the event store has them: test_store_events.c) */
    const char *message = "Voilà: \"quotes\", 'single', `back`, \\ and \n newlines — 完成 ✅";
    const char *files = "[{\"path\":\"src/app.js\",\"size\":42,\"content_type\":\"text/javascript\"},"
                        "{\"path\":\"caf\\u00e9.html\",\"size\":7,\"content_type\":\"text/html\"}]";
    const char *error_message = "the model said \"no\" — réessayez";

    kp_project p = project_rec("prj_heap", "usr_a", "Heap", 100);
    kp_version v = version_rec("prj_heap", 1, prompt, 100);
    assert_int_equal(f->s->ops->project_create(f->s, &p, &v, &err), KP_OK);
    kp_version fin;
    memset(&fin, 0, sizeof fin);
    snprintf(fin.project_id, sizeof fin.project_id, "prj_heap");
    fin.n = 1;
    fin.status = KP_VER_FAILED;
    snprintf(fin.error_code, sizeof fin.error_code, "invalid_output");
    fin.error_message = (char *)error_message;
    fin.message = (char *)message;
    fin.files_json = (char *)files;
    assert_int_equal(f->s->ops->version_finish(f->s, &fin, &err), KP_OK);

    /* Every read path returns the same bytes. */
    kp_version got;
    assert_int_equal(f->s->ops->version_get(f->s, "prj_heap", 1, &got, &err), KP_OK);
    assert_heap_fields(&got, prompt, message, files, events, error_message);
    assert_string_equal(got.error_code, "invalid_output");
    kp_version_clear(&got);

    kp_version *vs = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->version_list(f->s, "prj_heap", &vs, &n, &err), KP_OK);
    assert_int_equal(n, 1);
    assert_heap_fields(&vs[0], prompt, message, files, events, error_message);
    kp_version_free_array(vs, n);

    assert_int_equal(f->s->ops->versions_unsettled(f->s, &vs, &n, &err), KP_OK);
    assert_int_equal(n, 1);
    assert_heap_fields(&vs[0], prompt, message, files, events, error_message);
    kp_version_free_array(vs, n);

    /* And across a fresh handle (nothing cached in the first one). */
    f->s->ops->close(f->s);
    f->s = NULL;
    assert_int_equal(kp_sqlite_open(f->path, &f->s, &err), KP_OK);
    assert_int_equal(f->s->ops->version_get(f->s, "prj_heap", 1, &got, &err), KP_OK);
    assert_heap_fields(&got, prompt, message, files, events, error_message);
    kp_version_clear(&got);

    /* Blank JSON columns (written by something else) still read as arrays. */
    kp_test_sql_exec(f->path, "UPDATE versions SET files_json = '', events_json = '', message = ''");
    assert_int_equal(f->s->ops->version_get(f->s, "prj_heap", 1, &got, &err), KP_OK);
    assert_heap_fields(&got, prompt, "", "[]", "[]", error_message);
    kp_version_clear(&got);

    free(prompt);
}

/* ---- upgrade from schema version 1 ------------------------------------ */

/*
 * A database written by a build whose schema ended at migration 1: made here
 * by removing what migration 2 added, after writing data that only needs
 * version 1 (a user, credits, the ledger).
 */
static void test_migrate_from_v1_keeps_data(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_credit_change c;
    memset(&c, 0, sizeof c);
    c.user_id = "usr_a";
    c.delta_daily = 4;
    c.delta_monthly = 30;
    c.reason = "admin_grant";
    c.idem_key = "grant:1";
    c.expected_version = -1;
    kp_balance bal;
    assert_int_equal(f->s->ops->credits_apply(f->s, &c, &bal, &err), KP_OK);
    f->s->ops->close(f->s);
    f->s = NULL;

    kp_test_sql_exec(
        f->path, "BEGIN IMMEDIATE; DROP TABLE versions; DROP TABLE projects;"
                 "DROP TABLE email_verifications; ALTER TABLE users DROP COLUMN email_verified;" KP_TEST_DROP_BILLING
                 "ALTER TABLE users DROP COLUMN verification_required;"
                 /* migration 1's reservations: a rowid table, its index by user */
                 "DROP TABLE reservations;"
                 "CREATE TABLE reservations (id TEXT PRIMARY KEY NOT NULL, user_id TEXT NOT NULL REFERENCES users(id),"
                 "  daily INTEGER NOT NULL CHECK (daily >= 0), monthly INTEGER NOT NULL CHECK (monthly >= 0),"
                 "  state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'refunded')),"
                 "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
                 "CREATE INDEX reservations_user ON reservations(user_id);"
                 "INSERT INTO reservations VALUES ('res_old', 'usr_a', 1, 2, 'reserved', 1700000000, 1700000001);"
                 "DELETE FROM schema_migrations WHERE version >= 2; COMMIT;");
    assert_int_equal(kp_test_sql_int(f->path, "SELECT MAX(version) FROM schema_migrations"), 1);
    assert_int_equal(kp_sqlite_open(f->path, &f->s, &err), KP_EUNAVAILABLE); /* needs migrate */
    assert_null(f->s);

    int applied = -1;
    assert_int_equal(kp_sqlite_migrate(f->path, &applied, &err), KP_OK);
    assert_int_equal(applied, kp_sqlite_schema_target() - 1);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT MAX(version) FROM schema_migrations"), kp_sqlite_schema_target());
    /* migration 9 dropped the index by user */
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'reservations_user'"),
                     0);
    /* migration 10: one b-tree keyed by id, the open reservations' index made again */
    assert_int_equal(kp_test_sql_int(f->path, "SELECT wr FROM pragma_table_list WHERE name = 'reservations'"), 1);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'reservations_open'"),
                     1);
    assert_int_equal(kp_sqlite_open(f->path, &f->s, &err), KP_OK);
    kp_reservation r;
    assert_int_equal(f->s->ops->reservation_get(f->s, "res_old", &r, &err), KP_OK);
    assert_string_equal(r.user_id, "usr_a");
    assert_int_equal(r.daily, 1);
    assert_int_equal(r.monthly, 2);
    assert_int_equal(r.state, KP_RES_RESERVED);
    assert_int_equal(r.created_at, 1700000000);
    assert_int_equal(r.updated_at, 1700000001);
    kp_reservation *orphans = NULL;
    size_t norphans = 0;
    assert_int_equal(f->s->ops->reservations_orphaned(f->s, &orphans, &norphans, &err), KP_OK);
    assert_int_equal(norphans, 1); /* read through reservations_open: no version refers to it */
    assert_string_equal(orphans[0].id, "res_old");
    free(orphans);

    /* Version 1 data is intact. */
    kp_user u;
    assert_int_equal(f->s->ops->user_get(f->s, "usr_a", &u, &err), KP_OK);
    assert_string_equal(u.email, "a@example.com");
    assert_int_equal(f->s->ops->user_get(f->s, "usr_b", &u, &err), KP_OK);
    assert_string_equal(u.plan_id, "pro");
    assert_int_equal(f->s->ops->balance_get(f->s, "usr_a", &bal, &err), KP_OK);
    assert_int_equal(bal.daily, 4);
    assert_int_equal(bal.monthly, 30);
    kp_balance sum;
    assert_int_equal(f->s->ops->ledger_sum(f->s, "usr_a", &sum, &err), KP_OK);
    assert_int_equal(sum.daily, 4);
    assert_int_equal(sum.monthly, 30);
    kp_plan *plans = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->plan_list(f->s, 0, &plans, &n, &err), KP_OK);
    assert_int_equal(n, 3);
    free(plans);

    /* And the new tables work for the existing users. */
    create_project(f->s, "prj_after", "usr_a", 100);
    assert_int_equal(generating(f->s, "usr_a"), 1);
    assert_int_equal(get_project(f->s, "prj_after").latest_version, 1);
}

/* Migration 3 turns the seconds of existing projects and versions into
 * milliseconds (the same instant), so old and new rows sort together. */
static void test_migrate_times_to_milliseconds(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    create_project(f->s, "prj_old", "usr_a", 1);
    f->s->ops->close(f->s);
    f->s = NULL;
    /* back to version 2: the later migrations' columns and tables go too */
    kp_test_sql_exec(
        f->path, "BEGIN IMMEDIATE; DELETE FROM schema_migrations WHERE version >= 3;"
                 "DROP TABLE email_verifications; ALTER TABLE users DROP COLUMN email_verified;" KP_TEST_DROP_BILLING
                     KP_TEST_DROP_LEASES "ALTER TABLE users DROP COLUMN verification_required;"
                 "ALTER TABLE versions DROP COLUMN refunded; ALTER TABLE versions DROP COLUMN credit_reason;"
                 "DROP INDEX reservations_open; DROP INDEX versions_reservation;"
                 "ALTER TABLE projects DROP COLUMN deleting;"
                 "UPDATE projects SET created_at = 1700000000, updated_at = 1700000000;"
                 "UPDATE versions SET created_at = 1700000000, updated_at = 1700000000; COMMIT;");
    int applied = -1;
    assert_int_equal(kp_sqlite_migrate(f->path, &applied, &err), KP_OK);
    assert_true(applied >= 1);
    assert_int_equal(kp_sqlite_open(f->path, &f->s, &err), KP_OK);
    assert_int_equal(get_project(f->s, "prj_old").created_at, 1700000000000LL);
    kp_version v;
    assert_int_equal(f->s->ops->version_get(f->s, "prj_old", 1, &v, &err), KP_OK);
    assert_int_equal(v.created_at, 1700000000000LL);
    assert_int_equal(v.updated_at, 1700000000000LL);
    kp_version_clear(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_and_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_order_and_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_cascades, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_create_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_create_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_ready_and_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generating_count_per_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsettled_and_set_settled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heap_fields_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_v1_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_times_to_milliseconds, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
