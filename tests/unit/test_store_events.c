/*
 * test_store_events.c - the event store (store.h kp_event): events_append is
 * idempotent per id (a retried batch adds nothing twice), events_list gives
 * a version's events in id order after an id, at most a limit, and
 * events_last_id the highest; version_end appends its events in its own
 * transaction and the row keeps none (version reads carry no log); deleting a project deletes its
 * events; migration 7 moves the events_json of rows older builds ended into
 * the event store.
 *
 * Every test works in its own temporary directory under /tmp, removed after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "store/sqlite/sqlite_store.h"
#include "store/store.h"
#include "testutil.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    kp_store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->path, sizeof f->path);
    kp_test_user(f->s, "usr_a", "a@example.com", "business");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    f->s->ops->close(f->s);
    kp_test_rmrf(f->dir);
    free(f);
    return 0;
}

static kp_event ev(int64_t id, const char *type, char *data)
{
    kp_event e = {.id = id, .data = data};
    snprintf(e.type, sizeof e.type, "%s", type);
    return e;
}

/* A project with version 1 generating (no reservation). */
static void new_project(fixture *f, const char *pid)
{
    kp_err err = {0};
    kp_project p;
    kp_version v;
    memset(&p, 0, sizeof p);
    memset(&v, 0, sizeof v);
    snprintf(p.id, sizeof p.id, "%s", pid);
    snprintf(p.user_id, sizeof p.user_id, "usr_a");
    snprintf(p.name, sizeof p.name, "events");
    p.latest_version = 1;
    snprintf(v.project_id, sizeof v.project_id, "%s", pid);
    v.n = 1;
    v.status = KP_VER_GENERATING;
    assert_int_equal(f->s->ops->project_create(f->s, &p, &v, &err), KP_OK);
}

static void test_append_list_in_order(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_event batch1[] = {ev(1, "project", "{\"a\":1}"), ev(2, "delta", "{\"text\":\"x\"}")};
    kp_event batch2[] = {ev(3, "file", "{\"path\":\"index.html\"}"), ev(4, "delta", "{\"text\":\"y\"}")};
    assert_int_equal(f->s->ops->events_append(f->s, "prj_e", 1, batch1, 2, &err), KP_OK);
    assert_int_equal(f->s->ops->events_append(f->s, "prj_e", 1, batch2, 2, &err), KP_OK);
    /* another version's events stay apart */
    assert_int_equal(f->s->ops->events_append(f->s, "prj_e", 2, batch1, 1, &err), KP_OK);

    kp_event *out = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->events_list(f->s, "prj_e", 1, 0, 100, &out, &n, &err), KP_OK);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(out[i].id, (int64_t)i + 1);
    assert_string_equal(out[2].type, "file");
    assert_string_equal(out[2].data, "{\"path\":\"index.html\"}");
    kp_event_free_array(out, n);

    int64_t last = -1;
    assert_int_equal(f->s->ops->events_last_id(f->s, "prj_e", 1, &last, &err), KP_OK);
    assert_int_equal(last, 4);
    assert_int_equal(f->s->ops->events_last_id(f->s, "prj_none", 1, &last, &err), KP_OK);
    assert_int_equal(last, 0);
}

static void test_after_id_and_limit(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_event batch[5];
    char data[5][32];
    for (int i = 0; i < 5; i++) {
        snprintf(data[i], sizeof data[i], "{\"i\":%d}", i + 1);
        batch[i] = ev(i + 1, "delta", data[i]);
    }
    assert_int_equal(f->s->ops->events_append(f->s, "prj_e", 1, batch, 5, &err), KP_OK);
    kp_event *out = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->events_list(f->s, "prj_e", 1, 2, 2, &out, &n, &err), KP_OK);
    assert_int_equal(n, 2);
    assert_int_equal(out[0].id, 3);
    assert_int_equal(out[1].id, 4);
    assert_string_equal(out[1].data, "{\"i\":4}");
    kp_event_free_array(out, n);
    assert_int_equal(f->s->ops->events_list(f->s, "prj_e", 1, 5, 10, &out, &n, &err), KP_OK);
    assert_int_equal(n, 0);
    kp_event_free_array(out, n);
    assert_int_equal(f->s->ops->events_list(f->s, "prj_e", 1, 0, 0, &out, &n, &err), KP_OK);
    assert_int_equal(n, 0);
}

static void test_append_idempotent(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_event batch[] = {ev(1, "project", "{\"a\":1}"), ev(2, "delta", "{\"text\":\"x\"}")};
    kp_event retried[] = {ev(2, "delta", "{\"text\":\"other\"}"), ev(3, "delta", "{\"text\":\"z\"}")};
    assert_int_equal(f->s->ops->events_append(f->s, "prj_e", 1, batch, 2, &err), KP_OK);
    assert_int_equal(f->s->ops->events_append(f->s, "prj_e", 1, batch, 2, &err), KP_OK); /* retried whole */
    assert_int_equal(f->s->ops->events_append(f->s, "prj_e", 1, retried, 2, &err), KP_OK);
    kp_event *out = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->events_list(f->s, "prj_e", 1, 0, 100, &out, &n, &err), KP_OK);
    assert_int_equal(n, 3);
    assert_string_equal(out[1].data, "{\"text\":\"x\"}"); /* the first write of id 2 stays */
    assert_int_equal(out[2].id, 3);
    kp_event_free_array(out, n);
    assert_int_equal(
        kp_test_sql_int(f->path, "SELECT COUNT(*) FROM version_events WHERE project_id = 'prj_e' AND n = 1"), 3);
}

static void test_append_refuses_invalid(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_event bad_id[] = {ev(0, "delta", "{}")};
    kp_event no_data[] = {ev(1, "delta", NULL)};
    assert_int_equal(f->s->ops->events_append(f->s, "prj_e", 1, bad_id, 1, &err), KP_EINVAL);
    assert_int_equal(f->s->ops->events_append(f->s, "prj_e", 1, no_data, 1, &err), KP_EINVAL);
    assert_int_equal(f->s->ops->events_append(f->s, "", 1, NULL, 0, &err), KP_EINVAL);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM version_events"), 0);
}

static void test_version_end_appends_the_rest(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    new_project(f, "prj_end");
    kp_event batch[] = {ev(1, "project", "{\"a\":1}"), ev(2, "delta", "{\"text\":\"x\"}")};
    assert_int_equal(f->s->ops->events_append(f->s, "prj_end", 1, batch, 2, &err), KP_OK);
    kp_version v;
    memset(&v, 0, sizeof v);
    snprintf(v.project_id, sizeof v.project_id, "prj_end");
    v.n = 1;
    v.status = KP_VER_READY;
    /* overlaps what is stored (2) and adds the last (3) */
    v.events_json = "[{\"id\":2,\"event\":\"delta\",\"data\":{\"text\":\"x\"}},"
                    "{\"id\":3,\"event\":\"done\",\"data\":{\"version\":1,\"files\":[]}}]";
    assert_int_equal(f->s->ops->version_end(f->s, &v, NULL, NULL, &err), KP_OK);
    kp_event *out = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->events_list(f->s, "prj_end", 1, 0, 100, &out, &n, &err), KP_OK);
    assert_int_equal(n, 3);
    assert_string_equal(out[2].type, "done");
    assert_string_equal(out[2].data, "{\"version\":1,\"files\":[]}");
    kp_event_free_array(out, n);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM versions WHERE events_json = '[]'"), 1);

    /* a second end is refused and appends nothing */
    v.events_json = "[{\"id\":4,\"event\":\"error\",\"data\":{}}]";
    assert_int_equal(f->s->ops->version_end(f->s, &v, NULL, NULL, &err), KP_ECONFLICT);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM version_events WHERE project_id = 'prj_end'"), 3);

    /* deleting the project deletes its events */
    assert_int_equal(f->s->ops->project_delete(f->s, "prj_end", &err), KP_OK);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM version_events WHERE project_id = 'prj_end'"), 0);
}

/* Version reads (lists, follow-up prompts) never carry an event log, even a row's leftover one. */
static void test_version_reads_carry_no_events(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    new_project(f, "prj_list");
    kp_test_sql_exec(f->path, "UPDATE versions SET events_json = '[{\"id\":1,\"event\":\"done\",\"data\":{}}]'");
    kp_version *vs = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->version_list(f->s, "prj_list", &vs, &n, &err), KP_OK);
    assert_int_equal(n, 1);
    assert_string_equal(vs[0].events_json, "[]");
    kp_version_free_array(vs, n);
    kp_version v;
    assert_int_equal(f->s->ops->version_get(f->s, "prj_list", 1, &v, &err), KP_OK);
    assert_string_equal(v.events_json, "[]");
    kp_version_clear(&v);
}

static void test_migration_moves_older_events(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    int applied = 0;
    f->s->ops->close(f->s);
    f->s = NULL;
    /* back to schema 6, with a version an older build ended (its events in the row) */
    kp_test_sql_exec(f->path, "DROP TABLE version_events; ALTER TABLE versions DROP COLUMN cancel_requested;"
                              "DELETE FROM schema_migrations WHERE version >= 7;"
                              "INSERT INTO projects (id, user_id, name, latest_version, latest_ready, created_at, "
                              "updated_at) VALUES ('prj_old', 'usr_a', 'old', 1, 1, 1, 1);"
                              "INSERT INTO versions (project_id, n, user_id, status, settled, events_json, "
                              "created_at, updated_at) VALUES ('prj_old', 1, 'usr_a', 2, 1, "
                              "'[{\"id\":1,\"event\":\"project\",\"data\":{\"project_id\":\"prj_old\"}},"
                              "{\"id\":2,\"event\":\"done\",\"data\":{\"version\":1}}]', 1, 1);");
    assert_int_equal(kp_sqlite_migrate(f->path, &applied, &err), KP_OK);
    assert_true(applied >= 1);
    assert_int_equal(kp_sqlite_open(f->path, &f->s, &err), KP_OK);
    kp_event *out = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->events_list(f->s, "prj_old", 1, 0, 100, &out, &n, &err), KP_OK);
    assert_int_equal(n, 2);
    assert_string_equal(out[0].type, "project");
    assert_string_equal(out[0].data, "{\"project_id\":\"prj_old\"}");
    assert_string_equal(out[1].type, "done");
    kp_event_free_array(out, n);
    assert_int_equal(kp_test_sql_int(f->path, "SELECT COUNT(*) FROM versions WHERE events_json <> '[]'"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_list_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_after_id_and_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_refuses_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_end_appends_the_rest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_reads_carry_no_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_moves_older_events, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
