/*
 * replay.h - replays of a finished version's events as Server-Sent Events.
 *
 * A version's events are in the event store (store.h kp_event, written as
 * the generation runs); a reader may ask for them after the last id it saw
 * (GET /v1/projects/{id}/events with Last-Event-ID). Parsing that array and
 * building the whole SSE text for every request put one parse and several
 * copies of a large log on an HTTP worker per reader.
 *
 * Now a version's SSE text is rendered once and shared: a cache bounded in
 * bytes and entries holds the renderings, reference-counted, so every reader
 * of a version uses one copy (a version never changes once it ended, so a
 * rendering never goes stale; one that is evicted while read lives until its
 * last reader leaves). Each reader is a pulled stream (http.h kp_stream.more):
 * it writes the next piece of at most KP_REPLAY_PIECE bytes only when the
 * host says the previous one went out, so a reader that does not read holds
 * one piece, not the log. Sharing one rendering was chosen over reading
 * pieces from the store: a replay would then cost one read per piece for
 * every reader.
 *
 * Thread-safe: the cache is behind a mutex; a stream is used by its host.
 */
#ifndef KP_REPLAY_H
#define KP_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "api/http.h"
#include "core/buf.h"
#include "core/err.h"
#include "store/store.h"

#define KP_REPLAY_PIECE (64 * 1024)
#define KP_REPLAY_CACHE_BYTES (64 * 1024 * 1024)
#define KP_REPLAY_CACHE_ENTRIES 256

typedef struct kp_replay_cache kp_replay_cache;

/* Appends one SSE frame ("id: N\nevent: T\ndata: D\n\n") to buf; data_off and
 * data_len (may be NULL) locate D in buf. Returns 0, or -1 out of memory. */
int kp_replay_format_frame(kp_buf *buf, int64_t id, const char *type, const char *data, size_t *data_off,
                           size_t *data_len);

/* Appends the frames of a persisted events array with ids after after_id.
 * Returns 0, or -1 when events_json is not an event array (or out of memory). */
int kp_replay_render(const char *events_json, int64_t after_id, kp_buf *out);

kp_status kp_replay_cache_new(size_t max_bytes, size_t max_entries, kp_replay_cache **out, kp_err *err);
/* Frees the cache; renderings still read are freed by their last stream. NULL is fine. */
void kp_replay_cache_free(kp_replay_cache *c);

/*
 * A pulled stream of version n of project_id's events after after_id, then
 * the end. On a cache miss reads the version with s (the caller's handle) and
 * renders it. KP_ECONFLICT when the version is still generating (follow it
 * live instead), KP_ENOTFOUND when there is no such version. The host
 * releases the stream (http.h).
 */
kp_status kp_replay_open(kp_replay_cache *c, kp_store *s, const char *project_id, int64_t n, int64_t after_id,
                         kp_stream **out, kp_err *err);

/* Renderings in the cache now (for tests). */
size_t kp_replay_cache_entries(kp_replay_cache *c);

#endif
