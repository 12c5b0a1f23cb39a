/*
 * generator.c - see generator.h.
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
 * failure is queued and retried on the loop (unended_*); a crash is finished
 * by kp_gen_recover() at the next start.
 *
 * Storage off the loop: gen_publish() and gen_fail() do their quick part on
 * the loop, hand the files and row updates to the storage pool
 * (gen/storage.h, run_storage) and mark the generation `storing`; the result
 * comes back to the loop, which then sends the last event and frees the
 * generation. While it is storing nothing else may end it (steps, cancel and
 * shutdown skip it), and readers may still join and get the last event.
 */
#include "gen/generator.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "core/id.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "domain/credits.h"
#include "gen/fileblocks.h"
#include "gen/prompt.h"
#include "gen/publish.h"
#include "gen/replay.h"
#include "gen/storage.h"

#define MAX_CONTINUATIONS 2
#define MAX_APP_FILES KP_PUBLISH_MAX_FILES
#define MAX_APP_BYTES KP_PUBLISH_MAX_BYTES
#define DELTA_FLUSH_BYTES 1024
#define DEFAULT_FLUSH_MS 50

#define METRIC_IN_FLIGHT "generations_in_flight"
#define METRIC_SPENT "credits_spent_total"

typedef enum event_type { EV_PROJECT = 0, EV_DELTA, EV_FILE, EV_DONE, EV_ERROR } event_type;
static const char *const event_names[] = {"project", "delta", "file", "done", "error"};

/* One event in a generation's log: its SSE frame ends at `end` in the log;
 * its data (JSON) is at data_off, data_len bytes. */
typedef struct event_rec {
    size_t end;
    size_t data_off;
    size_t data_len;
    event_type type;
} event_rec;

typedef struct generation generation;
typedef struct sync_cmd sync_cmd;
typedef struct unended unended;

/* How many live readers follow a version (the cap is KOUMPA_MAX_READERS_PER_GENERATION). */
typedef struct reader_slot {
    char project_id[KP_ID_MAX];
    int64_t n;
    int count;
    struct reader_slot *next;
} reader_slot;

typedef struct subscriber {
    kp_stream stream; /* first member: the stream pointer is the subscriber */
    pthread_mutex_t mu;
    kp_sink *sink; /* mu: set by start, cleared by release */
    int refs;      /* mu */
    int loop_ref;  /* mu: the loop holds a reference */
    /* loop-only */
    kp_gen *g;
    char project_id[KP_ID_MAX];
    int64_t n;
    int64_t after;
    int counted;     /* holds one of the version's reader slots */
    generation *gen; /* the generation it follows, or NULL */
    struct subscriber *next;
} subscriber;

struct generation {
    generation *next;
    kp_gen *g;
    uint64_t serial;
    char project_id[KP_ID_MAX];
    char user_id[KP_ID_MAX];
    char reservation_id[KP_ID_MAX];
    int64_t n;
    int64_t cost;
    int64_t prev_n;        /* previous ready version whose files carry over, 0 if none */
    char *prev_files_json; /* its manifest */
    kp_prompt prompt;
    kp_llm_call *call; /* the provider call in flight, or NULL */
    kp_fileblocks *parser;
    kp_buf output;        /* the model's output, up to the resume point after a continuation */
    int64_t output_chars; /* characters the model has written, over every call (the cancel policy's measure) */
    int continuations;
    kp_llm_usage usage; /* summed over calls */
    kp_buf pending;     /* delta text not sent yet */
    struct event *flush;
    int flush_armed;
    kp_buf log; /* every event's SSE frame, in order */
    event_rec *events;
    size_t nevents, cap_events;
    subscriber *subs;
    struct timespec started;
    int call_ended;   /* the current call's final callback came (even inside start()) */
    int ending;       /* a failure is scheduled: ignore provider callbacks */
    int storing;      /* its end is being stored on the storage pool: only the result may end it */
    sync_cmd *on_end; /* a command waiting for it to end (cancel), or NULL */
    char fail_code[64];
    char fail_message[512];
};

struct kp_gen {
    kp_gen_options opt;
    kp_refund_policy policy;  /* from the configuration */
    kp_store *store;          /* the loop's handle */
    kp_gen_storage *storage;  /* where generations end: files, rows, credits (off the loop) */
    kp_replay_cache *replays; /* finished versions' events, rendered once for every reader */
    reader_slot *readers;     /* mu: live readers per version, for the cap */
    pthread_mutex_t mu;
    int stopping; /* mu: no new submissions */
    _Atomic int64_t in_flight;
    /* loop-only */
    generation *gens;
    uint64_t next_serial;
    struct event *keepalive;
    int shut;                  /* shutdown ran on the loop */
    sync_cmd *shutdown_wait;   /* the shutdown waiting for the last generation (and replay) to end */
    int replaying;             /* replays running on the storage pool */
    int shut_done;             /* shutdown returned: storage work runs on the loop */
    unended *unended;          /* failed versions whose ending could not be written yet */
    struct event *retry_timer; /* retries them */
    long retry_ms;
};

/* ---- small helpers ---- */

static int64_t elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void copy_str(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

static struct timeval ms_to_tv(long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

void kp_gen_version_url(const kp_config *cfg, const char *project_id, int64_t n, char *out, size_t len)
{
    const char *base = cfg && cfg->apps_url ? cfg->apps_url : "";
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    snprintf(out, len, "%.*s/%s/" KP_GEN_VERSION_SEGMENT "%lld/", (int)blen, base, project_id, (long long)n);
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

/* ---- subscribers ---- */

/* ---- reader slots (any thread, under g->mu) ---- */

static reader_slot **find_slot(kp_gen *g, const char *project_id, int64_t n)
{
    reader_slot **pp = &g->readers;
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
        copy_str((*pp)->project_id, sizeof(*pp)->project_id, project_id);
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

static void sub_write(subscriber *sub, const char *data, size_t len)
{
    if (len == 0)
        return;
    pthread_mutex_lock(&sub->mu);
    if (sub->sink)
        sub->sink->write(sub->sink, data, len);
    pthread_mutex_unlock(&sub->mu);
}

static void sub_end(subscriber *sub)
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
static void sub_detach(subscriber *sub)
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
static int emit(generation *gen, event_type type, json_t *data)
{
    char *text = data ? json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(data);
    if (!text)
        return -1;
    if (gen->nevents == gen->cap_events) {
        size_t cap = gen->cap_events ? gen->cap_events * 2 : 16;
        event_rec *ev = realloc(gen->events, cap * sizeof *ev);
        if (!ev) {
            free(text);
            return -1;
        }
        gen->events = ev;
        gen->cap_events = cap;
    }
    size_t start = gen->log.len;
    event_rec *rec = &gen->events[gen->nevents];
    if (kp_replay_format_frame(&gen->log, (int64_t)gen->nevents + 1, event_names[type], text, &rec->data_off,
                               &rec->data_len) != 0) {
        gen->log.len = start;
        free(text);
        return -1;
    }
    free(text);
    rec->end = gen->log.len;
    rec->type = type;
    gen->nevents++;
    for (subscriber *s = gen->subs; s; s = s->next)
        sub_write(s, gen->log.data + start, rec->end - start);
    return 0;
}

/* The events as persisted: [{"id","event","data"}...], plus `extra` (type,
 * data text) as the next id when not NULL. Caller frees. */
static char *events_json(const generation *gen, event_type extra_type, const char *extra)
{
    kp_buf b = KP_BUF_INIT;
    int rc = kp_buf_puts(&b, "[");
    for (size_t i = 0; i < gen->nevents && rc == 0; i++) {
        const event_rec *e = &gen->events[i];
        rc |= kp_buf_printf(&b, "%s{\"id\":%zu,\"event\":\"%s\",\"data\":", i ? "," : "", i + 1, event_names[e->type]);
        rc |= kp_buf_append(&b, gen->log.data + e->data_off, e->data_len);
        rc |= kp_buf_puts(&b, "}");
    }
    if (extra && rc == 0)
        rc |= kp_buf_printf(&b, "%s{\"id\":%zu,\"event\":\"%s\",\"data\":%s}", gen->nevents ? "," : "",
                            gen->nevents + 1, event_names[extra_type], extra);
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

/* ---- deltas ---- */

static void flush_deltas(generation *gen)
{
    if (gen->pending.len == 0)
        return; /* nothing pending (its data may still be NULL) */
    size_t n = utf8_whole_prefix(gen->pending.data, gen->pending.len);
    if (n == 0)
        return;
    json_t *text = text_json(gen->pending.data, n);
    if (text)
        emit(gen, EV_DELTA, json_pack("{s:o}", "text", text));
    kp_buf_consume(&gen->pending, n);
}

static void on_flush_timer(evutil_socket_t fd, short what, void *arg)
{
    generation *gen = arg;
    (void)fd;
    (void)what;
    gen->flush_armed = 0;
    flush_deltas(gen);
}

static void add_delta(generation *gen, const char *text, size_t len)
{
    if (kp_buf_append(&gen->pending, text, len) != 0)
        return; /* the live view loses a piece; the stored result does not */
    if (gen->pending.len >= DELTA_FLUSH_BYTES) {
        flush_deltas(gen);
        return;
    }
    if (!gen->flush_armed && gen->flush) {
        long ms = gen->g->opt.delta_flush_ms > 0 ? gen->g->opt.delta_flush_ms : DEFAULT_FLUSH_MS;
        struct timeval tv = ms_to_tv(ms);
        if (evtimer_add(gen->flush, &tv) == 0)
            gen->flush_armed = 1;
    }
}

/* ---- life of a generation (loop thread) ---- */

static void sync_cmd_finish(sync_cmd *c, kp_status rc);

/* Runs work(store, arg) off the loop, then done(arg) on it. Once shutdown has
 * returned (the loop is being stopped), both run here and now. */
static void run_storage(kp_gen *g, void (*work)(kp_store *s, void *arg), void (*done)(void *arg), void *arg)
{
    if (g->shut_done) {
        work(g->store, arg);
        done(arg);
        return;
    }
    kp_gen_storage_run(g->storage, g->store, work, done, arg);
}

/* A waiting shutdown returns once no generation and no replay is left. The
 * waiter may free g as soon as it is woken: g is not touched after. */
static void shutdown_maybe_done(kp_gen *g)
{
    if (g->shutdown_wait && !g->gens && g->replaying == 0) {
        sync_cmd *wait = g->shutdown_wait;
        g->shutdown_wait = NULL;
        g->shut_done = 1;
        sync_cmd_finish(wait, KP_OK);
    }
}

static void gen_destroy(generation *gen)
{
    kp_gen *g = gen->g;
    for (generation **pp = &g->gens; *pp; pp = &(*pp)->next) {
        if (*pp == gen) {
            *pp = gen->next;
            atomic_fetch_sub(&g->in_flight, 1);
            kp_metrics_gauge_add(g->opt.metrics, METRIC_IN_FLIGHT, -1);
            break;
        }
    }
    while (gen->subs) {
        subscriber *s = gen->subs;
        sub_end(s);
        sub_detach(s);
    }
    if (gen->call)
        g->opt.llm->ops->cancel(g->opt.llm, gen->call);
    if (gen->flush)
        event_free(gen->flush);
    kp_fileblocks_free(gen->parser);
    kp_prompt_free(&gen->prompt);
    free(gen->prev_files_json);
    kp_buf_free(&gen->output);
    kp_buf_free(&gen->pending);
    kp_buf_free(&gen->log);
    free(gen->events);
    if (gen->on_end)
        sync_cmd_finish(gen->on_end, KP_OK);
    free(gen);
    shutdown_maybe_done(g);
}

/* Sends the terminal frame (already formatted) to every reader, ends them. */
static void gen_close_subscribers(generation *gen)
{
    while (gen->subs) {
        subscriber *s = gen->subs;
        sub_end(s);
        sub_detach(s);
    }
}

static void fill_result_fields(generation *gen, kp_version *v)
{
    size_t mlen = 0;
    const char *msg = gen->parser ? kp_fileblocks_message(gen->parser, &mlen) : NULL;
    memset(v, 0, sizeof *v);
    copy_str(v->project_id, sizeof v->project_id, gen->project_id);
    v->n = gen->n;
    copy_str(v->reservation_id, sizeof v->reservation_id, gen->reservation_id);
    v->message = msg ? strndup(msg, mlen) : NULL;
    copy_str(v->model, sizeof v->model, gen->g->opt.llm ? gen->g->opt.llm->model : "");
    v->input_tokens = gen->usage.input_tokens;
    v->output_tokens = gen->usage.output_tokens;
    v->duration_ms = elapsed_ms(&gen->started);
    v->updated_at = kp_time_now_ms();
}

/* The policy for versions whose generation is not running here: they are
 * interrupted (always refunded) or were failed by an older build. */
static const kp_refund_policy fallback_policy = KP_REFUND_POLICY_DEFAULT;

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

/* Describes a failure for kp_credits_end_failed: its error event, appended
 * to the events sent before it. Used on a storage thread: it holds copies,
 * never the generation. */
typedef struct failure_note {
    const char *events;    /* the events so far, a JSON array (NULL: none) */
    int64_t next_event_id; /* the error event's id */
    const char *code;
    const char *message;
    int64_t cost;
    json_t *data; /* the error event's data, for the readers */
} failure_note;

static int describe_failure(void *ud, const kp_credits_outcome *o, kp_version *v)
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
        kp_status rc = kp_credits_end_failed(g->store, &g->policy, &failed, &u->v, describe_failure, &note, NULL, &err);
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
    struct timeval tv = ms_to_tv(g->retry_ms);
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
    copy_str(u->res_id, sizeof u->res_id, j->v.reservation_id);
    copy_str(u->user_id, sizeof u->user_id, j->failed.user_id ? j->failed.user_id : "");
    copy_str(u->code, sizeof u->code, j->v.error_code);
    copy_str(u->message, sizeof u->message, j->v.error_message ? j->v.error_message : "");
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
        struct timeval tv = ms_to_tv(g->retry_ms);
        evtimer_add(g->retry_timer, &tv);
    }
}

static void unended_free_all(kp_gen *g)
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
static void unended_drop_all(kp_gen *g)
{
    if (g->unended && unended_retry_all(g) > 0)
        kp_log(KP_LOG_WARN, "failed versions left for start-up recovery");
    unended_free_all(g);
}

/* On a storage thread: the failed row and the credit's settlement (one
 * transaction), then the blobs removed. */
static void fail_work(kp_store *s, void *arg)
{
    fail_job *j = arg;
    kp_version *v = &j->v;
    kp_err err = {0};
    kp_credits_outcome outcome;
    kp_status rc = kp_credits_end_failed(s, &j->policy, &j->failed, v, describe_failure, &j->note, &outcome, &err);
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
        emit(gen, EV_ERROR, j->note.data);
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
static void gen_fail(generation *gen, const char *code, const char *message)
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
    copy_str(j->v.error_code, sizeof j->v.error_code, code);
    j->v.error_message = strdup(message);
    j->events = events_json(gen, EV_ERROR, NULL);
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
    run_storage(g, fail_work, fail_done, j);
}

/* A success on its way to the store. */
typedef struct publish_job {
    generation *gen;
    kp_publish pub;
} publish_job;

static void publish_work(kp_store *s, void *arg)
{
    publish_job *j = arg;
    kp_publish_store(&j->pub, s);
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
        emit(gen, EV_DONE, j->pub.done);
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
    flush_deltas(gen);
    publish_job *j = calloc(1, sizeof *j);
    if (!j) {
        gen_fail(gen, "internal_error", "out of memory");
        return;
    }
    kp_publish *p = &j->pub;
    j->gen = gen;
    p->cfg = g->opt.cfg;
    p->blob = g->opt.blob;
    copy_str(p->user_id, sizeof p->user_id, gen->user_id);
    p->prev_n = gen->prev_n;
    if (kp_publish_prepare(p, gen->parser, gen->prev_files_json, why, sizeof why) != 0) {
        kp_publish_clear(p);
        free(j);
        gen_fail(gen, "invalid_output", why);
        return;
    }
    fill_result_fields(gen, &p->row);
    p->events = events_json(gen, EV_DONE, NULL);
    p->next_event_id = (int64_t)gen->nevents + 1;
    gen->storing = 1;
    run_storage(g, publish_work, publish_done, j);
}

/* ---- deferred steps ---- */

typedef struct step {
    kp_gen *g;
    uint64_t serial;
    void (*fn)(generation *gen);
} step;

static generation *find_by_serial(kp_gen *g, uint64_t serial)
{
    for (generation *gen = g->gens; gen; gen = gen->next)
        if (gen->serial == serial)
            return gen;
    return NULL;
}

static void run_step(void *arg)
{
    step *st = arg;
    generation *gen = find_by_serial(st->g, st->serial);
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
    copy_str(gen->fail_code, sizeof gen->fail_code, code);
    copy_str(gen->fail_message, sizeof gen->fail_message, message);
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
    flush_deltas(gen);
    emit(gen, EV_FILE, json_pack("{s:s,s:I}", "path", path, "bytes", (json_int_t)len));
    return KP_OK;
}

static void on_llm_text(void *ud, const char *text, size_t len)
{
    generation *gen = ud;
    kp_err err = {0};
    if (gen->ending || len == 0)
        return;
    if (kp_buf_append(&gen->output, text, len) != 0) {
        fail_soon(gen, "internal_error", "out of memory");
        return;
    }
    for (size_t i = 0; i < len; i++)
        gen->output_chars += ((unsigned char)text[i] & 0xC0) != 0x80; /* UTF-8 lead bytes: characters */
    add_delta(gen, text, len);
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
    size_t keep = kp_fileblocks_resume_offset(gen->parser);
    if (kp_fileblocks_resume(gen->parser, &err) != KP_OK || keep > gen->output.len) {
        gen_fail(gen, "internal_error", "the generation could not be continued");
        return;
    }
    gen->output.len = keep;
    if (gen->output.data)
        gen->output.data[keep] = '\0';
    if (kp_prompt_set_continuation(&gen->prompt, gen->output.data ? gen->output.data : "", keep, &err) != KP_OK) {
        gen_fail(gen, "internal_error", "the generation could not be continued");
        return;
    }
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

static void task_start(void *arg)
{
    generation *gen = arg;
    kp_gen *g = gen->g;
    gen->next = g->gens;
    g->gens = gen;
    gen->serial = ++g->next_serial;
    atomic_fetch_add(&g->in_flight, 1);
    kp_metrics_gauge_add(g->opt.metrics, METRIC_IN_FLIGHT, 1);
    gen->flush = evtimer_new(kp_loop_base(g->opt.loop), on_flush_timer, gen);
    emit(gen, EV_PROJECT, json_pack("{s:s,s:I}", "project_id", gen->project_id, "version", (json_int_t)gen->n));
    if (g->shut) {
        gen_fail(gen, "interrupted", "the server is shutting down");
        return;
    }
    start_call(gen);
}

static generation *find_gen(kp_gen *g, const char *project_id, int64_t n)
{
    for (generation *gen = g->gens; gen; gen = gen->next)
        if (gen->n == n && strcmp(gen->project_id, project_id) == 0)
            return gen;
    return NULL;
}

/* Forwards a replay's pieces to a subscriber's sink. */
typedef struct sub_sink {
    kp_sink sink; /* first member */
    subscriber *sub;
    int ended;
} sub_sink;

static int sub_sink_write(kp_sink *sink, const char *data, size_t len)
{
    sub_write(((sub_sink *)sink)->sub, data, len);
    return 0;
}

static void sub_sink_end(kp_sink *sink)
{
    ((sub_sink *)sink)->ended = 1;
}

/* On a storage thread: the version's persisted events (from the shared replays), then the end. */
static void replay_work(kp_store *s, void *arg)
{
    subscriber *sub = arg;
    kp_stream *rs = NULL;
    kp_err err = {0};
    sub_sink ss = {.sink = {.write = sub_sink_write, .end = sub_sink_end}, .sub = sub};
    if (kp_replay_open(sub->g->replays, s, sub->project_id, sub->n, sub->after, &rs, &err) == KP_OK) {
        while (!ss.ended)
            rs->more(rs, &ss.sink);
        rs->release(rs);
    }
    sub_end(sub);
}

static void replay_done(void *arg)
{
    subscriber *sub = arg;
    kp_gen *g = sub->g;
    sub_drop(sub, sub_unlink(sub) + 1); /* the loop's, if still held, and the job's */
    g->replaying--;
    shutdown_maybe_done(g);
}

/* A reader of a version that is not running (it ended before the reader came):
 * replayed off the loop, which must not wait for the database. */
static void replay_finished(subscriber *sub)
{
    pthread_mutex_lock(&sub->mu);
    sub->refs++; /* the job's: the reader may leave meanwhile */
    pthread_mutex_unlock(&sub->mu);
    sub->g->replaying++;
    run_storage(sub->g, replay_work, replay_done, sub);
}

static void task_subscribe(void *arg)
{
    subscriber *sub = arg;
    kp_gen *g = sub->g;
    generation *gen = g->shut ? NULL : find_gen(g, sub->project_id, sub->n);
    if (!gen) {
        replay_finished(sub);
        return;
    }
    const char *data;
    size_t len;
    log_tail(gen, sub->after, &data, &len);
    sub_write(sub, data, len);
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
    copy_str(sub->project_id, sizeof sub->project_id, project_id);
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

/* A command an HTTP thread waits for. */
struct sync_cmd {
    kp_gen *g;
    char project_id[KP_ID_MAX];
    int64_t n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    kp_status rc;
};

static void sync_cmd_finish(sync_cmd *c, kp_status rc)
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
    generation *gen = find_gen(c->g, c->project_id, c->n);
    if (!gen || gen->ending) {
        sync_cmd_finish(c, KP_ECONFLICT);
        return;
    }
    gen->on_end = c; /* answered once the version is failed and refunded */
    gen_fail(gen, "canceled", "the generation was canceled");
}

kp_status kp_gen_cancel(kp_gen *g, const char *project_id, int64_t n, kp_err *err)
{
    sync_cmd c;
    memset(&c, 0, sizeof c);
    copy_str(c.project_id, sizeof c.project_id, project_id);
    c.n = n;
    kp_status rc = sync_cmd_run(g, &c, task_cancel);
    if (rc == KP_ECONFLICT)
        return kp_err_set(err, KP_ECONFLICT, "version %lld is not generating", (long long)n);
    if (rc != KP_OK)
        return kp_err_set(err, rc, "the generation service is stopping");
    return KP_OK;
}

static void task_shutdown(void *arg)
{
    sync_cmd *c = arg;
    kp_gen *g = c->g;
    g->shut = 1;
    for (generation *gen = g->gens; gen; gen = gen->next)
        if (!gen->storing)
            gen_fail(gen, "interrupted", "the server is shutting down");
    unended_drop_all(g);
    if (g->keepalive) {
        event_free(g->keepalive);
        g->keepalive = NULL;
    }
    g->shutdown_wait = c; /* finished when the last generation or replay ends */
    shutdown_maybe_done(g);
}

static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
    static const char comment[] = ": keep-alive\n\n";
    kp_gen *g = arg;
    (void)fd;
    (void)what;
    for (generation *gen = g->gens; gen; gen = gen->next)
        for (subscriber *s = gen->subs; s; s = s->next)
            sub_write(s, comment, sizeof comment - 1);
}

static void task_init(void *arg)
{
    sync_cmd *c = arg;
    kp_gen *g = c->g;
    long ms = g->opt.keepalive_ms > 0 ? g->opt.keepalive_ms : KP_GEN_KEEPALIVE_MS;
    struct timeval tv = ms_to_tv(ms);
    g->keepalive = event_new(kp_loop_base(g->opt.loop), -1, EV_PERSIST, on_keepalive, g);
    sync_cmd_finish(c, g->keepalive && event_add(g->keepalive, &tv) == 0 ? KP_OK : KP_ENOMEM);
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
    kp_gen_storage_free(g->storage);
    unended_free_all(g); /* only when shutdown could not run on the loop */
    kp_replay_cache_free(g->replays);
    while (g->readers) { /* only when readers outlive the service */
        reader_slot *next = g->readers->next;
        free(g->readers);
        g->readers = next;
    }
    if (g->store)
        g->store->ops->close(g->store);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* ---- submission (HTTP thread) ---- */

static kp_status fail_with(kp_gen_result *res, const char *code, kp_err *err, kp_status st, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static kp_status fail_with(kp_gen_result *res, const char *code, kp_err *err, kp_status st, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    res->error_code = code;
    return kp_err_set(err, st, "%s", msg);
}

/* What a follow-up builds on: the earlier ready versions and the latest ready one's files. */
typedef struct history {
    kp_version *versions;
    size_t nversions;
    kp_prompt_turn *turns;
    size_t nturns;
    json_t *manifest; /* the latest ready version's files_json (owns the paths) */
    kp_prompt_file *files;
    kp_buf *contents; /* contents[i] backs files[i] */
    size_t nfiles;
    const kp_version *latest_ready;
} history;

static void history_free(history *h)
{
    for (size_t i = 0; i < h->nfiles; i++)
        kp_buf_free(&h->contents[i]);
    free(h->contents);
    free(h->files);
    free(h->turns);
    json_decref(h->manifest);
    kp_version_free_array(h->versions, h->nversions);
    memset(h, 0, sizeof *h);
}

static kp_status load_files(kp_gen *g, const char *project_id, history *h, kp_err *err)
{
    const kp_version *v = h->latest_ready;
    h->manifest = json_loads(v->files_json ? v->files_json : "[]", 0, NULL);
    size_t n = json_is_array(h->manifest) ? json_array_size(h->manifest) : 0;
    h->files = calloc(n + 1, sizeof *h->files);
    h->contents = calloc(n + 1, sizeof *h->contents);
    if (!h->files || !h->contents)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *path = json_string_value(json_object_get(json_array_get(h->manifest, i), "path"));
        char key[KP_BLOB_KEY_MAX + 1];
        if (!path)
            continue;
        snprintf(key, sizeof key, "apps/%s/v%lld/%s", project_id, (long long)v->n, path);
        kp_status rc = g->opt.blob->ops->get(g->opt.blob, key, &h->contents[h->nfiles], NULL, err);
        if (rc != KP_OK)
            return rc;
        h->files[h->nfiles].path = path;
        h->files[h->nfiles].content = h->contents[h->nfiles].data ? h->contents[h->nfiles].data : "";
        h->files[h->nfiles].len = h->contents[h->nfiles].len;
        h->nfiles++;
    }
    return KP_OK;
}

static kp_status load_history(kp_gen *g, kp_store *s, const kp_project *p, history *h, kp_gen_result *res, kp_err *err)
{
    kp_status rc = s->ops->version_list(s, p->id, &h->versions, &h->nversions, err);
    if (rc != KP_OK)
        return rc;
    h->turns = calloc(h->nversions + 1, sizeof *h->turns);
    if (!h->turns)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    for (size_t i = 0; i < h->nversions; i++) {
        const kp_version *v = &h->versions[i];
        if (v->status == KP_VER_GENERATING)
            return fail_with(res, "generation_in_progress", err, KP_ECONFLICT,
                             "version %lld of this project is still generating", (long long)v->n);
        if (v->status != KP_VER_READY)
            continue;
        h->turns[h->nturns].prompt = v->prompt;
        h->turns[h->nturns].message = v->message;
        h->nturns++;
        h->latest_ready = v;
    }
    return h->latest_ready ? load_files(g, p->id, h, err) : KP_OK;
}

static int is_stopping(kp_gen *g)
{
    pthread_mutex_lock(&g->mu);
    int stopping = g->stopping;
    pthread_mutex_unlock(&g->mu);
    return stopping;
}

/* Admits the generation in one transaction (domain/credits.h
 * kp_credits_admit): the plan's limit of generations at a time, the
 * reservation, and the rows (a new project with version 1, or version n of
 * p). A refusal or a failure leaves nothing behind. */
static kp_status admit(kp_gen *g, kp_store *s, const kp_gen_request *r, const kp_project *p, int64_t n,
                       char res_id[KP_ID_MAX], kp_gen_result *res, kp_err *err)
{
    const kp_plan *plan = r->plan;
    kp_version v;
    kp_project np;
    int64_t now = kp_time_now_ms();
    memset(&v, 0, sizeof v);
    memset(&np, 0, sizeof np);
    res_id[0] = '\0';
    if (g->opt.cfg->generation_cost > 0)
        kp_id_new("res", res_id, KP_ID_MAX);
    v.n = n;
    v.status = KP_VER_GENERATING;
    copy_str(v.reservation_id, sizeof v.reservation_id, res_id);
    v.prompt = (char *)r->prompt;
    v.created_at = v.updated_at = now;
    if (p) {
        copy_str(v.project_id, sizeof v.project_id, p->id);
    } else {
        kp_id_new_at("prj", np.id, sizeof np.id, &now); /* created_at: the time in the id */
        v.created_at = v.updated_at = now;
        copy_str(np.user_id, sizeof np.user_id, r->user_id);
        if (r->name && *r->name)
            copy_str(np.name, sizeof np.name, r->name);
        else
            kp_prompt_default_name(r->prompt, np.name, sizeof np.name);
        np.latest_version = 1;
        np.created_at = np.updated_at = now;
        copy_str(v.project_id, sizeof v.project_id, np.id);
        copy_str(res->project_id, sizeof res->project_id, np.id);
    }
    kp_admit_request a = {.user_id = r->user_id,
                          .res_id = res_id,
                          .amount = g->opt.cfg->generation_cost,
                          .max_generating = plan->max_concurrent_generations,
                          .project = p ? NULL : &np,
                          .version = &v};
    kp_status rc = kp_credits_admit(s, &a, &res->balance, err);
    if (rc == KP_ERATE)
        rc = fail_with(res, "too_many_generations", err, KP_ERATE,
                       "your plan (%s) allows %lld generation%s at a time; wait for one to finish", plan->name,
                       (long long)plan->max_concurrent_generations, plan->max_concurrent_generations == 1 ? "" : "s");
    else if (rc == KP_ECREDITS)
        res->error_code = "insufficient_credits";
    else if (rc == KP_ECONFLICT)
        res->error_code = "generation_in_progress";
    else if (rc == KP_ENOTFOUND)
        rc = fail_with(res, "not_found", err, KP_ENOTFOUND, "no such project");
    if (rc != KP_OK)
        res_id[0] = '\0';
    return rc;
}

/* When the loop refuses the generation (stopping): fail the fresh version here. */
static void fail_unstarted(kp_store *s, generation *gen)
{
    kp_err err = {0};
    kp_version v;
    memset(&v, 0, sizeof v);
    copy_str(v.project_id, sizeof v.project_id, gen->project_id);
    v.n = gen->n;
    v.status = KP_VER_FAILED;
    copy_str(v.error_code, sizeof v.error_code, "interrupted");
    v.error_message = "the server is shutting down";
    v.updated_at = kp_time_now_ms();
    kp_failed_generation failed = {.res_id = gen->reservation_id, .code = "interrupted"};
    if (kp_credits_end_failed(s, &fallback_policy, &failed, &v, NULL, NULL, NULL, &err) != KP_OK)
        kp_log_json(
            KP_LOG_ERROR, "cannot fail an unstarted version",
            json_pack("{s:s,s:I,s:s}", "project_id", gen->project_id, "version", (json_int_t)gen->n, "error", err.msg));
}

static generation *generation_new(kp_gen *g, const kp_gen_request *r, const char *project_id, int64_t n,
                                  const char *res_id, history *h, kp_prompt *prompt, kp_err *err)
{
    generation *gen = calloc(1, sizeof *gen);
    if (!gen) {
        kp_err_set(err, KP_ENOMEM, "out of memory");
        return NULL;
    }
    gen->g = g;
    copy_str(gen->project_id, sizeof gen->project_id, project_id);
    copy_str(gen->user_id, sizeof gen->user_id, r->user_id);
    copy_str(gen->reservation_id, sizeof gen->reservation_id, res_id);
    gen->n = n;
    gen->cost = res_id[0] ? g->opt.cfg->generation_cost : 0;
    if (h->latest_ready) {
        gen->prev_n = h->latest_ready->n;
        gen->prev_files_json = strdup(h->latest_ready->files_json ? h->latest_ready->files_json : "[]");
    }
    kp_fileblocks_opts fo;
    kp_fileblocks_default_opts(&fo);
    fo.max_files = MAX_APP_FILES;
    fo.max_total_bytes = MAX_APP_BYTES;
    kp_fileblocks_cbs cbs = {.on_file_done = on_block_file_done};
    if ((h->latest_ready && !gen->prev_files_json) || kp_fileblocks_new(&fo, &cbs, gen, &gen->parser, err) != KP_OK) {
        kp_fileblocks_free(gen->parser);
        free(gen->prev_files_json);
        free(gen);
        kp_err_set(err, KP_ENOMEM, "out of memory");
        return NULL;
    }
    gen->prompt = *prompt;
    memset(prompt, 0, sizeof *prompt);
    clock_gettime(CLOCK_MONOTONIC, &gen->started);
    return gen;
}

kp_status kp_gen_submit(kp_gen *g, kp_store *s, const kp_gen_request *r, kp_gen_result *res, kp_err *err)
{
    history h;
    kp_prompt prompt;
    kp_project p;
    char res_id[KP_ID_MAX] = "";
    int follow_up = r->project_id && *r->project_id;
    int64_t n = 1;
    memset(res, 0, sizeof *res);
    memset(&h, 0, sizeof h);
    memset(&prompt, 0, sizeof prompt);
    res->error_code = "";

    if (!g->opt.llm)
        return fail_with(res, "llm_not_configured", err, KP_EUNAVAILABLE, "%s",
                         g->opt.llm_missing ? g->opt.llm_missing
                                            : "no LLM provider is configured: set ANTHROPIC_API_KEY");
    if (is_stopping(g))
        return fail_with(res, "unavailable", err, KP_EUNAVAILABLE, "the server is shutting down");
    kp_status rc = KP_OK;
    if (follow_up) {
        rc = s->ops->project_get(s, r->project_id, &p, err);
        if (rc == KP_ENOTFOUND || (rc == KP_OK && strcmp(p.user_id, r->user_id) != 0)) {
            rc = fail_with(res, "not_found", err, KP_ENOTFOUND, "no such project");
            goto cleanup;
        }
        if (rc == KP_OK)
            rc = load_history(g, s, &p, &h, res, err);
        if (rc != KP_OK)
            goto cleanup;
        n = p.latest_version + 1;
        copy_str(res->project_id, sizeof res->project_id, p.id);
    }
    rc = kp_prompt_build(h.turns, h.nturns, h.files, h.nfiles, r->prompt, &prompt, err);
    if (rc != KP_OK)
        goto cleanup;
    int64_t tokens = kp_prompt_estimate_tokens(&prompt);
    if (!kp_prompt_fits(tokens, g->opt.cfg->max_tokens, g->opt.cfg->context_window)) {
        rc = fail_with(res, "context_too_large", err, KP_EINVAL,
                       "the request (about %lld tokens with the app's files and the conversation) plus %ld tokens "
                       "for the reply does not fit the model's context window of %ld tokens",
                       (long long)tokens, g->opt.cfg->max_tokens, g->opt.cfg->context_window);
        goto cleanup;
    }
    rc = admit(g, s, r, follow_up ? &p : NULL, n, res_id, res, err);
    if (rc != KP_OK)
        goto cleanup;
    res->version = n;
    generation *gen = generation_new(g, r, res->project_id, n, res_id, &h, &prompt, err);
    if (!gen) {
        generation tmp;
        memset(&tmp, 0, sizeof tmp);
        copy_str(tmp.project_id, sizeof tmp.project_id, res->project_id);
        copy_str(tmp.reservation_id, sizeof tmp.reservation_id, res_id);
        tmp.n = n;
        fail_unstarted(s, &tmp);
        rc = KP_ENOMEM;
        goto cleanup;
    }
    if (kp_loop_post(g->opt.loop, task_start, gen) != 0) {
        fail_unstarted(s, gen);
        kp_fileblocks_free(gen->parser);
        kp_prompt_free(&gen->prompt);
        free(gen->prev_files_json);
        free(gen);
        rc = fail_with(res, "unavailable", err, KP_EUNAVAILABLE, "the server is shutting down");
        goto cleanup;
    }
    kp_log_json(KP_LOG_INFO, "generation started",
                json_pack("{s:s,s:I,s:s,s:I}", "project_id", res->project_id, "version", (json_int_t)n, "user_id",
                          r->user_id, "estimated_input_tokens", (json_int_t)tokens));
cleanup:
    kp_prompt_free(&prompt);
    history_free(&h);
    return rc;
}

/* ---- start-up recovery ---- */

#define INTERRUPTED_MESSAGE "the server stopped while this version was generating"

/* A version generating when the server stopped: failed "interrupted", its
 * partial files removed, its credit settled by the policy (refunded). */
static kp_status recover_generating(kp_store *s, kp_blob *blob, const kp_version *v, kp_err *err)
{
    char prefix[KP_BLOB_KEY_MAX];
    kp_version f;
    int64_t cost = 0;
    kp_reservation r;
    if (v->reservation_id[0] && s->ops->reservation_get(s, v->reservation_id, &r, err) == KP_OK)
        cost = r.daily + r.monthly;
    kp_err_clear(err);
    snprintf(prefix, sizeof prefix, "apps/%s/v%lld/", v->project_id, (long long)v->n);
    if (blob)
        blob->ops->delete_prefix(blob, prefix, err); /* best effort: partial files of a publish cut short */
    kp_err_clear(err);
    memset(&f, 0, sizeof f);
    copy_str(f.project_id, sizeof f.project_id, v->project_id);
    f.n = v->n;
    f.status = KP_VER_FAILED;
    copy_str(f.error_code, sizeof f.error_code, "interrupted");
    f.error_message = INTERRUPTED_MESSAGE;
    f.updated_at = kp_time_now_ms();
    failure_note note = {.next_event_id = 1, .code = "interrupted", .message = INTERRUPTED_MESSAGE, .cost = cost};
    kp_failed_generation failed = {.res_id = v->reservation_id, .code = "interrupted"};
    kp_status rc = kp_credits_end_failed(s, &fallback_policy, &failed, &f, describe_failure, &note, NULL, err);
    json_decref(note.data);
    free(f.events_json);
    return rc;
}

static kp_status recover_one(kp_store *s, kp_blob *blob, const kp_version *v, kp_err *err)
{
    kp_status rc = KP_OK;
    const char *res = v->reservation_id;
    if (v->status == KP_VER_GENERATING)
        return recover_generating(s, blob, v, err); /* ends settled */
    /* Finished but unsettled: only left by builds that ended a version and
     * settled it in two steps, when every failure was refunded. */
    if (v->status == KP_VER_READY && res[0])
        rc = kp_credits_commit(s, res, err);
    else if (res[0])
        rc = kp_credits_refund(s, res, NULL, NULL, err);
    if (rc == KP_ECONFLICT) {
        /* the reservation already ended the other way: nothing left to move */
        kp_log_json(KP_LOG_WARN, "recovery found a reservation already ended",
                    json_pack("{s:s,s:I,s:s,s:s}", "project_id", v->project_id, "version", (json_int_t)v->n,
                              "reservation_id", res, "detail", err->msg));
        kp_err_clear(err);
        rc = KP_OK;
    }
    if (rc == KP_OK)
        rc = s->ops->version_set_settled(s, v->project_id, v->n, err);
    return rc;
}

kp_status kp_gen_recover(kp_store *s, kp_blob *blob, size_t *repaired, kp_err *err)
{
    kp_version *vs = NULL;
    size_t n = 0, done = 0;
    if (repaired)
        *repaired = 0;
    kp_status rc = s->ops->versions_unsettled(s, &vs, &n, err);
    if (rc != KP_OK)
        return rc;
    for (size_t i = 0; i < n && rc == KP_OK; i++) {
        rc = recover_one(s, blob, &vs[i], err);
        if (rc == KP_OK)
            done++;
    }
    size_t orphans = 0;
    if (rc == KP_OK) /* reservations without a version (an admission cut short by an older build) */
        rc = kp_credits_refund_orphans(s, &orphans, err);
    if (orphans > 0)
        kp_log_json(KP_LOG_INFO, "refunded reservations without a version",
                    json_pack("{s:I}", "reservations", (json_int_t)orphans));
    if (done > 0)
        kp_log_json(KP_LOG_INFO, "recovered unsettled versions", json_pack("{s:I}", "versions", (json_int_t)done));
    kp_version_free_array(vs, n);
    if (repaired)
        *repaired = done;
    return rc;
}
