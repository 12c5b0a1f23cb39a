/*
 * sqlite_projects.c - the SQLite backend's projects and versions
 * (store.h): creation, listing with a (created_at, id) cursor, the rules of
 * version_create and version_finish, conditional deletes, atomic admission
 * of a generation, and the lists crash recovery reads.
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "core/id.h"
#include "core/log.h"
#include "core/testhook.h"
#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_internal.h"

#define PROJECT_COLS "id, user_id, name, latest_version, latest_ready, created_at, updated_at"
/* events_json is never read: a version's events are in the event store (sqlite_events.c), listed only by
 * replays and followers, never by version lists or follow-up prompts */
#define VERSION_COLS                                                                                                   \
    "project_id, n, status, reservation_id, settled, error_code, error_message, prompt, message, files_json, "         \
    "'[]', model, input_tokens, output_tokens, duration_ms, created_at, updated_at, refunded, credit_reason, "         \
    "owner, lease_until"

typedef enum stmt_id {
    ST_PROJECT_INSERT,
    ST_PROJECT_GET,
    ST_PROJECT_LIST_FIRST,
    ST_PROJECT_LIST_AFTER,
    ST_PROJECT_DELETE,
    ST_PROJECT_MARK,
    ST_PROJECT_DELETING,
    ST_PROJECT_BUMP,
    ST_PROJECT_FINISHED,
    ST_VERSION_INSERT,
    ST_VERSION_GET,
    ST_VERSION_LIST,
    ST_VERSION_STATUS,
    ST_VERSION_GENERATING_IN,
    ST_VERSION_FINISH,
    ST_VERSION_SET_SETTLED,
    ST_VERSIONS_DELETE,
    ST_VERSIONS_GENERATING_COUNT,
    ST_VERSIONS_UNSETTLED,
    ST_VERSIONS_EXPIRED,
    ST_LEASE_RENEW,
    ST_LEASE_TRANSFER,
    ST_REQUEST_CANCEL,
    ST_RES_ORPHANED,
    ST_COUNT
} stmt_id;

static const char *const stmt_sql[ST_COUNT] = {
    [ST_PROJECT_INSERT] = "INSERT INTO projects (" PROJECT_COLS ") VALUES (?1, ?2, ?3, 1, 0, ?4, ?4)",
    [ST_PROJECT_GET] = "SELECT " PROJECT_COLS " FROM projects WHERE id = ?1",
    /* Both pages walk the index projects_user_created; the row value keeps
     * the cursor a range on it (ids break ties between equal times). */
    [ST_PROJECT_LIST_FIRST] = "SELECT " PROJECT_COLS " FROM projects WHERE user_id = ?1 "
                              "ORDER BY created_at DESC, id DESC LIMIT ?2",
    [ST_PROJECT_LIST_AFTER] = "SELECT " PROJECT_COLS " FROM projects WHERE user_id = ?1 "
                              "AND (created_at, id) < (?2, ?3) ORDER BY created_at DESC, id DESC LIMIT ?4",
    [ST_PROJECT_DELETE] = "DELETE FROM projects WHERE id = ?1",
    [ST_PROJECT_MARK] = "UPDATE projects SET deleting = ?2 WHERE id = ?1",
    [ST_PROJECT_DELETING] = "SELECT deleting FROM projects WHERE id = ?1",
    [ST_PROJECT_BUMP] = "UPDATE projects SET latest_version = ?2, updated_at = ?3 WHERE id = ?1",
    /* ?2: the version that became ready, 0 when it failed. */
    [ST_PROJECT_FINISHED] = "UPDATE projects SET latest_ready = max(latest_ready, ?2), updated_at = ?3 WHERE id = ?1",
    /* A new version is generating and unsettled; its user is its project's. */
    [ST_VERSION_INSERT] =
        "INSERT INTO versions (project_id, n, user_id, status, reservation_id, settled, prompt, "
        "created_at, updated_at, owner, lease_until) VALUES (?1, ?2, ?3, 1, ?4, 0, ?5, ?6, ?6, ?7, ?8)",
    [ST_VERSION_GET] = "SELECT " VERSION_COLS " FROM versions WHERE project_id = ?1 AND n = ?2",
    [ST_VERSION_LIST] = "SELECT " VERSION_COLS " FROM versions WHERE project_id = ?1 ORDER BY n",
    [ST_VERSION_STATUS] = "SELECT status FROM versions WHERE project_id = ?1 AND n = ?2",
    [ST_VERSION_GENERATING_IN] = "SELECT n FROM versions WHERE project_id = ?1 AND status = 1 LIMIT 1",
    [ST_VERSION_FINISH] =
        "UPDATE versions SET status = ?3, error_code = ?4, error_message = ?5, message = ?6, "
        "files_json = ?7, events_json = ?8, model = ?9, input_tokens = ?10, "
        "output_tokens = ?11, duration_ms = ?12, updated_at = ?13, refunded = ?14, credit_reason = ?15, "
        "settled = max(settled, ?16) WHERE project_id = ?1 AND n = ?2 AND status = 1",
    [ST_VERSION_SET_SETTLED] = "UPDATE versions SET settled = 1 WHERE project_id = ?1 AND n = ?2",
    [ST_VERSIONS_DELETE] = "DELETE FROM versions WHERE project_id = ?1",
    /* Both read partial indexes (versions_generating, versions_unsettled). */
    [ST_VERSIONS_GENERATING_COUNT] = "SELECT COUNT(*) FROM versions WHERE user_id = ?1 AND status = 1",
    [ST_VERSIONS_UNSETTLED] = "SELECT " VERSION_COLS " FROM versions WHERE settled = 0 AND status <> 1 "
                              "ORDER BY project_id, n",
    /* Reads the partial index versions_lease. */
    [ST_VERSIONS_EXPIRED] = "SELECT " VERSION_COLS " FROM versions WHERE status = 1 AND lease_until < ?1 "
                            "ORDER BY lease_until LIMIT ?2",
    /* One lease: only its owner renews it, only while it generates and has not run out. */
    [ST_LEASE_RENEW] = "UPDATE versions SET lease_until = max(lease_until, ?5) WHERE project_id = ?1 AND n = ?2 "
                       "AND status = 1 AND owner = ?3 AND lease_until >= ?4 RETURNING cancel_requested",
    /* A lease handed over: only from its owner, only while it generates and has not run out. */
    [ST_LEASE_TRANSFER] = "UPDATE versions SET owner = ?4, lease_until = ?6 WHERE project_id = ?1 AND n = ?2 "
                          "AND status = 1 AND owner = ?3 AND lease_until >= ?5",
    /* A cancel asked of a generating version (idempotent). */
    [ST_REQUEST_CANCEL] = "UPDATE versions SET cancel_requested = 1 WHERE project_id = ?1 AND n = ?2 AND status = 1",
    /* Reads the partial indexes reservations_open and versions_reservation. */
    /* The partial indexes reservations_open and versions_reservation: the subquery must say
     * reservation_id <> '' for SQLite to probe the latter, or it scans every version per reservation. */
    [ST_RES_ORPHANED] = "SELECT id, user_id, daily, monthly, state, created_at, updated_at FROM reservations AS r "
                        "WHERE state = 'reserved' AND NOT EXISTS (SELECT 1 FROM versions AS v "
                        "WHERE v.reservation_id = r.id AND v.reservation_id <> '') ORDER BY id",
};

_Static_assert(ST_COUNT <= SQ_SLOTS_PROJECTS_N, "statement slots");

/* Fetches this file's cached statement, preparing it on first use. */
static kp_status stmt_get(sq_store *h, stmt_id id, sqlite3_stmt **out, kp_err *err)
{
    return sq_stmt_cached(h, SQ_SLOTS_PROJECTS + (unsigned)id, stmt_sql[id], out, err);
}

/* ---- projects and versions -------------------------------------------- */

static const char *const version_status_names[] = {
    [KP_VER_GENERATING] = "generating",
    [KP_VER_READY] = "ready",
    [KP_VER_FAILED] = "failed",
};

/* A JSON array column's value as written: NULL or "" means "[]". */
static const char *json_or_empty_array(const char *s)
{
    return s && *s ? s : "[]";
}

/*
 * A heap copy of a text column into *dst. SQL NULL reads as dflt (and so
 * does "" when empty_is_default is set). Returns -1 when out of memory.
 */
static int column_dup(sqlite3_stmt *st, int col, const char *dflt, int empty_is_default, char **dst)
{
    const char *text = dflt;
    size_t len = strlen(dflt);
    if (sqlite3_column_type(st, col) != SQLITE_NULL) {
        const unsigned char *t = sqlite3_column_text(st, col);
        if (!t)
            return -1; /* SQLite could not convert it: out of memory */
        size_t tlen = (size_t)sqlite3_column_bytes(st, col);
        if (tlen > 0 || !empty_is_default) {
            text = (const char *)t;
            len = tlen;
        }
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, text, len);
    copy[len] = '\0';
    *dst = copy;
    return 0;
}

static void read_project(sqlite3_stmt *st, kp_project *p)
{
    sq_column_copy(st, 0, p->id, sizeof p->id);
    sq_column_copy(st, 1, p->user_id, sizeof p->user_id);
    sq_column_copy(st, 2, p->name, sizeof p->name);
    p->latest_version = sqlite3_column_int64(st, 3);
    p->latest_ready = sqlite3_column_int64(st, 4);
    p->created_at = sqlite3_column_int64(st, 5);
    p->updated_at = sqlite3_column_int64(st, 6);
}

/* Reads a VERSION_COLS row into v, which must hold no heap fields. On
 * failure v holds none either. */
static kp_status read_version(sqlite3_stmt *st, kp_version *v, kp_err *err)
{
    memset(v, 0, sizeof *v);
    sq_column_copy(st, 0, v->project_id, sizeof v->project_id);
    v->n = sqlite3_column_int64(st, 1);
    int status = sqlite3_column_int(st, 2);
    sq_column_copy(st, 3, v->reservation_id, sizeof v->reservation_id);
    v->settled = sqlite3_column_int(st, 4);
    sq_column_copy(st, 5, v->error_code, sizeof v->error_code);
    sq_column_copy(st, 11, v->model, sizeof v->model);
    v->input_tokens = sqlite3_column_int64(st, 12);
    v->output_tokens = sqlite3_column_int64(st, 13);
    v->duration_ms = sqlite3_column_int64(st, 14);
    v->created_at = sqlite3_column_int64(st, 15);
    v->updated_at = sqlite3_column_int64(st, 16);
    v->refunded = sqlite3_column_int(st, 17);
    sq_column_copy(st, 18, v->credit_reason, sizeof v->credit_reason);
    sq_column_copy(st, 19, v->owner, sizeof v->owner);
    v->lease_until = sqlite3_column_int64(st, 20);
    if (status < KP_VER_GENERATING || status > KP_VER_FAILED)
        return kp_err_set(err, KP_EINTERNAL, "version in an unknown state");
    v->status = (kp_version_status)status;

    if (column_dup(st, 6, "", 0, &v->error_message) != 0 || column_dup(st, 7, "", 0, &v->prompt) != 0 ||
        column_dup(st, 8, "", 0, &v->message) != 0 || column_dup(st, 9, "[]", 1, &v->files_json) != 0 ||
        column_dup(st, 10, "[]", 1, &v->events_json) != 0) {
        kp_version_clear(v);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    return KP_OK;
}

/* Maps a failed INSERT on projects or versions to a status: a missing parent
 * (the user, the project) is `missing`, a duplicate key `conflict`. */
static kp_status project_write_error(sq_store *h, const char *what, const char *missing, const char *conflict,
                                     kp_err *err)
{
    int code = sqlite3_extended_errcode(sq_db(h));
    if (code == SQLITE_CONSTRAINT_FOREIGNKEY)
        return kp_err_set(err, KP_ENOTFOUND, "%s", missing);
    if (code == SQLITE_CONSTRAINT_PRIMARYKEY || code == SQLITE_CONSTRAINT_UNIQUE)
        return kp_err_set(err, KP_ECONFLICT, "%s", conflict);
    if ((code & 0xff) == SQLITE_CONSTRAINT)
        return kp_err_set(err, KP_EINVAL, "invalid %s", what);
    return kp_sqlite_db_error(sq_db(h), what, err);
}

/* Reads a project; *found is 0 (and out untouched) when it does not exist. */
static kp_status project_read(sq_store *h, const char *id, kp_project *out, int *found, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PROJECT_GET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, id);
    *found = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        read_project(st, out);
        *found = 1;
    } else if (step != SQLITE_DONE) {
        rc = kp_sqlite_db_error(sq_db(h), "read project", err);
    }
    sq_stmt_done(st);
    return rc;
}

static kp_status insert_project_row(sq_store *h, const kp_project *p, int64_t created_at, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PROJECT_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, p->id);
    sq_bind_text(st, 2, p->user_id);
    sq_bind_text(st, 3, p->name);
    sqlite3_bind_int64(st, 4, created_at);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = project_write_error(h, "project", "user not found", "project already exists", err);
    sq_stmt_done(st);
    return rc;
}

/* A new version's lease: who runs it, until when (ms). */
typedef struct lease_holder {
    const char *owner;
    int64_t until;
} lease_holder;

static lease_holder version_lease(const kp_version *v)
{
    lease_holder l = {v->owner, v->lease_until};
    return l;
}

/* Inserts version n of project_id (of user_id's), generating and unsettled, its lease held as l says. */
static kp_status insert_version_row(sq_store *h, const char *project_id, const char *user_id, int64_t n,
                                    const kp_version *v, int64_t created_at, lease_holder l, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_INSERT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    sq_bind_text(st, 3, user_id);
    sq_bind_text(st, 4, v->reservation_id);
    sq_bind_text(st, 5, v->prompt);
    sqlite3_bind_int64(st, 6, created_at);
    sq_bind_text(st, 7, l.owner);
    sqlite3_bind_int64(st, 8, l.until);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = project_write_error(h, "version", "project not found", "version already exists", err);
    sq_stmt_done(st);
    return rc;
}

static int project_valid(const kp_project *p)
{
    return p && sq_nonempty_fits(p->id, sizeof p->id) && sq_nonempty_fits(p->user_id, sizeof p->user_id) &&
           sq_fits(p->name, sizeof p->name);
}

/* The fields of a new version that the store writes (see ST_VERSION_INSERT). */
static int new_version_valid(const kp_version *v)
{
    return v && sq_fits(v->project_id, sizeof v->project_id) && sq_fits(v->reservation_id, sizeof v->reservation_id) &&
           sq_fits(v->owner, sizeof v->owner);
}

kp_status sq_project_create(kp_store *s, const kp_project *p, const kp_version *v, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!project_valid(p))
        return kp_err_set(err, KP_EINVAL, "invalid project record");
    if (!new_version_valid(v) || (v->n != 0 && v->n != 1) || (v->project_id[0] && strcmp(v->project_id, p->id) != 0))
        return kp_err_set(err, KP_EINVAL, "invalid version record");

    int64_t created_at = p->created_at > 0 ? p->created_at : kp_time_now_ms();
    int64_t v_created_at = v->created_at > 0 ? v->created_at : created_at;
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = insert_project_row(h, p, created_at, err);
    if (rc == KP_OK)
        rc = insert_version_row(h, p->id, p->user_id, 1, v, v_created_at, version_lease(v), err);
    return sq_tx_end(h, rc, err);
}

kp_status sq_project_get(kp_store *s, const char *id, kp_project *out, kp_err *err)
{
    if (!id || !*id)
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    int found = 0;
    kp_status rc = project_read(sq_impl(s), id, out, &found, err);
    if (rc == KP_OK && !found)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    return rc;
}

static kp_status project_row(sqlite3_stmt *st, void *item, kp_err *err)
{
    (void)err;
    read_project(st, item);
    return KP_OK;
}

kp_status sq_project_list(kp_store *s, const char *user_id, int64_t before_created_at, const char *before_id,
                          size_t limit, kp_project **out, size_t *n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    int after = before_id && *before_id;
    *out = NULL;
    *n = 0;
    if (!user_id || !*user_id || limit == 0)
        return KP_OK;

    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, after ? ST_PROJECT_LIST_AFTER : ST_PROJECT_LIST_FIRST, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    if (after) {
        sqlite3_bind_int64(st, 2, before_created_at);
        sq_bind_text(st, 3, before_id);
        sqlite3_bind_int64(st, 4, sq_limit(limit));
    } else {
        sqlite3_bind_int64(st, 2, sq_limit(limit));
    }
    return sq_collect_rows(h, st, sizeof(kp_project), project_row, NULL, "list projects", (void **)out, n, err);
}

/* Runs a write keyed by one text (?1); *changes receives the rows it changed. */
static kp_status run_keyed(sq_store *h, stmt_id id, const char *key, int *changes, const char *what, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, key);
    if (sqlite3_step(st) == SQLITE_DONE)
        *changes = sqlite3_changes(sq_db(h));
    else
        rc = kp_sqlite_db_error(sq_db(h), what, err);
    sq_stmt_done(st);
    return rc;
}

/* The version of the project that is generating; *n 0 when none is. */
static kp_status generating_version(sq_store *h, const char *project_id, int64_t *n, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_GENERATING_IN, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    *n = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *n = sqlite3_column_int64(st, 0);
    else if (step != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "read versions", err);
    sq_stmt_done(st);
    return rc;
}

/* KP_ECONFLICT when a version of the project is generating. */
static kp_status refuse_if_generating(sq_store *h, const char *id, kp_err *err)
{
    int64_t busy = 0;
    kp_status rc = generating_version(h, id, &busy, err);
    if (rc == KP_OK && busy)
        rc = kp_err_set(err, KP_ECONFLICT, "version %lld of this project is generating", (long long)busy);
    return rc;
}

/* Sets the project's deleting flag (the check and the mark in one transaction). */
static kp_status project_mark_locked(sq_store *h, const char *id, int on, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = on ? refuse_if_generating(h, id, err) : KP_OK;
    if (rc == KP_OK)
        rc = stmt_get(h, ST_PROJECT_MARK, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, id);
    sqlite3_bind_int(st, 2, on ? 1 : 0);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "mark project", err);
    else if (sqlite3_changes(sq_db(h)) == 0)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    sq_stmt_done(st);
    return rc;
}

kp_status sq_project_mark_deleting(kp_store *s, const char *id, int on, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!id || !*id)
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = project_mark_locked(h, id, on, err);
    return sq_tx_end(h, rc, err);
}

/* KP_ENOTFOUND when the project is being deleted: no new version for it. */
static kp_status refuse_if_deleting(sq_store *h, const char *id, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_PROJECT_DELETING, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW && sqlite3_column_int(st, 0))
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found (it is being deleted)");
    else if (step != SQLITE_ROW && step != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "read project", err);
    sq_stmt_done(st);
    return rc;
}

/* Versions are deleted explicitly (not only by the ON DELETE CASCADE), so
 * the result does not depend on the connection's foreign key setting. */
kp_status sq_project_delete(kp_store *s, const char *id, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!id || !*id)
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    int versions = 0, projects = 0;
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    /* the check and the delete under one write lock: no version can start
     * generating in between (admit takes the same lock) */
    rc = refuse_if_generating(h, id, err);
    if (rc == KP_OK)
        rc = run_keyed(h, ST_VERSIONS_DELETE, id, &versions, "delete versions", err);
    if (rc == KP_OK)
        rc = sq_events_delete_project_locked(h, id, err);
    if (rc == KP_OK)
        rc = run_keyed(h, ST_PROJECT_DELETE, id, &projects, "delete project", err);
    if (rc == KP_OK && projects == 0)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    return sq_tx_end(h, rc, err);
}

/* Writes the project's latest_version (or, with ready_n > 0, raises its
 * latest_ready) and its updated_at. */
static kp_status project_touch(sq_store *h, stmt_id id, const char *project_id, int64_t value, int64_t now, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, value);
    sqlite3_bind_int64(st, 3, now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "update project", err);
    else if (sqlite3_changes(sq_db(h)) != 1)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    sq_stmt_done(st);
    return rc;
}

/* The body of version_create, inside the write transaction. */
static kp_status version_create_locked(sq_store *h, const kp_version *v, int64_t created_at, lease_holder l,
                                       kp_err *err)
{
    kp_project p;
    int found = 0;
    int64_t busy = 0;
    kp_status rc = project_read(h, v->project_id, &p, &found, err);
    if (rc != KP_OK)
        return rc;
    if (!found)
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    rc = refuse_if_deleting(h, v->project_id, err);
    if (rc != KP_OK)
        return rc;
    rc = generating_version(h, v->project_id, &busy, err);
    if (rc != KP_OK)
        return rc;
    if (busy)
        return kp_err_set(err, KP_ECONFLICT, "version %lld of this project is still generating", (long long)busy);
    if (v->n != p.latest_version + 1)
        return kp_err_set(err, KP_ECONFLICT, "version %lld is not the next one (the latest is %lld)", (long long)v->n,
                          (long long)p.latest_version);
    rc = insert_version_row(h, v->project_id, p.user_id, v->n, v, created_at, l, err);
    if (rc == KP_OK)
        rc = project_touch(h, ST_PROJECT_BUMP, v->project_id, v->n, created_at, err);
    return rc;
}

kp_status sq_version_create(kp_store *s, const kp_version *v, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!new_version_valid(v) || !v->project_id[0] || v->n < 1)
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    int64_t created_at = v->created_at > 0 ? v->created_at : kp_time_now_ms();
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = version_create_locked(h, v, created_at, version_lease(v), err);
    return sq_tx_end(h, rc, err);
}

kp_status sq_version_get(kp_store *s, const char *project_id, int64_t n, kp_version *out, kp_err *err)
{
    sq_store *h = sq_impl(s);
    memset(out, 0, sizeof *out);
    if (!project_id || !*project_id)
        return kp_err_set(err, KP_ENOTFOUND, "version not found");
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_GET, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        rc = read_version(st, out, err);
    else if (step == SQLITE_DONE)
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    else
        rc = kp_sqlite_db_error(sq_db(h), "read version", err);
    sq_stmt_done(st);
    return rc;
}

static kp_status version_row(sqlite3_stmt *st, void *item, kp_err *err)
{
    return read_version(st, item, err);
}

static void free_versions(void *items, size_t n)
{
    kp_version_free_array(items, n);
}

/* Steps a bound statement over VERSION_COLS rows into a new array. Resets st. */
static kp_status collect_versions(sq_store *h, sqlite3_stmt *st, const char *what, kp_version **out, size_t *n,
                                  kp_err *err)
{
    return sq_collect_rows(h, st, sizeof(kp_version), version_row, free_versions, what, (void **)out, n, err);
}

kp_status sq_version_list(kp_store *s, const char *project_id, kp_version **out, size_t *n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    *out = NULL;
    *n = 0;
    if (!project_id || !*project_id)
        return KP_OK;
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_LIST, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    return collect_versions(h, st, "list versions", out, n, err);
}

/* Why a version could not be finished: it is missing, or not generating. */
static kp_status finish_refused(sq_store *h, const kp_version *v, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_STATUS, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, v->project_id);
    sqlite3_bind_int64(st, 2, v->n);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        int status = sqlite3_column_int(st, 0);
        rc = kp_err_set(err, KP_ECONFLICT, "version %lld is %s, not generating", (long long)v->n,
                        status >= KP_VER_GENERATING && status <= KP_VER_FAILED ? version_status_names[status]
                                                                               : "in an unknown state");
    } else if (step == SQLITE_DONE) {
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    } else {
        rc = kp_sqlite_db_error(sq_db(h), "read version", err);
    }
    sq_stmt_done(st);
    return rc;
}

/* settle: 1 marks the version settled in the same statement. */
static kp_status finish_version_row(sq_store *h, const kp_version *v, int64_t now, int settle, int *changed,
                                    kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_FINISH, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, v->project_id);
    sqlite3_bind_int64(st, 2, v->n);
    sqlite3_bind_int(st, 3, (int)v->status);
    sq_bind_text(st, 4, v->error_code);
    sq_bind_text(st, 5, v->error_message);
    sq_bind_text(st, 6, v->message);
    sq_bind_text(st, 7, json_or_empty_array(v->files_json));
    sq_bind_text(st, 8, "[]"); /* the events go to the event store (below) */
    sq_bind_text(st, 9, v->model);
    sqlite3_bind_int64(st, 10, v->input_tokens);
    sqlite3_bind_int64(st, 11, v->output_tokens);
    sqlite3_bind_int64(st, 12, v->duration_ms);
    sqlite3_bind_int64(st, 13, now);
    sqlite3_bind_int(st, 14, v->refunded ? 1 : 0);
    sq_bind_text(st, 15, v->credit_reason);
    sqlite3_bind_int(st, 16, settle ? 1 : 0);
    if (sqlite3_step(st) == SQLITE_DONE)
        *changed = sqlite3_changes(sq_db(h));
    else if ((sqlite3_extended_errcode(sq_db(h)) & 0xff) == SQLITE_CONSTRAINT)
        rc = kp_err_set(err, KP_EINVAL, "invalid version record");
    else
        rc = kp_sqlite_db_error(sq_db(h), "finish version", err);
    sq_stmt_done(st);
    if (rc == KP_OK && *changed == 1)
        rc = sq_events_append_json_locked(h, v->project_id, v->n, v->events_json, err);
    return rc;
}

static kp_status version_finish_locked(sq_store *h, const kp_version *v, int64_t now, int settle, kp_err *err)
{
    int changed = 0;
    kp_status rc = finish_version_row(h, v, now, settle, &changed, err);
    if (rc != KP_OK)
        return rc;
    if (changed == 0)
        return finish_refused(h, v, err);
    return project_touch(h, ST_PROJECT_FINISHED, v->project_id, v->status == KP_VER_READY ? v->n : 0, now, err);
}

static int finished_version_valid(const kp_version *v)
{
    return v && sq_nonempty_fits(v->project_id, sizeof v->project_id) && v->n >= 1 &&
           (v->status == KP_VER_READY || v->status == KP_VER_FAILED) && sq_fits(v->error_code, sizeof v->error_code) &&
           sq_fits(v->model, sizeof v->model) && sq_fits(v->credit_reason, sizeof v->credit_reason);
}

kp_status sq_version_finish(kp_store *s, const kp_version *v, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!finished_version_valid(v))
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    int64_t now = v->updated_at > 0 ? v->updated_at : kp_time_now_ms();
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    rc = version_finish_locked(h, v, now, 0, err);
    return sq_tx_end(h, rc, err);
}

typedef struct version_ending {
    const kp_version *v;
    const kp_credit_change *c;
} version_ending;

static kp_status version_end_body(sq_store *h, const void *arg, kp_balance *out, kp_err *err)
{
    const version_ending *e = arg;
    int64_t now = e->v->updated_at > 0 ? e->v->updated_at : kp_time_now_ms();
    kp_status rc = e->c ? sq_credits_apply_locked(h, e->c, now / 1000, out, err) : KP_OK;
    return rc == KP_OK ? version_finish_locked(h, e->v, now, 1, err) : rc;
}

kp_status sq_version_end(kp_store *s, const kp_version *v, const kp_credit_change *c, kp_balance *out, kp_err *err)
{
    if (!finished_version_valid(v))
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    if (c && !sq_credit_change_valid(c))
        return kp_err_set(err, KP_EINVAL, "invalid credit change");
    version_ending e = {v, c};
    return sq_run_balance_write(sq_impl(s), version_end_body, &e, out, err);
}

kp_status sq_version_set_settled(kp_store *s, const char *project_id, int64_t n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!project_id || !*project_id)
        return kp_err_set(err, KP_ENOTFOUND, "version not found");
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSION_SET_SETTLED, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "settle version", err);
    else if (sqlite3_changes(sq_db(h)) == 0)
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    sq_stmt_done(st);
    return rc;
}

static kp_status count_generating(sq_store *h, const char *user_id, int64_t *count, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_VERSIONS_GENERATING_COUNT, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, user_id);
    if (sqlite3_step(st) == SQLITE_ROW)
        *count = sqlite3_column_int64(st, 0);
    else
        rc = kp_sqlite_db_error(sq_db(h), "count generating versions", err);
    sq_stmt_done(st);
    return rc;
}

kp_status sq_versions_generating_count(kp_store *s, const char *user_id, int64_t *count, kp_err *err)
{
    *count = 0;
    if (!user_id || !*user_id)
        return KP_OK;
    return count_generating(sq_impl(s), user_id, count, err);
}

/* The body of admit, inside the write transaction. */
static kp_status admit_body(sq_store *h, const void *arg, kp_balance *out, kp_err *err)
{
    const kp_admission *a = arg;
    int64_t now_ms = kp_time_now_ms();
    kp_status rc = KP_OK;
    if (a->max_generating >= 0) {
        int64_t running = 0;
        rc = count_generating(h, a->user_id, &running, err);
        if (rc != KP_OK)
            return rc;
        if (running >= a->max_generating)
            return kp_err_set(err, KP_ERATE, "%lld generation%s running already", (long long)running,
                              running == 1 ? "" : "s");
    }
    kp_balance read = {0, 0, 0};
    if (a->charge)
        rc = sq_credits_apply_locked(h, a->charge, now_ms / 1000, out, err);
    else if (a->charge_rule)
        rc = sq_credits_decide_locked(h, a->user_id, NULL, a->charge_rule, a->charge_arg, &read, out, err);
    if (rc != KP_OK)
        return rc;
    kp_testhook_point("after_reserve");
    const kp_project *p = a->project;
    const kp_version *v = a->version;
    int64_t v_created_at = v->created_at > 0 ? v->created_at : now_ms;
    lease_holder lease = {a->owner, a->lease_until};
    if (!p) {
        rc = version_create_locked(h, v, v_created_at, lease, err);
    } else {
        rc = insert_project_row(h, p, p->created_at > 0 ? p->created_at : now_ms, err);
        if (rc == KP_OK)
            rc = insert_version_row(h, p->id, p->user_id, 1, v, v_created_at, lease, err);
    }
    if (rc != KP_OK && a->charge_rule)
        *out = read; /* the charge is rolled back with the rest: the balance is as read */
    return rc;
}

static int admission_valid(const kp_admission *a)
{
    if (!a || !sq_nonempty_fits(a->user_id, KP_ID_MAX) || !new_version_valid(a->version) ||
        (a->owner && !sq_fits(a->owner, KP_ID_MAX)))
        return 0;
    if (a->charge && (!sq_credit_change_valid(a->charge) || strcmp(a->charge->user_id, a->user_id) != 0))
        return 0;
    if (a->project)
        return project_valid(a->project) && strcmp(a->project->user_id, a->user_id) == 0 &&
               (a->version->n == 0 || a->version->n == 1) &&
               (!a->version->project_id[0] || strcmp(a->version->project_id, a->project->id) == 0);
    return a->version->project_id[0] && a->version->n >= 1;
}

kp_status sq_admit(kp_store *s, const kp_admission *a, kp_balance *out, kp_err *err)
{
    if (!admission_valid(a))
        return kp_err_set(err, KP_EINVAL, "invalid admission");
    return sq_run_balance_write(sq_impl(s), admit_body, a, out, err);
}

/* Runs a list query that takes no parameters into a new array (collect_rows). */
static kp_status list_all(sq_store *h, stmt_id id, size_t elem, sq_row_reader read_row,
                          void (*free_items)(void *items, size_t n), const char *what, void **out, size_t *n,
                          kp_err *err)
{
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *n = 0;
    kp_status rc = stmt_get(h, id, &st, err);
    if (rc != KP_OK)
        return rc;
    return sq_collect_rows(h, st, elem, read_row, free_items, what, out, n, err);
}

kp_status sq_reservations_orphaned(kp_store *s, kp_reservation **out, size_t *n, kp_err *err)
{
    return list_all(sq_impl(s), ST_RES_ORPHANED, sizeof(kp_reservation), sq_read_reservation, NULL,
                    "list orphaned reservations", (void **)out, n, err);
}

kp_status sq_versions_unsettled(kp_store *s, kp_version **out, size_t *n, kp_err *err)
{
    return list_all(sq_impl(s), ST_VERSIONS_UNSETTLED, sizeof(kp_version), version_row, free_versions,
                    "list unsettled versions", (void **)out, n, err);
}

kp_status sq_versions_expired(kp_store *s, int64_t now_ms, size_t limit, kp_version **out, size_t *n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *n = 0;
    if (limit == 0)
        return KP_OK;
    kp_status rc = stmt_get(h, ST_VERSIONS_EXPIRED, &st, err);
    if (rc != KP_OK)
        return rc;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, sq_limit(limit));
    return collect_versions(h, st, "list expired versions", out, n, err);
}

/* One lease's conditional renewal (ST_LEASE_RENEW); l->held says whether it matched, l->cancel_requested
 * what it returned. */
static kp_status renew_one(sq_store *h, const char *owner, int64_t now_ms, int64_t until_ms, kp_lease *l, kp_err *err)
{
    sqlite3_stmt *st = NULL;
    kp_status rc = stmt_get(h, ST_LEASE_RENEW, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, l->project_id);
    sqlite3_bind_int64(st, 2, l->n);
    sq_bind_text(st, 3, owner);
    sqlite3_bind_int64(st, 4, now_ms);
    sqlite3_bind_int64(st, 5, until_ms);
    l->held = l->cancel_requested = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) { /* RETURNING: the row matched */
        l->held = 1;
        l->cancel_requested = sqlite3_column_int(st, 0) != 0;
        step = sqlite3_step(st);
    }
    if (step != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "renew lease", err);
    sq_stmt_done(st);
    return rc;
}

/* Here every renewal is one UPDATE; they share one transaction only to take the write lock once. */
kp_status sq_leases_renew(kp_store *s, const char *owner, int64_t now_ms, int64_t until_ms, kp_lease *leases, size_t n,
                          kp_err *err)
{
    sq_store *h = sq_impl(s);
    if (!sq_nonempty_fits(owner, KP_ID_MAX) || (n > 0 && !leases))
        return kp_err_set(err, KP_EINVAL, "invalid lease renewal");
    if (n == 0)
        return KP_OK;
    kp_status rc = sq_tx_begin(h, err);
    if (rc != KP_OK)
        return rc;
    for (size_t i = 0; i < n && rc == KP_OK; i++)
        rc = renew_one(h, owner, now_ms, until_ms, &leases[i], err);
    return sq_tx_end(h, rc, err);
}

kp_status sq_lease_transfer(kp_store *s, const char *project_id, int64_t n, const char *from_owner,
                            const char *to_owner, int64_t now_ms, int64_t until_ms, kp_err *err)
{
    sq_store *h = sq_impl(s);
    sqlite3_stmt *st = NULL;
    if (!sq_nonempty_fits(project_id, KP_ID_MAX) || !sq_nonempty_fits(from_owner, KP_ID_MAX) ||
        !sq_nonempty_fits(to_owner, KP_ID_MAX) || n < 1)
        return kp_err_set(err, KP_EINVAL, "invalid lease transfer");
    kp_status rc = stmt_get(h, ST_LEASE_TRANSFER, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    sq_bind_text(st, 3, from_owner);
    sq_bind_text(st, 4, to_owner);
    sqlite3_bind_int64(st, 5, now_ms);
    sqlite3_bind_int64(st, 6, until_ms);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "transfer a lease", err);
    else if (sqlite3_changes(sq_db(h)) != 1)
        rc = kp_err_set(err, KP_ECONFLICT, "version %lld of %s is not generating under a running lease of %s",
                        (long long)n, project_id, from_owner);
    sq_stmt_done(st);
    return rc;
}

kp_status sq_version_request_cancel(kp_store *s, const char *project_id, int64_t n, kp_err *err)
{
    sq_store *h = sq_impl(s);
    sqlite3_stmt *st = NULL;
    if (!sq_nonempty_fits(project_id, KP_ID_MAX) || n < 1)
        return kp_err_set(err, KP_EINVAL, "invalid cancel request");
    kp_status rc = stmt_get(h, ST_REQUEST_CANCEL, &st, err);
    if (rc != KP_OK)
        return rc;
    sq_bind_text(st, 1, project_id);
    sqlite3_bind_int64(st, 2, n);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = kp_sqlite_db_error(sq_db(h), "request a cancel", err);
    else if (sqlite3_changes(sq_db(h)) != 1)
        rc = kp_err_set(err, KP_ECONFLICT, "version %lld of %s is not generating", (long long)n, project_id);
    sq_stmt_done(st);
    return rc;
}
