/* store.c - helpers shared by every store backend (see store.h). */
#include "store/store.h"

#include <stdlib.h>

#include "core/buf.h"

#define EVENTS_PAGE 500

void kp_version_clear(kp_version *v)
{
    free(v->error_message);
    free(v->prompt);
    free(v->message);
    free(v->files_json);
    free(v->events_json);
    v->error_message = v->prompt = v->message = v->files_json = v->events_json = NULL;
}

void kp_version_free_array(kp_version *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        kp_version_clear(&v[i]);
    free(v);
}

void kp_event_free_array(kp_event *e, size_t n)
{
    for (size_t i = 0; e && i < n; i++)
        free(e[i].data);
    free(e);
}

kp_status kp_store_events_json(kp_store *s, const char *project_id, int64_t n, int64_t after_id, char **out,
                               kp_err *err)
{
    kp_buf b = KP_BUF_INIT;
    kp_status rc = KP_OK;
    size_t count = EVENTS_PAGE;
    int bad = kp_buf_puts(&b, "[");
    *out = NULL;
    while (rc == KP_OK && !bad && count == EVENTS_PAGE) {
        kp_event *page = NULL;
        rc = s->ops->events_list(s, project_id, n, after_id, EVENTS_PAGE, &page, &count, err);
        for (size_t i = 0; rc == KP_OK && i < count; i++) {
            bad |= kp_buf_printf(&b, "%s{\"id\":%lld,\"event\":\"%s\",\"data\":%s}", b.len > 1 ? "," : "",
                                 (long long)page[i].id, page[i].type, page[i].data);
            after_id = page[i].id;
        }
        kp_event_free_array(page, rc == KP_OK ? count : 0);
    }
    bad |= kp_buf_puts(&b, "]");
    if (rc == KP_OK && bad)
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    if (rc != KP_OK) {
        kp_buf_free(&b);
        return rc;
    }
    *out = kp_buf_steal(&b);
    return KP_OK;
}

const char *kp_store_missing_op(const kp_store_ops *ops)
{
    /* every op of store.h in its order: an op added there is added here */
#define KP_STORE_CHECK(op)                                                                                             \
    if (!ops->op)                                                                                                      \
    return #op
    KP_STORE_CHECK(user_create);
    KP_STORE_CHECK(user_get);
    KP_STORE_CHECK(user_create_credited);
    KP_STORE_CHECK(user_get_by_email);
    KP_STORE_CHECK(user_get_by_sub);
    KP_STORE_CHECK(user_set_admin);
    KP_STORE_CHECK(user_set_plan);
    KP_STORE_CHECK(user_set_email_verified);
    KP_STORE_CHECK(verification_create);
    KP_STORE_CHECK(verification_consume);
    KP_STORE_CHECK(plan_get);
    KP_STORE_CHECK(plan_list);
    KP_STORE_CHECK(plan_put);
    KP_STORE_CHECK(balance_get);
    KP_STORE_CHECK(account_get);
    KP_STORE_CHECK(credits_apply);
    KP_STORE_CHECK(reservation_get);
    KP_STORE_CHECK(credits_decide);
    KP_STORE_CHECK(ledger_list);
    KP_STORE_CHECK(ledger_sum);
    KP_STORE_CHECK(credits_apply_many);
    KP_STORE_CHECK(users_bonus_page);
    KP_STORE_CHECK(bonus_page_grant);
    KP_STORE_CHECK(project_create);
    KP_STORE_CHECK(project_get);
    KP_STORE_CHECK(project_list);
    KP_STORE_CHECK(project_delete);
    KP_STORE_CHECK(project_mark_deleting);
    KP_STORE_CHECK(version_create);
    KP_STORE_CHECK(version_get);
    KP_STORE_CHECK(version_list);
    KP_STORE_CHECK(version_finish);
    KP_STORE_CHECK(version_set_settled);
    KP_STORE_CHECK(version_end);
    KP_STORE_CHECK(versions_generating_count);
    KP_STORE_CHECK(versions_unsettled);
    KP_STORE_CHECK(versions_expired);
    KP_STORE_CHECK(leases_renew);
    KP_STORE_CHECK(lease_transfer);
    KP_STORE_CHECK(version_request_cancel);
    KP_STORE_CHECK(events_append);
    KP_STORE_CHECK(events_append_many);
    KP_STORE_CHECK(events_list);
    KP_STORE_CHECK(events_last_id);
    KP_STORE_CHECK(admit);
    KP_STORE_CHECK(reservations_orphaned);
    KP_STORE_CHECK(billing_customer_get);
    KP_STORE_CHECK(billing_customer_find);
    KP_STORE_CHECK(subscription_get);
    KP_STORE_CHECK(billing_apply);
    KP_STORE_CHECK(snapshot_begin);
    KP_STORE_CHECK(snapshot_end);
    KP_STORE_CHECK(ping);
    KP_STORE_CHECK(close);
#undef KP_STORE_CHECK
    return "";
}

void kp_store_snapshot_begin(kp_store *s)
{
    if (s && s->ops->snapshot_begin)
        s->ops->snapshot_begin(s);
}

void kp_store_snapshot_end(kp_store *s)
{
    if (s && s->ops->snapshot_end)
        s->ops->snapshot_end(s);
}
