/*
 * run.c - the life of a generation on the loop thread: the
 * provider call and its callbacks, deltas batched for readers, files as they
 * complete, continuations, cancel, and the one ending of every generation
 * (published or failed, with its credit settled in the same transaction,
 * retried while the store refuses). See generator.c's top comment for the
 * threading and ownership rules.
 */
#include "gen/generator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/id.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "gen/gen_internal.h"
#include "gen/publish.h"

static int64_t elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Length of the longest prefix of s that does not end inside a UTF-8 sequence. */
static size_t utf8_whole_prefix(const char *s, size_t len)
{
    size_t i = len, back = 0;
    while (i > 0 && back < 4) {
        unsigned char c = (unsigned char)s[i - 1];
        if ((c & 0xC0) != 0x80) {
            size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
            return back + 1 >= need ? len : i - 1;
        }
        i--;
        back++;
    }
    return len;
}

/* A JSON string of text; invalid UTF-8 bytes (not expected from a model) become '?'. */
static json_t *text_json(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (j)
        return j;
    char *copy = malloc(len + 1);
    if (!copy)
        return NULL;
    size_t i = 0;
    while (i < len) {
        size_t n = 1;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            n = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
            if (n == 0 || i + n > len || kp_prompt_utf8_chars(s + i, n) != 1)
                n = 0;
        }
        if (n == 0) {
            copy[i++] = '?';
            continue;
        }
        memcpy(copy + i, s + i, n);
        i += n;
    }
    j = json_stringn(copy, len);
    free(copy);
    return j;
}

/* ---- deltas ---- */

static void fail_soon(generation *gen, const char *code, const char *message);

/* Sends the pending text as a delta event; -1 when out of memory (the log is the only copy of the text:
 * the generation must then fail). */
static int flush_deltas(generation *gen)
{
    if (gen->pending.len == 0)
        return 0; /* nothing pending (its data may still be NULL) */
    size_t n = utf8_whole_prefix(gen->pending.data, gen->pending.len);
    if (n == 0)
        return 0;
    json_t *text = text_json(gen->pending.data, n);
    if (!text || gen_emit(gen, EV_DELTA, json_pack("{s:o}", "text", text)) != 0)
        return -1;
    kp_buf_consume(&gen->pending, n);
    return 0;
}

/* flush_deltas inside a provider callback or a timer: a failure fails the generation right after. */
static void flush_deltas_or_fail(generation *gen)
{
    if (flush_deltas(gen) != 0)
        fail_soon(gen, "internal_error", "out of memory");
}

void gen_on_flush_timer(evutil_socket_t fd, short what, void *arg)
{
    generation *gen = arg;
    (void)fd;
    (void)what;
    gen->flush_armed = 0;
    flush_deltas_or_fail(gen);
}

static int add_delta(generation *gen, const char *text, size_t len)
{
    if (kp_buf_append(&gen->pending, text, len) != 0)
        return -1;
    if (gen->pending.len >= DELTA_FLUSH_BYTES)
        return flush_deltas(gen);
    if (!gen->flush_armed && gen->flush) {
        long ms = gen->g->opt.delta_flush_ms > 0 ? gen->g->opt.delta_flush_ms : DEFAULT_FLUSH_MS;
        struct timeval tv = gen_ms_to_tv(ms);
        if (evtimer_add(gen->flush, &tv) == 0)
            gen->flush_armed = 1;
    }
    return 0;
}

/* ---- life of a generation (loop thread) ---- */

void gen_sync_cmd_finish(sync_cmd *c, kp_status rc);

/* Runs work(store, arg) off the loop, then done(arg) on it. Once shutdown has
 * returned (the loop is being stopped), both run here and now. */
static void run_storage(kp_gen *g, void (*work)(kp_store *s, void *arg), void (*done)(void *arg), void *arg, int first)
{
    if (g->shut_done) {
        work(g->store, arg);
        done(arg);
        return;
    }
    (first ? kp_gen_storage_run_first : kp_gen_storage_run)(g->storage, g->store, work, done, arg);
}

void gen_run_storage(kp_gen *g, void (*work)(kp_store *s, void *arg), void (*done)(void *arg), void *arg)
{
    run_storage(g, work, done, arg, 0);
}

void gen_run_storage_first(kp_gen *g, void (*work)(kp_store *s, void *arg), void (*done)(void *arg), void *arg)
{
    run_storage(g, work, done, arg, 1);
}

/* A waiting shutdown returns once no generation and no replay is left. The
 * waiter may free g as soon as it is woken: g is not touched after. */
void gen_shutdown_maybe_done(kp_gen *g)
{
    if (g->shutdown_wait && !g->gens && g->replaying == 0 && g->appends == 0 && !gen_leases_busy(g)) {
        sync_cmd *wait = g->shutdown_wait;
        g->shutdown_wait = NULL;
        g->shut_done = 1;
        gen_sync_cmd_finish(wait, KP_OK);
    }
}

static void gen_destroy(generation *gen)
{
    kp_gen *g = gen->g;
    if (gen->serial) { /* on the table since gen_task_start */
        gen_table_remove(g, gen);
        atomic_fetch_sub(&g->in_flight, 1);
        kp_metrics_gauge_add(g->opt.metrics, METRIC_IN_FLIGHT, -1);
    }
    while (gen->subs) {
        subscriber *s = gen->subs;
        gen_sub_end(s);
        gen_sub_detach(s);
    }
    if (gen->call)
        g->opt.llm->ops->cancel(g->opt.llm, gen->call);
    if (gen->flush)
        event_free(gen->flush);
    gen_timeout_free(gen);
    gen_events_free(gen);
    kp_fileblocks_free(gen->parser);
    kp_prompt_free(&gen->prompt);
    free(gen->prev_files_json);
    kp_buf_free(&gen->pending);
    kp_buf_free(&gen->log);
    free(gen->events);
    if (gen->on_end)
        gen_sync_cmd_finish(gen->on_end, KP_OK);
    if (gen->waiter)
        gen_sync_cmd_finish(gen->waiter, KP_OK);
    free(gen);
    gen_shutdown_maybe_done(g);
}

/* Sends the terminal frame (already formatted) to every reader, ends them. */
static void gen_close_subscribers(generation *gen)
{
    while (gen->subs) {
        subscriber *s = gen->subs;
        gen_sub_end(s);
        gen_sub_detach(s);
    }
}

static void fill_result_fields(generation *gen, kp_version *v)
{
    size_t mlen = 0;
    const char *msg = gen->parser ? kp_fileblocks_message(gen->parser, &mlen) : NULL;
    memset(v, 0, sizeof *v);
    gen_copy_str(v->project_id, sizeof v->project_id, gen->project_id);
    v->n = gen->n;
    gen_copy_str(v->reservation_id, sizeof v->reservation_id, gen->reservation_id);
    v->message = msg ? strndup(msg, mlen) : NULL;
    gen_copy_str(v->model, sizeof v->model, gen->g->opt.llm ? gen->g->opt.llm->model : "");
    v->input_tokens = gen->usage.input_tokens;
    v->output_tokens = gen->usage.output_tokens;
    v->duration_ms = elapsed_ms(&gen->started);
    v->updated_at = kp_time_now_ms();
}

/* The policy for versions whose generation is not running here: they are
 * interrupted (always refunded) or were failed by an older build. */
const kp_refund_policy gen_fallback_policy = KP_REFUND_POLICY_DEFAULT;

/* The error event's data: what failed, and whether the credit came back and why. */
static json_t *error_event_data(const char *code, const char *message, const kp_credits_outcome *o, int64_t cost)
{
    json_t *data = json_pack("{s:s,s:s}", "code", code, "message", message);
    if (!data)
        return NULL;
    if (!o) { /* the outcome could not be recorded yet */
        json_object_set_new(data, "refunded", json_null());
        return data;
    }
    json_object_set_new(data, "refunded", json_boolean(o->refunded));
    json_object_set_new(data, o->refunded ? "refund_reason" : "charge_reason", json_string(o->reason));
    json_object_set_new(data, "credits_refunded", json_integer(o->refunded ? cost : 0));
    return data;
}

int gen_describe_failure(void *ud, const kp_credits_outcome *o, kp_version *v)
{
    failure_note *note = ud;
    json_decref(note->data);
    free(v->events_json);
    v->events_json = NULL;
    note->data = error_event_data(note->code, note->message, o, note->cost);
    char *text = note->data ? json_dumps(note->data, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (text)
        v->events_json = kp_publish_append_event(note->events, note->next_event_id, "error", text);
    free(text);
    return v->events_json ? 0 : -1;
}

/* A failure on its way to the store. */
typedef struct fail_job {
    generation *gen; /* touched on the loop only */
    kp_blob *blob;
    kp_refund_policy policy;
    kp_failed_generation failed; /* points into v */
    int64_t output_chars;
    kp_version v;      /* the failed row; its events are set when the outcome is known */
    char *events;      /* the events before the error event (owned) */
    failure_note note; /* note.data: the error event, sent once stored */
    kp_status rc;      /* of recording it; not KP_OK: retried on the loop (unended) */
} fail_job;

/*
 * A failed version whose ending (row, events, credit) could not be written,
 * e.g. the database was unavailable: nothing of it was (one transaction), so
 * it is retried on a timer on the loop, with backoff, until it is; the
 * user's slot frees without a restart. At shutdown what is left is tried once
 * more, then left to start-up recovery. Loop-only (rare: it uses the loop's
 * own handle rather than the storage pool).
 */
struct unended {
    unended *next;
    kp_version v; /* the failed row; owns its heap fields */
    char res_id[KP_ID_MAX];
    char user_id[KP_ID_MAX];
    char code[64];
    char message[512];
    int64_t output_chars;
    int64_t cost;
    char *events_before;   /* the events sent before the error, as persisted */
    int64_t next_event_id; /* the error event's id */
};

#define RETRY_FIRST_MS 200
#define RETRY_MAX_MS 30000

static void unended_free(unended *u)
{
    kp_version_clear(&u->v);
    free(u->events_before);
    free(u);
}

/* Tries to end every queued version once; returns how many are left. */
static int unended_retry_all(kp_gen *g)
{
    int left = 0;
    for (unended **pp = &g->unended; *pp;) {
        unended *u = *pp;
        kp_err err = {0};
        kp_failed_generation failed = {
            .user_id = u->user_id, .res_id = u->res_id, .code = u->code, .output_chars = u->output_chars};
        failure_note note = {.events = u->events_before,
                             .next_event_id = u->next_event_id,
                             .code = u->code,
                             .message = u->message,
                             .cost = u->cost};
        kp_status rc =
            kp_credits_end_failed(g->store, &g->policy, &failed, &u->v, gen_describe_failure, &note, NULL, &err);
        json_decref(note.data);
        if (rc == KP_OK || rc == KP_ENOTFOUND || rc == KP_ECONFLICT) {
            /* recorded now (or the version is gone / no longer generating: nothing to do) */
            kp_log_json(rc == KP_OK ? KP_LOG_INFO : KP_LOG_WARN, "recorded a failed version late",
                        json_pack("{s:s,s:I,s:s}", "project_id", u->v.project_id, "version", (json_int_t)u->v.n,
                                  "result", kp_status_name(rc)));
            *pp = u->next;
            unended_free(u);
            continue;
        }
        left++;
        pp = &u->next;
    }
    return left;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    kp_gen *g = arg;
    (void)fd;
    (void)what;
    if (unended_retry_all(g) == 0) {
        g->retry_ms = RETRY_FIRST_MS;
        return;
    }
    g->retry_ms = g->retry_ms * 2 < RETRY_MAX_MS ? g->retry_ms * 2 : RETRY_MAX_MS;
    struct timeval tv = gen_ms_to_tv(g->retry_ms);
    evtimer_add(g->retry_timer, &tv);
}

/* Queues the failed version of a fail job for a retry (its row's heap fields
 * and its events move to the queue). */
static void unended_add(kp_gen *g, fail_job *j)
{
    unended *u = calloc(1, sizeof *u);
    if (!u || (!g->retry_timer && !(g->retry_timer = evtimer_new(kp_loop_base(g->opt.loop), on_retry, g)))) {
        free(u);
        kp_log(KP_LOG_ERROR, "cannot queue %s v%lld for a retry: start-up recovery will end it", j->v.project_id,
               (long long)j->v.n);
        return;
    }
    gen_copy_str(u->res_id, sizeof u->res_id, j->v.reservation_id);
    gen_copy_str(u->user_id, sizeof u->user_id, j->failed.user_id ? j->failed.user_id : "");
    gen_copy_str(u->code, sizeof u->code, j->v.error_code);
    gen_copy_str(u->message, sizeof u->message, j->v.error_message ? j->v.error_message : "");
    u->output_chars = j->failed.output_chars;
    u->cost = j->note.cost;
    u->next_event_id = j->note.next_event_id;
    u->events_before = j->events;
    j->events = NULL;
    u->v = j->v;
    memset(&j->v, 0, sizeof j->v);
    u->next = g->unended;
    g->unended = u;
    if (!evtimer_pending(g->retry_timer, NULL)) {
        g->retry_ms = RETRY_FIRST_MS;
        struct timeval tv = gen_ms_to_tv(g->retry_ms);
        evtimer_add(g->retry_timer, &tv);
    }
}

void gen_unended_free_all(kp_gen *g)
{
    while (g->unended) {
        unended *u = g->unended;
        g->unended = u->next;
        unended_free(u);
    }
    if (g->retry_timer) {
        event_free(g->retry_timer);
        g->retry_timer = NULL;
    }
}

/* At shutdown: one last try, then the rest is start-up recovery's. */
void gen_unended_drop_all(kp_gen *g)
{
    if (g->unended && unended_retry_all(g) > 0)
        kp_log(KP_LOG_WARN, "failed versions left for start-up recovery");
    gen_unended_free_all(g);
}

/*
 * When another instance ended the version first (this one's lease was lost:
 * a recoverer failed it "interrupted"), nothing is written here: the readers
 * get the ending that won, read back. Returns 1 when the stored version is
 * failed (its blobs are then removed here too), 0 when it is not (its files
 * are not this instance's to remove) or cannot be read.
 */
static int ended_elsewhere(kp_store *s, fail_job *j, kp_credits_outcome *outcome)
{
    kp_err err = {0};
    kp_version stored;
    json_decref(j->note.data);
    j->note.data = error_event_data(j->note.code, j->note.message, NULL, 0); /* unknown until read */
    if (s->ops->version_get(s, j->v.project_id, j->v.n, &stored, &err) != KP_OK)
        return 0;
    int failed = stored.status == KP_VER_FAILED;
    kp_log_json(KP_LOG_WARN, "the version was ended by another instance",
                json_pack("{s:s,s:I,s:s}", "project_id", stored.project_id, "version", (json_int_t)stored.n,
                          "error_code", stored.error_code));
    if (failed) {
        kp_credits_outcome o = {.refunded = stored.refunded, .reason = stored.credit_reason};
        json_decref(j->note.data);
        j->note.data =
            error_event_data(stored.error_code, stored.error_message ? stored.error_message : "", &o, j->note.cost);
        outcome->refunded = o.refunded;
        outcome->reason = "";
    }
    kp_version_clear(&stored);
    return failed;
}

/* On a storage thread: the failed row and the credit's settlement (one
 * transaction), then the blobs removed. */
static void fail_work(kp_store *s, void *arg)
{
    fail_job *j = arg;
    kp_version *v = &j->v;
    kp_err err = {0};
    kp_credits_outcome outcome;
    kp_status rc = kp_credits_end_failed(s, &j->policy, &j->failed, v, gen_describe_failure, &j->note, &outcome, &err);
    if (rc == KP_ECONFLICT) {
        if (!ended_elsewhere(s, j, &outcome))
            return; /* not failed there: nothing of it is this instance's to remove */
        rc = KP_OK;
    }
    j->rc = rc;
    if (rc != KP_OK) {
        kp_log_json(
            KP_LOG_ERROR, "cannot record a failed version; retrying",
            json_pack("{s:s,s:I,s:s}", "project_id", v->project_id, "version", (json_int_t)v->n, "error", err.msg));
        json_decref(j->note.data);
        j->note.data = error_event_data(j->note.code, j->note.message, NULL, 0);
    }

    char prefix[KP_BLOB_KEY_MAX];
    kp_blob *blob = j->blob;
    snprintf(prefix, sizeof prefix, "apps/%s/v%lld/", v->project_id, (long long)v->n);
    if (blob->ops->delete_prefix(blob, prefix, &err) != KP_OK)
        kp_log(KP_LOG_WARN, "cannot remove the blobs of failed version %s", prefix);

    kp_log_json(KP_LOG_INFO, "generation failed",
                json_pack("{s:s,s:I,s:s,s:s,s:s}", "project_id", v->project_id, "version", (json_int_t)v->n, "code",
                          v->error_code, "message", v->error_message ? v->error_message : "", "credit",
                          rc != KP_OK        ? "unsettled"
                          : outcome.refunded ? "refunded"
                                             : "charged"));
}

/* Back on the loop: tells the readers, frees the generation. */
static void fail_finish(fail_job *j)
{
    generation *gen = j->gen;
    if (j->note.data)
        gen_emit(gen, EV_ERROR, j->note.data);
    j->note.data = NULL;
    if (j->rc != KP_OK)
        unended_add(gen->g, j); /* takes the row and the events */
    gen_close_subscribers(gen);
    gen_destroy(gen);
    kp_version_clear(&j->v);
    free(j->events);
}

static void fail_done(void *arg)
{
    fail_finish(arg);
    free(arg);
}

/*
 * Ends the generation as failed: cancels the provider call, then (on the
 * storage pool) records the version as failed with its events and settles
 * its credit per the policy (refunded or charged, domain/credits.h) in one
 * transaction, then tells the readers and frees it.
 */
void gen_fail(generation *gen, const char *code, const char *message)
{
    kp_gen *g = gen->g;
    fail_job local, *j = calloc(1, sizeof *j);
    if (gen->call) {
        g->opt.llm->ops->cancel(g->opt.llm, gen->call);
        gen->call = NULL;
    }
    gen->ending = 1;
    gen->storing = 1;
    flush_deltas(gen);
    if (!j) { /* out of memory: do it all here */
        memset(&local, 0, sizeof local);
        j = &local;
    }
    j->gen = gen;
    j->blob = g->opt.blob;
    j->policy = g->policy;
    fill_result_fields(gen, &j->v);
    j->v.status = KP_VER_FAILED;
    gen_copy_str(j->v.error_code, sizeof j->v.error_code, code);
    j->v.error_message = strdup(message);
    j->events = gen_events_json(gen, EV_ERROR, NULL);
    j->failed.user_id = gen->user_id;
    j->failed.res_id = j->v.reservation_id;
    j->failed.code = j->v.error_code;
    j->failed.output_chars = gen->output_chars;
    j->note.events = j->events;
    j->note.next_event_id = (int64_t)gen->nevents + 1;
    j->note.code = j->v.error_code;
    j->note.message = j->v.error_message ? j->v.error_message : "";
    j->note.cost = gen->cost;
    if (j == &local) {
        fail_work(g->store, j);
        fail_finish(j);
        return;
    }
    gen_run_storage(g, fail_work, fail_done, j);
}

/* A success on its way to the store. */
typedef struct publish_job {
    generation *gen;
    kp_publish pub;
} publish_job;

/* On a storage thread: the output read back from the log (output.c), then the files and rows. */
static void publish_work(kp_store *s, void *arg)
{
    publish_job *j = arg;
    kp_buf output = KP_BUF_INIT;
    if (gen_output_build(j->gen, &output, NULL) != 0) {
        j->pub.fail_code = "internal_error";
        j->pub.fail_message = "the model's output could not be read back";
    } else {
        j->pub.output = output.data ? output.data : "";
        j->pub.output_len = output.len;
        kp_publish_store(&j->pub, s);
    }
    j->pub.output = NULL;
    kp_buf_free(&output);
}

/* Back on the loop: the done event, or the failure storing ran into. */
static void publish_done(void *arg)
{
    publish_job *j = arg;
    generation *gen = j->gen;
    kp_gen *g = gen->g;
    gen->storing = 0;
    if (j->pub.fail_code) {
        gen_fail(gen, j->pub.fail_code, j->pub.fail_message);
    } else {
        if (j->pub.committed)
            kp_metrics_counter_add(g->opt.metrics, METRIC_SPENT, gen->cost);
        kp_log_json(KP_LOG_INFO, "generation done",
                    json_pack("{s:s,s:I,s:I,s:I,s:I}", "project_id", gen->project_id, "version", (json_int_t)gen->n,
                              "input_tokens", (json_int_t)gen->usage.input_tokens, "output_tokens",
                              (json_int_t)gen->usage.output_tokens, "continuations", (json_int_t)gen->continuations));
        gen_emit(gen, EV_DONE, j->pub.done);
        j->pub.done = NULL;
        gen_close_subscribers(gen);
        gen_destroy(gen);
    }
    kp_publish_clear(&j->pub);
    free(j);
}

/* Success: the app is checked here, then stored off the loop (gen/publish.h). */
static void gen_publish(generation *gen)
{
    kp_gen *g = gen->g;
    char why[256];
    publish_job *j = flush_deltas(gen) == 0 ? calloc(1, sizeof *j) : NULL;
    if (!j) {
        gen_fail(gen, "internal_error", "out of memory");
        return;
    }
    kp_publish *p = &j->pub;
    j->gen = gen;
    p->cfg = g->opt.cfg;
    p->blob = g->opt.blob;
    gen_copy_str(p->user_id, sizeof p->user_id, gen->user_id);
    p->prev_n = gen->prev_n;
    if (kp_publish_prepare(p, gen->parser, gen->prev_files_json, why, sizeof why) != 0) {
        kp_publish_clear(p);
        free(j);
        gen_fail(gen, "invalid_output", why);
        return;
    }
    p->resumes = gen->resumes; /* publish_work reads the output back */
    p->nresumes = (size_t)(gen->continuations < MAX_CONTINUATIONS ? gen->continuations : MAX_CONTINUATIONS);
    fill_result_fields(gen, &p->row);
    p->events = gen_events_json(gen, EV_DONE, NULL);
    p->next_event_id = (int64_t)gen->nevents + 1;
    gen->storing = 1;
    gen_run_storage(g, publish_work, publish_done, j);
}

/* ---- deferred steps ---- */

typedef struct step {
    kp_gen *g;
    uint64_t serial;
    void (*fn)(generation *gen);
} step;

static void run_step(void *arg)
{
    step *st = arg;
    generation *gen = gen_find_serial(st->g, st->serial);
    if (gen && !gen->storing)
        st->fn(gen);
    free(st);
}

/* Runs fn(gen) soon on the loop, if gen still exists then. */
static int post_step(generation *gen, void (*fn)(generation *gen))
{
    step *st = malloc(sizeof *st);
    if (!st)
        return -1;
    st->g = gen->g;
    st->serial = gen->serial;
    st->fn = fn;
    if (kp_loop_post(gen->g->opt.loop, run_step, st) != 0) {
        free(st);
        return -1;
    }
    return 0;
}

static void step_fail(generation *gen)
{
    gen_fail(gen, gen->fail_code, gen->fail_message);
}

/* Inside a provider callback: stop listening now, fail right after. */
static void fail_soon(generation *gen, const char *code, const char *message)
{
    if (gen->ending)
        return;
    gen->ending = 1;
    gen_copy_str(gen->fail_code, sizeof gen->fail_code, code);
    gen_copy_str(gen->fail_message, sizeof gen->fail_message, message);
    if (post_step(gen, step_fail) != 0)
        kp_log(KP_LOG_ERROR, "cannot schedule the failure of %s v%lld", gen->project_id, (long long)gen->n);
}

/* ---- the provider call ---- */

static void on_llm_text(void *ud, const char *text, size_t len);
static void on_llm_done(void *ud, const char *stop_reason, const kp_llm_usage *usage);
static void on_llm_error(void *ud, const char *code, const char *message, int output_started);

static void start_call(generation *gen)
{
    kp_gen *g = gen->g;
    kp_err err = {0};
    kp_llm_request req;
    kp_llm_callbacks cb = {.ud = gen, .on_text = on_llm_text, .on_done = on_llm_done, .on_error = on_llm_error};
    kp_llm_call *call = NULL;
    kp_prompt_request(&gen->prompt, g->opt.cfg->max_tokens, &req);
    gen->call_ended = 0;
    if (g->opt.llm->ops->start(g->opt.llm, &req, &cb, &call, &err) != KP_OK) {
        gen->call = NULL;
        if (!gen->ending)
            gen_fail(gen, "provider_error", err.msg[0] ? err.msg : "the model provider could not be called");
        return;
    }
    gen->call = gen->call_ended ? NULL : call; /* a call that already ended is freed */
}

static kp_status on_block_file_done(void *ud, const char *path, const char *data, size_t len, kp_err *err)
{
    generation *gen = ud;
    (void)data;
    (void)err;
    flush_deltas_or_fail(gen);
    gen_emit(gen, EV_FILE, json_pack("{s:s,s:I}", "path", path, "bytes", (json_int_t)len));
    return KP_OK;
}

static void on_llm_text(void *ud, const char *text, size_t len)
{
    generation *gen = ud;
    kp_err err = {0};
    if (gen->ending || len == 0)
        return;
    if (add_delta(gen, text, len) != 0) { /* the log is the text's only copy: none may be lost */
        fail_soon(gen, "internal_error", "out of memory");
        return;
    }
    for (size_t i = 0; i < len; i++)
        gen->output_chars += ((unsigned char)text[i] & 0xC0) != 0x80; /* UTF-8 lead bytes: characters */
    if (kp_fileblocks_feed(gen->parser, text, len, &err) != KP_OK) {
        char message[512];
        kp_fileblocks_code code = kp_fileblocks_error_code(gen->parser);
        snprintf(message, sizeof message, "%s: %s", kp_fileblocks_code_name(code), err.msg);
        fail_soon(gen, code == KP_FILEBLOCKS_NO_MEMORY ? "internal_error" : "invalid_output", message);
    }
}

static void step_continue(generation *gen)
{
    kp_err err = {0};
    kp_buf output = KP_BUF_INIT;
    size_t all_len = 0;
    size_t keep = kp_fileblocks_resume_offset(gen->parser);
    int ok = gen->continuations < MAX_CONTINUATIONS && gen_output_build(gen, &output, &all_len) == 0 &&
             keep <= output.len && kp_fileblocks_resume(gen->parser, &err) == KP_OK &&
             kp_prompt_set_continuation(&gen->prompt, output.data ? output.data : "", keep, &err) == KP_OK;
    kp_buf_free(&output);
    if (!ok) {
        gen_fail(gen, "internal_error", "the generation could not be continued");
        return;
    }
    gen->resumes[gen->continuations] = keep; /* publishing parses the output again the same way */
    gen->cuts[gen->continuations] = all_len;
    gen->continuations++;
    kp_log_json(KP_LOG_INFO, "generation continues",
                json_pack("{s:s,s:I,s:I,s:I}", "project_id", gen->project_id, "version", (json_int_t)gen->n,
                          "continuation", (json_int_t)gen->continuations, "kept_bytes", (json_int_t)keep));
    start_call(gen);
}

static void step_publish(generation *gen)
{
    gen_publish(gen);
}

static void on_llm_done(void *ud, const char *stop_reason, const kp_llm_usage *usage)
{
    generation *gen = ud;
    kp_err err = {0};
    gen->call = NULL;
    gen->call_ended = 1;
    if (usage) {
        gen->usage.input_tokens += usage->input_tokens;
        gen->usage.output_tokens += usage->output_tokens;
    }
    if (gen->ending)
        return;
    if (kp_fileblocks_finish(gen->parser, &err) == KP_OK) {
        gen->ending = 1;
        if (post_step(gen, step_publish) != 0)
            kp_log(KP_LOG_ERROR, "cannot schedule publishing %s v%lld", gen->project_id, (long long)gen->n);
        return;
    }
    kp_fileblocks_code code = kp_fileblocks_error_code(gen->parser);
    int cut = stop_reason && strcmp(stop_reason, "max_tokens") == 0;
    char message[512];
    if (code == KP_FILEBLOCKS_INCOMPLETE_FILE && cut) {
        if (gen->continuations < MAX_CONTINUATIONS) {
            if (post_step(gen, step_continue) != 0)
                fail_soon(gen, "internal_error", "the generation could not be continued");
            return;
        }
        snprintf(message, sizeof message,
                 "the app was still incomplete after %d continuations at the output limit (%s)", MAX_CONTINUATIONS,
                 err.msg);
        fail_soon(gen, "too_long", message);
        return;
    }
    snprintf(message, sizeof message, "%s: %s", kp_fileblocks_code_name(code), err.msg);
    fail_soon(gen, "invalid_output", message);
}

static void on_llm_error(void *ud, const char *code, const char *message, int output_started)
{
    generation *gen = ud;
    (void)output_started;
    gen->call = NULL;
    gen->call_ended = 1;
    fail_soon(gen, code && *code ? code : "provider_error",
              message && *message ? message : "the model provider failed");
}

/* ---- commands posted to the loop ---- */

void gen_task_start(void *arg)
{
    generation *gen = arg;
    kp_gen *g = gen->g;
    gen->serial = ++g->next_serial;
    gen_table_add(g, gen);
    atomic_fetch_add(&g->in_flight, 1);
    kp_metrics_gauge_add(g->opt.metrics, METRIC_IN_FLIGHT, 1);
    gen->flush = evtimer_new(kp_loop_base(g->opt.loop), gen_on_flush_timer, gen);
    gen_emit(gen, EV_PROJECT, json_pack("{s:s,s:I}", "project_id", gen->project_id, "version", (json_int_t)gen->n));
    if (g->shut) {
        gen_fail(gen, "interrupted", "the server is shutting down");
        return;
    }
    if (gen_timeout_start(gen) != 0) {
        gen_fail(gen, "internal_error", "out of memory: the generation's time limit cannot be set");
        return;
    }
    start_call(gen);
}

generation *gen_generation_new(kp_gen *g, const kp_gen_request *r, const char *project_id, int64_t n,
                               const char *res_id, const kp_version *latest_ready, kp_prompt *prompt, kp_err *err)
{
    generation *gen = calloc(1, sizeof *gen);
    if (!gen) {
        kp_err_set(err, KP_ENOMEM, "out of memory");
        return NULL;
    }
    gen->g = g;
    gen_copy_str(gen->project_id, sizeof gen->project_id, project_id);
    gen_copy_str(gen->user_id, sizeof gen->user_id, r->user_id);
    gen_copy_str(gen->reservation_id, sizeof gen->reservation_id, res_id);
    gen->n = n;
    gen->cost = res_id[0] ? g->opt.cfg->generation_cost : 0;
    if (latest_ready) {
        gen->prev_n = latest_ready->n;
        gen->prev_files_json = strdup(latest_ready->files_json ? latest_ready->files_json : "[]");
    }
    kp_fileblocks_opts fo;
    kp_fileblocks_default_opts(&fo);
    fo.max_files = MAX_APP_FILES;
    fo.max_total_bytes = MAX_APP_BYTES;
    fo.sizes_only = 1; /* the contents are read again from the output when publishing */
    kp_fileblocks_cbs cbs = {.on_file_done = on_block_file_done};
    if ((latest_ready && !gen->prev_files_json) || kp_fileblocks_new(&fo, &cbs, gen, &gen->parser, err) != KP_OK) {
        kp_fileblocks_free(gen->parser);
        free(gen->prev_files_json);
        free(gen);
        kp_err_set(err, KP_ENOMEM, "out of memory");
        return NULL;
    }
    gen->prompt = *prompt;
    memset(prompt, 0, sizeof *prompt);
    clock_gettime(CLOCK_MONOTONIC, &gen->started);
    gen_timeout_init(gen, r);
    return gen;
}
