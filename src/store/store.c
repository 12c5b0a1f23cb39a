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
