/*
 * ddb_generations.c - generations on DynamoDB (see ddb_generations.h):
 * what recovery reads (GSI2 per shard, then one consistent BatchGetItem per
 * 100 items: GSI2 projects keys only), the end of a version (version_finish,
 * version_end) and, below, admission and leases.
 */
#include "store/dynamodb/ddb_generations.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/id.h"
#include "store/dynamodb/ddb_events.h"
#include "store/dynamodb/ddb_internal.h"
#include "store/dynamodb/ddb_items.h"

#define BATCH_KEYS 100      /* BatchGetItem's limit */
#define UNPROCESSED_TRIES 8 /* BatchGetItem rounds for keys DynamoDB left unprocessed */
#define END_ATTEMPTS 64     /* version_end: re-reads after the balance moved (no expected_version) */
#define TX_ITEMS_MAX 100    /* TransactWriteItems' limit */

static kp_status oom(kp_err *err)
{
    return kp_err_set(err, KP_ENOMEM, "out of memory");
}

static int id_ok(const char *s)
{
    return s && *s && strlen(s) < KP_ID_MAX;
}

static int fits(const char *s, size_t cap)
{
    return !s || strlen(s) < cap;
}

/* ---- what recovery reads ---- */

kp_status kp_ddb_versions_generating_count(kp_store *s, const char *user_id, int64_t *count, kp_err *err)
{
    char pk[KP_DDB_KEY_MAX];
    json_t *item = NULL;
    *count = 0;
    if (!id_ok(user_id))
        return KP_OK;
    kp_ddb_key(pk, KP_DDB_USER, user_id);
    kp_status rc = kp_ddb_get_item(kp_ddb_of(s), pk, KP_DDB_SK_MAIN, &item, err);
    if (rc == KP_OK && item)
        *count = kp_ddb_get_n(item, "generating");
    json_decref(item);
    return rc;
}

static kp_status append_item(const json_t *item, void *ctx, kp_err *err)
{
    return json_array_append((json_t *)ctx, (json_t *)item) == 0 ? KP_OK : oom(err);
}

/* Appends to keys the GSI2 entries of partition gpk (their PK, SK, GSI2PK, GSI2SK), those with
 * GSI2SK < below when below is set: every page, or with limit > 0 the first limit (one Query). */
static kp_status gsi2_collect(kp_ddb *d, const char *gpk, const char *below, size_t limit, json_t *keys, kp_err *err)
{
    json_t *req = json_pack("{s:s, s:s, s:s, s:{s:o}}", "TableName", d->table, "IndexName", "GSI2",
                            "KeyConditionExpression", below ? "GSI2PK = :p AND GSI2SK < :b" : "GSI2PK = :p",
                            "ExpressionAttributeValues", ":p", kp_ddb_s(gpk));
    if (req && below)
        json_object_set_new(json_object_get(req, "ExpressionAttributeValues"), ":b", kp_ddb_s(below));
    if (req && limit > 0)
        json_object_set_new(req, "Limit", json_integer((json_int_t)limit));
    kp_status rc = req ? KP_OK : oom(err);
    if (rc == KP_OK)
        rc = limit == 0 ? kp_ddb_query_all(d, req, append_item, keys, err)
                        : kp_ddb_query_page(d, req, append_item, keys, NULL, err);
    json_decref(req);
    return rc;
}

/* The entries of every shard of GSI2 partition prefix (see gsi2_collect). */
static kp_status gsi2_collect_all(kp_ddb *d, const char *prefix, const char *below, size_t limit, json_t *keys,
                                  kp_err *err)
{
    kp_status rc = KP_OK;
    for (unsigned k = 0; k < KP_DDB_SHARDS && rc == KP_OK; k++) {
        char gpk[KP_DDB_KEY_MAX];
        snprintf(gpk, sizeof gpk, "%s%u", prefix, k);
        rc = gsi2_collect(d, gpk, below, limit, keys, err);
    }
    return rc;
}

/* One BatchGetItem request of up to 100 keys, asked again for what DynamoDB left unprocessed (bounded);
 * the items found are appended to items. */
static kp_status batch_get_chunk(kp_ddb *d, json_t *chunk, json_t *items, kp_err *err)
{
    json_t *req = json_pack("{s:{s:{s:o, s:b}}}", "RequestItems", d->table, "Keys", chunk, "ConsistentRead", 1);
    kp_status rc = req ? KP_OK : oom(err);
    for (int tries = 0; rc == KP_OK; tries++) {
        json_t *res = NULL;
        rc = kp_ddb_call(d, "BatchGetItem", req, &res, err);
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(json_object_get(res, "Responses"), d->table), i, it)
        {
            if (rc == KP_OK && json_array_append(items, it) != 0)
                rc = oom(err);
        }
        json_t *left = json_object_get(res, "UnprocessedKeys");
        int more = rc == KP_OK && json_object_size(left) > 0;
        if (more && tries + 1 >= UNPROCESSED_TRIES)
            rc = kp_err_set(err, KP_EUNAVAILABLE, "DynamoDB BatchGetItem left keys unprocessed");
        else if (more)
            json_object_set(req, "RequestItems", left);
        json_decref(res);
        if (!more)
            break;
    }
    json_decref(req);
    return rc;
}

/* The items of keys (objects with PK and SK; other attributes ignored), read consistently: one
 * BatchGetItem per 100 keys. Appended to items in any order; absent ones are missing. */
static kp_status batch_get(kp_ddb *d, const json_t *keys, json_t *items, kp_err *err)
{
    kp_status rc = KP_OK;
    size_t n = json_array_size(keys);
    for (size_t at = 0; rc == KP_OK && at < n; at += BATCH_KEYS) {
        json_t *chunk = json_array();
        for (size_t i = at; chunk && i < n && i < at + BATCH_KEYS; i++) {
            const json_t *k = json_array_get(keys, i);
            json_t *key = json_pack("{s:O, s:O}", "PK", json_object_get(k, "PK"), "SK", json_object_get(k, "SK"));
            if (json_array_append_new(chunk, key) != 0) {
                json_decref(chunk);
                chunk = NULL;
            }
        }
        rc = chunk ? batch_get_chunk(d, chunk, items, err) : oom(err);
    }
    return rc;
}

static const char *gsi2_sk(const json_t *key)
{
    const char *s = json_string_value(json_object_get(json_object_get(key, "GSI2SK"), "S"));
    return s ? s : "";
}

static int by_gsi2_sk(const void *a, const void *b)
{
    return strcmp(gsi2_sk(*(const json_t *const *)a), gsi2_sk(*(const json_t *const *)b));
}

/* The first limit entries of keys by GSI2SK (a new array: oldest leases first across the shards). */
static json_t *first_by_gsi2_sk(const json_t *keys, size_t limit)
{
    size_t n = json_array_size(keys);
    const json_t **v = n ? malloc(n * sizeof *v) : NULL;
    json_t *out = json_array();
    if (n && !v) {
        json_decref(out);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(keys, i);
    if (n)
        qsort(v, n, sizeof *v, by_gsi2_sk);
    for (size_t i = 0; out && i < n && i < limit; i++)
        if (json_array_append(out, (json_t *)v[i]) != 0) {
            json_decref(out);
            out = NULL;
        }
    free(v);
    return out;
}

typedef int (*version_keep_fn)(const kp_version *v, int64_t now_ms);

/* The versions among items that keep() accepts (the index may lag: each is checked as read), sorted by
 * cmp, into a new array (NULL when none). */
static kp_status versions_of(const json_t *items, version_keep_fn keep, int64_t now_ms,
                             int (*cmp)(const void *, const void *), kp_version **out, size_t *n, kp_err *err)
{
    size_t cap = json_array_size(items), count = 0;
    kp_version *v = cap ? calloc(cap, sizeof *v) : NULL;
    kp_status rc = cap && !v ? oom(err) : KP_OK;
    for (size_t i = 0; rc == KP_OK && i < cap; i++) {
        rc = kp_ddb_version_from(json_array_get(items, i), &v[count], err);
        if (rc == KP_OK && keep(&v[count], now_ms))
            count++;
        else if (rc == KP_OK)
            kp_version_clear(&v[count]);
    }
    if (rc != KP_OK || count == 0) {
        kp_version_free_array(v, count);
        return rc;
    }
    qsort(v, count, sizeof *v, cmp);
    *out = v;
    *n = count;
    return KP_OK;
}

static int expired(const kp_version *v, int64_t now_ms)
{
    return v->status == KP_VER_GENERATING && v->lease_until < now_ms;
}

static int by_key(const kp_version *a, const kp_version *b)
{
    int c = strcmp(a->project_id, b->project_id);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

static int by_lease(const void *pa, const void *pb)
{
    const kp_version *a = pa, *b = pb;
    return a->lease_until != b->lease_until ? (a->lease_until > b->lease_until) - (a->lease_until < b->lease_until)
                                            : by_key(a, b);
}

static int by_version(const void *a, const void *b)
{
    return by_key(a, b);
}

/* GSI2 LEASE# (each shard: the entries with lease_until < now, oldest first, at most limit), the
 * oldest limit of them read with BatchGetItem, each checked as read. */
kp_status kp_ddb_versions_expired(kp_store *s, int64_t now_ms, size_t limit, kp_version **out, size_t *n, kp_err *err)
{
    kp_ddb *d = kp_ddb_of(s);
    char below[32];
    json_t *keys = json_array(), *first = NULL, *items = json_array();
    *out = NULL;
    *n = 0;
    if (limit == 0 || now_ms <= 0) {
        json_decref(keys);
        json_decref(items);
        return KP_OK;
    }
    snprintf(below, sizeof below, "%015" PRId64, now_ms);
    kp_status rc = keys && items ? gsi2_collect_all(d, KP_DDB_GSI2_LEASE, below, limit, keys, err) : oom(err);
    if (rc == KP_OK && !(first = first_by_gsi2_sk(keys, limit)))
        rc = oom(err);
    if (rc == KP_OK)
        rc = batch_get(d, first, items, err);
    if (rc == KP_OK)
        rc = versions_of(items, expired, now_ms, by_lease, out, n, err);
    json_decref(keys);
    json_decref(first);
    json_decref(items);
    return rc;
}

static int unsettled(const kp_version *v, int64_t now_ms)
{
    (void)now_ms;
    return v->status != KP_VER_GENERATING && !v->settled;
}

/* GSI2 UNSET# (every shard), then the versions: BatchGetItem. */
kp_status kp_ddb_versions_unsettled(kp_store *s, kp_version **out, size_t *n, kp_err *err)
{
    kp_ddb *d = kp_ddb_of(s);
    json_t *keys = json_array(), *items = json_array();
    *out = NULL;
    *n = 0;
    kp_status rc = keys && items ? gsi2_collect_all(d, KP_DDB_GSI2_UNSETTLED, NULL, 0, keys, err) : oom(err);
    if (rc == KP_OK)
        rc = batch_get(d, keys, items, err);
    if (rc == KP_OK)
        rc = versions_of(items, unsettled, 0, by_version, out, n, err);
    json_decref(keys);
    json_decref(items);
    return rc;
}

static int by_reservation_id(const void *a, const void *b)
{
    return strcmp(((const kp_reservation *)a)->id, ((const kp_reservation *)b)->id);
}

/* The reservations among items (RES#{id} / A and / V) still reserved and without a version (no V). */
static kp_status orphans_of(const json_t *items, kp_reservation **out, size_t *n, kp_err *err)
{
    json_t *referred = json_object();
    size_t cap = json_array_size(items), count = 0, i;
    kp_reservation *r = cap ? calloc(cap, sizeof *r) : NULL;
    json_t *it;
    kp_status rc = !referred || (cap && !r) ? oom(err) : KP_OK;
    json_array_foreach(items, i, it)
    {
        char pk[KP_DDB_KEY_MAX], sk[8];
        kp_ddb_get_s(it, "PK", pk, sizeof pk);
        kp_ddb_get_s(it, "SK", sk, sizeof sk);
        if (rc == KP_OK && strcmp(sk, KP_DDB_SK_RESREF) == 0 && json_object_set_new(referred, pk, json_true()) != 0)
            rc = oom(err);
    }
    json_array_foreach(items, i, it)
    {
        char pk[KP_DDB_KEY_MAX], sk[8];
        kp_ddb_get_s(it, "PK", pk, sizeof pk);
        kp_ddb_get_s(it, "SK", sk, sizeof sk);
        if (rc != KP_OK || strcmp(sk, KP_DDB_SK_MAIN) != 0 || json_object_get(referred, pk))
            continue;
        kp_ddb_reservation_from(it, &r[count]);
        count += r[count].state == KP_RES_RESERVED;
    }
    json_decref(referred);
    if (rc != KP_OK || count == 0) {
        free(r);
        return rc;
    }
    qsort(r, count, sizeof *r, by_reservation_id);
    *out = r;
    *n = count;
    return KP_OK;
}

/* GSI2 RESV# (open reservations, every shard), then each one's item and version reference (RES#{id} / A
 * and / V): BatchGetItem. */
kp_status kp_ddb_reservations_orphaned(kp_store *s, kp_reservation **out, size_t *n, kp_err *err)
{
    kp_ddb *d = kp_ddb_of(s);
    json_t *keys = json_array(), *both = json_array(), *items = json_array();
    *out = NULL;
    *n = 0;
    kp_status rc = keys && both && items ? gsi2_collect_all(d, KP_DDB_GSI2_OPENRES, NULL, 0, keys, err) : oom(err);
    size_t i;
    json_t *it;
    json_array_foreach(keys, i, it)
    {
        const char *pk = json_string_value(json_object_get(json_object_get(it, "PK"), "S"));
        if (rc == KP_OK && (json_array_append_new(both, kp_ddb_key_item(pk ? pk : "", KP_DDB_SK_MAIN)) != 0 ||
                            json_array_append_new(both, kp_ddb_key_item(pk ? pk : "", KP_DDB_SK_RESREF)) != 0))
            rc = oom(err);
    }
    if (rc == KP_OK)
        rc = batch_get(d, both, items, err);
    if (rc == KP_OK)
        rc = orphans_of(items, out, n, err);
    json_decref(keys);
    json_decref(both);
    json_decref(items);
    return rc;
}

/* ---- the end of a version ---- */

/* The events of events_json ([{"id","event","data"}]) as kp_events (data: its JSON text, owned by the
 * array), those SQLite would store: objects with an id >= 1, an event and data; an id given twice is
 * stored once (the first). */
static kp_status events_parse(const char *events_json, kp_event **out, size_t *n, kp_err *err)
{
    *out = NULL;
    *n = 0;
    if (!events_json || !*events_json || strcmp(events_json, "[]") == 0)
        return KP_OK;
    json_t *arr = json_loads(events_json, 0, NULL);
    if (!json_is_array(arr)) {
        json_decref(arr);
        return kp_err_set(err, KP_EINVAL, "invalid events_json");
    }
    size_t cap = json_array_size(arr), count = 0, i;
    kp_event *e = cap ? calloc(cap, sizeof *e) : NULL;
    kp_status rc = cap && !e ? oom(err) : KP_OK;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        json_int_t id = json_integer_value(json_object_get(o, "id"));
        const char *type = json_string_value(json_object_get(o, "event"));
        json_t *data = json_object_get(o, "data");
        int seen = 0;
        for (size_t k = 0; k < count && !seen; k++)
            seen = e[k].id == id;
        if (rc != KP_OK || id < 1 || !type || !*type || strlen(type) >= KP_EVENT_TYPE_MAX || !data || seen)
            continue;
        e[count].id = id;
        snprintf(e[count].type, sizeof e[count].type, "%s", type);
        e[count].data = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
        rc = e[count].data ? KP_OK : oom(err);
        count += rc == KP_OK;
    }
    json_decref(arr);
    if (rc != KP_OK) {
        kp_event_free_array(e, count);
        return rc;
    }
    *out = e;
    *n = count;
    return KP_OK;
}

/* The Put of one event (attribute_not_exists), as ddb_events.c stores it. */
static json_t *event_put(const char *table, const char *pid, int64_t n, const kp_event *e)
{
    char pk[KP_DDB_KEY_MAX], sk[32];
    snprintf(pk, sizeof pk, "EVT#%s#%" PRId64, pid, n);
    snprintf(sk, sizeof sk, "%012" PRId64, e->id);
    return json_pack("{s:{s:s, s:{s:o, s:o, s:o, s:o, s:o}, s:s}}", "Put", "TableName", table, "Item", "PK",
                     kp_ddb_s(pk), "SK", kp_ddb_s(sk), "id", kp_ddb_n(e->id), "type", kp_ddb_s(e->type), "data",
                     kp_ddb_s(e->data), "ConditionExpression", "attribute_not_exists(PK)");
}

/* The version's Update that ends it, only while it generates (ALL_OLD on failure tells absent from
 * ended). settle: marks it settled and takes it out of GSI2; else it moves to GSI2's unsettled entries. */
static json_t *version_ending(const char *table, const kp_version *v, int64_t now, int settle)
{
    char gpk[KP_DDB_KEY_MAX], gsk[KP_DDB_KEY_MAX];
    kp_ddb_shard_key(gpk, KP_DDB_GSI2_UNSETTLED, v->project_id);
    kp_ddb_unsettled_sk(gsk, v->project_id, v->n);
    json_t *vals = json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", ":gen", kp_ddb_n(KP_VER_GENERATING), ":st",
        kp_ddb_n(v->status), ":ec", kp_ddb_s(v->error_code), ":em", kp_ddb_s(v->error_message), ":msg",
        kp_ddb_s(v->message), ":files", kp_ddb_s(v->files_json ? v->files_json : "[]"), ":model", kp_ddb_s(v->model),
        ":in", kp_ddb_n(v->input_tokens), ":out", kp_ddb_n(v->output_tokens), ":dur", kp_ddb_n(v->duration_ms), ":t",
        kp_ddb_n(now), ":ref", kp_ddb_bool(v->refunded), ":cr", kp_ddb_s(v->credit_reason));
    if (vals && settle)
        json_object_set_new(vals, ":set", kp_ddb_bool(1));
    else if (vals)
        json_object_update_new(vals, json_pack("{s:o, s:o}", ":gpk", kp_ddb_s(gpk), ":gsk", kp_ddb_s(gsk)));
    const char *update =
        settle ? "SET #st = :st, error_code = :ec, error_message = :em, #msg = :msg, files_json = :files, "
                 "#model = :model, input_tokens = :in, output_tokens = :out, duration_ms = :dur, updated_at = :t, "
                 "refunded = :ref, credit_reason = :cr, settled = :set REMOVE GSI2PK, GSI2SK"
               : "SET #st = :st, error_code = :ec, error_message = :em, #msg = :msg, files_json = :files, "
                 "#model = :model, input_tokens = :in, output_tokens = :out, duration_ms = :dur, updated_at = :t, "
                 "refunded = :ref, credit_reason = :cr, GSI2PK = :gpk, GSI2SK = :gsk";
    return json_pack("{s:{s:s, s:o, s:s, s:s, s:{s:s, s:s, s:s}, s:o, s:s}}", "Update", "TableName", table, "Key",
                     kp_ddb_version_key(v->project_id, v->n), "UpdateExpression", update, "ConditionExpression",
                     "#st = :gen", "ExpressionAttributeNames", "#st", "status", "#msg", "message", "#model", "model",
                     "ExpressionAttributeValues", vals, "ReturnValuesOnConditionCheckFailure", "ALL_OLD");
}

/* The project's Update: no version generating any more (gen_n was n), latest_ready = n on READY. */
static json_t *project_ending(const char *table, const kp_version *v, int64_t now)
{
    return json_pack("{s:{s:s, s:o, s:s, s:s, s:{s:o, s:o, s:o}}}", "Update", "TableName", table, "Key",
                     kp_ddb_project_key(v->project_id), "UpdateExpression",
                     v->status == KP_VER_READY ? "SET gen_n = :zero, updated_at = :t, latest_ready = :n"
                                               : "SET gen_n = :zero, updated_at = :t",
                     "ConditionExpression", "gen_n = :n", "ExpressionAttributeValues", ":n", kp_ddb_n(v->n), ":zero",
                     kp_ddb_n(0), ":t", kp_ddb_n(now));
}

/* Adds ADD generating delta to tx_item (a TransactWriteItems Update of the user item). Nonzero on failure. */
static int add_generating(json_t *tx_item, int delta)
{
    json_t *u = json_object_get(tx_item, "Update");
    json_t *vals = json_object_get(u, "ExpressionAttributeValues");
    const char *expr = json_string_value(json_object_get(u, "UpdateExpression"));
    if (!u || !vals || !expr)
        return 1;
    return json_object_set_new(u, "UpdateExpression", json_sprintf("%s ADD generating :gd", expr)) ||
           json_object_set_new(vals, ":gd", kp_ddb_n(delta));
}

/* With max >= 0, adds to tx_item's condition that the user's generating counter is below max. */
static int add_limit(json_t *tx_item, int64_t max)
{
    json_t *u = json_object_get(tx_item, "Update");
    json_t *vals = json_object_get(u, "ExpressionAttributeValues");
    const char *cond = json_string_value(json_object_get(u, "ConditionExpression"));
    if (max < 0)
        return 0;
    if (!u || !vals)
        return 1;
    return json_object_set_new(u, "ConditionExpression",
                               json_sprintf("%s AND (attribute_not_exists(generating) OR generating < :gmax)",
                                            cond ? cond : "attribute_exists(PK)")) ||
           json_object_set_new(vals, ":gmax", kp_ddb_n(max));
}

/* What one attempt at ending a version works from and keeps between attempts. */
typedef struct ending {
    const kp_version *v;
    const kp_credit_change *c;
    int settle;
    int64_t now;
    char user_id[KP_ID_MAX]; /* the project's user: their generating counter goes down */
    kp_event *events;        /* still to store with the end (NULL once stored by events_append) */
    size_t n_events;
    kp_ddb_credit_state st; /* c's read */
    int reread;             /* read c's state (again) before the next attempt */
    int events_first;       /* store the events with events_append before the end's transaction */
    int again;              /* the attempt lost a race that a new attempt may win */
} ending;

/* Why the ending transaction was cancelled, item by item (credit_at: where c's items begin, -1; res_i:
 * the reservation's index there; events_at: the first event put, -1). */
static kp_status ending_refused(kp_ddb *d, ending *e, long credit_at, long res_i, long events_at, kp_err *err)
{
    const kp_version *v = e->v;
    if (credit_at >= 0 && kp_ddb_reason_failed(d, (size_t)credit_at + 1))
        return kp_err_set(err, KP_EDUPLICATE, "idempotency key already used");
    if (credit_at >= 0 && res_i >= 0 && kp_ddb_reason_failed(d, (size_t)(credit_at + res_i)))
        return kp_err_set(err, KP_ECONFLICT, "reservation %s is not in the expected state", e->c->res_id);
    if (credit_at >= 0 && kp_ddb_reason_failed(d, (size_t)credit_at)) {
        json_t *won = kp_ddb_reason_item(d, (size_t)credit_at);
        e->again = e->c->expected_version < 0;
        e->reread = !won;
        if (won) {
            json_decref(e->st.user);
            e->st.user = json_incref(won);
        }
        return kp_err_set(err, KP_ECONFLICT, "balance changed meanwhile");
    }
    if (kp_ddb_reason_failed(d, 0)) {
        json_t *old = kp_ddb_reason_item(d, 0);
        if (!old)
            return kp_err_set(err, KP_ENOTFOUND, "version not found");
        return kp_err_set(err, KP_ECONFLICT, "version %" PRId64 " is not generating (status %" PRId64 ")", v->n,
                          kp_ddb_get_n(old, "status"));
    }
    if (kp_ddb_reason_failed(d, 1))
        return kp_err_set(err, KP_ECONFLICT, "version %" PRId64 " is not its project's generating version", v->n);
    for (size_t i = events_at >= 0 ? (size_t)events_at : d->n_reasons; i < d->n_reasons; i++)
        if (kp_ddb_reason_failed(d, i)) {
            e->again = e->events_first = 1; /* an id stored already: events_append first, then the end */
            return kp_err_set(err, KP_ECONFLICT, "some events are stored already");
        }
    return kp_err_set(err, KP_ENOTFOUND, "user not found");
}

/* One attempt: c decided from its read, then ONE TransactWriteItems (version, project, user counter,
 * c's items, the events). */
static kp_status ending_attempt(kp_store *s, ending *e, kp_balance *out, kp_err *err)
{
    kp_ddb *d = kp_ddb_of(s);
    const kp_version *v = e->v;
    kp_balance b = {0, 0, 0}, nb = {0, 0, 0};
    long res_i = -1, credit_at = -1, events_at = -1;
    json_t *credit = NULL, *items = NULL;
    e->again = 0;
    kp_status rc = e->c ? kp_ddb_credit_prepare(d, e->c, &e->st, e->now / 1000, &b, &nb, &credit, &res_i, err) : KP_OK;
    if (rc == KP_OK && !(items = json_pack("[o, o]", version_ending(d->table, v, e->now, e->settle),
                                           project_ending(d->table, v, e->now))))
        rc = oom(err);
    int merged = credit && strcmp(e->c->user_id, e->user_id) == 0;
    if (rc == KP_OK && (merged ? add_generating(json_array_get(credit, 0), -1)
                               : json_array_append_new(items, kp_ddb_generating_update(d->table, e->user_id, -1))))
        rc = oom(err);
    if (rc == KP_OK && credit) {
        credit_at = (long)json_array_size(items);
        if (json_array_extend(items, credit) != 0)
            rc = oom(err);
    }
    if (rc == KP_OK && e->events && (e->events_first || json_array_size(items) + e->n_events > TX_ITEMS_MAX)) {
        rc = kp_ddb_events_append(s, v->project_id, v->n, e->events, e->n_events, err);
        kp_event_free_array(e->events, e->n_events);
        e->events = NULL;
        e->n_events = 0;
    }
    if (rc == KP_OK && e->events)
        events_at = (long)json_array_size(items);
    for (size_t i = 0; rc == KP_OK && e->events && i < e->n_events; i++)
        if (json_array_append_new(items, event_put(d->table, v->project_id, v->n, &e->events[i])) != 0)
            rc = oom(err);
    if (rc == KP_OK)
        rc = kp_ddb_transact(d, items, err);
    if (rc == KP_ECONFLICT && items)
        rc = ending_refused(d, e, credit_at, res_i, events_at, err);
    if (out && e->c)
        *out = rc == KP_OK ? nb : b;
    json_decref(credit);
    json_decref(items);
    return rc;
}

/* version_finish (settle 0, c NULL) and version_end: 1 GetItem of the project (its user) or, with c, c's
 * BatchGetItem as well, then 1 TransactWriteItems; again when the balance moved (no expected_version) or
 * when some events were stored already (then stored first with events_append, idempotent). */
static kp_status end_version(kp_store *s, const kp_version *v, const kp_credit_change *c, int settle, kp_balance *out,
                             kp_err *err)
{
    kp_ddb *d = kp_ddb_of(s);
    char pk[KP_DDB_KEY_MAX];
    json_t *project = NULL;
    ending e = {.v = v, .c = c, .settle = settle, .reread = c != NULL};
    if (!v || !id_ok(v->project_id) || v->n < 1 || (v->status != KP_VER_READY && v->status != KP_VER_FAILED) ||
        !fits(v->error_code, sizeof v->error_code) || !fits(v->model, sizeof v->model) ||
        !fits(v->credit_reason, sizeof v->credit_reason))
        return kp_err_set(err, KP_EINVAL, "invalid version record");
    if (c && !kp_ddb_credit_change_valid(c))
        return kp_err_set(err, KP_EINVAL, "invalid credit change");
    e.now = v->updated_at > 0 ? v->updated_at : kp_time_now_ms();
    kp_status rc = events_parse(v->events_json, &e.events, &e.n_events, err);
    kp_ddb_key(pk, KP_DDB_PROJ, v->project_id);
    if (rc == KP_OK)
        rc = kp_ddb_get_item(d, pk, KP_DDB_SK_MAIN, &project, err);
    if (rc == KP_OK && !project)
        rc = kp_err_set(err, KP_ENOTFOUND, "version not found");
    if (rc == KP_OK)
        kp_ddb_get_s(project, "user_id", e.user_id, sizeof e.user_id);
    json_decref(project);
    for (int attempt = 0; rc == KP_OK && attempt < END_ATTEMPTS; attempt++) {
        if (e.reread) {
            kp_ddb_credit_state_clear(&e.st);
            e.reread = 0;
            rc = kp_ddb_credit_read(d, c, &e.st, err);
        }
        if (rc == KP_OK)
            rc = ending_attempt(s, &e, out, err);
        if (rc != KP_ECONFLICT || !e.again)
            break;
        kp_err_clear(err);
        rc = KP_OK;
    }
    kp_ddb_credit_state_clear(&e.st);
    kp_event_free_array(e.events, e.n_events);
    return rc;
}

kp_status kp_ddb_version_finish(kp_store *s, const kp_version *v, kp_err *err)
{
    return end_version(s, v, NULL, 0, NULL, err);
}

kp_status kp_ddb_version_end(kp_store *s, const kp_version *v, const kp_credit_change *c, kp_balance *out, kp_err *err)
{
    return end_version(s, v, c, 1, out, err);
}

/* ---- admission ---- */

static kp_status rate_limited(int64_t running, kp_err *err)
{
    return kp_err_set(err, KP_ERATE, "%lld generation%s running already", (long long)running, running == 1 ? "" : "s");
}

static int admission_valid(const kp_admission *a)
{
    const kp_version *v = a ? a->version : NULL;
    if (!a || !id_ok(a->user_id) || !v || !fits(v->reservation_id, KP_ID_MAX) || !fits(a->owner, KP_ID_MAX))
        return 0;
    if (a->charge && (!kp_ddb_credit_change_valid(a->charge) || strcmp(a->charge->user_id, a->user_id) != 0))
        return 0;
    if (a->project)
        return id_ok(a->project->id) && strcmp(a->project->user_id, a->user_id) == 0 &&
               strlen(a->project->name) < sizeof a->project->name && (v->n == 0 || v->n == 1) &&
               (!v->project_id[0] || strcmp(v->project_id, a->project->id) == 0);
    return id_ok(v->project_id) && v->n >= 1;
}

/* A follow-up's project Update: version n is the next one, none generating, not being deleted, the user's. */
static json_t *project_next(const char *table, const kp_admission *a, int64_t now)
{
    const kp_version *v = a->version;
    return json_pack("{s:{s:s, s:o, s:s, s:s, s:{s:o, s:o, s:o, s:o, s:o, s:o}, s:s}}", "Update", "TableName", table,
                     "Key", kp_ddb_project_key(v->project_id), "UpdateExpression",
                     "SET latest_version = :n, gen_n = :n, updated_at = :t", "ConditionExpression",
                     "attribute_exists(PK) AND latest_version = :prev AND gen_n = :zero AND deleting = :no AND "
                     "user_id = :u",
                     "ExpressionAttributeValues", ":n", kp_ddb_n(v->n), ":t", kp_ddb_n(now), ":prev",
                     kp_ddb_n(v->n - 1), ":zero", kp_ddb_n(0), ":no", kp_ddb_bool(0), ":u", kp_ddb_s(a->user_id),
                     "ReturnValuesOnConditionCheckFailure", "ALL_OLD");
}

/* Why the admission's transaction was cancelled: item 0 the user, then the charge's items (its
 * reservation at res_i), the project at proj_i and the version after it. */
static kp_status admission_refused(kp_ddb *d, const kp_admission *a, long res_i, size_t proj_i, kp_err *err)
{
    if (kp_ddb_reason_failed(d, 0)) {
        json_t *old = kp_ddb_reason_item(d, 0);
        int64_t running = kp_ddb_get_n(old, "generating");
        if (!old)
            return kp_err_set(err, KP_ENOTFOUND, "user not found");
        if (a->max_generating >= 0 && running >= a->max_generating)
            return rate_limited(running, err);
        return kp_err_set(err, KP_ECONFLICT, "balance changed meanwhile");
    }
    if (a->charge && kp_ddb_reason_failed(d, 1))
        return kp_err_set(err, KP_EDUPLICATE, "idempotency key already used");
    if (res_i >= 0 && kp_ddb_reason_failed(d, (size_t)res_i))
        return kp_err_set(err, KP_ECONFLICT, "reservation %s is not in the expected state", a->charge->res_id);
    if (kp_ddb_reason_failed(d, proj_i) && a->project)
        return kp_err_set(err, KP_ECONFLICT, "project %s already exists", a->project->id);
    if (kp_ddb_reason_failed(d, proj_i)) {
        json_t *old = kp_ddb_reason_item(d, proj_i);
        char uid[KP_ID_MAX] = "";
        kp_ddb_get_s(old, "user_id", uid, sizeof uid);
        if (!old || kp_ddb_get_bool(old, "deleting") || strcmp(uid, a->user_id) != 0)
            return kp_err_set(err, KP_ENOTFOUND, "project not found");
        if (kp_ddb_get_n(old, "gen_n") != 0)
            return kp_err_set(err, KP_ECONFLICT, "version %" PRId64 " of this project is still generating",
                              kp_ddb_get_n(old, "gen_n"));
        return kp_err_set(err, KP_ECONFLICT, "version %" PRId64 " is not the next one (the latest is %" PRId64 ")",
                          a->version->n, kp_ddb_get_n(old, "latest_version"));
    }
    return kp_err_set(err, KP_ECONFLICT, "version %" PRId64 " already exists", a->version->n);
}

/* The charge decided from one consistent read (user, idempotency key, reservation): the limit first (as
 * SQLite counts first), then the credits. *items: the charge's items with the user's generating + 1 under
 * the limit merged into its balance update; the reservation the version names is written without GSI2
 * keys (it is not an orphan). */
static kp_status charge_items(kp_ddb *d, const kp_admission *a, kp_ddb_credit_state *st, int64_t now_ms, kp_balance *b,
                              kp_balance *nb, json_t **items, long *res_i, kp_err *err)
{
    const kp_credit_change *c = a->charge;
    kp_status rc = kp_ddb_credit_read(d, c, st, err);
    if (rc == KP_OK && !st->user)
        return kp_err_set(err, KP_ENOTFOUND, "user not found");
    if (rc != KP_OK)
        return rc;
    kp_ddb_balance_from(st->user, b);
    int64_t running = kp_ddb_get_n(st->user, "generating");
    if (a->max_generating >= 0 && running >= a->max_generating)
        return rate_limited(running, err);
    rc = kp_ddb_credit_prepare(d, c, st, now_ms / 1000, b, nb, items, res_i, err);
    if (rc == KP_OK &&
        (add_generating(json_array_get(*items, 0), 1) || add_limit(json_array_get(*items, 0), a->max_generating)))
        rc = oom(err);
    if (rc == KP_OK && *res_i >= 0 && strcmp(c->res_id, a->version->reservation_id) == 0) {
        json_t *item = json_object_get(json_object_get(json_array_get(*items, (size_t)*res_i), "Put"), "Item");
        json_object_del(item, "GSI2PK");
        json_object_del(item, "GSI2SK");
    }
    return rc;
}

/* A charge_rule's charge: decided on the balance read now (1 GetItem); the admission's conditional write
 * then returns KP_ECONFLICT if the balance moves before it (store.h). *out gets the balance read. */
static kp_status decide_charge(kp_store *s, const kp_admission *a, kp_credit_state *st, kp_credit_change *c, int *apply,
                               kp_err *err)
{
    kp_status rc = s->ops->balance_get(s, a->user_id, &st->balance, err);
    st->balance_found = rc == KP_OK;
    if (rc != KP_OK && rc != KP_ENOTFOUND)
        return rc;
    kp_err_clear(err);
    *apply = 0;
    return a->charge_rule(st, a->charge_arg, c, apply, err);
}

/* Charged: 1 consistent BatchGetItem + 1 TransactWriteItems; free: 1 TransactWriteItems. */
static kp_status admit_charged(kp_store *s, const kp_admission *a, kp_balance *out, kp_err *err)
{
    kp_ddb *d = kp_ddb_of(s);
    kp_ddb_credit_state st = {0};
    kp_balance b = {0, 0, 0}, nb = {0, 0, 0};
    json_t *items = NULL;
    long res_i = -1;
    if (!admission_valid(a))
        return kp_err_set(err, KP_EINVAL, "invalid admission");
    const kp_version *v = a->version;
    const kp_credit_change *c = a->charge;
    int64_t now_ms = kp_time_now_ms();
    const char *pid = a->project ? a->project->id : v->project_id;
    int64_t n = a->project ? 1 : v->n;
    kp_status rc = KP_OK;
    if (c) {
        rc = charge_items(d, a, &st, now_ms, &b, &nb, &items, &res_i, err);
    } else if (!(items = json_pack("[o]", kp_ddb_generating_update(d->table, a->user_id, 1))) ||
               add_limit(json_array_get(items, 0), a->max_generating)) {
        rc = oom(err);
    }
    size_t proj_i = json_array_size(items);
    if (rc == KP_OK) {
        int64_t created = a->project && a->project->created_at > 0 ? a->project->created_at : now_ms;
        int bad = a->project ? kp_ddb_put_new(items, d->table, kp_ddb_project_item(a->project, created))
                             : json_array_append_new(items, project_next(d->table, a, now_ms));
        bad = bad || kp_ddb_put_new(items, d->table,
                                    kp_ddb_version_item(pid, n, v, v->created_at > 0 ? v->created_at : now_ms,
                                                        a->owner ? a->owner : "", a->lease_until));
        if (!bad && v->reservation_id[0] && (!c || !c->res_id || strcmp(c->res_id, v->reservation_id) != 0))
            bad = json_array_append_new(items, kp_ddb_resref_put(d->table, v->reservation_id, pid, n));
        rc = bad ? oom(err) : kp_ddb_transact(d, items, err);
        if (rc == KP_ECONFLICT)
            rc = admission_refused(d, a, res_i, proj_i, err);
    }
    if (out && c && st.user)
        *out = rc == KP_OK ? nb : b;
    kp_ddb_credit_state_clear(&st);
    json_decref(items);
    return rc;
}

/* With a charge_rule, 1 GetItem more: the balance the rule decides on. A conflict (the balance moved
 * before the write, or the rows) comes back with *out as the rule read it, so kp_credits_admit can tell
 * a moved balance (read again) from the rows' conflict. */
kp_status kp_ddb_admit(kp_store *s, const kp_admission *a, kp_balance *out, kp_err *err)
{
    if (!a || a->charge || !a->charge_rule)
        return admit_charged(s, a, out, err);
    kp_admission decided = *a;
    kp_credit_state st = {0}; /* the change's strings may point into it */
    kp_credit_change charge;
    int apply = 0;
    kp_status rc = decide_charge(s, a, &st, &charge, &apply, err);
    if (rc == KP_OK) {
        decided.charge = apply ? &charge : NULL;
        decided.charge_rule = NULL;
        rc = admit_charged(s, &decided, out, err);
    }
    if (rc != KP_OK && out)
        *out = st.balance;
    return rc;
}

/* ---- leases ---- */

/* One lease: an UpdateItem of its lease_until and GSI2 sort key, conditional on the version generating,
 * owned by owner, its lease not run out. The item comes back (ReturnValues ALL_NEW: no extra capacity)
 * with its cancel_requested flag (version_request_cancel). */
static kp_status renew_one(kp_ddb *d, const char *owner, int64_t now_ms, int64_t until_ms, kp_lease *l, kp_err *err)
{
    char gsk[KP_DDB_KEY_MAX];
    l->held = 0;
    if (!id_ok(l->project_id) || l->n < 1)
        return KP_OK;
    kp_ddb_lease_sk(gsk, until_ms, l->project_id, l->n);
    json_t *req = json_pack(
        "{s:s, s:o, s:s, s:s, s:{s:s, s:s}, s:{s:o, s:o, s:o, s:o, s:o}}", "TableName", d->table, "Key",
        kp_ddb_version_key(l->project_id, l->n), "UpdateExpression", "SET lease_until = :until, GSI2SK = :gsk",
        "ConditionExpression", "#st = :gen AND #owner = :me AND lease_until >= :now", "ExpressionAttributeNames", "#st",
        "status", "#owner", "owner", "ExpressionAttributeValues", ":until", kp_ddb_n(until_ms), ":gsk", kp_ddb_s(gsk),
        ":gen", kp_ddb_n(KP_VER_GENERATING), ":me", kp_ddb_s(owner), ":now", kp_ddb_n(now_ms));
    json_t *out = NULL;
    l->cancel_requested = 0;
    if (req && json_object_set_new(req, "ReturnValues", json_string("ALL_NEW")) != 0) {
        json_decref(req);
        req = NULL;
    }
    kp_status rc = req ? kp_ddb_call(d, "UpdateItem", req, &out, err) : oom(err);
    json_decref(req);
    if (rc == KP_OK) {
        l->held = 1;
        l->cancel_requested = kp_ddb_get_n(json_object_get(out, "Attributes"), "cancel_requested") != 0;
    } else if (rc == KP_ECONFLICT) {
        kp_err_clear(err);
        rc = KP_OK;
    }
    json_decref(out);
    return rc;
}

/* 1 UpdateItem per lease. */
kp_status kp_ddb_leases_renew(kp_store *s, const char *owner, int64_t now_ms, int64_t until_ms, kp_lease *leases,
                              size_t n, kp_err *err)
{
    if (!id_ok(owner) || (n > 0 && !leases))
        return kp_err_set(err, KP_EINVAL, "invalid lease renewal");
    kp_status rc = KP_OK;
    for (size_t i = 0; i < n && rc == KP_OK; i++)
        rc = renew_one(kp_ddb_of(s), owner, now_ms, until_ms, &leases[i], err);
    return rc;
}

/* 1 UpdateItem: the owner, lease_until and GSI2 sort key, conditional as renew_one's on from_owner. */
kp_status kp_ddb_lease_transfer(kp_store *s, const char *project_id, int64_t n, const char *from_owner,
                                const char *to_owner, int64_t now_ms, int64_t until_ms, kp_err *err)
{
    kp_ddb *d = kp_ddb_of(s);
    char gsk[KP_DDB_KEY_MAX];
    if (!id_ok(project_id) || n < 1 || !id_ok(from_owner) || !id_ok(to_owner))
        return kp_err_set(err, KP_EINVAL, "invalid lease transfer");
    kp_ddb_lease_sk(gsk, until_ms, project_id, n);
    json_t *req = json_pack("{s:s, s:o, s:s, s:s, s:{s:s, s:s}, s:{s:o, s:o, s:o, s:o, s:o, s:o}}", "TableName",
                            d->table, "Key", kp_ddb_version_key(project_id, n), "UpdateExpression",
                            "SET #owner = :to, lease_until = :until, GSI2SK = :gsk", "ConditionExpression",
                            "#st = :gen AND #owner = :from AND lease_until >= :now", "ExpressionAttributeNames", "#st",
                            "status", "#owner", "owner", "ExpressionAttributeValues", ":to", kp_ddb_s(to_owner),
                            ":until", kp_ddb_n(until_ms), ":gsk", kp_ddb_s(gsk), ":gen", kp_ddb_n(KP_VER_GENERATING),
                            ":from", kp_ddb_s(from_owner), ":now", kp_ddb_n(now_ms));
    kp_status rc = req ? kp_ddb_call(d, "UpdateItem", req, NULL, err) : oom(err);
    json_decref(req);
    if (rc == KP_ECONFLICT)
        kp_err_set(err, KP_ECONFLICT, "version %lld of %s is not generating under a running lease of %s", (long long)n,
                   project_id, from_owner);
    return rc;
}

/* 1 UpdateItem: cancel_requested set, conditional on the version generating. */
kp_status kp_ddb_version_request_cancel(kp_store *s, const char *project_id, int64_t n, kp_err *err)
{
    kp_ddb *d = kp_ddb_of(s);
    if (!id_ok(project_id) || n < 1)
        return kp_err_set(err, KP_EINVAL, "invalid cancel request");
    json_t *req = json_pack("{s:s, s:o, s:s, s:s, s:{s:s}, s:{s:o, s:o}}", "TableName", d->table, "Key",
                            kp_ddb_version_key(project_id, n), "UpdateExpression", "SET cancel_requested = :one",
                            "ConditionExpression", "#st = :gen", "ExpressionAttributeNames", "#st", "status",
                            "ExpressionAttributeValues", ":one", kp_ddb_n(1), ":gen", kp_ddb_n(KP_VER_GENERATING));
    kp_status rc = req ? kp_ddb_call(d, "UpdateItem", req, NULL, err) : oom(err);
    json_decref(req);
    if (rc == KP_ECONFLICT)
        kp_err_set(err, KP_ECONFLICT, "version %lld of %s is not generating", (long long)n, project_id);
    return rc;
}
