/*
 * worker.h - generate-app's generations on AWS, where a process is frozen
 * between invocations: a generation whose request is not streamed is not run
 * in the invocation that admitted it (its response ends that invocation)
 * but in an asynchronous invocation of the same function, the worker
 * invocation (docs/ARCHITECTURE.md, "Lambda host").
 *
 *   dispatcher  set as generate-app's kp_gen_options.dispatch: after the
 *               admission, Invoke (aws/aws_lambda.h, InvocationType Event)
 *               of AWS_LAMBDA_FUNCTION_NAME (which Lambda sets) with the
 *               worker event; its failure fails the version, refunded, and
 *               answers 503.
 *   worker      the worker event, which is not an API Gateway event:
 *                 {"koumpa": "generation", "project_id": "prj_...",
 *                  "version": 2, "owner": "dsp_..."}
 *               (owner: the name the admission leased the version to).
 *               kp_gen_resume takes the lease over and runs the generation
 *               here; the invocation answers once it has ended:
 *                 {"project_id", "version", "outcome": "ran" | "ended" |
 *                  "not_ours" | "not_found", "status": "ready" | "failed" |
 *                  "generating" | "none", "error_code" (failed only)}
 *               A job delivered again (Lambda delivers events at least
 *               once) or arriving after its lease ran out does nothing.
 *
 * Ownership: the dispatcher owns its Lambda client.
 */
#ifndef KP_LAMBDA_WORKER_H
#define KP_LAMBDA_WORKER_H

#include <jansson.h>
#include <stdint.h>

#include "core/err.h"
#include "gen/generator.h"
#include "host/lambda/lambda_host.h"

#define KP_LAMBDA_WORKER_KIND "generation" /* the worker event's "koumpa" member */

typedef struct kp_lambda_dispatcher kp_lambda_dispatcher;

/* A dispatcher for this function. What it lacks (AWS_LAMBDA_FUNCTION_NAME, a region) is not an error
 * here: each dispatch then fails saying so. KP_ENOMEM only. */
kp_status kp_lambda_dispatcher_new(kp_lambda_dispatcher **out, kp_err *err);
void kp_lambda_dispatcher_free(kp_lambda_dispatcher *d);

/* kp_gen_dispatch_fn: ud is the dispatcher. Sends the worker event of job. */
kp_status kp_lambda_dispatch(void *ud, const kp_gen_job *job, kp_err *err);

/* The worker event of job, a new JSON string (free()), or NULL when out of memory. */
char *kp_lambda_worker_event(const kp_gen_job *job);

/* Whether doc is a worker event. */
int kp_lambda_is_worker_event(const json_t *doc);

/* Handles a worker event (generate-app only): resumes the generation, waits for its end, answers. */
void kp_lambda_worker_handle(kp_lambda_host *h, const json_t *doc, int64_t deadline_ms, kp_lambda_result *out);

#endif
