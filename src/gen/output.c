/*
 * output.c - a running generation's output, read back from its event log.
 *
 * The model's text is held once, in the delta events of the log (every
 * call's text, in turn, as the readers saw it) and the deltas not sent yet
 * (gen->pending); the generation keeps no second copy. The output the file
 * parser saw is that text with each continuation's cut applied: call i's
 * text up to where the parser was rewound (resumes[i], in the output's
 * coordinates), then the next call's. It is needed twice, rarely: for a
 * continuation's prompt (on the loop) and to publish the files (on a storage
 * thread, while the generation stores: the loop appends nothing to its log
 * until the result comes back).
 */
#include <jansson.h>
#include <string.h>

#include "core/jsonpick.h"
#include "gen/gen_internal.h"

/*
 * Appends the text of one delta event (data: {"text": "..."}); -1 if it cannot
 * be read. Read without a tree (core/jsonpick.h) unless jansson must judge:
 * publishing 8,000 versions at once reads back every one of their deltas.
 */
static int append_delta_text(kp_buf *out, const char *data, size_t len)
{
    kp_jsonpick_field f = {.path = {"text"}};
    int read = kp_jsonpick(data, len, &f, 1);
    int rc;
    if (read != 0) {
        rc = read > 0 && f.found ? kp_buf_append(out, f.value.data, f.value.len) : -1;
    } else {
        json_t *d = json_loadb(data, len, JSON_ALLOW_NUL, NULL);
        json_t *text = json_object_get(d, "text");
        rc = json_is_string(text) ? kp_buf_append(out, json_string_value(text), json_string_length(text)) : -1;
        json_decref(d);
    }
    kp_buf_free(&f.value);
    return rc;
}

/* Appends every call's text, as the delta events carry it, then the deltas not sent yet. */
static int text_all(const generation *gen, kp_buf *out)
{
    for (size_t i = 0; i < gen->nevents; i++) {
        const event_rec *e = &gen->events[i];
        if (e->type == EV_DELTA && append_delta_text(out, gen->log.data + e->data_off, e->data_len) != 0)
            return -1;
    }
    return kp_buf_append(out, gen->pending.data ? gen->pending.data : "", gen->pending.len);
}

int gen_output_build(const generation *gen, kp_buf *out, size_t *text_len)
{
    kp_buf all = KP_BUF_INIT;
    int rc = text_all(gen, &all);
    if (text_len)
        *text_len = all.len;
    size_t n = (size_t)(gen->continuations < MAX_CONTINUATIONS ? gen->continuations : MAX_CONTINUATIONS);
    size_t at = 0; /* where the current call's text begins in `all` */
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t keep = gen->resumes[i] - out->len; /* of call i's text, what the parser kept */
        if (gen->resumes[i] < out->len || gen->cuts[i] < at || keep > gen->cuts[i] - at || gen->cuts[i] > all.len)
            rc = -1;
        else
            rc = kp_buf_append(out, all.data ? all.data + at : "", keep);
        at = gen->cuts[i];
    }
    if (rc == 0)
        rc = kp_buf_append(out, all.data ? all.data + at : "", all.len - at);
    kp_buf_free(&all);
    return rc;
}
