/*
 * replay.c - see replay.h. A rendering is one entry: the SSE text of every
 * event and, per frame, its id and where it ends, so a reader's Last-Event-ID
 * is a lookup, not a parse. Entries are reference-counted with atomics (the
 * cache's list holds one reference, each stream one), so a stream releases
 * its entry without touching the cache, even after the cache is gone.
 */
#include "gen/replay.h"

#include <assert.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define KEY_MAX (KP_ID_MAX + 24)

typedef struct entry {
    char key[KEY_MAX]; /* "{project_id}/{n}" */
    _Atomic int refs;
    kp_buf text;  /* the frames */
    int64_t *ids; /* ids[i]: frame i's id */
    size_t *ends; /* ends[i]: where frame i ends in text */
    size_t nframes, cap;
    struct entry *prev, *next; /* in the cache, most recently used first (under its mutex) */
} entry;

struct kp_replay_cache {
    pthread_mutex_t mu;
    entry *head, *tail;
    size_t bytes, count;
    size_t max_bytes, max_entries;
};

typedef struct replay_stream {
    kp_stream stream; /* first member: the stream pointer is the replay */
    entry *e;
    size_t off; /* the next byte to send */
} replay_stream;

int kp_replay_format_frame(kp_buf *buf, int64_t id, const char *type, const char *data, size_t *data_off,
                           size_t *data_len)
{
    if (kp_buf_printf(buf, "id: %lld\nevent: %s\ndata: ", (long long)id, type) != 0)
        return -1;
    size_t off = buf->len;
    size_t len = strlen(data);
    if (kp_buf_append(buf, data, len) != 0 || kp_buf_puts(buf, "\n\n") != 0)
        return -1;
    if (data_off)
        *data_off = off;
    if (data_len)
        *data_len = len;
    return 0;
}

/* Notes where frame `id` ended (e may be NULL). */
static int note_frame(entry *e, int64_t id, size_t end)
{
    if (!e)
        return 0;
    if (e->nframes == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 64;
        int64_t *ids = realloc(e->ids, cap * sizeof *ids);
        if (ids)
            e->ids = ids;
        size_t *ends = ids ? realloc(e->ends, cap * sizeof *ends) : NULL;
        if (!ends)
            return -1;
        e->ends = ends;
        e->cap = cap;
    }
    e->ids[e->nframes] = id;
    e->ends[e->nframes++] = end;
    return 0;
}

/* Renders the events with ids after after_id into out, noting frames in e (may be NULL). */
static int render(const char *events_json, int64_t after_id, kp_buf *out, entry *e)
{
    json_t *arr = json_loads(events_json ? events_json : "[]", 0, NULL);
    if (!json_is_array(arr)) {
        json_decref(arr);
        return -1;
    }
    size_t i;
    json_t *ev;
    int rc = 0;
    json_array_foreach(arr, i, ev)
    {
        json_int_t id = json_integer_value(json_object_get(ev, "id"));
        const char *type = json_string_value(json_object_get(ev, "event"));
        json_t *data = json_object_get(ev, "data");
        if (!type || !data || id <= after_id)
            continue;
        char *text = json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
        if (!text || kp_replay_format_frame(out, id, type, text, NULL, NULL) != 0 || note_frame(e, id, out->len) != 0)
            rc = -1;
        free(text);
    }
    json_decref(arr);
    return rc;
}

int kp_replay_render(const char *events_json, int64_t after_id, kp_buf *out)
{
    return render(events_json, after_id, out, NULL);
}

/* ---- entries ---- */

static void entry_unref(entry *e)
{
    if (atomic_fetch_sub(&e->refs, 1) != 1)
        return;
    kp_buf_free(&e->text);
    free(e->ids);
    free(e->ends);
    free(e);
}

static entry *entry_render(const char *key, const char *events_json)
{
    entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    snprintf(e->key, sizeof e->key, "%s", key);
    atomic_init(&e->refs, 1);
    if (render(events_json, 0, &e->text, e) != 0) {
        /* a log that cannot be read replays as nothing, as before */
        kp_log(KP_LOG_WARN, "the events of %s cannot be replayed", key);
        kp_buf_reset(&e->text);
        e->nframes = 0;
    }
    return e;
}

/* Where the frames after after_id start. */
static size_t entry_start(const entry *e, int64_t after_id)
{
    size_t start = 0;
    for (size_t i = 0; i < e->nframes && e->ids[i] <= after_id; i++)
        start = e->ends[i];
    return start;
}

/* ---- the cache (under mu) ---- */

static void unlink_entry(kp_replay_cache *c, entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
    c->bytes -= e->text.len;
    c->count--;
}

static void push_front(kp_replay_cache *c, entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
    c->bytes += e->text.len;
    c->count++;
}

static entry *find_locked(kp_replay_cache *c, const char *key)
{
    for (entry *e = c->head; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

/* Takes a reference to the cached rendering of key, or NULL. */
static entry *lookup(kp_replay_cache *c, const char *key)
{
    pthread_mutex_lock(&c->mu);
    entry *e = find_locked(c, key);
    if (e) {
        atomic_fetch_add(&e->refs, 1);
        unlink_entry(c, e);
        push_front(c, e);
    }
    pthread_mutex_unlock(&c->mu);
    return e;
}

/* Caches e (one reference is the caller's), unless another thread cached the
 * same version meanwhile: then returns that one and drops e. */
static entry *insert(kp_replay_cache *c, entry *e)
{
    pthread_mutex_lock(&c->mu);
    entry *had = find_locked(c, e->key);
    if (had) {
        atomic_fetch_add(&had->refs, 1);
        pthread_mutex_unlock(&c->mu);
        entry_unref(e);
        return had;
    }
    /* Room is made before e joins, so e itself is never evicted here: the
     * caller's reference is returned untouched, and the cache takes its own
     * only when e fits the budget at all. */
    while (c->tail && (c->bytes + e->text.len > c->max_bytes || c->count + 1 > c->max_entries)) {
        entry *old = c->tail;
        assert(old->next == NULL); /* the tail is last: unlinking it moves the tail */
        unlink_entry(c, old);
        entry_unref(old);
    }
    if (e->text.len <= c->max_bytes && c->max_entries > 0) {
        atomic_fetch_add(&e->refs, 1); /* the cache's */
        push_front(c, e);
    }
    pthread_mutex_unlock(&c->mu);
    return e;
}

kp_status kp_replay_cache_new(size_t max_bytes, size_t max_entries, kp_replay_cache **out, kp_err *err)
{
    kp_replay_cache *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!c)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    c->max_bytes = max_bytes;
    c->max_entries = max_entries;
    *out = c;
    return KP_OK;
}

void kp_replay_cache_free(kp_replay_cache *c)
{
    if (!c)
        return;
    entry *e = c->head;
    while (e) { /* the list goes with the cache: no unlinking */
        entry *next = e->next;
        entry_unref(e);
        e = next;
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

size_t kp_replay_cache_entries(kp_replay_cache *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->count;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ---- the pulled stream ---- */

static void rs_start(kp_stream *s, kp_sink *sink)
{
    (void)s;
    (void)sink; /* the host asks for pieces with more() */
}

static void rs_more(kp_stream *s, kp_sink *sink)
{
    replay_stream *rs = (replay_stream *)s;
    const entry *e = rs->e;
    size_t n = e->text.len - rs->off;
    if (n > KP_REPLAY_PIECE)
        n = KP_REPLAY_PIECE;
    if (n > 0 && sink->write(sink, e->text.data + rs->off, n) != 0)
        n = e->text.len - rs->off; /* the client is gone: end */
    rs->off += n;
    if (rs->off == e->text.len)
        sink->end(sink);
}

static void rs_release(kp_stream *s)
{
    replay_stream *rs = (replay_stream *)s;
    entry_unref(rs->e);
    free(rs);
}

/* The rendering of a version: cached, or read with s and cached. */
static kp_status get_entry(kp_replay_cache *c, kp_store *s, const char *project_id, int64_t n, entry **out, kp_err *err)
{
    char key[KEY_MAX];
    kp_version v;
    snprintf(key, sizeof key, "%s/%lld", project_id, (long long)n);
    if ((*out = lookup(c, key)) != NULL)
        return KP_OK;
    kp_status rc = s->ops->version_get(s, project_id, n, &v, err);
    if (rc != KP_OK)
        return rc;
    if (v.status == KP_VER_GENERATING) {
        kp_version_clear(&v);
        return kp_err_set(err, KP_ECONFLICT, "version %lld is generating", (long long)n);
    }
    kp_version_clear(&v);
    char *events = NULL;
    rc = kp_store_events_json(s, project_id, n, 0, &events, err);
    if (rc != KP_OK)
        return rc;
    entry *e = entry_render(key, events);
    free(events);
    if (!e)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    *out = insert(c, e);
    return KP_OK;
}

kp_status kp_replay_open(kp_replay_cache *c, kp_store *s, const char *project_id, int64_t n, int64_t after_id,
                         kp_stream **out, kp_err *err)
{
    entry *e = NULL;
    *out = NULL;
    kp_status rc = get_entry(c, s, project_id, n, &e, err);
    if (rc != KP_OK)
        return rc;
    replay_stream *rs = calloc(1, sizeof *rs);
    if (!rs) {
        entry_unref(e);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    rs->stream.start = rs_start;
    rs->stream.more = rs_more;
    rs->stream.release = rs_release;
    rs->e = e;
    rs->off = entry_start(e, after_id);
    *out = &rs->stream;
    return KP_OK;
}
