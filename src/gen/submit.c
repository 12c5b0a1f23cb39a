/*
 * submit.c - submitting a generation, on the caller's (HTTP) thread:
 * the checks, the history a follow-up builds on, the prompt and its size,
 * the atomic admission (credits, concurrency, rows), then the hand-over of
 * the new generation to the loop (run.c), or to the dispatcher when one is
 * set and the request is not streamed (kp_gen_options.dispatch: it then runs
 * in another process, resume.c). The history comes from history.c.
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
                       const char *owner, char res_id[KP_ID_MAX], kp_gen_result *res, kp_err *err)
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
                          .owner = owner,
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

void gen_fail_unstarted(kp_store *s, const char *project_id, int64_t n, const char *res_id, const char *code,
                        const char *message)
{
    kp_err err = {0};
    kp_version v;
    memset(&v, 0, sizeof v);
    gen_copy_str(v.project_id, sizeof v.project_id, project_id);
    v.n = n;
    v.status = KP_VER_FAILED;
    gen_copy_str(v.error_code, sizeof v.error_code, code);
    v.error_message = (char *)message;
    v.updated_at = kp_time_now_ms();
    kp_failed_generation failed = {.res_id = res_id, .code = code};
    if (kp_credits_end_failed(s, &gen_fallback_policy, &failed, &v, NULL, NULL, NULL, &err) != KP_OK)
        kp_log_json(KP_LOG_ERROR, "cannot fail an unstarted version",
                    json_pack("{s:s,s:I,s:s}", "project_id", project_id, "version", (json_int_t)n, "error", err.msg));
}

void gen_discard_unposted(generation *gen)
{
    kp_fileblocks_free(gen->parser);
    kp_prompt_free(&gen->prompt);
    free(gen->prev_files_json);
    free(gen);
}

/* Hands an admitted generation to the dispatcher (kp_gen_options.dispatch); when it refuses, the
 * version fails and is refunded, and the caller gets a 503 naming it. */
static kp_status dispatch(kp_gen *g, kp_store *s, const char *owner, const char *res_id, kp_gen_result *res,
                          kp_err *err)
{
    kp_gen_job job = {.project_id = res->project_id, .version = res->version, .owner = owner};
    kp_err why = {0};
    if (g->opt.dispatch(g->opt.dispatch_ud, &job, &why) == KP_OK)
        return KP_OK;
    char message[sizeof why.msg + 64];
    snprintf(message, sizeof message, "the generation could not be started: %s", why.msg);
    gen_fail_unstarted(s, res->project_id, res->version, res_id, "not_started", message);
    kp_log_json(KP_LOG_ERROR, "cannot dispatch a generation",
                json_pack("{s:s,s:I,s:s}", "project_id", res->project_id, "version", (json_int_t)res->version, "error",
                          why.msg));
    return fail_with(res, "unavailable", err, KP_EUNAVAILABLE,
                     "version %lld could not be started and was refunded, nothing charged; try again (%s)",
                     (long long)res->version, why.msg);
}

kp_status kp_gen_submit(kp_gen *g, kp_store *s, const kp_gen_request *r, kp_gen_result *res, kp_err *err)
{
    gen_history h;
    kp_prompt prompt;
    kp_project p;
    char res_id[KP_ID_MAX] = "", owner[KP_ID_MAX];
    int dispatched = g->opt.dispatch && !r->streamed;
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
        if (rc == KP_OK) {
            rc = gen_history_load(g, s, p.id, 0, &h, err);
            if (rc == KP_ECONFLICT)
                res->error_code = "generation_in_progress";
        }
        if (rc != KP_OK)
            goto cleanup;
        n = p.latest_version + 1;
        gen_copy_str(res->project_id, sizeof res->project_id, p.id);
    }
    rc = kp_prompt_build(h.turns, h.nturns, h.files, h.nfiles, r->prompt, kp_apps_url_per_project(g->opt.cfg->apps_url),
                         &prompt, err);
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
    /* a dispatched generation's lease is held by a name of this dispatch alone, until its runner takes it */
    if (dispatched)
        kp_id_new("dsp", owner, sizeof owner);
    else
        gen_copy_str(owner, sizeof owner, g->instance_id);
    rc = admit(g, s, r, follow_up ? &p : NULL, n, owner, res_id, res, err);
    if (rc != KP_OK)
        goto cleanup;
    res->version = n;
    if (dispatched) {
        rc = dispatch(g, s, owner, res_id, res, err);
        if (rc == KP_OK)
            kp_log_json(KP_LOG_INFO, "generation dispatched",
                        json_pack("{s:s,s:I,s:s,s:s}", "project_id", res->project_id, "version", (json_int_t)n,
                                  "user_id", r->user_id, "owner", owner));
        goto cleanup;
    }
    generation *gen = gen_generation_new(g, r, res->project_id, n, res_id, h.latest_ready, &prompt, err);
    if (!gen) {
        gen_fail_unstarted(s, res->project_id, n, res_id, "interrupted", "the server is out of memory");
        rc = KP_ENOMEM;
        goto cleanup;
    }
    if (kp_loop_post(g->opt.loop, gen_task_start, gen) != 0) {
        gen_fail_unstarted(s, res->project_id, n, res_id, "interrupted", "the server is shutting down");
        gen_discard_unposted(gen);
        rc = fail_with(res, "unavailable", err, KP_EUNAVAILABLE, "the server is shutting down");
        goto cleanup;
    }
    kp_log_json(KP_LOG_INFO, "generation started",
                json_pack("{s:s,s:I,s:s,s:I}", "project_id", res->project_id, "version", (json_int_t)n, "user_id",
                          r->user_id, "estimated_input_tokens", (json_int_t)tokens));
cleanup:
    kp_prompt_free(&prompt);
    gen_history_free(&h);
    return rc;
}
