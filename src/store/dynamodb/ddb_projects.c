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

#define PROJ "PROJ#"
#define UPROJ "UPROJ#"
#define LEASE_SHARDS 8

static kp_status oom(kp_err *err)
{
    return kp_err_set(err, KP_ENOMEM, "out of memory");
}

static int id_ok(const char *s)
{
    return s && *s && strlen(s) < KP_ID_MAX;
}

static void version_sk(char *out, int64_t n)
{
    snprintf(out, KP_DDB_KEY_MAX, "V#%010" PRId64, n);
}

/* GSI1SK: "{created_at:015}#{pid}" (newest first when read backwards). */
static void list_sk(char *out, int64_t created_at, const char *pid)
{
    snprintf(out, KP_DDB_KEY_MAX, "%015" PRId64 "#%s", created_at, pid ? pid : "");
}

static json_t *project_key(const char *pid)
{
    char pk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, PROJ, pid);
    return kp_ddb_key_item(pk, KP_DDB_SK_MAIN);
}

static json_t *version_key(const char *pid, int64_t n)
{
    char pk[KP_DDB_KEY_MAX], sk[KP_DDB_KEY_MAX];
    kp_ddb_key(pk, PROJ, pid);
    version_sk(sk, n);
    return kp_ddb_key_item(pk, sk);
}

static json_t *project_item(const kp_project *p, int64_t created_at)
{
    char gpk[KP_DDB_KEY_MAX], gsk[KP_DDB_KEY_MAX];
    kp_ddb_key(gpk, UPROJ, p->user_id);
    list_sk(gsk, created_at, p->id);
    json_t *item = project_key(p->id);
    if (item && json_object_update_new(
                    item, json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "GSI1PK", kp_ddb_s(gpk),
                                    "GSI1SK", kp_ddb_s(gsk), "id", kp_ddb_s(p->id), "user_id", kp_ddb_s(p->user_id),
                                    "name", kp_ddb_s(p->name), "latest_version", kp_ddb_n(1), "latest_ready",
                                    kp_ddb_n(0), "gen_n", kp_ddb_n(1), "deleting", kp_ddb_bool(0), "created_at",
                                    kp_ddb_n(created_at), "updated_at", kp_ddb_n(created_at))) != 0) {
        json_decref(item);
        return NULL;
    }
    return item;
}

static void project_from(const json_t *item, kp_project *p)
{
    memset(p, 0, sizeof *p);
    kp_ddb_get_s(item, "id", p->id, sizeof p->id);
    kp_ddb_get_s(item, "user_id", p->user_id, sizeof p->user_id);
    kp_ddb_get_s(item, "name", p->name, sizeof p->name);
    p->latest_version = kp_ddb_get_n(item, "latest_version");
    p->latest_ready = kp_ddb_get_n(item, "latest_ready");
    p->created_at = kp_ddb_get_n(item, "created_at");
    p->updated_at = kp_ddb_get_n(item, "updated_at");
}

/* A new generating version n of pid: its fields, and GSI2's keys (versions by lease, for recovery). */
static json_t *version_item(const char *pid, int64_t n, const kp_version *v, int64_t created_at)
{
    char gpk[KP_DDB_KEY_MAX], gsk[KP_DDB_KEY_MAX];
    unsigned shard = 0;
    for (const char *c = pid; *c; c++)
        shard = shard * 31u + (unsigned char)*c;
    snprintf(gpk, sizeof gpk, "LEASE#%u", shard % LEASE_SHARDS);
    snprintf(gsk, sizeof gsk, "%015" PRId64 "#%s#%" PRId64, v->lease_until, pid, n);
    json_t *item = version_key(pid, n);
    json_t *fields = json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
        "s:o}",
        "GSI2PK", kp_ddb_s(gpk), "GSI2SK", kp_ddb_s(gsk), "project_id", kp_ddb_s(pid), "n", kp_ddb_n(n), "status",
        kp_ddb_n(KP_VER_GENERATING), "reservation_id", kp_ddb_s(v->reservation_id), "settled", kp_ddb_bool(0),
        "error_code", kp_ddb_s(""), "error_message", kp_ddb_s(""), "prompt", kp_ddb_s(v->prompt), "message",
        kp_ddb_s(""), "files_json", kp_ddb_s(v->files_json ? v->files_json : "[]"), "model", kp_ddb_s(v->model),
        "input_tokens", kp_ddb_n(0), "output_tokens", kp_ddb_n(0), "duration_ms", kp_ddb_n(0), "refunded",
        kp_ddb_bool(0), "credit_reason", kp_ddb_s(""), "created_at", kp_ddb_n(created_at), "updated_at",
        kp_ddb_n(created_at), "owner", kp_ddb_s(v->owner), "lease_until", kp_ddb_n(v->lease_until));
    if (!item || !fields || json_object_update_new(item, fields) != 0) {
        json_decref(item);
        return NULL;
    }
    return item;
}

static char *dup_s(const json_t *item, const char *name)
{
    const char *v = json_string_value(json_object_get(json_object_get(item, name), "S"));
    return strdup(v ? v : "");
}

/* Fills v from item; KP_ENOMEM when a heap field could not be copied (v cleared). */
static kp_status version_from(const json_t *item, kp_version *v, kp_err *err)
{
    memset(v, 0, sizeof *v);
    kp_ddb_get_s(item, "project_id", v->project_id, sizeof v->project_id);
    v->n = kp_ddb_get_n(item, "n");
    v->status = (kp_version_status)kp_ddb_get_n(item, "status");
    kp_ddb_get_s(item, "reservation_id", v->reservation_id, sizeof v->reservation_id);
    v->settled = kp_ddb_get_bool(item, "settled");
    kp_ddb_get_s(item, "error_code", v->error_code, sizeof v->error_code);
    kp_ddb_get_s(item, "model", v->model, sizeof v->model);
    v->input_tokens = kp_ddb_get_n(item, "input_tokens");
    v->output_tokens = kp_ddb_get_n(item, "output_tokens");
    v->duration_ms = kp_ddb_get_n(item, "duration_ms");
    v->refunded = kp_ddb_get_bool(item, "refunded");
    kp_ddb_get_s(item, "credit_reason", v->credit_reason, sizeof v->credit_reason);
    v->created_at = kp_ddb_get_n(item, "created_at");
    v->updated_at = kp_ddb_get_n(item, "updated_at");
    kp_ddb_get_s(item, "owner", v->owner, sizeof v->owner);
    v->lease_until = kp_ddb_get_n(item, "lease_until");
    v->error_message = dup_s(item, "error_message");
    v->prompt = dup_s(item, "prompt");
    v->message = dup_s(item, "message");
    v->files_json = dup_s(item, "files_json");
    v->events_json = strdup("[]");
    if (!v->error_message || !v->prompt || !v->message || !v->files_json || !v->events_json) {
        kp_version_clear(v);
        return oom(err);
    }
    return KP_OK;
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
                              project_item(p, created_at), "ConditionExpression", "attribute_not_exists(PK)", "Put",
                              "TableName", d->table, "Item", version_item(p->id, 1, v, v_created_at),
                              "ConditionExpression", "attribute_not_exists(PK)");
    kp_status rc = transact(d, items, err);
    if (rc == KP_ECONFLICT)
        rc = kp_err_set(err, KP_ECONFLICT, "project %s already exists", p->id);
    return rc;
}

kp_status kp_ddb_project_get(kp_store *s, const char *id, kp_project *out, kp_err *err)
{
    json_t *item = NULL;
    if (!id_ok(id))
        return kp_err_set(err, KP_ENOTFOUND, "project not found");
    kp_status rc = get_by_key(kp_ddb_store_client(s), project_key(id), &item, err);
    if (rc == KP_OK && !item)
        rc = kp_err_set(err, KP_ENOTFOUND, "project not found");
    if (rc == KP_OK)
        project_from(item, out);
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
    kp_ddb_key(gpk, UPROJ, user_id);
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
            project_from(json_array_get(items, i), &(*out)[i]);
        if (rc == KP_OK)
            *n = count;
    }
    json_decref(req);
    json_decref(res);
    return rc;
}

/* ---- versions ---- */

kp_status kp_ddb_version_create(kp_store *s, const kp_version *v, kp_err *err)
{
    kp_ddb *d = kp_ddb_store_client(s);
    if (!v || !id_ok(v->project_id) || v->n < 1)
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    int64_t created_at = v->created_at > 0 ? v->created_at : kp_time_now_ms();
    json_t *items = json_pack(
        "[{s:{s:s, s:o, s:s, s:s, s:{s:o, s:o, s:o, s:o}, s:s}}, {s:{s:s, s:o, s:s}}]", "Update", "TableName", d->table,
        "Key", project_key(v->project_id), "UpdateExpression", "SET latest_version = :n, gen_n = :n, updated_at = :t",
        "ConditionExpression", "attribute_exists(PK) AND latest_version = :prev AND gen_n = :zero AND deleting = :no",
        "ExpressionAttributeValues", ":n", kp_ddb_n(v->n), ":t", kp_ddb_n(created_at), ":prev", kp_ddb_n(v->n - 1),
        ":zero", kp_ddb_n(0), "ReturnValuesOnConditionCheckFailure", "ALL_OLD", "Put", "TableName", d->table, "Item",
        version_item(v->project_id, v->n, v, created_at), "ConditionExpression", "attribute_not_exists(PK)");
    if (items)
        json_object_set_new(
            json_object_get(json_object_get(json_array_get(items, 0), "Update"), "ExpressionAttributeValues"), ":no",
            kp_ddb_bool(0));
    kp_status rc = transact(d, items, err);
    if (rc != KP_ECONFLICT)
        return rc;
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
    kp_status rc = get_by_key(kp_ddb_store_client(s), version_key(project_id, n), &item, err);
    if (rc == KP_OK && !item)
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    if (rc == KP_OK)
        rc = version_from(item, out, err);
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
    kp_ddb_key(pk, PROJ, project_id);
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
            rc = version_from(json_array_get(items, i), &v[count], err);
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

kp_status kp_ddb_version_set_settled(kp_store *s, const char *project_id, int64_t n, kp_err *err)
{
    kp_ddb *d = kp_ddb_store_client(s);
    if (!id_ok(project_id) || n < 1)
        return kp_err_set(err, KP_ENOTFOUND, "version not found");
    json_t *req = json_pack("{s:s, s:o, s:s, s:s, s:{s:o}}", "TableName", d->table, "Key", version_key(project_id, n),
                            "UpdateExpression", "SET settled = :t", "ConditionExpression", "attribute_exists(PK)",
                            "ExpressionAttributeValues", ":t", kp_ddb_bool(1));
    kp_status rc = req ? kp_ddb_call(d, "UpdateItem", req, NULL, err) : oom(err);
    json_decref(req);
    if (rc == KP_ECONFLICT)
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    return rc;
}

/* v's events, when it has any: the event store is not on DynamoDB yet (events_append is NULL). */
static int has_events(const kp_version *v)
{
    return v->events_json && *v->events_json && strcmp(v->events_json, "[]") != 0;
}

/* Ends a generating version: its update (status = generating, GSI2's keys removed) and the project's
 * (gen_n back to 0, latest_ready on READY) in one TransactWriteItems. */
kp_status kp_ddb_version_finish(kp_store *s, const kp_version *v, kp_err *err)
{
    kp_ddb *d = kp_ddb_store_client(s);
    if (!v || !id_ok(v->project_id) || v->n < 1 || (v->status != KP_VER_READY && v->status != KP_VER_FAILED))
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    if (has_events(v))
        return kp_err_set(err, KP_EINVAL, "events cannot be stored on DynamoDB yet");
    int64_t now = v->updated_at > 0 ? v->updated_at : kp_time_now_ms();
    json_t *vals = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", ":gen",
                             kp_ddb_n(KP_VER_GENERATING), ":st", kp_ddb_n(v->status), ":ec", kp_ddb_s(v->error_code),
                             ":em", kp_ddb_s(v->error_message), ":msg", kp_ddb_s(v->message), ":files",
                             kp_ddb_s(v->files_json ? v->files_json : "[]"), ":model", kp_ddb_s(v->model), ":in",
                             kp_ddb_n(v->input_tokens), ":out", kp_ddb_n(v->output_tokens), ":dur",
                             kp_ddb_n(v->duration_ms), ":t", kp_ddb_n(now), ":ref", kp_ddb_bool(v->refunded), ":cr",
                             kp_ddb_s(v->credit_reason), ":set", kp_ddb_bool(v->settled));
    const char *settled = v->settled ? ", settled = :set" : "";
    char update[512];
    snprintf(update, sizeof update,
             "SET #st = :st, error_code = :ec, error_message = :em, #msg = :msg, files_json = :files, #model = :model, "
             "input_tokens = :in, output_tokens = :out, duration_ms = :dur, updated_at = :t, refunded = :ref, "
             "credit_reason = :cr%s REMOVE GSI2PK, GSI2SK",
             settled);
    if (vals && !v->settled)
        json_object_del(vals, ":set");
    json_t *pvals = json_pack("{s:o, s:o, s:o}", ":n", kp_ddb_n(v->n), ":zero", kp_ddb_n(0), ":t", kp_ddb_n(now));
    json_t *items =
        json_pack("[{s:{s:s, s:o, s:s, s:s, s:{s:s, s:s, s:s}, s:o}}, {s:{s:s, s:o, s:s, s:s, s:o}}]", "Update",
                  "TableName", d->table, "Key", version_key(v->project_id, v->n), "UpdateExpression", update,
                  "ConditionExpression", "#st = :gen", "ExpressionAttributeNames", "#st", "status", "#msg", "message",
                  "#model", "model", "ExpressionAttributeValues", vals, "Update", "TableName", d->table, "Key",
                  project_key(v->project_id), "UpdateExpression",
                  v->status == KP_VER_READY ? "SET gen_n = :zero, updated_at = :t, latest_ready = :n"
                                            : "SET gen_n = :zero, updated_at = :t",
                  "ConditionExpression", "gen_n = :n", "ExpressionAttributeValues", pvals);
    kp_status rc = transact(d, items, err);
    if (rc == KP_ECONFLICT)
        rc = kp_err_set(err, KP_ECONFLICT, "version %" PRId64 " is not generating", v->n);
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
                              project_key(id), "UpdateExpression", "SET deleting = :on", "ConditionExpression",
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
    kp_ddb_key(pk, PROJ, id);
    json_t *req = json_pack("{s:s, s:s, s:{s:o, s:o}, s:s, s:b}", "TableName", d->table, "KeyConditionExpression",
                            "PK = :p AND begins_with(SK, :v)", "ExpressionAttributeValues", ":p", kp_ddb_s(pk), ":v",
                            kp_ddb_s("V#"), "ProjectionExpression", "PK, SK", "ConsistentRead", 1);
    json_t *items =
        json_pack("[{s:{s:s, s:o, s:s, s:{s:o}, s:s}}]", "Delete", "TableName", d->table, "Key", project_key(id),
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
