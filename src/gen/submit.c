/*
 * submit.c - submitting a generation, on the caller's (HTTP) thread:
 * the checks, the history a follow-up builds on, the prompt and its size,
 * the atomic admission (credits, concurrency, rows), then the hand-over of
 * the new generation to the loop (run.c).
 */
#include "gen/generator.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/id.h"
#include "core/log.h"
#include "core/loop.h"
#include "gen/gen_internal.h"

/* ---- submission (HTTP thread) ---- */

static kp_status fail_with(kp_gen_result *res, const char *code, kp_err *err, kp_status st, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static kp_status fail_with(kp_gen_result *res, const char *code, kp_err *err, kp_status st, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    res->error_code = code;
    return kp_err_set(err, st, "%s", msg);
}

/* What a follow-up builds on: the earlier ready versions and the latest ready one's files. */
typedef struct history {
    kp_version *versions;
    size_t nversions;
    kp_prompt_turn *turns;
    size_t nturns;
    json_t *manifest; /* the latest ready version's files_json (owns the paths) */
    kp_prompt_file *files;
    kp_buf *contents; /* contents[i] backs files[i] */
    size_t nfiles;
    const kp_version *latest_ready;
} history;

static void history_free(history *h)
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

static kp_status load_files(kp_gen *g, const char *project_id, history *h, kp_err *err)
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

static kp_status load_history(kp_gen *g, kp_store *s, const kp_project *p, history *h, kp_gen_result *res, kp_err *err)
{
    kp_status rc = s->ops->version_list(s, p->id, &h->versions, &h->nversions, err);
    if (rc != KP_OK)
        return rc;
    h->turns = calloc(h->nversions + 1, sizeof *h->turns);
    if (!h->turns)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    for (size_t i = 0; i < h->nversions; i++) {
        const kp_version *v = &h->versions[i];
        if (v->status == KP_VER_GENERATING)
            return fail_with(res, "generation_in_progress", err, KP_ECONFLICT,
                             "version %lld of this project is still generating", (long long)v->n);
        if (v->status != KP_VER_READY)
            continue;
        h->turns[h->nturns].prompt = v->prompt;
        h->turns[h->nturns].message = v->message;
        h->nturns++;
        h->latest_ready = v;
    }
    return h->latest_ready ? load_files(g, p->id, h, err) : KP_OK;
}

static int is_stopping(kp_gen *g)
{
    pthread_mutex_lock(&g->mu);
    int stopping = g->stopping;
    pthread_mutex_unlock(&g->mu);
    return stopping;
}

/* Admits the generation in one transaction (domain/credits.h
 * kp_credits_admit): the plan's limit of generations at a time, the
 * reservation, and the rows (a new project with version 1, or version n of
 * p). A refusal or a failure leaves nothing behind. */
static kp_status admit(kp_gen *g, kp_store *s, const kp_gen_request *r, const kp_project *p, int64_t n,
                       char res_id[KP_ID_MAX], kp_gen_result *res, kp_err *err)
{
    const kp_plan *plan = r->plan;
    kp_version v;
    kp_project np;
    int64_t now = kp_time_now_ms();
    memset(&v, 0, sizeof v);
    memset(&np, 0, sizeof np);
    res_id[0] = '\0';
    if (g->opt.cfg->generation_cost > 0)
        kp_id_new("res", res_id, KP_ID_MAX);
    v.n = n;
    v.status = KP_VER_GENERATING;
    gen_copy_str(v.reservation_id, sizeof v.reservation_id, res_id);
    v.prompt = (char *)r->prompt;
    v.created_at = v.updated_at = now;
    if (p) {
        gen_copy_str(v.project_id, sizeof v.project_id, p->id);
    } else {
        kp_id_new_at("prj", np.id, sizeof np.id, &now); /* created_at: the time in the id */
        v.created_at = v.updated_at = now;
        gen_copy_str(np.user_id, sizeof np.user_id, r->user_id);
        if (r->name && *r->name)
            gen_copy_str(np.name, sizeof np.name, r->name);
        else
            kp_prompt_default_name(r->prompt, np.name, sizeof np.name);
        np.latest_version = 1;
        np.created_at = np.updated_at = now;
        gen_copy_str(v.project_id, sizeof v.project_id, np.id);
        gen_copy_str(res->project_id, sizeof res->project_id, np.id);
    }
    kp_admit_request a = {.user_id = r->user_id,
                          .res_id = res_id,
                          .amount = g->opt.cfg->generation_cost,
                          .max_generating = plan->max_concurrent_generations,
                          .project = p ? NULL : &np,
                          .version = &v,
                          .owner = g->instance_id,
                          .lease_until = gen_lease_until(g)};
    kp_status rc = kp_credits_admit(s, &a, &res->balance, err);
    if (rc == KP_ERATE)
        rc = fail_with(res, "too_many_generations", err, KP_ERATE,
                       "your plan (%s) allows %lld generation%s at a time; wait for one to finish", plan->name,
                       (long long)plan->max_concurrent_generations, plan->max_concurrent_generations == 1 ? "" : "s");
    else if (rc == KP_ECREDITS)
        res->error_code = "insufficient_credits";
    else if (rc == KP_ECONFLICT)
        res->error_code = "generation_in_progress";
    else if (rc == KP_ENOTFOUND)
        rc = fail_with(res, "not_found", err, KP_ENOTFOUND, "no such project");
    if (rc != KP_OK)
        res_id[0] = '\0';
    return rc;
}

/* When the loop refuses the generation (stopping): fail the fresh version here. */
static void fail_unstarted(kp_store *s, generation *gen)
{
    kp_err err = {0};
    kp_version v;
    memset(&v, 0, sizeof v);
    gen_copy_str(v.project_id, sizeof v.project_id, gen->project_id);
    v.n = gen->n;
    v.status = KP_VER_FAILED;
    gen_copy_str(v.error_code, sizeof v.error_code, "interrupted");
    v.error_message = "the server is shutting down";
    v.updated_at = kp_time_now_ms();
    kp_failed_generation failed = {.res_id = gen->reservation_id, .code = "interrupted"};
    if (kp_credits_end_failed(s, &gen_fallback_policy, &failed, &v, NULL, NULL, NULL, &err) != KP_OK)
        kp_log_json(
            KP_LOG_ERROR, "cannot fail an unstarted version",
            json_pack("{s:s,s:I,s:s}", "project_id", gen->project_id, "version", (json_int_t)gen->n, "error", err.msg));
}

kp_status kp_gen_submit(kp_gen *g, kp_store *s, const kp_gen_request *r, kp_gen_result *res, kp_err *err)
{
    history h;
    kp_prompt prompt;
    kp_project p;
    char res_id[KP_ID_MAX] = "";
    int follow_up = r->project_id && *r->project_id;
    int64_t n = 1;
    memset(res, 0, sizeof *res);
    memset(&h, 0, sizeof h);
    memset(&prompt, 0, sizeof prompt);
    res->error_code = "";

    if (!g->opt.llm)
        return fail_with(res, "llm_not_configured", err, KP_EUNAVAILABLE, "%s",
                         g->opt.llm_missing ? g->opt.llm_missing
                                            : "no LLM provider is configured: set ANTHROPIC_API_KEY");
    if (is_stopping(g))
        return fail_with(res, "unavailable", err, KP_EUNAVAILABLE, "the server is shutting down");
    if (gen_timeout_refuses(g, r, res, err))
        return KP_EUNAVAILABLE;
    kp_status rc = KP_OK;
    if (follow_up) {
        rc = s->ops->project_get(s, r->project_id, &p, err);
        if (rc == KP_ENOTFOUND || (rc == KP_OK && strcmp(p.user_id, r->user_id) != 0)) {
            rc = fail_with(res, "not_found", err, KP_ENOTFOUND, "no such project");
            goto cleanup;
        }
        if (rc == KP_OK)
            rc = load_history(g, s, &p, &h, res, err);
        if (rc != KP_OK)
            goto cleanup;
        n = p.latest_version + 1;
        gen_copy_str(res->project_id, sizeof res->project_id, p.id);
    }
    rc = kp_prompt_build(h.turns, h.nturns, h.files, h.nfiles, r->prompt, &prompt, err);
    if (rc != KP_OK)
        goto cleanup;
    int64_t tokens = kp_prompt_estimate_tokens(&prompt);
    if (!kp_prompt_fits(tokens, g->opt.cfg->max_tokens, g->opt.cfg->context_window)) {
        rc = fail_with(res, "context_too_large", err, KP_EINVAL,
                       "the request (about %lld tokens with the app's files and the conversation) plus %ld tokens "
                       "for the reply does not fit the model's context window of %ld tokens",
                       (long long)tokens, g->opt.cfg->max_tokens, g->opt.cfg->context_window);
        goto cleanup;
    }
    rc = admit(g, s, r, follow_up ? &p : NULL, n, res_id, res, err);
    if (rc != KP_OK)
        goto cleanup;
    res->version = n;
    generation *gen = gen_generation_new(g, r, res->project_id, n, res_id, h.latest_ready, &prompt, err);
    if (!gen) {
        generation tmp;
        memset(&tmp, 0, sizeof tmp);
        gen_copy_str(tmp.project_id, sizeof tmp.project_id, res->project_id);
        gen_copy_str(tmp.reservation_id, sizeof tmp.reservation_id, res_id);
        tmp.n = n;
        fail_unstarted(s, &tmp);
        rc = KP_ENOMEM;
        goto cleanup;
    }
    if (kp_loop_post(g->opt.loop, gen_task_start, gen) != 0) {
        fail_unstarted(s, gen);
        kp_fileblocks_free(gen->parser);
        kp_prompt_free(&gen->prompt);
        free(gen->prev_files_json);
        free(gen);
        rc = fail_with(res, "unavailable", err, KP_EUNAVAILABLE, "the server is shutting down");
        goto cleanup;
    }
    kp_log_json(KP_LOG_INFO, "generation started",
                json_pack("{s:s,s:I,s:s,s:I}", "project_id", res->project_id, "version", (json_int_t)n, "user_id",
                          r->user_id, "estimated_input_tokens", (json_int_t)tokens));
cleanup:
    kp_prompt_free(&prompt);
    history_free(&h);
    return rc;
}
