/*
 * ddb_bonus.c - the DynamoDB backend's daily bonus ops (store.h "the daily
 * bonus"): users_bonus_page walks the user items with a parallel Scan
 * (Segment/TotalSegments, a filter keeping SK "A" under "USER#"), its page
 * token the segment's LastEvaluatedKey as base64url JSON (opaque to the
 * caller); credits_apply_many applies each change as credits_apply does,
 * one TransactWriteItems each (docs/ARCHITECTURE.md "DynamoDB data model");
 * bonus_page_grant is the two in turn, with the domain's rule between them.
 */
#include "store/dynamodb/ddb_bonus.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "store/dynamodb/ddb_internal.h"
#include "store/dynamodb/ddb_items.h"

#define TOKEN_VARIANT sodium_base64_VARIANT_URLSAFE_NO_PADDING

/* A change's own outcome (results[i]), as against a failure of the store. */
static int change_outcome(kp_status rc)
{
    return rc == KP_OK || rc == KP_EDUPLICATE || rc == KP_ECONFLICT || rc == KP_ECREDITS || rc == KP_ENOTFOUND ||
           rc == KP_EINVAL;
}

kp_status kp_ddb_credits_apply_many(kp_store *s, const kp_credit_change *c, size_t n, kp_status *results, kp_err *err)
{
    if (n == 0)
        return KP_OK;
    if (!c || !results)
        return kp_err_set(err, KP_EINVAL, "invalid credit changes");
    for (size_t i = 0; i < n; i++) {
        kp_err one = {0};
        kp_status rc = s->ops->credits_apply(s, &c[i], NULL, &one);
        if (!change_outcome(rc)) {
            *err = one;
            return rc;
        }
        results[i] = rc;
    }
    return KP_OK;
}

/* The Scan's ExclusiveStartKey from a page token ("" or NULL: none); KP_EINVAL when it is not ours. */
static kp_status token_decode(const char *token, json_t **key, kp_err *err)
{
    unsigned char bin[KP_PAGE_TOKEN_MAX];
    size_t len = 0;
    *key = NULL;
    if (!token || !*token)
        return KP_OK;
    if (sodium_base642bin(bin, sizeof bin - 1, token, strlen(token), NULL, &len, NULL, TOKEN_VARIANT) != 0)
        return kp_err_set(err, KP_EINVAL, "invalid page token");
    *key = json_loadb((const char *)bin, len, 0, NULL);
    if (!json_is_object(*key) || !json_is_object(json_object_get(*key, "PK"))) {
        json_decref(*key);
        *key = NULL;
        return kp_err_set(err, KP_EINVAL, "invalid page token");
    }
    return KP_OK;
}

static kp_status token_encode(const json_t *key, char next[KP_PAGE_TOKEN_MAX], kp_err *err)
{
    char *text = json_dumps(key, JSON_COMPACT | JSON_SORT_KEYS);
    kp_status rc = KP_OK;
    if (!text)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    size_t len = strlen(text);
    if (sodium_base64_ENCODED_LEN(len, TOKEN_VARIANT) > KP_PAGE_TOKEN_MAX)
        rc = kp_err_set(err, KP_EINVAL, "page token too long");
    else
        sodium_bin2base64(next, KP_PAGE_TOKEN_MAX, (const unsigned char *)text, len, TOKEN_VARIANT);
    free(text);
    return rc;
}

/* The plans' daily bonus, for the page's candidates (1 Query: plans are few). */
static kp_status page_bonuses(kp_store *s, kp_bonus_candidate *v, size_t n, json_t *plan_ids, kp_err *err)
{
    kp_plan *plans = NULL;
    size_t np = 0;
    if (n == 0)
        return KP_OK;
    kp_status rc = s->ops->plan_list(s, 0, &plans, &np, err);
    for (size_t i = 0; rc == KP_OK && i < n; i++) {
        const char *pid = json_string_value(json_array_get(plan_ids, i));
        for (size_t j = 0; pid && j < np; j++)
            if (strcmp(plans[j].id, pid) == 0)
                v[i].daily_bonus = plans[j].daily_bonus;
    }
    free(plans);
    return rc;
}

static kp_status page_collect(const json_t *items, kp_bonus_candidate **out, size_t *n, json_t *plan_ids, kp_err *err)
{
    size_t cap = json_array_size(items), i;
    json_t *it;
    *out = calloc(cap ? cap : 1, sizeof **out);
    if (!*out)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    json_array_foreach(items, i, it)
    {
        kp_user u = {0};
        kp_bonus_candidate *c = &(*out)[(*n)++];
        kp_ddb_user_from(it, &u);
        kp_ddb_balance_from(it, &c->balance);
        memcpy(c->user_id, u.id, sizeof c->user_id);
        c->email_verified = u.email_verified;
        c->verification_required = u.verification_required;
        if (json_array_append_new(plan_ids, json_string(u.plan_id)) != 0)
            return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    return KP_OK;
}

kp_status kp_ddb_users_bonus_page(kp_store *s, const char *token, unsigned segment, unsigned total_segments,
                                  size_t limit, kp_bonus_candidate **out, size_t *n, char next[KP_PAGE_TOKEN_MAX],
                                  kp_err *err)
{
    kp_ddb *d = kp_ddb_of(s);
    json_t *start = NULL, *req = NULL, *resp = NULL, *plan_ids = NULL;
    *out = NULL;
    *n = 0;
    next[0] = '\0';
    if (total_segments == 0 || segment >= total_segments || limit == 0 || limit > 1000000)
        return kp_err_set(err, KP_EINVAL, "invalid page (segment %u of %u, limit %zu)", segment, total_segments, limit);
    kp_status rc = token_decode(token, &start, err);
    if (rc != KP_OK)
        return rc;
    req = json_pack("{s:s, s:s, s:{s:o, s:o}, s:b, s:I, s:I, s:I}", "TableName", d->table, "FilterExpression",
                    "SK = :a AND begins_with(PK, :u)", "ExpressionAttributeValues", ":a", kp_ddb_s(KP_DDB_SK_MAIN),
                    ":u", kp_ddb_s(KP_DDB_USER), "ConsistentRead", 1, "Segment", (json_int_t)segment, "TotalSegments",
                    (json_int_t)total_segments, "Limit", (json_int_t)limit);
    plan_ids = json_array();
    if (!req || !plan_ids || (start && json_object_set(req, "ExclusiveStartKey", start) != 0)) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kp_ddb_call(d, "Scan", req, &resp, err);
    if (rc == KP_OK)
        rc = page_collect(json_object_get(resp, "Items"), out, n, plan_ids, err);
    if (rc == KP_OK)
        rc = page_bonuses(s, *out, *n, plan_ids, err);
    json_t *last = json_object_get(resp, "LastEvaluatedKey");
    if (rc == KP_OK && json_object_size(last) > 0)
        rc = token_encode(last, next, err);
cleanup:
    if (rc != KP_OK) {
        free(*out);
        *out = NULL;
        *n = 0;
        next[0] = '\0';
    }
    json_decref(start);
    json_decref(req);
    json_decref(resp);
    json_decref(plan_ids);
    return rc;
}

/* The rule's changes for the page's users into c (keys: n of KP_IDEM_MAX bytes); which user each is for into
 * user_of; their count into *m. */
static void page_changes(const kp_bonus_page *p, kp_bonus_rule_fn rule, void *arg, kp_credit_change *c, char *keys,
                         size_t *user_of, size_t *m)
{
    *m = 0;
    for (size_t i = 0; i < p->n; i++) {
        p->results[i] = KP_OK;
        if (rule(&p->users[i], arg, keys + *m * KP_IDEM_MAX, &c[*m])) {
            if (c[*m].res_id || !c[*m].user_id || strcmp(c[*m].user_id, p->users[i].user_id) != 0)
                p->results[i] = KP_EINVAL; /* not a change for this user alone */
            else
                user_of[(*m)++] = i;
        }
    }
}

kp_status kp_ddb_bonus_page_grant(kp_store *s, const char *token, unsigned segment, unsigned total_segments,
                                  size_t limit, kp_bonus_rule_fn rule, void *arg, kp_bonus_page *out,
                                  char next[KP_PAGE_TOKEN_MAX], kp_err *err)
{
    kp_credit_change *c = NULL;
    kp_status *results = NULL;
    size_t *user_of = NULL, m = 0;
    char *keys = NULL;
    *out = (kp_bonus_page){0};
    next[0] = '\0';
    if (!rule)
        return kp_err_set(err, KP_EINVAL, "no bonus rule");
    kp_status rc = kp_ddb_users_bonus_page(s, token, segment, total_segments, limit, &out->users, &out->n, next, err);
    if (rc != KP_OK || out->n == 0)
        return rc;
    out->results = malloc(out->n * sizeof *out->results);
    c = calloc(out->n, sizeof *c);
    keys = calloc(out->n, KP_IDEM_MAX);
    results = calloc(out->n, sizeof *results);
    user_of = calloc(out->n, sizeof *user_of);
    if (!out->results || !c || !keys || !results || !user_of) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    page_changes(out, rule, arg, c, keys, user_of, &m);
    rc = kp_ddb_credits_apply_many(s, c, m, results, err);
    for (size_t j = 0; j < m && rc == KP_OK; j++) {
        out->results[user_of[j]] = results[j];
        out->granted += results[j] == KP_OK;
    }
cleanup:
    if (rc != KP_OK) {
        free(out->users);
        free(out->results);
        *out = (kp_bonus_page){0};
        next[0] = '\0';
    }
    free(c);
    free(keys);
    free(results);
    free(user_of);
    return rc;
}
