/*
 * readers.c - what readers of a generation see: its event log
 * (SSE frames, in order, kept for replay), the subscribers that follow it
 * live (shared by an HTTP worker and the loop, under their own mutex), the
 * per-version cap on live readers, and replays of versions that ended.
 */
#include "gen/generator.h"

#include <stdlib.h>
#include <string.h>

#include "core/loop.h"
#include "gen/gen_internal.h"

const char *const gen_event_names[] = {"project", "delta", "file", "done", "error"};

/* ---- subscribers ---- */

/* ---- reader slots (any thread, under g->mu) ---- */

/* A slot's bucket, so a subscription finds it among thousands at once. */
static size_t slot_bucket(const char *project_id, int64_t n)
{
    return (size_t)(gen_key_hash(project_id, n) % GEN_READER_BUCKETS);
}

static reader_slot **find_slot(kp_gen *g, const char *project_id, int64_t n)
{
    reader_slot **pp = &g->readers[slot_bucket(project_id, n)];
    while (*pp && ((*pp)->n != n || strcmp((*pp)->project_id, project_id) != 0))
        pp = &(*pp)->next;
    return pp;
}

/* Takes one of the version's reader slots. KP_ERATE when all are taken. */
static kp_status slot_take(kp_gen *g, const char *project_id, int64_t n, kp_err *err)
{
    long cap = g->opt.cfg->max_readers_per_generation > 0 ? g->opt.cfg->max_readers_per_generation : KP_GEN_MAX_READERS;
    kp_status rc = KP_OK;
    pthread_mutex_lock(&g->mu);
    reader_slot **pp = find_slot(g, project_id, n);
    if (!*pp && (*pp = calloc(1, sizeof **pp)) != NULL) {
        gen_copy_str((*pp)->project_id, sizeof(*pp)->project_id, project_id);
        (*pp)->n = n;
    }
    if (!*pp)
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    else if ((*pp)->count >= cap)
        rc = kp_err_set(err, KP_ERATE,
                        "version %lld already has %ld readers, the most allowed; try again when one has left",
                        (long long)n, cap);
    else
        (*pp)->count++;
    pthread_mutex_unlock(&g->mu);
    return rc;
}

static void slot_give_back(kp_gen *g, const char *project_id, int64_t n)
{
    pthread_mutex_lock(&g->mu);
    reader_slot **pp = find_slot(g, project_id, n);
    reader_slot *slot = *pp;
    if (slot && --slot->count == 0) {
        *pp = slot->next;
        free(slot);
    }
    pthread_mutex_unlock(&g->mu);
}

/* Drops k references at once (the last one frees sub). */
static void sub_drop(subscriber *sub, int k)
{
    pthread_mutex_lock(&sub->mu);
    sub->refs -= k;
    int left = sub->refs;
    pthread_mutex_unlock(&sub->mu);
    if (left == 0) {
        if (sub->counted)
            slot_give_back(sub->g, sub->project_id, sub->n);
        pthread_mutex_destroy(&sub->mu);
        free(sub);
    }
}

static void sub_unref(subscriber *sub)
{
    sub_drop(sub, 1);
}

void gen_sub_write(subscriber *sub, const char *data, size_t len)
{
    if (len == 0)
        return;
    pthread_mutex_lock(&sub->mu);
    if (sub->sink)
        sub->sink->write(sub->sink, data, len);
    pthread_mutex_unlock(&sub->mu);
}

void gen_sub_end(subscriber *sub)
{
    pthread_mutex_lock(&sub->mu);
    if (sub->sink)
        sub->sink->end(sub->sink);
    pthread_mutex_unlock(&sub->mu);
}

/* On the loop: unlinks sub from its generation and takes back the loop's
 * reference: returns 1 if it held one (now the caller's to drop), else 0. */
static int sub_unlink(subscriber *sub)
{
    generation *gen = sub->gen;
    if (gen) {
        for (subscriber **pp = &gen->subs; *pp; pp = &(*pp)->next) {
            if (*pp == sub) {
                *pp = sub->next;
                break;
            }
        }
        sub->gen = NULL;
        sub->next = NULL;
    }
    pthread_mutex_lock(&sub->mu);
    int held = sub->loop_ref;
    sub->loop_ref = 0;
    pthread_mutex_unlock(&sub->mu);
    return held;
}

/* On the loop: drops the loop's reference (and the generation's link). */
void gen_sub_detach(subscriber *sub)
{
    if (sub_unlink(sub))
        sub_unref(sub);
}

/* ---- the event log ---- */

/* Frames of events with id > after (ids start at 1). */
static void log_tail(const generation *gen, int64_t after, const char **data, size_t *len)
{
    if (after < 0)
        after = 0;
    if ((size_t)after >= gen->nevents) {
        *data = NULL;
        *len = 0;
        return;
    }
    size_t start = after == 0 ? 0 : gen->events[after - 1].end;
    *data = gen->log.data + start;
    *len = gen->log.len - start;
}

/* Records an event (consumes data) and sends it to the subscribers. */
int gen_emit(generation *gen, event_type type, json_t *data)
{
    char *text = data ? json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(data);
    if (!text)
        return -1;
    if (gen->nevents == gen->cap_events) {
        size_t cap = gen->cap_events ? gen->cap_events + gen->cap_events / 2 : 16;
        event_rec *ev = realloc(gen->events, cap * sizeof *ev);
        if (!ev) {
            free(text);
            return -1;
        }
        gen->events = ev;
        gen->cap_events = cap;
    }
    size_t start = gen->log.len, data_off = 0, data_len = 0;
    if (kp_replay_format_frame(&gen->log, (int64_t)gen->nevents + 1, gen_event_names[type], text, &data_off,
                               &data_len) != 0 ||
        gen->log.len > UINT32_MAX) {
        gen->log.len = start;
        if (gen->log.data)
            gen->log.data[start] = '\0';
        free(text);
        return -1;
    }
    free(text);
    event_rec *rec = &gen->events[gen->nevents];
    *rec = (event_rec){.end = (uint32_t)gen->log.len,
                       .data_off = (uint32_t)data_off,
                       .data_len = (uint32_t)data_len,
                       .type = (uint8_t)type};
    gen->nevents++;
    for (subscriber *s = gen->subs; s; s = s->next)
        gen_sub_write(s, gen->log.data + start, rec->end - start);
    gen_events_emitted(gen, type);
    return 0;
}

/* The events the batches have not stored yet (events.c), as the ending
 * stores them: [{"id","event","data"}...], plus `extra` (type, data text) as
 * the next id when not NULL. Caller frees. */
char *gen_events_json(const generation *gen, event_type extra_type, const char *extra)
{
    kp_buf b = KP_BUF_INIT;
    int rc = kp_buf_puts(&b, "[");
    size_t first = gen->events_stored > 0 ? (size_t)gen->events_stored : 0;
    for (size_t i = first; i < gen->nevents && rc == 0; i++) {
        const event_rec *e = &gen->events[i];
        rc |= kp_buf_printf(&b, "%s{\"id\":%zu,\"event\":\"%s\",\"data\":", i > first ? "," : "", i + 1,
                            gen_event_names[e->type]);
        rc |= kp_buf_append(&b, gen->log.data + e->data_off, e->data_len);
        rc |= kp_buf_puts(&b, "}");
    }
    if (extra && rc == 0)
        rc |= kp_buf_printf(&b, "%s{\"id\":%zu,\"event\":\"%s\",\"data\":%s}", gen->nevents > first ? "," : "",
                            gen->nevents + 1, gen_event_names[extra_type], extra);
    rc |= kp_buf_puts(&b, "]");
    if (rc != 0) {
        kp_buf_free(&b);
        return NULL;
    }
    return kp_buf_steal(&b);
}

int kp_gen_replay_events(const char *events_json_text, int64_t after_id, kp_buf *out)
{
    return kp_replay_render(events_json_text, after_id, out);
}

/* Forwards a replay's pieces to a subscriber's sink. */
typedef struct sub_sink {
    kp_sink sink; /* first member */
    subscriber *sub;
    int ended;
} sub_sink;

static int sub_sink_write(kp_sink *sink, const char *data, size_t len)
{
    gen_sub_write(((sub_sink *)sink)->sub, data, len);
    return 0;
}

static void sub_sink_end(kp_sink *sink)
{
    ((sub_sink *)sink)->ended = 1;
}

/* ---- following a generation that runs on another instance (from the event store) ---- */

static int sub_gone(subscriber *sub)
{
    pthread_mutex_lock(&sub->mu);
    int gone = sub->sink == NULL;
    pthread_mutex_unlock(&sub->mu);
    return gone;
}

/* Sends the stored events that follow sub->after, in id order and without a
 * gap (an id missing stops the page: it comes with a later poll). Returns
 * how many events the store listed, or -1 on an error. */
static int follow_page(kp_store *s, subscriber *sub)
{
    kp_event *evs = NULL;
    size_t count = 0;
    kp_err err = {0};
    kp_buf frames = KP_BUF_INIT;
    if (s->ops->events_list(s, sub->project_id, sub->n, sub->after, GEN_FOLLOW_PAGE, &evs, &count, &err) != KP_OK)
        return -1;
    for (size_t i = 0; i < count && evs[i].id == sub->after + 1; i++) {
        if (kp_replay_format_frame(&frames, evs[i].id, evs[i].type, evs[i].data, NULL, NULL) != 0)
            break;
        sub->after = evs[i].id;
    }
    gen_sub_write(sub, frames.data, frames.len);
    kp_buf_free(&frames);
    kp_event_free_array(evs, count);
    return (int)count;
}

/* On a storage thread: one poll of a followed version. The status is read
 * before the events: a version that had ended by then has every event
 * stored (its ending wrote the rest), so once they are sent it is done. */
static void follow_poll(kp_store *s, subscriber *sub)
{
    kp_err err = {0};
    for (int round = 0; round < GEN_FOLLOW_ROUNDS && !sub->follow_done; round++) {
        kp_version v;
        if (sub_gone(sub) || s->ops->version_get(s, sub->project_id, sub->n, &v, &err) != KP_OK) {
            sub->follow_done = 1; /* the reader left, or the version is gone */
            break;
        }
        int ended = v.status != KP_VER_GENERATING;
        kp_version_clear(&v);
        int listed = follow_page(s, sub);
        if (listed < 0)
            break; /* the next poll tries again */
        if (listed == GEN_FOLLOW_PAGE)
            continue; /* more stored already */
        sub->follow_done = ended;
        break;
    }
    if (sub->follow_done)
        gen_sub_end(sub);
}

/* On a storage thread: the version's persisted events (from the shared
 * replays), then the end; or, while it generates (on another instance: a
 * local one is followed from memory), what the event store has so far. */
static void replay_work(kp_store *s, void *arg)
{
    subscriber *sub = arg;
    kp_stream *rs = NULL;
    kp_err err = {0};
    sub_sink ss = {.sink = {.write = sub_sink_write, .end = sub_sink_end}, .sub = sub};
    if (sub->following) {
        follow_poll(s, sub);
        return;
    }
    kp_status rc = kp_replay_open(sub->g->replays, s, sub->project_id, sub->n, sub->after, &rs, &err);
    if (rc == KP_OK) {
        while (!ss.ended)
            rs->more(rs, &ss.sink);
        rs->release(rs);
    } else if (rc == KP_ECONFLICT) { /* generating */
        sub->following = 1;
        follow_poll(s, sub);
        return;
    }
    gen_sub_end(sub);
}

static void replay_done(void *arg);

static void on_follow_timer(evutil_socket_t fd, short what, void *arg)
{
    subscriber *sub = arg;
    (void)fd;
    (void)what;
    if (sub->g->shut) { /* shutting down: the reader ends here (it may come back elsewhere) */
        sub->follow_done = 1;
        gen_sub_end(sub);
        replay_done(sub);
        return;
    }
    gen_run_storage(sub->g, replay_work, replay_done, sub);
}

/* On the loop: a follower not done polls again after GEN_FOLLOW_POLL_MS (the
 * job's reference stays with it); else the job ends. */
static void replay_done(void *arg)
{
    subscriber *sub = arg;
    kp_gen *g = sub->g;
    if (sub->following && !sub->follow_done && !g->shut && !sub_gone(sub)) {
        struct timeval tv = gen_ms_to_tv(GEN_FOLLOW_POLL_MS);
        if (!sub->poll_timer)
            sub->poll_timer = evtimer_new(kp_loop_base(g->opt.loop), on_follow_timer, sub);
        if (sub->poll_timer && evtimer_add(sub->poll_timer, &tv) == 0)
            return;
        gen_sub_end(sub);
    } else if (sub->following && !sub->follow_done) {
        gen_sub_end(sub);
    }
    if (sub->poll_timer) {
        event_free(sub->poll_timer);
        sub->poll_timer = NULL;
    }
    sub_drop(sub, sub_unlink(sub) + 1); /* the loop's, if still held, and the job's */
    g->replaying--;
    gen_shutdown_maybe_done(g);
}

/* A reader of a version that is not running (it ended before the reader came):
 * replayed off the loop, which must not wait for the database. */
static void replay_finished(subscriber *sub)
{
    pthread_mutex_lock(&sub->mu);
    sub->refs++; /* the job's: the reader may leave meanwhile */
    pthread_mutex_unlock(&sub->mu);
    sub->g->replaying++;
    gen_run_storage(sub->g, replay_work, replay_done, sub);
}

static void task_subscribe(void *arg)
{
    subscriber *sub = arg;
    kp_gen *g = sub->g;
    generation *gen = g->shut ? NULL : gen_find(g, sub->project_id, sub->n);
    if (!gen) {
        replay_finished(sub);
        return;
    }
    const char *data;
    size_t len;
    log_tail(gen, sub->after, &data, &len);
    gen_sub_write(sub, data, len);
    sub->gen = gen;
    sub->next = gen->subs;
    gen->subs = sub;
}

/* Posted by release(): carries the stream's reference. */
static void task_unsubscribe(void *arg)
{
    subscriber *sub = arg;
    sub_drop(sub, sub_unlink(sub) + 1); /* the loop's, if still held, and the stream's */
}

static void stream_start(kp_stream *s, kp_sink *sink)
{
    subscriber *sub = (subscriber *)s;
    pthread_mutex_lock(&sub->mu);
    sub->sink = sink;
    sub->refs++;
    sub->loop_ref = 1;
    pthread_mutex_unlock(&sub->mu);
    if (kp_loop_post(sub->g->opt.loop, task_subscribe, sub) != 0) {
        pthread_mutex_lock(&sub->mu);
        sub->loop_ref = 0;
        sub->refs--;
        pthread_mutex_unlock(&sub->mu);
        sink->end(sink);
    }
}

static void stream_release(kp_stream *s)
{
    subscriber *sub = (subscriber *)s;
    pthread_mutex_lock(&sub->mu);
    sub->sink = NULL;
    int held = sub->loop_ref;
    pthread_mutex_unlock(&sub->mu);
    if (held && kp_loop_post(sub->g->opt.loop, task_unsubscribe, sub) == 0)
        return;
    sub_unref(sub);
}

kp_status kp_gen_stream_open(kp_gen *g, const char *project_id, int64_t n, int64_t after_id, kp_stream **out,
                             kp_err *err)
{
    *out = NULL;
    kp_status rc = slot_take(g, project_id, n, err);
    if (rc != KP_OK)
        return rc;
    subscriber *sub = calloc(1, sizeof *sub);
    if (!sub || pthread_mutex_init(&sub->mu, NULL) != 0) {
        free(sub);
        slot_give_back(g, project_id, n);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    sub->stream.start = stream_start;
    sub->stream.release = stream_release;
    sub->refs = 1;
    sub->g = g;
    sub->counted = 1;
    gen_copy_str(sub->project_id, sizeof sub->project_id, project_id);
    sub->n = n;
    sub->after = after_id < 0 ? 0 : after_id;
    *out = &sub->stream;
    return KP_OK;
}

kp_stream *kp_gen_stream(kp_gen *g, const char *project_id, int64_t n, int64_t after_id)
{
    kp_stream *st = NULL;
    kp_err err = {0};
    kp_gen_stream_open(g, project_id, n, after_id, &st, &err);
    return st;
}

kp_status kp_gen_replay(kp_gen *g, kp_store *s, const char *project_id, int64_t n, int64_t after_id, kp_stream **out,
                        kp_err *err)
{
    return kp_replay_open(g->replays, s, project_id, n, after_id < 0 ? 0 : after_id, out, err);
}
