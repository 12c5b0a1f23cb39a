/*
 * worker.c - see worker.h.
 */
#include "host/lambda/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/aws_lambda.h"
#include "core/log.h"

struct kp_lambda_dispatcher {
    kp_aws_lambda *client; /* NULL: see missing */
    char *function;
    char missing[sizeof(((kp_err *)0)->msg) + 32]; /* why no dispatch can be made */
};

kp_status kp_lambda_dispatcher_new(kp_lambda_dispatcher **out, kp_err *err)
{
    kp_lambda_dispatcher *d = calloc(1, sizeof *d);
    const char *fn = getenv("AWS_LAMBDA_FUNCTION_NAME");
    *out = NULL;
    if (!d)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    if (!fn || !*fn) {
        snprintf(d->missing, sizeof d->missing, "AWS_LAMBDA_FUNCTION_NAME is not set (Lambda sets it)");
    } else if (!(d->function = strdup(fn))) {
        free(d);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    } else {
        kp_err why = {0};
        kp_status rc = kp_aws_lambda_new(NULL, &d->client, &why);
        if (rc == KP_ENOMEM) {
            kp_lambda_dispatcher_free(d);
            return kp_err_set(err, rc, "%s", why.msg);
        }
        if (rc != KP_OK)
            snprintf(d->missing, sizeof d->missing, "no Lambda client: %s", why.msg);
    }
    if (d->missing[0])
        kp_log_json(KP_LOG_WARN, "generations cannot be dispatched", json_pack("{s:s}", "error", d->missing));
    *out = d;
    return KP_OK;
}

void kp_lambda_dispatcher_free(kp_lambda_dispatcher *d)
{
    if (!d)
        return;
    kp_aws_lambda_free(d->client);
    free(d->function);
    free(d);
}

char *kp_lambda_worker_event(const kp_gen_job *job)
{
    json_t *ev = json_pack("{s:s,s:s,s:I,s:s}", "koumpa", KP_LAMBDA_WORKER_KIND, "project_id", job->project_id,
                           "version", (json_int_t)job->version, "owner", job->owner);
    char *text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    return text;
}

kp_status kp_lambda_dispatch(void *ud, const kp_gen_job *job, kp_err *err)
{
    kp_lambda_dispatcher *d = ud;
    if (!d->client)
        return kp_err_set(err, KP_EUNAVAILABLE, "%s", d->missing);
    char *event = kp_lambda_worker_event(job);
    if (!event)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_status rc = kp_aws_lambda_invoke_event(d->client, d->function, event, strlen(event), err);
    free(event);
    return rc;
}

int kp_lambda_is_worker_event(const json_t *doc)
{
    const char *kind = json_string_value(json_object_get(doc, "koumpa"));
    return kind && strcmp(kind, KP_LAMBDA_WORKER_KIND) == 0;
}

static void fail(kp_lambda_result *out, const char *type, const kp_err *err)
{
    out->payload = NULL;
    out->error_type = type;
    out->err = *err;
}

static const char *status_name(kp_version_status st)
{
    return st == KP_VER_READY ? "ready" : st == KP_VER_FAILED ? "failed" : "generating";
}

void kp_lambda_worker_handle(kp_lambda_host *h, const json_t *doc, int64_t deadline_ms, kp_lambda_result *out)
{
    kp_err err = {0};
    kp_gen_resumed res;
    json_t *version = json_object_get(doc, "version");
    kp_gen_job job = {.project_id = json_string_value(json_object_get(doc, "project_id")),
                      .version = json_is_integer(version) ? (int64_t)json_integer_value(version) : 0,
                      .owner = json_string_value(json_object_get(doc, "owner"))};
    kp_gen *g = h->ctx.app->gen;
    if (!g || strcmp(h->function, "generate-app") != 0) {
        kp_err_set(&err, KP_EINVAL, "the function %s does not run generations", h->function);
        fail(out, "Runtime.InvalidEvent", &err);
        return;
    }
    if (!job.project_id || !job.owner || job.version < 1) {
        kp_err_set(&err, KP_EINVAL, "the generation event needs project_id, version (>= 1) and owner");
        fail(out, "Runtime.InvalidEvent", &err);
        return;
    }
    kp_status rc = kp_gen_resume(g, h->ctx.store, &job, deadline_ms, &res, &err);
    if (rc != KP_OK) {
        fail(out, rc == KP_EINVAL ? "Runtime.InvalidEvent" : "Koumpa.GenerationNotRun", &err);
        return;
    }
    json_t *answer = json_pack("{s:s,s:I,s:s,s:s}", "project_id", job.project_id, "version", (json_int_t)job.version,
                               "outcome", kp_gen_resume_outcome_name(res.outcome), "status",
                               res.outcome == KP_GEN_RESUME_NOT_FOUND ? "none" : status_name(res.status));
    if (answer && res.error_code[0])
        json_object_set_new(answer, "error_code", json_string(res.error_code));
    kp_log_json(KP_LOG_INFO, "generation invocation", json_incref(answer));
    out->payload = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
    json_decref(answer);
    if (!out->payload) {
        kp_err_set(&err, KP_ENOMEM, "out of memory");
        fail(out, "Runtime.ResponseError", &err);
    }
}
