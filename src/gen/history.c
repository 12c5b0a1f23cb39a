/*
 * history.c - what a version builds on: the project's earlier ready versions
 * (their prompts and messages, the conversation) and the latest ready one's
 * files, read from the store and the blob store. Submission (submit.c) reads
 * it to build and size the prompt; a dispatched generation resumed in
 * another process (resume.c) reads it again to rebuild the same prompt.
 * Runs on the caller's thread with the caller's store.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/gen_internal.h"

void gen_history_free(gen_history *h)
{
    for (size_t i = 0; i < h->nfiles; i++)
        kp_buf_free(&h->contents[i]);
    free(h->contents);
    free(h->files);
    free(h->turns);
    json_decref(h->manifest);
    kp_version_free_array(h->versions, h->nversions);
    memset(h, 0, sizeof *h);
}

static kp_status load_files(kp_gen *g, const char *project_id, gen_history *h, kp_err *err)
{
    const kp_version *v = h->latest_ready;
    h->manifest = json_loads(v->files_json ? v->files_json : "[]", 0, NULL);
    size_t n = json_is_array(h->manifest) ? json_array_size(h->manifest) : 0;
    h->files = calloc(n + 1, sizeof *h->files);
    h->contents = calloc(n + 1, sizeof *h->contents);
    if (!h->files || !h->contents)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *path = json_string_value(json_object_get(json_array_get(h->manifest, i), "path"));
        char key[KP_BLOB_KEY_MAX + 1];
        if (!path)
            continue;
        snprintf(key, sizeof key, "apps/%s/v%lld/%s", project_id, (long long)v->n, path);
        kp_status rc = g->opt.blob->ops->get(g->opt.blob, key, &h->contents[h->nfiles], NULL, err);
        if (rc != KP_OK)
            return rc;
        h->files[h->nfiles].path = path;
        h->files[h->nfiles].content = h->contents[h->nfiles].data ? h->contents[h->nfiles].data : "";
        h->files[h->nfiles].len = h->contents[h->nfiles].len;
        h->nfiles++;
    }
    return KP_OK;
}

kp_status gen_history_load(kp_gen *g, kp_store *s, const char *project_id, int64_t before_n, gen_history *h,
                           kp_err *err)
{
    kp_status rc = s->ops->version_list(s, project_id, &h->versions, &h->nversions, err);
    if (rc != KP_OK)
        return rc;
    h->turns = calloc(h->nversions + 1, sizeof *h->turns);
    if (!h->turns)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    for (size_t i = 0; i < h->nversions; i++) {
        const kp_version *v = &h->versions[i];
        if (before_n > 0 && v->n >= before_n)
            continue; /* this version and later ones are not its history */
        if (v->status == KP_VER_GENERATING)
            return kp_err_set(err, KP_ECONFLICT, "version %lld of this project is still generating", (long long)v->n);
        if (v->status != KP_VER_READY)
            continue;
        h->turns[h->nturns].prompt = v->prompt;
        h->turns[h->nturns].message = v->message;
        h->nturns++;
        h->latest_ready = v;
    }
    return h->latest_ready ? load_files(g, project_id, h, err) : KP_OK;
}
