/*
 * events.c - a running generation's events reach the event store (store.h
 * kp_event) as they happen, so that readers on any instance can follow it.
 *
 * Batches are per service, not per generation: a generation with events not
 * stored yet joins the append queue; every GEN_EVENTS_BATCH_MS (at once
 * after a file event) one batch takes the queue's events, up to
 * GEN_EVENTS_BATCH_MAX, and stores them on the storage pool with one
 * events_append_many (SQLite: one transaction for every generation, where a
 * batch per generation made 8,000 generations 32,000 transactions a second).
 * One batch at a time per service, so a generation's events are stored in
 * order and the loop never waits for the database. What the batches have not
 * stored when a generation ends goes with its ending (version_end, one
 * transaction: gen_events_json starts at gen->events_stored), so after the
 * end every event is stored; appends are idempotent per id, so a batch that
 * overlaps the ending, or is retried, adds nothing twice.
 *
 * Loop-only, like the generations. A batch holds copies of its events and
 * names its generations by its own number (generation.append_batch): a
 * generation may end and be freed while the batch is stored; when it comes
 * back one walk over the running generations marks what was stored.
 */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/loop.h"
#include "gen/gen_internal.h"

#define GEN_EVENTS_BATCH_MAX 2000 /* events in one batch at most; the rest go in the next one, at once */

typedef struct append_job {
    kp_gen *g;
    uint64_t seq;
    kp_event_batch *batches; /* project_id and events owned by the job */
    size_t count;
    kp_status rc;
} append_job;

static void job_free(append_job *j)
{
    for (size_t i = 0; i < j->count; i++) {
        kp_event *events = (kp_event *)j->batches[i].events;
        for (size_t k = 0; k < j->batches[i].count; k++)
            free(events[k].data);
        free(events);
        free((char *)j->batches[i].project_id);
    }
    free(j->batches);
    free(j);
}

/* ---- the queue ---- */

static void queue_add(kp_gen *g, generation *gen)
{
    if (gen->append_queued)
        return;
    gen->append_queued = 1;
    gen->append_next = NULL;
    gen->append_prev = g->append_tail;
    if (g->append_tail)
        g->append_tail->append_next = gen;
    else
        g->append_queue = gen;
    g->append_tail = gen;
}

static void queue_remove(kp_gen *g, generation *gen)
{
    if (!gen->append_queued)
        return;
    if (gen->append_prev)
        gen->append_prev->append_next = gen->append_next;
    else
        g->append_queue = gen->append_next;
    if (gen->append_next)
        gen->append_next->append_prev = gen->append_prev;
    else
        g->append_tail = gen->append_prev;
    gen->append_queued = 0;
    gen->append_prev = gen->append_next = NULL;
}

/* ---- a batch ---- */

/* On a storage thread. */
static void append_work(kp_store *s, void *arg)
{
    append_job *j = arg;
    kp_err err = {0};
    j->rc = s->ops->events_append_many(s, j->batches, j->count, &err);
    if (j->rc != KP_OK) /* the next batch, or the endings, carry them again */
        kp_log_json(KP_LOG_WARN, "cannot store the generations' events yet",
                    json_pack("{s:I,s:s}", "versions", (json_int_t)j->count, "error", err.msg));
}

static void schedule(kp_gen *g, long ms);

static void append_done(void *arg)
{
    append_job *j = arg;
    kp_gen *g = j->g;
    g->appends--;
    for (generation *gen = g->gens; gen; gen = gen->next) {
        if (gen->append_batch != j->seq)
            continue;
        if (j->rc == KP_OK && gen->append_upto > gen->events_stored)
            gen->events_stored = gen->append_upto;
        gen->append_batch = 0;
    }
    job_free(j);
    if (g->append_again) {
        g->append_again = 0;
        schedule(g, 0);
    }
    gen_shutdown_maybe_done(g);
}

/* Copies gen's events not stored yet into b. Returns 0, -1 when out of memory. */
static int batch_copy(const generation *gen, kp_event_batch *b)
{
    size_t first = (size_t)gen->events_stored, count = gen->nevents - first;
    kp_event *events = calloc(count, sizeof *events);
    char *project_id = strdup(gen->project_id);
    b->events = events;
    b->project_id = project_id;
    b->n = gen->n;
    b->count = 0;
    if (!events || !project_id)
        return -1;
    for (size_t i = 0; i < count; i++) {
        const event_rec *e = &gen->events[first + i];
        events[i].id = (int64_t)(first + i) + 1;
        gen_copy_str(events[i].type, sizeof events[i].type, gen_event_names[e->type]);
        if (!(events[i].data = strndup(gen->log.data + e->data_off, e->data_len)))
            return -1;
        b->count++;
    }
    return 0;
}

/* A batch of the queue's events (copies), up to GEN_EVENTS_BATCH_MAX; the generations it takes leave the
 * queue. NULL when there is nothing to store, or out of memory (the queue is kept). */
static append_job *batch_new(kp_gen *g)
{
    size_t versions = 0;
    for (generation *gen = g->append_queue; gen; gen = gen->append_next)
        versions++;
    append_job *j = calloc(1, sizeof *j);
    if (!j || !(j->batches = calloc(versions ? versions : 1, sizeof *j->batches))) {
        free(j);
        return NULL;
    }
    j->g = g;
    j->seq = ++g->append_seq;
    size_t rows = 0;
    int oom = 0;
    generation *gen = g->append_queue;
    while (gen && rows < GEN_EVENTS_BATCH_MAX) {
        generation *next = gen->append_next;
        if (gen->ending || gen->storing || (size_t)gen->events_stored >= gen->nevents) {
            queue_remove(g, gen); /* its ending stores the rest */
        } else {
            if (batch_copy(gen, &j->batches[j->count]) != 0) {
                j->count++; /* job_free frees what was copied */
                oom = 1;
                break;
            }
            rows += j->batches[j->count].count;
            j->count++;
            gen->append_batch = j->seq;
            gen->append_upto = (int64_t)gen->nevents;
            queue_remove(g, gen);
        }
        gen = next;
    }
    if (j->count == 0 || oom) {
        for (generation *it = g->gens; it; it = it->next)
            if (it->append_batch == j->seq) {
                it->append_batch = 0;
                queue_add(g, it);
            }
        job_free(j);
        return NULL;
    }
    return j;
}

static void store_batch(kp_gen *g)
{
    if (g->appends > 0) {
        g->append_again = 1; /* at once when that one is back */
        return;
    }
    append_job *j = batch_new(g);
    if (!j)
        return; /* nothing to store, or out of memory: the next event or the endings store them */
    g->appends++;
    if (g->append_queue)
        g->append_again = 1; /* the batch was full */
    gen_run_storage(g, append_work, append_done, j);
}

static void on_batch_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    store_batch(arg);
}

/* The next batch within ms (sooner if it is due sooner already). */
static void schedule(kp_gen *g, long ms)
{
    if (g->shut)
        return;
    if (!g->append_timer && !(g->append_timer = evtimer_new(kp_loop_base(g->opt.loop), on_batch_timer, g)))
        return; /* the endings store them */
    struct timeval due;
    if (evtimer_pending(g->append_timer, &due) && ms > 0)
        return;
    struct timeval tv = gen_ms_to_tv(ms);
    evtimer_add(g->append_timer, &tv);
}

void gen_events_emitted(generation *gen, event_type type)
{
    if (gen->ending || gen->storing)
        return;
    queue_add(gen->g, gen);
    schedule(gen->g, type == EV_FILE ? 0 : GEN_EVENTS_BATCH_MS);
}

void gen_events_free(generation *gen)
{
    queue_remove(gen->g, gen);
}

void gen_events_stop(kp_gen *g)
{
    if (g->append_timer)
        event_free(g->append_timer);
    g->append_timer = NULL;
}
