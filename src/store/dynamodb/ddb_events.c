/*
 * ddb_events.c - the DynamoDB backend's event store (store.h kp_event):
 * one item per event, EVT#{project}#{n} / {id:012} (the zero-padded id
 * sorts as the number), holding its type and JSON text. events_append is
 * idempotent per id as the contract says ("left as it was"): up to 100
 * events in one TransactWriteItems of attribute_not_exists puts; when that
 * is cancelled because some ids are stored already (a retried batch), each
 * event is put on its own with the same condition and a failed condition is
 * skipped. events_list / events_last_id are one Query each.
 * docs/ARCHITECTURE.md "DynamoDB data model" gives the request cost.
 */
#include "store/dynamodb/ddb_events.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/dynamodb/ddb_internal.h"
#include "store/dynamodb/ddb_items.h"

#define EVENTS_PER_TX 100 /* TransactWriteItems' limit */

static int key_valid(const char *project_id, int64_t n)
{
    return project_id && *project_id && strlen(project_id) < KP_ID_MAX && n >= 1;
}

static int event_valid(const kp_event *e)
{
    return e->id >= 1 && e->type[0] && memchr(e->type, '\0', sizeof e->type) && e->data && e->data[0];
}

static void event_pk(char out[KP_DDB_KEY_MAX], const char *project_id, int64_t n)
{
    snprintf(out, KP_DDB_KEY_MAX, "EVT#%s#%" PRId64, project_id, n);
}

static void event_sk(char out[32], int64_t id)
{
    snprintf(out, 32, "%012" PRId64, id);
}

static json_t *event_item(const char *pk, const kp_event *e)
{
    char sk[32];
    event_sk(sk, e->id);
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "PK", kp_ddb_s(pk), "SK", kp_ddb_s(sk), "id", kp_ddb_n(e->id), "type",
                     kp_ddb_s(e->type), "data", kp_ddb_s(e->data));
}

/* One event on its own: a put unless its id is stored (then nothing). */
static kp_status put_one(kp_ddb *d, const char *pk, const kp_event *e, kp_err *err)
{
    json_t *req = json_pack("{s:s, s:o, s:s}", "TableName", d->table, "Item", event_item(pk, e), "ConditionExpression",
                            "attribute_not_exists(PK)");
    kp_status rc = req ? kp_ddb_call(d, "PutItem", req, NULL, err) : kp_err_set(err, KP_ENOMEM, "out of memory");
    json_decref(req);
    if (rc == KP_ECONFLICT) {
        kp_err_clear(err);
        rc = KP_OK;
    }
    return rc;
}

/* events[0..count) (count <= EVENTS_PER_TX) in one transaction, or one by one when some are stored. */
static kp_status append_group(kp_ddb *d, const char *pk, const kp_event *events, size_t count, kp_err *err)
{
    json_t *items = json_array();
    int bad = !items;
    for (size_t i = 0; !bad && i < count; i++)
        bad = kp_ddb_put_new(items, d->table, event_item(pk, &events[i]));
    kp_status rc = bad ? kp_err_set(err, KP_ENOMEM, "out of memory") : kp_ddb_transact(d, items, err);
    json_decref(items);
    for (size_t i = 0; rc == KP_ECONFLICT && i < count; i++)
        if (kp_ddb_reason_failed(d, i)) {
            kp_err_clear(err);
            rc = KP_OK; /* a retried batch: go one by one */
            for (size_t j = 0; rc == KP_OK && j < count; j++)
                rc = put_one(d, pk, &events[j], err);
        }
    return rc;
}

kp_status kp_ddb_events_append(kp_store *s, const char *project_id, int64_t n, const kp_event *events, size_t count,
                               kp_err *err)
{
    char pk[KP_DDB_KEY_MAX];
    if (!key_valid(project_id, n) || (count > 0 && !events))
        return kp_err_set(err, KP_EINVAL, "invalid events");
    for (size_t i = 0; i < count; i++)
        if (!event_valid(&events[i]))
            return kp_err_set(err, KP_EINVAL, "invalid event %zu", i);
    event_pk(pk, project_id, n);
    kp_status rc = KP_OK;
    for (size_t at = 0; rc == KP_OK && at < count; at += EVENTS_PER_TX)
        rc = append_group(kp_ddb_of(s), pk, events + at, count - at < EVENTS_PER_TX ? count - at : EVENTS_PER_TX, err);
    return rc;
}

/* A consistent Query of the version's events after after_id, in order (forward) or newest first. */
static kp_status events_query(kp_ddb *d, const char *project_id, int64_t n, int64_t after_id, size_t limit, int forward,
                              json_t **resp, kp_err *err)
{
    char pk[KP_DDB_KEY_MAX], sk[32];
    event_pk(pk, project_id, n);
    event_sk(sk, after_id > 0 ? after_id : 0);
    json_t *req = json_pack("{s:s, s:s, s:{s:o, s:o}, s:b, s:b, s:I}", "TableName", d->table, "KeyConditionExpression",
                            "PK = :pk AND SK > :after", "ExpressionAttributeValues", ":pk", kp_ddb_s(pk), ":after",
                            kp_ddb_s(sk), "ScanIndexForward", forward, "ConsistentRead", 1, "Limit", (json_int_t)limit);
    kp_status rc = req ? kp_ddb_call(d, "Query", req, resp, err) : kp_err_set(err, KP_ENOMEM, "out of memory");
    json_decref(req);
    return rc;
}

/* Appends the Items of one Query page to *out (grown to hold them); *last the last id read. */
static kp_status events_take_page(json_t *items, kp_event **out, size_t *count, int64_t *last, kp_err *err)
{
    size_t i;
    json_t *it;
    if (json_array_size(items) == 0)
        return KP_OK;
    kp_event *grown = realloc(*out, (*count + json_array_size(items)) * sizeof **out);
    if (!grown)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    *out = grown;
    json_array_foreach(items, i, it)
    {
        kp_event *e = &(*out)[*count];
        memset(e, 0, sizeof *e);
        e->id = kp_ddb_get_n(it, "id");
        kp_ddb_get_s(it, "type", e->type, sizeof e->type);
        const char *data = json_string_value(json_object_get(json_object_get(it, "data"), "S"));
        e->data = strdup(data ? data : "null");
        if (!e->data)
            return kp_err_set(err, KP_ENOMEM, "out of memory");
        (*count)++;
        *last = e->id;
    }
    return KP_OK;
}

/* Query pages until limit events or the end: DynamoDB ends a page at 1 MB of items (LastEvaluatedKey
 * set), and a short page must not read as the end of the version's events. The next page starts after
 * the last id read (the sort key is the event id). */
kp_status kp_ddb_events_append_many(kp_store *s, const kp_event_batch *batches, size_t n, kp_err *err)
{
    if (n > 0 && !batches)
        return kp_err_set(err, KP_EINVAL, "invalid events");
    for (size_t i = 0; i < n; i++) {
        if (!key_valid(batches[i].project_id, batches[i].n) || (batches[i].count > 0 && !batches[i].events))
            return kp_err_set(err, KP_EINVAL, "invalid events");
        for (size_t k = 0; k < batches[i].count; k++)
            if (!event_valid(&batches[i].events[k]))
                return kp_err_set(err, KP_EINVAL, "invalid event %zu of batch %zu", k, i);
    }
    kp_status rc = KP_OK;
    for (size_t i = 0; i < n && rc == KP_OK; i++)
        rc = kp_ddb_events_append(s, batches[i].project_id, batches[i].n, batches[i].events, batches[i].count, err);
    return rc;
}

kp_status kp_ddb_events_list(kp_store *s, const char *project_id, int64_t n, int64_t after_id, size_t limit,
                             kp_event **out, size_t *count, kp_err *err)
{
    *out = NULL;
    *count = 0;
    if (!key_valid(project_id, n))
        return kp_err_set(err, KP_EINVAL, "invalid version");
    if (limit > 10000)
        limit = 10000;
    kp_status rc = KP_OK;
    int64_t after = after_id;
    while (rc == KP_OK && *count < limit) {
        json_t *resp = NULL;
        size_t before = *count;
        rc = events_query(kp_ddb_of(s), project_id, n, after, limit - *count, 1, &resp, err);
        if (rc == KP_OK)
            rc = events_take_page(json_object_get(resp, "Items"), out, count, &after, err);
        int more = json_object_get(resp, "LastEvaluatedKey") != NULL && *count > before;
        json_decref(resp);
        if (!more)
            break;
    }
    if (rc != KP_OK) {
        kp_event_free_array(*out, *count);
        *out = NULL;
        *count = 0;
    }
    return rc;
}

kp_status kp_ddb_events_last_id(kp_store *s, const char *project_id, int64_t n, int64_t *last_id, kp_err *err)
{
    json_t *resp = NULL;
    *last_id = 0;
    if (!key_valid(project_id, n))
        return kp_err_set(err, KP_EINVAL, "invalid version");
    kp_status rc = events_query(kp_ddb_of(s), project_id, n, 0, 1, 0, &resp, err);
    json_t *first = json_array_get(json_object_get(resp, "Items"), 0);
    if (rc == KP_OK && first)
        *last_id = kp_ddb_get_n(first, "id");
    json_decref(resp);
    return rc;
}
