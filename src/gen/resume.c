/*
 * resume.c - a dispatched generation run in this process (kp_gen_resume,
 * generator.h): admitted by another process (submit.c, with the lease held
 * by a name of that dispatch), handed over by its dispatcher (on AWS an
 * asynchronous invocation of generate-app, host/lambda/worker.h). Here the
 * lease is taken over with one conditional write, the prompt rebuilt from
 * the project's history exactly as submission built it (history.c), and
 * the generation run on the loop like any other while the caller waits.
 * Called on the caller's thread with its store.
 */
#include "gen/generator.h"

#include <stdio.h>
#include <string.h>

#include "core/id.h"
#include "core/log.h"
#include "gen/gen_internal.h"

const char *kp_gen_resume_outcome_name(kp_gen_resume_outcome o)
{
    switch (o) {
    case KP_GEN_RESUME_RAN: return "ran";
    case KP_GEN_RESUME_ENDED: return "ended";
    case KP_GEN_RESUME_NOT_OURS: return "not_ours";
    case KP_GEN_RESUME_NOT_FOUND: return "not_found";
    }
    return "unknown";
}

/* The version's status (and error code) as stored now into out; KP_ENOTFOUND when it is gone. */
static kp_status read_status(kp_store *s, const kp_gen_job *job, kp_gen_resumed *out, kp_err *err)
{
    kp_version v;
    kp_status rc = s->ops->version_get(s, job->project_id, job->version, &v, err);
    if (rc != KP_OK)
        return rc;
    out->status = v.status;
    gen_copy_str(out->error_code, sizeof out->error_code, v.status == KP_VER_FAILED ? v.error_code : "");
    kp_version_clear(&v);
    return KP_OK;
}

/* With the lease taken: the generation as submission made it (its user, prompt and the files it builds on). */
static generation *rebuild(kp_gen *g, kp_store *s, const kp_gen_job *job, const kp_version *v, int64_t deadline_ms,
                           kp_err *err)
{
    kp_project p;
    gen_history h;
    kp_prompt prompt;
    generation *gen = NULL;
    memset(&h, 0, sizeof h);
    memset(&prompt, 0, sizeof prompt);
    kp_status rc = s->ops->project_get(s, job->project_id, &p, err);
    if (rc == KP_OK)
        rc = gen_history_load(g, s, job->project_id, job->version, &h, err);
    if (rc == KP_OK)
        rc = kp_prompt_build(h.turns, h.nturns, h.files, h.nfiles, v->prompt ? v->prompt : "",
                             kp_apps_url_per_project(g->opt.cfg->apps_url), &prompt, err);
    if (rc == KP_OK) {
        kp_gen_request r = {.user_id = p.user_id, .project_id = p.id, .prompt = v->prompt, .deadline_ms = deadline_ms};
        gen = gen_generation_new(g, &r, job->project_id, job->version, v->reservation_id, h.latest_ready, &prompt, err);
    }
    kp_prompt_free(&prompt);
    gen_history_free(&h);
    return gen;
}

/* Takes the lease over from the dispatch; KP_ECONFLICT (outcome not_ours) when another process has it. */
static kp_status take_lease(kp_gen *g, kp_store *s, const kp_gen_job *job, kp_gen_resumed *out, kp_err *err)
{
    int64_t now = kp_time_now_ms();
    kp_status rc = s->ops->lease_transfer(s, job->project_id, job->version, job->owner, g->instance_id, now,
                                          now + g->lease_ms, err);
    if (rc == KP_ECONFLICT) {
        out->outcome = KP_GEN_RESUME_NOT_OURS;
        kp_log_json(KP_LOG_WARN, "a dispatched generation's lease ran out or was taken: not running it",
                    json_pack("{s:s,s:I,s:s,s:s}", "project_id", job->project_id, "version", (json_int_t)job->version,
                              "owner", job->owner, "error", err->msg));
    }
    return rc;
}

kp_status kp_gen_resume(kp_gen *g, kp_store *s, const kp_gen_job *job, int64_t deadline_ms, kp_gen_resumed *out,
                        kp_err *err)
{
    kp_version v;
    memset(out, 0, sizeof *out);
    memset(&v, 0, sizeof v);
    if (!job->project_id || !*job->project_id || job->version < 1 || !job->owner || !*job->owner)
        return kp_err_set(err, KP_EINVAL, "a generation job needs a project id, a version and an owner");
    if (!g->opt.llm)
        return kp_err_set(err, KP_EUNAVAILABLE, "%s",
                          g->opt.llm_missing ? g->opt.llm_missing : "no LLM provider is configured");
    kp_status rc = s->ops->version_get(s, job->project_id, job->version, &v, err);
    if (rc == KP_ENOTFOUND) {
        out->outcome = KP_GEN_RESUME_NOT_FOUND;
        return KP_OK;
    }
    if (rc != KP_OK)
        return rc;
    out->status = v.status;
    if (v.status != KP_VER_GENERATING) {
        out->outcome = KP_GEN_RESUME_ENDED;
        gen_copy_str(out->error_code, sizeof out->error_code, v.status == KP_VER_FAILED ? v.error_code : "");
        goto cleanup;
    }
    rc = take_lease(g, s, job, out, err);
    if (rc == KP_ECONFLICT) {
        kp_err ignored = {0};
        read_status(s, job, out, &ignored); /* as it is now, for the answer */
        rc = KP_OK;
        goto cleanup;
    }
    if (rc != KP_OK)
        goto cleanup;
    /* the lease is this process's: from here every failure ends the version, refunded */
    generation *gen = rebuild(g, s, job, &v, deadline_ms, err);
    if (!gen) {
        char message[sizeof err->msg + 64];
        snprintf(message, sizeof message, "the generation could not be resumed: %s", err->msg);
        gen_fail_unstarted(s, job->project_id, job->version, v.reservation_id, "not_started", message);
    } else if (gen_start_and_wait(g, gen) != KP_OK) {
        gen_fail_unstarted(s, job->project_id, job->version, v.reservation_id, "interrupted",
                           "the server is shutting down");
        gen_discard_unposted(gen);
    }
    kp_log_json(KP_LOG_INFO, "dispatched generation ended here",
                json_pack("{s:s,s:I,s:s}", "project_id", job->project_id, "version", (json_int_t)job->version,
                          "instance_id", g->instance_id));
    out->outcome = KP_GEN_RESUME_RAN;
    rc = read_status(s, job, out, err);
cleanup:
    kp_version_clear(&v);
    return rc;
}
