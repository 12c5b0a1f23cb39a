/*
 * generator.c - see generator.h: the service (start, shutdown, free), the
 * commands an HTTP thread waits for (cancel), and small shared helpers. Its
 * other parts, one concern a file, share gen_internal.h:
 *   submit.c   admission and the start of a generation (HTTP thread)
 *   run.c      the life of a generation on the loop: provider call,
 *              deltas, continuations, publish or fail, exactly-once ending
 *   table.c    the running generations, hashed by serial and by version
 *   readers.c  the event log, SSE readers (subscribers), reader caps, replays
 *   events.c   the event log's batches to the event store, as it runs
 *   output.c   the model's output, read back from the log's delta events
 *   recover.c  recovery of versions whose lease ran out (a stopped server's)
 *   leases.c   this instance's leases: renewed while it generates; periodic recovery
 *   timeout.c  a generation's time limit (total timeout, the invocation's deadline)
 *   history.c  what a version builds on (earlier versions, the latest files)
 *   resume.c   a dispatched generation run here (kp_gen_resume: the lease taken over)
 *
 * Threads and ownership:
 *   - kp_gen_submit() runs on an HTTP thread: it does the checks, the credit
 *     reservation and the rows with the caller's store, builds a `generation`
 *     and posts it to the loop. From then on the generation belongs to the
 *     loop: only loop code touches it, so it needs no lock. It is freed in
 *     one place (gen_destroy), after it was published or failed.
 *   - Work deferred on the loop (a continuation, a failure noticed inside a
 *     provider callback) goes through post_step(), which names the
 *     generation by a serial number and looks it up when it runs, so a step
 *     never touches a generation that ended meanwhile.
 *   - A `subscriber` is one SSE reader. It is shared by the HTTP worker that
 *     owns the kp_stream (start/release) and the loop (writes), so its sink
 *     pointer and reference count are under its mutex. References: one for
 *     the stream (dropped at release, possibly through an unsubscribe task),
 *     one for the loop from start() until the loop detaches it.
 *
 * Exactly-once charging: every path that ends a generation goes through
 * gen_publish() or gen_fail(); each writes the version's end, its credit
 * (committed, or refunded/charged by the credit policy, domain/credits.h)
 * and its settled flag in ONE transaction. When that cannot be written, the
 * failure is queued and retried on the loop (run.c, unended_*); a crash is finished
 * by kp_gen_recover() at the next start.
 *
 * Storage off the loop: gen_publish() and gen_fail() do their quick part on
 * the loop, hand the files and row updates to the storage pool
 * (gen/storage.h, gen_run_storage) and mark the generation `storing`; the result
 * comes back to the loop, which then sends the last event and frees the
 * generation. While it is storing nothing else may end it (steps, cancel and
 * shutdown skip it), and readers may still join and get the last event.
 */
#include "gen/generator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/loop.h"
#include "core/metrics.h"
#include "gen/gen_internal.h"

void gen_copy_str(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

struct timeval gen_ms_to_tv(long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

void kp_gen_version_url(const kp_config *cfg, const char *project_id, int64_t n, char *out, size_t len)
{
    kp_buf url = KP_BUF_INIT;
    kp_apps_url_version(cfg ? cfg->apps_url : NULL, project_id, n, &url);
    snprintf(out, len, "%s", url.data ? url.data : "");
    kp_buf_free(&url);
}

typedef struct ext_type {
    const char *ext;
    const char *type;
} ext_type;

static const ext_type content_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"txt", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"xml", "application/xml"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"wasm", "application/wasm"},
    {"mp3", "audio/mpeg"},
    {"wav", "audio/wav"},
    {"ogg", "audio/ogg"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
    {NULL, NULL},
};

const char *kp_gen_content_type(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash + 1 : path, '.');
    if (dot && dot[1]) {
        for (const ext_type *e = content_types; e->ext; e++)
            if (strcasecmp(dot + 1, e->ext) == 0)
                return e->type;
    }
    return "application/octet-stream";
}

int64_t kp_gen_in_flight(kp_gen *g)
{
    return atomic_load(&g->in_flight);
}

kp_blob *kp_gen_blob(kp_gen *g)
{
    return g->opt.blob;
}

const kp_config *kp_gen_config(kp_gen *g)
{
    return g->opt.cfg;
}

/* A command an HTTP thread waits for. */
struct sync_cmd {
    kp_gen *g;
    char project_id[KP_ID_MAX];
    int64_t n;
    generation *gen; /* gen_start_and_wait: the generation to start */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    kp_status rc;
};

void gen_sync_cmd_finish(sync_cmd *c, kp_status rc)
{
    pthread_mutex_lock(&c->mu);
    c->rc = rc;
    c->done = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static kp_status sync_cmd_run(kp_gen *g, sync_cmd *c, void (*fn)(void *arg))
{
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->g = g;
    c->done = 0;
    c->rc = KP_OK;
    kp_status rc = KP_EUNAVAILABLE;
    if (kp_loop_post(g->opt.loop, fn, c) == 0) {
        pthread_mutex_lock(&c->mu);
        while (!c->done)
            pthread_cond_wait(&c->cv, &c->mu);
        rc = c->rc;
        pthread_mutex_unlock(&c->mu);
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    return rc;
}

static void task_cancel(void *arg)
{
    sync_cmd *c = arg;
    generation *gen = gen_find(c->g, c->project_id, c->n);
    if (!gen || gen->ending) {
        gen_sync_cmd_finish(c, KP_ECONFLICT);
        return;
    }
    gen->on_end = c; /* answered once the version is failed and refunded */
    gen_fail(gen, "canceled", KP_GEN_CANCELED_MESSAGE);
}

kp_status kp_gen_cancel(kp_gen *g, const char *project_id, int64_t n, kp_err *err)
{
    sync_cmd c;
    memset(&c, 0, sizeof c);
    gen_copy_str(c.project_id, sizeof c.project_id, project_id);
    c.n = n;
    kp_status rc = sync_cmd_run(g, &c, task_cancel);
    if (rc == KP_ECONFLICT)
        return kp_err_set(err, KP_ECONFLICT, "version %lld is not generating", (long long)n);
    if (rc != KP_OK)
        return kp_err_set(err, rc, "the generation service is stopping");
    return KP_OK;
}

/* The loop's part of gen_start_and_wait: the generation starts; its end wakes the waiter (gen_destroy). */
static void task_start_waited(void *arg)
{
    sync_cmd *c = arg;
    generation *gen = c->gen;
    gen->waiter = c;
    gen_task_start(gen);
}

kp_status gen_start_and_wait(kp_gen *g, generation *gen)
{
    sync_cmd c;
    memset(&c, 0, sizeof c);
    c.gen = gen;
    return sync_cmd_run(g, &c, task_start_waited);
}

static void task_shutdown(void *arg)
{
    sync_cmd *c = arg;
    kp_gen *g = c->g;
    g->shut = 1;
    for (generation *gen = g->gens; gen; gen = gen->next)
        if (!gen->storing)
            gen_fail(gen, "interrupted", "the server is shutting down");
    gen_unended_drop_all(g);
    gen_leases_stop(g);
    gen_events_stop(g);
    if (g->keepalive) {
        event_free(g->keepalive);
        g->keepalive = NULL;
    }
    g->shutdown_wait = c; /* finished when the last generation or replay ends */
    gen_shutdown_maybe_done(g);
}

static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
    static const char comment[] = ": keep-alive\n\n";
    kp_gen *g = arg;
    (void)fd;
    (void)what;
    for (generation *gen = g->gens; gen; gen = gen->next)
        for (subscriber *s = gen->subs; s; s = s->next)
            gen_sub_write(s, comment, sizeof comment - 1);
}

static void task_init(void *arg)
{
    sync_cmd *c = arg;
    kp_gen *g = c->g;
    long ms = g->opt.keepalive_ms > 0 ? g->opt.keepalive_ms : KP_GEN_KEEPALIVE_MS;
    struct timeval tv = gen_ms_to_tv(ms);
    g->keepalive = event_new(kp_loop_base(g->opt.loop), -1, EV_PERSIST, on_keepalive, g);
    int ok = g->keepalive && event_add(g->keepalive, &tv) == 0 && gen_leases_start(g) == 0;
    gen_sync_cmd_finish(c, ok ? KP_OK : KP_ENOMEM);
}

/* ---- service ---- */

kp_status kp_gen_new(const kp_gen_options *opt, kp_gen **out, kp_err *err)
{
    *out = NULL;
    if (!opt->cfg || !opt->loop || !opt->blob || !opt->open_store)
        return kp_err_set(err, KP_EINVAL,
                          "the generation service needs a configuration, a loop, a blob store "
                          "and a database");
    kp_gen *g = calloc(1, sizeof *g);
    if (!g)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    g->opt = *opt;
    g->policy.rejected_refunds_per_day = opt->cfg->rejected_refunds_per_day;
    g->policy.cancel_refund_chars = opt->cfg->cancel_refund_chars;
    pthread_mutex_init(&g->mu, NULL);
    atomic_init(&g->in_flight, 0);
    gen_leases_init(g);
    kp_status rc = opt->open_store(opt->open_store_ud, &g->store, err);
    if (rc == KP_OK) {
        int threads = opt->cfg->storage_threads > 0 ? (int)opt->cfg->storage_threads : 2;
        rc = kp_gen_storage_new(threads, opt->loop, opt->open_store, opt->open_store_ud, &g->storage, err);
    }
    if (rc == KP_OK)
        rc = kp_replay_cache_new(KP_REPLAY_CACHE_BYTES, KP_REPLAY_CACHE_ENTRIES, &g->replays, err);
    if (rc == KP_OK) {
        sync_cmd c;
        memset(&c, 0, sizeof c);
        rc = sync_cmd_run(g, &c, task_init);
        if (rc != KP_OK)
            kp_err_set(err, rc, "cannot start the generation service's timers");
    }
    if (rc != KP_OK) {
        gen_leases_stop(g);
        if (g->keepalive)
            event_free(g->keepalive);
        kp_replay_cache_free(g->replays);
        kp_gen_storage_free(g->storage);
        if (g->store)
            g->store->ops->close(g->store);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return rc;
    }
    kp_metrics_register(opt->metrics, METRIC_IN_FLIGHT, KP_METRIC_GAUGE, "Generations running now.");
    kp_metrics_register(opt->metrics, METRIC_SPENT, KP_METRIC_COUNTER, "Credits committed for published versions.");
    *out = g;
    return KP_OK;
}

void kp_gen_shutdown(kp_gen *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    int already = g->stopping;
    g->stopping = 1;
    pthread_mutex_unlock(&g->mu);
    if (already)
        return;
    sync_cmd c;
    memset(&c, 0, sizeof c);
    sync_cmd_run(g, &c, task_shutdown);
}

void kp_gen_free(kp_gen *g)
{
    if (!g)
        return;
    if (g->keepalive)
        event_free(g->keepalive); /* only when shutdown could not run on the loop */
    gen_leases_stop(g);
    gen_events_stop(g);
    kp_gen_storage_free(g->storage);
    gen_unended_free_all(g); /* only when shutdown could not run on the loop */
    kp_replay_cache_free(g->replays);
    for (size_t i = 0; i < GEN_READER_BUCKETS; i++) /* only when readers outlive the service */
        while (g->readers[i]) {
            reader_slot *next = g->readers[i]->next;
            free(g->readers[i]);
            g->readers[i] = next;
        }
    if (g->store)
        g->store->ops->close(g->store);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
