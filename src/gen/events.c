/*
 * events.c - a running generation's events reach the event store (store.h
 * kp_event) as they happen, so that readers on any instance can follow it:
 * in batches, every GEN_EVENTS_BATCH_MS and at once after each file, on the
 * storage pool (the loop never waits for the database), one batch at a time
 * per generation, in order. What the batches have not stored when the
 * generation ends goes with its ending (version_end, one transaction:
 * gen_events_json starts at gen->events_stored), so after the end every
 * event is stored; appends are idempotent per id, so a batch that overlaps
 * the ending, or is retried, adds nothing twice.
 *
 * Loop-only, like the generation. A batch holds copies of its events and
 * names its generation by serial number: the generation may end and be
 * freed while the batch is stored.
 */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/loop.h"
#include "gen/gen_internal.h"

typedef struct append_job {
    kp_gen *g;
    uint64_t serial;
    char project_id[KP_ID_MAX];
    int64_t n;
    kp_event *events;
    size_t count;
    kp_status rc;
} append_job;

static void job_free(append_job *j)
{
    for (size_t i = 0; i < j->count; i++)
        free(j->events[i].data);
    free(j->events);
    free(j);
}

/* On a storage thread. */
static void append_work(kp_store *s, void *arg)
{
    append_job *j = arg;
    kp_err err = {0};
    j->rc = s->ops->events_append(s, j->project_id, j->n, j->events, j->count, &err);
    if (j->rc != KP_OK) /* the next batch, or the ending, carries them again */
        kp_log_json(
            KP_LOG_WARN, "cannot store a generation's events yet",
            json_pack("{s:s,s:I,s:s}", "project_id", j->project_id, "version", (json_int_t)j->n, "error", err.msg));
}

static void append_done(void *arg)
{
    append_job *j = arg;
    kp_gen *g = j->g;
    generation *gen = gen_find_serial(g, j->serial);
    g->appends--;
    if (gen) {
        gen->appending = 0;
        if (j->rc == KP_OK && j->count > 0 && j->events[j->count - 1].id > gen->events_stored)
            gen->events_stored = j->events[j->count - 1].id;
        if (gen->append_again) {
            gen->append_again = 0;
            gen_events_store_now(gen);
        }
    }
    job_free(j);
    gen_shutdown_maybe_done(g);
}

/* A batch of the events not stored yet (copies). */
static append_job *batch_new(generation *gen)
{
    append_job *j = calloc(1, sizeof *j);
    size_t first = (size_t)gen->events_stored, count = gen->nevents - first;
    if (!j || !(j->events = calloc(count, sizeof *j->events))) {
        free(j);
        return NULL;
    }
    j->g = gen->g;
    j->serial = gen->serial;
    gen_copy_str(j->project_id, sizeof j->project_id, gen->project_id);
    j->n = gen->n;
    for (size_t i = 0; i < count; i++) {
        const event_rec *e = &gen->events[first + i];
        kp_event *out = &j->events[j->count];
        out->id = (int64_t)(first + i) + 1;
        gen_copy_str(out->type, sizeof out->type, gen_event_names[e->type]);
        if (!(out->data = strndup(gen->log.data + e->data_off, e->data_len))) {
            job_free(j);
            return NULL;
        }
        j->count++;
    }
    return j;
}

void gen_events_store_now(generation *gen)
{
    if (gen->ending || gen->storing || (size_t)gen->events_stored >= gen->nevents)
        return; /* the ending stores the rest */
    if (gen->appending) {
        gen->append_again = 1;
        return;
    }
    append_job *j = batch_new(gen);
    if (!j)
        return; /* out of memory: the next batch or the ending stores them */
    gen->appending = 1;
    gen->g->appends++;
    gen_run_storage(gen->g, append_work, append_done, j);
}

static void on_batch_timer(evutil_socket_t fd, short what, void *arg)
{
    generation *gen = arg;
    (void)fd;
    (void)what;
    gen_events_store_now(gen);
}

void gen_events_emitted(generation *gen, event_type type)
{
    if (gen->ending || gen->storing)
        return;
    if (type == EV_FILE) {
        gen_events_store_now(gen);
        return;
    }
    if (!gen->append_timer && !(gen->append_timer = evtimer_new(kp_loop_base(gen->g->opt.loop), on_batch_timer, gen)))
        return; /* the files' batches and the ending store them */
    if (!evtimer_pending(gen->append_timer, NULL)) {
        struct timeval tv = gen_ms_to_tv(GEN_EVENTS_BATCH_MS);
        evtimer_add(gen->append_timer, &tv);
    }
}

void gen_events_free(generation *gen)
{
    if (gen->append_timer)
        event_free(gen->append_timer);
    gen->append_timer = NULL;
}
