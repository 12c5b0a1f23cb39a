/*
 * leases.c - generations are leased, not owned by whoever starts up. Each
 * process has an instance id ("ins_..."); admission records it as the
 * version's owner with a lease of KOUMPA_GENERATION_LEASE_S (store.h
 * kp_lease). While generations run here, a timer on the loop renews all of
 * this instance's leases in one store call every third of the lease, and a
 * second timer runs recovery (kp_gen_recover: versions whose lease ran out,
 * in any instance) every lease. Both store calls run on the storage pool,
 * never on the loop, so a slow database never stalls a stream; a failed
 * renewal is logged and tried again at the next tick.
 *
 * The renewal also brings back, per lease, whether a cancel was requested
 * through another instance (store.h version_request_cancel: POST .../cancel
 * served where the generation does not run); the generation is then failed
 * "canceled" here, exactly as a local cancel (kp_gen_cancel) does. Such a
 * cancel takes effect at the next renewal: within a third of the lease
 * (10 s with the default 30 s lease), plus the renewal's own time.
 *
 * A lease that could not be renewed is lost for good (it ran out, or a
 * recoverer already ended its version): the generation here is then failed
 * "interrupted" through the usual ending, whose write is conditional on the
 * version still generating, so the version ends once whoever writes first
 * (gen_fail tells the readers the ending that won).
 *
 * Loop-only except kp_gen_instance_id and gen_lease_until (fields that never
 * change after kp_gen_new).
 */
#include "gen/generator.h"

#include <stdlib.h>
#include <string.h>

#include "core/id.h"
#include "core/log.h"
#include "core/loop.h"
#include "gen/gen_internal.h"

#define DEFAULT_LEASE_MS 30000

const char *kp_gen_instance_id(kp_gen *g)
{
    return g->instance_id;
}

int64_t gen_lease_until(const kp_gen *g)
{
    return kp_time_now_ms() + g->lease_ms;
}

/* At kp_gen_new: the instance id and the lease. */
void gen_leases_init(kp_gen *g)
{
    kp_id_new("ins", g->instance_id, sizeof g->instance_id);
    g->lease_ms =
        g->opt.cfg->generation_lease_s > 0 ? (int64_t)g->opt.cfg->generation_lease_s * 1000 : DEFAULT_LEASE_MS;
    kp_log_json(KP_LOG_INFO, "generation instance",
                json_pack("{s:s,s:I}", "instance_id", g->instance_id, "lease_ms", (json_int_t)g->lease_ms));
}

/* ---- renewal ---- */

typedef struct renew_job {
    kp_gen *g; /* touched on the loop only */
    char owner[KP_ID_MAX];
    int64_t lease_ms;
    kp_status rc;
    size_t n;
    kp_lease leases[]; /* this instance's generations when the job was made */
} renew_job;

static void renew_work(kp_store *s, void *arg)
{
    renew_job *j = arg;
    kp_err err = {0};
    int64_t now = kp_time_now_ms();
    j->rc = s->ops->leases_renew(s, j->owner, now, now + j->lease_ms, j->leases, j->n, &err);
    if (j->rc != KP_OK)
        kp_log_json(KP_LOG_WARN, "cannot renew the generation leases; trying again at the next tick",
                    json_pack("{s:I,s:s}", "generations", (json_int_t)j->n, "error", err.msg));
}

/* A generation whose lease was lost stops here; its version ends once (gen_fail). */
static void lease_lost(kp_gen *g, const kp_lease *l)
{
    generation *gen = gen_find(g, l->project_id, l->n);
    if (!gen || gen->ending || gen->storing)
        return; /* ending already: its conditional write decides */
    kp_log_json(KP_LOG_WARN, "lost a generation's lease: stopping it",
                json_pack("{s:s,s:I,s:s}", "project_id", l->project_id, "version", (json_int_t)l->n, "instance_id",
                          g->instance_id));
    gen_fail(gen, "interrupted", "the server running this generation lost its lease on it");
}

/* A generation whose cancel was requested through another instance ends as a local cancel does. */
static void cancel_requested(kp_gen *g, const kp_lease *l)
{
    generation *gen = gen_find(g, l->project_id, l->n);
    if (!gen || gen->ending || gen->storing)
        return; /* ending already: that ending stands */
    kp_log_json(KP_LOG_INFO, "a cancel was requested through another instance: canceling the generation",
                json_pack("{s:s,s:I}", "project_id", l->project_id, "version", (json_int_t)l->n));
    gen_fail(gen, "canceled", KP_GEN_CANCELED_MESSAGE);
}

static void renew_done(void *arg)
{
    renew_job *j = arg;
    kp_gen *g = j->g;
    g->renewing = 0;
    if (j->rc == KP_OK && !g->shut)
        for (size_t i = 0; i < j->n; i++) {
            if (!j->leases[i].held)
                lease_lost(g, &j->leases[i]);
            else if (j->leases[i].cancel_requested)
                cancel_requested(g, &j->leases[i]);
        }
    free(j);
    gen_shutdown_maybe_done(g);
}

static void on_lease_tick(evutil_socket_t fd, short what, void *arg)
{
    kp_gen *g = arg;
    size_t n = 0;
    (void)fd;
    (void)what;
    if (g->renewing || g->shut)
        return; /* the last renewal is not back yet: this tick is skipped */
    for (generation *gen = g->gens; gen; gen = gen->next)
        n++;
    if (n == 0)
        return;
    renew_job *j = calloc(1, sizeof *j + n * sizeof(kp_lease));
    if (!j) {
        kp_log(KP_LOG_WARN, "cannot renew the generation leases: out of memory");
        return;
    }
    j->g = g;
    memcpy(j->owner, g->instance_id, sizeof j->owner);
    j->lease_ms = g->lease_ms;
    for (generation *gen = g->gens; gen; gen = gen->next) {
        gen_copy_str(j->leases[j->n].project_id, sizeof j->leases[j->n].project_id, gen->project_id);
        j->leases[j->n].n = gen->n;
        j->n++;
    }
    g->renewing = 1;
    gen_run_storage_first(g, renew_work, renew_done, j); /* ahead of a burst of publishing, or every lease is lost */
}

/* ---- periodic recovery ---- */

typedef struct recover_job {
    kp_gen *g; /* touched on the loop only */
    kp_blob *blob;
} recover_job;

static void recover_work(kp_store *s, void *arg)
{
    recover_job *j = arg;
    kp_err err = {0};
    if (kp_gen_recover(s, j->blob, NULL, &err) != KP_OK)
        kp_log_json(KP_LOG_WARN, "recovery of expired generations failed; trying again later",
                    json_pack("{s:s}", "error", err.msg));
}

static void recover_done(void *arg)
{
    recover_job *j = arg;
    kp_gen *g = j->g;
    g->recovering = 0;
    free(j);
    gen_shutdown_maybe_done(g);
}

static void on_recover_tick(evutil_socket_t fd, short what, void *arg)
{
    kp_gen *g = arg;
    (void)fd;
    (void)what;
    if (g->recovering || g->shut)
        return;
    recover_job *j = calloc(1, sizeof *j);
    if (!j)
        return; /* the next tick tries again */
    j->g = g;
    j->blob = g->opt.blob;
    g->recovering = 1;
    gen_run_storage(g, recover_work, recover_done, j);
}

/* ---- timers ---- */

/* On the loop, at start: 0, or -1 when the timers cannot be made. */
int gen_leases_start(kp_gen *g)
{
    struct event_base *base = kp_loop_base(g->opt.loop);
    struct timeval renew = gen_ms_to_tv((long)(g->lease_ms / 3 > 0 ? g->lease_ms / 3 : 1));
    struct timeval recover = gen_ms_to_tv((long)g->lease_ms);
    g->lease_timer = event_new(base, -1, EV_PERSIST, on_lease_tick, g);
    g->recover_timer = event_new(base, -1, EV_PERSIST, on_recover_tick, g);
    if (!g->lease_timer || !g->recover_timer || event_add(g->lease_timer, &renew) != 0 ||
        event_add(g->recover_timer, &recover) != 0)
        return -1;
    return 0;
}

/* At shutdown (on the loop) or free: no more ticks. Jobs on the pool come back and end (gen_leases_busy). */
void gen_leases_stop(kp_gen *g)
{
    if (g->lease_timer)
        event_free(g->lease_timer);
    if (g->recover_timer)
        event_free(g->recover_timer);
    g->lease_timer = g->recover_timer = NULL;
}

/* Whether a renewal or a recovery is still on the storage pool (shutdown waits for it). */
int gen_leases_busy(const kp_gen *g)
{
    return g->renewing || g->recovering;
}
