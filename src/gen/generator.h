/*
 * generator.h - the generation service: turns a prompt into a stored,
 * published version of a project, streaming its progress as Server-Sent
 * Events, and charges for it exactly once.
 *
 * Threads. Every generation runs on one kp_loop thread (core/loop.h), with
 * the LLM provider's transfers: no thread per generation. HTTP threads call
 * kp_gen_submit() (validation, then the credit reservation and the database
 * rows in one transaction, on the caller's own store handle), which posts the
 * start to the loop; subscribing SSE readers and cancelling are posts too.
 * The slow work that ends a generation (writing its files, finishing the
 * version, committing or refunding the credits) runs on a small storage pool
 * (gen/storage.h, KOUMPA_STORAGE_THREADS) with handles of its own, so a slow
 * disk or a database lock never stalls the loop that streams every generation.
 *
 * Life of a version: generating (credits reserved) -> the model's output is
 * parsed as it streams (gen/fileblocks.h); on success the files are written to
 * the blob store under "apps/{project_id}/v{n}/{path}" (unchanged files of
 * the previous ready version copied over, deletions applied), then the version
 * row becomes ready, then the reservation is committed, then the version is
 * marked settled. On any failure the row becomes failed (error code
 * "invalid_output", "too_long", "canceled", "interrupted", "timed_out", a
 * provider error code...) and its reservation is refunded or charged by the
 * credit policy (domain/credits.h kp_credits_failure_outcome), settled in the
 * same transaction.
 * Time limit (gen/timeout.c): a generation runs at most until the earlier of
 * its start plus KOUMPA_GENERATION_TIMEOUT_S and the request's deadline_ms
 * (a Lambda invocation's) less KOUMPA_GENERATION_SETTLE_MS, kept for its
 * settling (files, version row, credit). Reaching it cancels the provider
 * call (a continuation included) and fails the version "timed_out",
 * refunded; a generation already publishing or failing is left to end. A
 * deadline leaving less than KP_GEN_MIN_RUN_MS is refused at submission.
 * A crash between these steps is repaired at start-up by kp_gen_recover(), so
 * every reserved credit ends committed with a ready version or refunded.
 *
 * Events (one sequence per version, ids 1, 2, 3...): project {project_id,
 * version}, delta {text}, file {path, bytes}, done {version, url, files,
 * usage, credits_left} or error {code, message, refunded, refund_reason or
 * charge_reason, credits_refunded}. They are
 * kept in memory while the version generates and persisted with it when it
 * ends, so a reader can replay them after the last id it saw (replays of
 * ended versions: gen/replay.h).
 *
 * Ownership: kp_gen_new() borrows everything in its options (they must outlive
 * the service); kp_gen_free() releases the service after kp_gen_shutdown().
 */
#ifndef KP_GENERATOR_H
#define KP_GENERATOR_H

#include <stdint.h>

#include "api/http.h"
#include "blob/blob.h"
#include "core/apps_url.h"
#include "core/config.h"
#include "core/err.h"
#include "llm/llm.h"
#include "store/store.h"

typedef struct kp_loop kp_loop;
typedef struct kp_metrics kp_metrics;
typedef struct kp_gen kp_gen;

#define KP_GEN_KEEPALIVE_MS 15000 /* SSE keep-alive comment interval */
#define KP_GEN_MIN_RUN_MS 1000    /* the least time to run a submission must leave before its deadline */

/*
 * A generation admitted here and started elsewhere (a dispatched one): what the
 * dispatcher carries to the process that runs it (kp_gen_resume). owner is the
 * lease's owner at admission: a name of this dispatch alone ("dsp_..."), which
 * the runner takes the lease from (store.h lease_transfer), so that the same
 * job delivered twice runs once.
 */
typedef struct kp_gen_job {
    const char *project_id;
    int64_t version;
    const char *owner;
} kp_gen_job;

/* Starts job in another process; KP_OK once it is handed over (not run). On
 * failure err says why; the version is then failed and refunded. */
typedef kp_status (*kp_gen_dispatch_fn)(void *ud, const kp_gen_job *job, kp_err *err);

typedef struct kp_gen_options {
    const kp_config *cfg;    /* generation_cost, max_tokens, context_window, apps_url */
    kp_loop *loop;           /* the loop that runs every generation */
    kp_llm *llm;             /* NULL: generation unavailable (503 llm_not_configured) */
    const char *llm_missing; /* with llm NULL: why, naming the variable to set */
    kp_blob *blob;           /* where apps are stored */
    kp_metrics *metrics;     /* may be NULL */
    /* Opens the loop's own database handle (called once, on the calling thread). */
    kp_status (*open_store)(void *ud, kp_store **out, kp_err *err);
    void *open_store_ud;
    long keepalive_ms;   /* 0: KP_GEN_KEEPALIVE_MS */
    long delta_flush_ms; /* how long small deltas are held to be coalesced; 0: 100 ms */
    /* NULL: every generation runs on this process's loop (the self-hosted server). Set (the Lambda host's
     * generate-app): a generation whose request is not streamed (kp_gen_request.streamed) is admitted here,
     * then handed to dispatch instead of the loop (it runs where kp_gen_resume is called). */
    kp_gen_dispatch_fn dispatch;
    void *dispatch_ud;
} kp_gen_options;

kp_status kp_gen_new(const kp_gen_options *opt, kp_gen **out, kp_err *err);

/*
 * Stops the service: every generation still running is cancelled, failed with
 * "interrupted" and refunded; its readers get the error event and are ended.
 * Later submissions fail with KP_EUNAVAILABLE. Blocks until done. Call from a
 * thread that is not the loop's, before stopping the loop.
 */
void kp_gen_shutdown(kp_gen *g);
/* Frees the service (after kp_gen_shutdown). g may be NULL. */
void kp_gen_free(kp_gen *g);

/* The blob store apps are served from. */
kp_blob *kp_gen_blob(kp_gen *g);
/* The configuration the service runs with. */
const kp_config *kp_gen_config(kp_gen *g);

/*
 * Repairs what a stopped instance left behind; safe beside live instances
 * and beside other recoverers (serve runs it at start-up and every lease;
 * `koumpa daily-bonus` runs it too). Versions generating whose lease ran out
 * (store.h kp_lease; rows without an owner included) are failed
 * ("interrupted") and refunded by one conditional write: when another
 * instance wrote the version's end first, this one moves on, so each is
 * ended and refunded once; its partial blobs are removed only by the
 * recoverer that ended it. A version whose lease still runs is never
 * touched. Ready versions not settled (older builds) are committed, failed
 * ones refunded, then marked settled (idempotent). Reservations that no
 * version refers to (older builds) are refunded. *repaired (may be NULL)
 * counts the versions this call ended or settled.
 */
kp_status kp_gen_recover(kp_store *s, kp_blob *blob, size_t *repaired, kp_err *err);

/* This process's instance id ("ins_..."), the owner on the leases of the versions it generates. */
const char *kp_gen_instance_id(kp_gen *g);

/* A request for a new version: project_id NULL/"" creates a project (name: "" for the default). */
typedef struct kp_gen_request {
    const char *user_id;
    const kp_plan *plan; /* the user's plan, as read when authenticating */
    const char *project_id;
    const char *name;
    const char *prompt;
    /* epoch ms when the invocation running the generation ends (kp_req.deadline_ms: the
     * Lambda invocation's deadline); the generation stops KOUMPA_GENERATION_SETTLE_MS
     * before it, to settle in time (gen/timeout.c); 0: none */
    int64_t deadline_ms;
    /* 1: the caller follows the generation's events from this process (SSE), so it runs here even when
     * a dispatcher is set; 0: it is dispatched when one is set (kp_gen_options.dispatch) */
    int streamed;
} kp_gen_request;

typedef struct kp_gen_result {
    char project_id[KP_ID_MAX];
    int64_t version;
    /* on failure: the API error code ("llm_not_configured", "context_too_large",
     * "too_many_generations", "insufficient_credits", "generation_in_progress",
     * "not_found", "deadline_too_close"...), or "" for internal errors (see err) */
    const char *error_code;
    kp_balance balance; /* with insufficient_credits: the balance */
} kp_gen_result;

/*
 * Starts a generation (called on an HTTP thread with its store): checks the
 * provider is configured and that the request fits the model's context window;
 * then, in ONE store transaction, checks the plan's max_concurrent_generations,
 * reserves the generation cost and creates the project and/or version (status
 * generating); then posts the generation to the loop. Nothing is charged when
 * it is refused (KP_EUNAVAILABLE "deadline_too_close" when r->deadline_ms
 * leaves less than KP_GEN_MIN_RUN_MS to run); if posting fails, the version
 * fails and is refunded.
 */
kp_status kp_gen_submit(kp_gen *g, kp_store *s, const kp_gen_request *r, kp_gen_result *res, kp_err *err);

/* What kp_gen_resume did. */
typedef enum kp_gen_resume_outcome {
    KP_GEN_RESUME_RAN = 0,   /* it ran here and ended (version_status: ready or failed) */
    KP_GEN_RESUME_ENDED,     /* the version had ended already (a job delivered again): nothing done */
    KP_GEN_RESUME_NOT_OURS,  /* its lease had run out or was taken by another process: nothing done */
    KP_GEN_RESUME_NOT_FOUND, /* no such version (its project was deleted): nothing done */
} kp_gen_resume_outcome;

typedef struct kp_gen_resumed {
    kp_gen_resume_outcome outcome;
    kp_version_status status; /* the version's status when kp_gen_resume returned */
    char error_code[64];      /* a failed version's error code, else "" */
} kp_gen_resumed;

/*
 * Runs a dispatched generation (kp_gen_job) in this process and waits until
 * it has ended (ready or failed, stored and settled). Called on the caller's
 * thread with its store: reads the version (must still be generating), takes
 * its lease over from job->owner with one conditional write (store.h
 * lease_transfer: an expired or taken lease means another process owns it),
 * rebuilds the prompt from the project's history as submission did, then
 * runs it on the loop (renewing its lease, like any other) and waits.
 * deadline_ms (epoch ms, 0: none) is the generation's kp_gen_request.deadline_ms.
 * A failure after the lease was taken fails the version and refunds it.
 * Errors: KP_EUNAVAILABLE (no provider, stopping), the store's.
 */
kp_status kp_gen_resume(kp_gen *g, kp_store *s, const kp_gen_job *job, int64_t deadline_ms, kp_gen_resumed *out,
                        kp_err *err);

/* "ran", "ended", "not_ours", "not_found". */
const char *kp_gen_resume_outcome_name(kp_gen_resume_outcome o);

/*
 * Cancels the generation of project_id's version n (when running): the
 * provider call is cancelled, the version fails with "canceled" and is
 * refunded or charged by the credit policy. Blocks until done. KP_ECONFLICT when that version is not
 * generating here.
 */
kp_status kp_gen_cancel(kp_gen *g, const char *project_id, int64_t n, kp_err *err);

#define KP_GEN_MAX_READERS 32 /* live readers per version when the configuration says 0 */

/*
 * A stream of version n's events with ids after after_id, following it live
 * until done or error (for a version that already ended: its persisted events,
 * then the end). A reader going away only unsubscribes. Each stream holds one
 * of the version's reader slots until released (cfg max_readers_per_generation,
 * KOUMPA_MAX_READERS_PER_GENERATION): KP_ERATE when none is left, KP_ENOMEM.
 * The host releases the stream (http.h).
 */
kp_status kp_gen_stream_open(kp_gen *g, const char *project_id, int64_t n, int64_t after_id, kp_stream **out,
                             kp_err *err);
/* kp_gen_stream_open without the reason: NULL when refused or out of memory. */
kp_stream *kp_gen_stream(kp_gen *g, const char *project_id, int64_t n, int64_t after_id);

/*
 * A replay of a version that has ended: its persisted events after after_id,
 * then the end, as a pulled stream that sends a piece at a time as the client
 * takes it, from a rendering shared by every reader of the version
 * (gen/replay.h). s: the caller's store, read when the version is not cached.
 * KP_ECONFLICT when the version is still generating (use kp_gen_stream_open),
 * KP_ENOTFOUND when it does not exist.
 */
kp_status kp_gen_replay(kp_gen *g, kp_store *s, const char *project_id, int64_t n, int64_t after_id, kp_stream **out,
                        kp_err *err);

/*
 * Appends the SSE frames of a persisted events_json with ids after after_id
 * to out. Returns 0, or -1 when events_json is not an event array.
 */
int kp_gen_replay_events(const char *events_json, int64_t after_id, kp_buf *out);

/*
 * The path segment that names a version on the apps origin: "@v{n}". An
 * app's own paths are [A-Za-z0-9._/-] (gen/fileblocks.h), so no app file or
 * folder (a "v2/" folder included) can look like one (core/apps_url.h).
 */
#define KP_GEN_VERSION_SEGMENT KP_APPS_URL_VERSION_SEGMENT

/* The public URL of a version into out: "{apps_url}/{project_id}/@v{n}/", or
 * on its own origin "https://prj-{id}.{domain}/@v{n}/" (core/apps_url.h). */
void kp_gen_version_url(const kp_config *cfg, const char *project_id, int64_t n, char *out, size_t len);

/* The Content-Type the apps origin serves a file with, by its extension
 * (application/octet-stream when unknown). */
const char *kp_gen_content_type(const char *path);

/* Generations running now (a snapshot, for tests and metrics). */
int64_t kp_gen_in_flight(kp_gen *g);

#endif
