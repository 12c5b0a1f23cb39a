/*
 * ddb_projects.c - projects and versions on DynamoDB (see ddb_projects.h).
 * The project item carries the rules version_create checks in its one
 * TransactWriteItems: latest_version (the next version is latest + 1),
 * gen_n (the version generating, 0 when none) and deleting.
 */
#include "store/dynamodb/ddb_projects.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/id.h"
#include "store/dynamodb/ddb_client.h"
#include "store/dynamodb/ddb_items.h"
#include "store/dynamodb/ddb_store.h"

static kp_status oom(kp_err *err)
{
    return kp_err_set(err, KP_ENOMEM, "out of memory");
}

static int id_ok(const char *s)
{
    return s && *s && strlen(s) < KP_ID_MAX;
}

/* GSI1SK: "{created_at:015}#{pid}" (newest first when read backwards). */
static void list_sk(char *out, int64_t created_at, const char *pid)
{
    snprintf(out, KP_DDB_KEY_MAX, "%015" PRId64 "#%s", created_at, pid ? pid : "");
}

/* A consistent GetItem of key (stolen): *item the item or NULL when absent. */
static kp_status get_by_key(kp_ddb *d, json_t *key, json_t **item, kp_err *err)
{
    json_t *req = json_pack("{s:s, s:o, s:b}", "TableName", d->table, "Key", key, "ConsistentRead", 1);
    json_t *out = NULL;
    *item = NULL;
    kp_status rc = req ? kp_ddb_call(d, "GetItem", req, &out, err) : oom(err);
    if (rc == KP_OK)
        *item = json_incref(json_object_get(out, "Item"));
    json_decref(req);
    json_decref(out);
    return rc;
}

/* One TransactWriteItems of items (stolen). */
static kp_status transact(kp_ddb *d, json_t *items, kp_err *err)
{
    json_t *req = items ? json_pack("{s:o}", "TransactItems", items) : NULL;
    kp_status rc = req ? kp_ddb_call(d, "TransactWriteItems", req, NULL, err) : oom(err);
    json_decref(req);
    return rc;
}

/* ---- projects ---- */

/* Appends the items every new generating version brings: the user's generating counter + 1 and, when the
 * version names a reservation, the reference to it (RES#{id} / V). Nonzero when out of memory. */
static int add_version_extras(json_t *items, const char *table, const char *user_id, const kp_version *v,
                              const char *pid, int64_t n)
{
    if (json_array_append_new(items, kp_ddb_generating_update(table, user_id, 1)) != 0)
        return 1;
    if (v->reservation_id[0] && json_array_append_new(items, kp_ddb_resref_put(table, v->reservation_id, pid, n)) != 0)
        return 1;
    return 0;
}

kp_status kp_ddb_project_create(kp_store *s, const kp_project *p, const kp_version *v, kp_err *err)
{
    kp_ddb *d = kp_ddb_store_client(s);
    if (!p || !id_ok(p->id) || !id_ok(p->user_id) || strlen(p->name) >= sizeof p->name)
        return kp_err_set(err, KP_EINVAL, "invalid project record");
    if (!v || (v->n != 0 && v->n != 1) || (v->project_id[0] && strcmp(v->project_id, p->id) != 0))
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    int64_t created_at = p->created_at > 0 ? p->created_at : kp_time_now_ms();
    int64_t v_created_at = v->created_at > 0 ? v->created_at : created_at;
    json_t *items = json_pack("[{s:{s:s, s:o, s:s}}, {s:{s:s, s:o, s:s}}]", "Put", "TableName", d->table, "Item",
                              kp_ddb_project_item(p, created_at), "ConditionExpression", "attribute_not_exists(PK)",
                              "Put", "TableName", d->table, "Item",
                              kp_ddb_version_item(p->id, 1, v, v_created_at, v->owner, v->lease_until),
                              "ConditionExpression", "attribute_not_exists(PK)");
    if (items && add_version_extras(items, d->table, p->user_id, v, p->id, 1) != 0) {
        json_decref(items);
        items = NULL;
    }
    kp_status rc = transact(d, items, err);
    if (rc == KP_ECONFLICT && kp_ddb_reason_failed(d, 2))
        rc = kp_err_set(err, KP_ENOTFOUND, "user not found");
    else if (rc == KP_ECONFLICT)
        rc = kp_err_set(err, KP_ECONFLICT, "project %s already exists", p->id);
    return rc;
}

kp_status kp_ddb_project_get(kp_store *s, const char *id, kp_project *out, kp_err *err)
{
    json_t *item = NULL;
    if (!id_ok(id))
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    kp_status rc = get_by_key(kp_ddb_store_client(s), kp_ddb_project_key(id), &item, err);
    if (rc == KP_OK && !item)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    if (rc == KP_OK)
        kp_ddb_project_from(item, out);
    json_decref(item);
    return rc;
}

/* One Query on GSI1 (ALL projected: no second read), newest first, strictly before the cursor. */
kp_status kp_ddb_project_list(kp_store *s, const char *user_id, int64_t before_created_at, const char *before_id,
                              size_t limit, kp_project **out, size_t *n, kp_err *err)
{
    kp_ddb *d = kp_ddb_store_client(s);
    char gpk[KP_DDB_KEY_MAX], gsk[KP_DDB_KEY_MAX];
    json_t *res = NULL;
    *out = NULL;
    *n = 0;
    if (!id_ok(user_id) || limit == 0)
        return KP_OK;
    if (limit > 1000)
        limit = 1000;
    int after = before_id && *before_id;
    kp_ddb_key(gpk, KP_DDB_UPROJ, user_id);
    list_sk(gsk, before_created_at, before_id);
    json_t *req =
        json_pack("{s:s, s:s, s:s, s:{s:o}, s:b, s:I}", "TableName", d->table, "IndexName", "GSI1",
                  "KeyConditionExpression", after ? "GSI1PK = :u AND GSI1SK < :c" : "GSI1PK = :u",
                  "ExpressionAttributeValues", ":u", kp_ddb_s(gpk), "ScanIndexForward", 0, "Limit", (json_int_t)limit);
    if (req && after)
        json_object_set_new(json_object_get(req, "ExpressionAttributeValues"), ":c", kp_ddb_s(gsk));
    kp_status rc = req ? kp_ddb_call(d, "Query", req, &res, err) : oom(err);
    json_t *items = json_object_get(res, "Items");
    size_t count = json_array_size(items);
    if (rc == KP_OK && count > 0) {
        *out = calloc(count, sizeof **out);
        if (!*out)
            rc = oom(err);
        for (size_t i = 0; rc == KP_OK && i < count; i++)
            kp_ddb_project_from(json_array_get(items, i), &(*out)[i]);
        if (rc == KP_OK)
            *n = count;
    }
    json_decref(req);
    json_decref(res);
    return rc;
}

/* ---- versions ---- */

/* 1 GetItem of the project (its user, whose generating counter goes up) + 1 TransactWriteItems. */
kp_status kp_ddb_version_create(kp_store *s, const kp_version *v, kp_err *err)
{
    kp_ddb *d = kp_ddb_store_client(s);
    kp_project p;
    json_t *item = NULL;
    if (!v || !id_ok(v->project_id) || v->n < 1)
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    int64_t created_at = v->created_at > 0 ? v->created_at : kp_time_now_ms();
    kp_status rc = get_by_key(d, kp_ddb_project_key(v->project_id), &item, err);
    if (rc == KP_OK && !item)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    if (rc != KP_OK)
        return rc;
    kp_ddb_project_from(item, &p);
    json_decref(item);
    json_t *items =
        json_pack("[{s:{s:s, s:o, s:s, s:s, s:{s:o, s:o, s:o, s:o, s:o}, s:s}}, {s:{s:s, s:o, s:s}}]", "Update",
                  "TableName", d->table, "Key", kp_ddb_project_key(v->project_id), "UpdateExpression",
                  "SET latest_version = :n, gen_n = :n, updated_at = :t", "ConditionExpression",
                  "attribute_exists(PK) AND latest_version = :prev AND gen_n = :zero AND deleting = :no",
                  "ExpressionAttributeValues", ":n", kp_ddb_n(v->n), ":t", kp_ddb_n(created_at), ":prev",
                  kp_ddb_n(v->n - 1), ":zero", kp_ddb_n(0), ":no", kp_ddb_bool(0),
                  "ReturnValuesOnConditionCheckFailure", "ALL_OLD", "Put", "TableName", d->table, "Item",
                  kp_ddb_version_item(v->project_id, v->n, v, created_at, v->owner, v->lease_until),
                  "ConditionExpression", "attribute_not_exists(PK)");
    if (items && add_version_extras(items, d->table, p.user_id, v, v->project_id, v->n) != 0) {
        json_decref(items);
        items = NULL;
    }
    rc = transact(d, items, err);
    if (rc != KP_ECONFLICT)
        return rc;
    if (kp_ddb_reason_failed(d, 2))
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    /* which rule refused it: the project as it was when its condition failed */
    json_t *old = kp_ddb_reason_item(d, 0);
    if (!kp_ddb_reason_failed(d, 0))
        return kp_err_set(err, KP_ECONFLICT, "version %" PRId64 " already exists", v->n);
    if (!old || kp_ddb_get_bool(old, "deleting"))
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    if (kp_ddb_get_n(old, "gen_n") != 0)
        return kp_err_set(err, KP_ECONFLICT, "version %" PRId64 " of this project is still generating",
                          kp_ddb_get_n(old, "gen_n"));
    return kp_err_set(err, KP_ECONFLICT, "version %" PRId64 " is not the next one (the latest is %" PRId64 ")", v->n,
                      kp_ddb_get_n(old, "latest_version"));
}

kp_status kp_ddb_version_get(kp_store *s, const char *project_id, int64_t n, kp_version *out, kp_err *err)
{
    json_t *item = NULL;
    if (!id_ok(project_id) || n < 1)
        return kp_err_set(err, KP_ENOTFOUND, "version not found");
    kp_status rc = get_by_key(kp_ddb_store_client(s), kp_ddb_version_key(project_id, n), &item, err);
    if (rc == KP_OK && !item)
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    if (rc == KP_OK)
        rc = kp_ddb_version_from(item, out, err);
    json_decref(item);
    return rc;
}

/* All versions, oldest first: Query pages of PROJ#{pid}, SK begins_with V#. */
kp_status kp_ddb_version_list(kp_store *s, const char *project_id, kp_version **out, size_t *n, kp_err *err)
{
    kp_ddb *d = kp_ddb_store_client(s);
    char pk[KP_DDB_KEY_MAX];
    kp_version *v = NULL;
    size_t count = 0;
    *out = NULL;
    *n = 0;
    if (!id_ok(project_id))
        return KP_OK;
    kp_ddb_key(pk, KP_DDB_PROJ, project_id);
    json_t *req = json_pack("{s:s, s:s, s:{s:o, s:o}, s:b}", "TableName", d->table, "KeyConditionExpression",
                            "PK = :p AND begins_with(SK, :v)", "ExpressionAttributeValues", ":p", kp_ddb_s(pk), ":v",
                            kp_ddb_s("V#"), "ConsistentRead", 1);
    kp_status rc = req ? KP_OK : oom(err);
    while (rc == KP_OK) {
        json_t *res = NULL;
        rc = kp_ddb_call(d, "Query", req, &res, err);
        json_t *items = json_object_get(res, "Items");
        size_t add = json_array_size(items);
        if (rc == KP_OK && add > 0) {
            kp_version *nv = realloc(v, (count + add) * sizeof *v);
            if (!nv)
                rc = oom(err);
            else
                v = nv;
        }
        for (size_t i = 0; rc == KP_OK && i < add; i++) {
            rc = kp_ddb_version_from(json_array_get(items, i), &v[count], err);
            if (rc == KP_OK)
                count++;
        }
        json_t *next = json_object_get(res, "LastEvaluatedKey");
        int more = rc == KP_OK && next && json_object_size(next) > 0;
        if (more)
            json_object_set(req, "ExclusiveStartKey", next);
        json_decref(res);
        if (!more)
            break;
    }
    json_decref(req);
    if (rc != KP_OK) {
        kp_version_free_array(v, count);
        return rc;
    }
    *out = v;
    *n = count;
    return KP_OK;
}

/* One UpdateItem of settled = true. An ended version also leaves GSI2 (ended unsettled versions,
 * versions_unsettled); a generating one keeps its lease keys: a second UpdateItem when the first one's
 * condition (not generating) failed. */
static kp_status settle_update(kp_ddb *d, const char *project_id, int64_t n, int ended, kp_err *err)
{
    json_t *req =
        json_pack("{s:s, s:o, s:s, s:s, s:{s:o}}", "TableName", d->table, "Key", kp_ddb_version_key(project_id, n),
                  "UpdateExpression", ended ? "SET settled = :t REMOVE GSI2PK, GSI2SK" : "SET settled = :t",
                  "ConditionExpression", ended ? "attribute_exists(PK) AND #st <> :gen" : "attribute_exists(PK)",
                  "ExpressionAttributeValues", ":t", kp_ddb_bool(1));
    if (req && ended) {
        json_object_set_new(json_object_get(req, "ExpressionAttributeValues"), ":gen", kp_ddb_n(KP_VER_GENERATING));
        json_object_set_new(req, "ExpressionAttributeNames", json_pack("{s:s}", "#st", "status"));
    }
    kp_status rc = req ? kp_ddb_call(d, "UpdateItem", req, NULL, err) : oom(err);
    json_decref(req);
    return rc;
}

kp_status kp_ddb_version_set_settled(kp_store *s, const char *project_id, int64_t n, kp_err *err)
{
    kp_ddb *d = kp_ddb_store_client(s);
    if (!id_ok(project_id) || n < 1)
        return kp_err_set(err, KP_ENOTFOUND, "version not found");
    kp_status rc = settle_update(d, project_id, n, 1, err);
    if (rc == KP_ECONFLICT) {
        kp_err_clear(err);
        rc = settle_update(d, project_id, n, 0, err);
    }
    if (rc == KP_ECONFLICT)
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    return rc;
}

/* Why the project's condition (item 0 of the cancelled transaction) failed: absent or being deleted
 * (KP_ENOTFOUND), or a version generating (KP_ECONFLICT). */
static kp_status project_refused(kp_ddb *d, kp_err *err)
{
    json_t *old = kp_ddb_reason_item(d, 0);
    if (!old)
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    if (kp_ddb_get_n(old, "gen_n") != 0)
        return kp_err_set(err, KP_ECONFLICT, "version %" PRId64 " of this project is generating",
                          kp_ddb_get_n(old, "gen_n"));
    return kp_err_set(err, KP_ECONFLICT, "project changed meanwhile");
}

kp_status kp_ddb_project_mark_deleting(kp_store *s, const char *id, int on, kp_err *err)
{
    kp_ddb *d = kp_ddb_store_client(s);
    if (!id_ok(id))
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    json_t *vals = json_pack("{s:o}", ":on", kp_ddb_bool(on));
    if (vals && on)
        json_object_set_new(vals, ":zero", kp_ddb_n(0));
    json_t *items = json_pack("[{s:{s:s, s:o, s:s, s:s, s:o, s:s}}]", "Update", "TableName", d->table, "Key",
                              kp_ddb_project_key(id), "UpdateExpression", "SET deleting = :on", "ConditionExpression",
                              on ? "attribute_exists(PK) AND gen_n = :zero" : "attribute_exists(PK)",
                              "ExpressionAttributeValues", vals, "ReturnValuesOnConditionCheckFailure", "ALL_OLD");
    kp_status rc = transact(d, items, err);
    return rc == KP_ECONFLICT ? project_refused(d, err) : rc;
}

/* {"Delete": {"TableName", "Key": key}} of an item of a Query answer (its PK and SK). */
static json_t *delete_of(const char *table, const json_t *item)
{
    return json_pack("{s:{s:s, s:{s:O, s:O}}}", "Delete", "TableName", table, "Key", "PK", json_object_get(item, "PK"),
                     "SK", json_object_get(item, "SK"));
}

/* Deletes the project (condition: exists, none generating) with its versions: one TransactWriteItems
 * with the project and up to 99 versions, then further ones of 100 versions. */
kp_status kp_ddb_project_delete(kp_store *s, const char *id, kp_err *err)
{
    kp_ddb *d = kp_ddb_store_client(s);
    char pk[KP_DDB_KEY_MAX];
    json_t *res = NULL;
    if (!id_ok(id))
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    kp_ddb_key(pk, KP_DDB_PROJ, id);
    json_t *req = json_pack("{s:s, s:s, s:{s:o, s:o}, s:s, s:b}", "TableName", d->table, "KeyConditionExpression",
                            "PK = :p AND begins_with(SK, :v)", "ExpressionAttributeValues", ":p", kp_ddb_s(pk), ":v",
                            kp_ddb_s("V#"), "ProjectionExpression", "PK, SK", "ConsistentRead", 1);
    json_t *items =
        json_pack("[{s:{s:s, s:o, s:s, s:{s:o}, s:s}}]", "Delete", "TableName", d->table, "Key", kp_ddb_project_key(id),
                  "ConditionExpression", "attribute_exists(PK) AND gen_n = :zero", "ExpressionAttributeValues", ":zero",
                  kp_ddb_n(0), "ReturnValuesOnConditionCheckFailure", "ALL_OLD");
    kp_status rc = req && items ? KP_OK : oom(err);
    int first = 1;
    while (rc == KP_OK) {
        rc = kp_ddb_call(d, "Query", req, &res, err);
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(res, "Items"), i, it)
        {
            if (rc == KP_OK && json_array_size(items) == KP_DDB_MAX_REASONS) {
                rc = transact(d, items, err);
                rc = first && rc == KP_ECONFLICT ? project_refused(d, err) : rc;
                first = 0;
                items = json_array();
            }
            if (rc == KP_OK && json_array_append_new(items, delete_of(d->table, it)) != 0)
                rc = oom(err);
        }
        json_t *next = json_object_get(res, "LastEvaluatedKey");
        int more = rc == KP_OK && next && json_object_size(next) > 0;
        if (more)
            json_object_set(req, "ExclusiveStartKey", next);
        json_decref(res);
        res = NULL;
        if (!more)
            break;
    }
    if (rc == KP_OK && json_array_size(items) > 0) {
        rc = transact(d, items, err);
        items = NULL;
        rc = first && rc == KP_ECONFLICT ? project_refused(d, err) : rc;
    }
    json_decref(items);
    json_decref(req);
    return rc;
}
