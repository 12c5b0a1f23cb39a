/*
 * sqlite_events.c - the SQLite backend's event store (store.h kp_event):
 * the table version_events (migration 7), one row per event keyed by
 * (project_id, n, id). Appends are INSERT OR IGNORE, so a retried batch adds
 * nothing twice, and events_append_many writes several versions' events in one
 * transaction (a running generation's batches, gen/events.c); version_end appends its last events through
 * sq_events_append_json_locked inside its own transaction.
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_internal.h"

typedef enum stmt_id { ST_EV_INSERT, ST_EV_INSERT_JSON, ST_EV_LIST, ST_EV_LAST, ST_EV_DELETE, ST_EV_COUNT } stmt_id;

static const char *const stmt_sql[ST_EV_COUNT] = {
    [ST_EV_INSERT] = "INSERT OR IGNORE INTO version_events (project_id, n, id, type, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    /* the events of a JSON array [{"id","event","data"}] (migration 7 reads older rows the same way) */
    [ST_EV_INSERT_JSON] = "INSERT OR IGNORE INTO version_events (project_id, n, id, type, data) "
                          "SELECT ?1, ?2, e.value ->> '$.id', e.value ->> '$.event', e.value -> '$.data' "
                          "FROM json_each(?3) e WHERE e.type = 'object' AND e.value ->> '$.id' >= 1 "
                          "AND e.value ->> '$.event' IS NOT NULL AND e.value -> '$.data' IS NOT NULL",
    [ST_EV_LIST] = ("SELECT id, type, data FROM version_events WHERE project_id = ?1 AND n = ?2 AND id > ?3 "
                    "ORDER BY id LIMIT ?4"),
    [ST_EV_LAST] = "SELECT COALESCE(MAX(id), 0) FROM version_events WHERE project_id = ?1 AND n = ?2",
    [ST_EV_DELETE] = "DELETE FROM version_events WHERE project_id = ?1",
};

_Static_assert(ST_EV_COUNT <= SQ_SLOTS_EVENTS_N, "sqlite_events.c has more statements than slots");

static kp_status stmt_get(sq_store *h, stmt_id id, sqlite3_stmt **out, kp_err *err)
{
    return sq_stmt_cached(h, SQ_SLOTS_EVENTS + (unsigned)id, stmt_sql[id], out, err);
}

static int key_valid(const char *project_id, int64_t n)
{
    return sq_nonempty_fits(project_id, KP_ID_MAX) && n >= 1;
}

static int event_valid(const kp_event *e)
{
    return e->id >= 1 && e->type[0] && memchr(e->type, '\0', sizeof e->type) && e->data && e->data[0];
}

static kp_status insert_one(sq_store *h, const char *project_id, int64_t n, const kp_event *e, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_EV_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    sqlite3_bind_int64(st, 3, e->id);
    sq_bind_text(st, 4, e->type);
    sq_bind_text(st, 5, e->data);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "append events", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status batch_check(const kp_event_batch *b, kp_err *err)
{
    if (!key_valid(b->project_id, b->n) || (b->count > 0 && !b->events))
        return kp_err_set(err, KP_EINVAL, "invalid events");
    for (size_t i = 0; i < b->count; i++)
        if (!event_valid(&b->events[i]))
            return kp_err_set(err, KP_EINVAL, "invalid event %zu", i);
    return KP_OK;
}

static kp_status batch_insert(sq_store *h, const kp_event_batch *b, kp_err *err)
{
    kp_status rc = KP_OK;
    for (size_t i = 0; i < b->count && rc == KP_OK; i++)
        rc = insert_one(h, b->project_id, b->n, &b->events[i], err);
    return rc;
}

kp_status sq_events_append_many(kp_store *s, const kp_event_batch *batches, size_t n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    size_t rows = 0;
    if (n > 0 && !batches)
        return kp_err_set(err, KP_EINVAL, "invalid events");
    for (size_t i = 0; i < n; i++) {
        kp_status rc = batch_check(&batches[i], err);
        if (rc != KP_OK)
            return rc;
        rows += batches[i].count;
    }
    if (rows == 0)
        return KP_OK;
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    for (size_t i = 0; i < n && rc == KP_OK; i++)
        rc = batch_insert(h, &batches[i], err);
    return sq_tx_end(h, rc, err);
}

kp_status sq_events_append(kp_store *s, const char *project_id, int64_t n, const kp_event *events, size_t count,
                           kp_err *err)
{
    kp_event_batch b = {.project_id = project_id, .n = n, .events = events, .count = count};
    return sq_events_append_many(s, &b, 1, err);
}

kp_status sq_events_append_json_locked(sq_store *h, const char *project_id, int64_t n, const char *events_json,
                                       kp_err *err)
{
    if (!events_json || !*events_json || strcmp(events_json, "[]") == 0)
        return KP_OK;
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_EV_INSERT_JSON, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    sq_bind_text(st, 3, events_json);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = (sqlite3_errcode(sq_db(h)) == SQLITE_ERROR) ? kp_err_set(err, KP_EINVAL, "invalid events")
                                                         : kp_sqlite_db_error(sq_db(h), "append events", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status event_row(sqlite3_stmt *st, void *item, kp_err *err)
{
    kp_event *e = item;
    const unsigned char *data = sqlite3_column_text(st, 2);
    e->id = sqlite3_column_int64(st, 0);
    sq_column_copy(st, 1, e->type, sizeof e->type);
    e->data = strdup(data ? (const char *)data : "null");
    return e->data ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
}

static void free_events(void *items, size_t n)
{
    kp_event_free_array(items, n);
}

kp_status sq_events_list(kp_store *s, const char *project_id, int64_t n, int64_t after_id, size_t limit, kp_event **out,
                         size_t *count, kp_err *err)
{
    sq_store *h = sq_impl(s);
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *count = 0;
    if (!key_valid(project_id, n))
        return kp_err_set(err, KP_EINVAL, "invalid version");
    if (limit == 0)
        return KP_OK;
    kp_status rc = stmt_get(h, ST_EV_LIST, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    sqlite3_bind_int64(st, 3, after_id);
    sqlite3_bind_int64(st, 4, sq_limit(limit));
    void *items = NULL;
    rc = sq_collect_rows(h, st, sizeof(kp_event), event_row, free_events, "list events", &items, count, err);
    if (rc == KP_OK)
        *out = items;
    return rc;
}

kp_status sq_events_last_id(kp_store *s, const char *project_id, int64_t n, int64_t *last_id, kp_err *err)
{
    sq_store *h = sq_impl(s);
    sqlite3_stmt *st = NULL;
    *last_id = 0;
    if (!key_valid(project_id, n))
        return kp_err_set(err, KP_EINVAL, "invalid version");
    kp_status rc = stmt_get(h, ST_EV_LAST, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    if (sqlite3_step(st) == SQLITE_ROW)
        *last_id = sqlite3_column_int64(st, 0);
    else
        rc = kp_sqlite_db_error(sq_db(h), "read the last event", err);
    sq_stmt_done(st);
    return rc;
}

kp_status sq_events_delete_project_locked(sq_store *h, const char *project_id, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_EV_DELETE, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "delete events", err);
    sq_stmt_done(st);
    return rc;
}
