/*
 * publish.h - publishing a finished generation: the app it produced (its new
 * files, plus the previous ready version's files it neither rewrote nor
 * deleted) checked against the app rules, written to the blob store under
 * "apps/{project_id}/v{n}/{path}" (the version's manifest, files_json, lists
 * each file's path, size, content type and sha256), then, in one transaction, the version row
 * made ready with its events, the reservation committed and the version
 * settled (kp_credits_end_ready). A crash between the files and that
 * transaction leaves a generating version that recovery fails and refunds.
 *
 * Threads: kp_publish_prepare() runs on the generation loop (it reads the
 * output parser, which only the loop touches, and is quick);
 * kp_publish_store() is the slow part (fsyncs, SQLite writes) and runs on a
 * storage thread (gen/storage.h) with that thread's database handle. Nothing
 * else touches a kp_publish meanwhile, and the parser it points into is not
 * changed until the result is back on the loop.
 *
 * Ownership: a kp_publish owns its row, events and the results; it borrows
 * cfg, blob, the output and the parser's file data. Release with kp_publish_clear().
 */
#ifndef KP_PUBLISH_H
#define KP_PUBLISH_H

#include <jansson.h>
#include <stdint.h>

#include "blob/blob.h"
#include "core/config.h"
#include "gen/fileblocks.h"
#include "store/store.h"

#define KP_PUBLISH_MAX_FILES 50
#define KP_PUBLISH_MAX_BYTES (2 * 1024 * 1024)
#define KP_SHA256_HEX_LEN 64

/* A file of the resulting app: written by this version (fresh; data NULL until the output is
 * parsed again, when the parser kept sizes only), or carried over from the previous one. */
typedef struct kp_publish_file {
    const char *path;
    size_t size;
    const char *data;
    int fresh;
    char sha256[KP_SHA256_HEX_LEN + 1]; /* lower-case hex of the content; "" until known */
} kp_publish_file;

/* The lower-case hex SHA-256 of len bytes of data: what a manifest's "sha256" holds. */
void kp_publish_sha256_hex(const void *data, size_t len, char out[KP_SHA256_HEX_LEN + 1]);

typedef struct kp_publish {
    /* set by the caller */
    const kp_config *cfg; /* apps_url */
    kp_blob *blob;
    char user_id[KP_ID_MAX];
    int64_t prev_n;        /* the previous ready version whose files carry over, 0 if none */
    kp_version row;        /* project_id, n, reservation_id, message, model, usage, duration, updated_at */
    char *events;          /* the events so far: a JSON array (owned) */
    int64_t next_event_id; /* the done event's id */
    /* the model's whole output (borrowed): kp_publish_store parses it again for the fresh files'
     * contents when the parser given to kp_publish_prepare kept sizes only, rewinding it where
     * the first parse was rewound for a continuation (kp_fileblocks_resume): at resumes[0..nresumes) */
    const char *output;
    size_t output_len;
    const size_t *resumes;
    size_t nresumes;
    /* set by kp_publish_prepare */
    kp_publish_file *files;
    size_t nfiles;
    json_t *prev; /* owns the carried-over paths */
    /* set by kp_publish_store */
    const char *fail_code;    /* NULL when published, else the version's error code... */
    const char *fail_message; /* ...and message (static strings) */
    json_t *done;             /* the done event's data (owned) */
    int committed;            /* the reservation was committed */
} kp_publish;

/*
 * Builds the app from the parser's entries and the previous version's
 * manifest (JSON text, NULL for none), sorted by path. Returns 0, or -1 with
 * why (no index.html, too many files, too large, out of memory).
 */
int kp_publish_prepare(kp_publish *p, const kp_fileblocks *parser, const char *prev_files_json, char *why,
                       size_t why_len);

/* Stores the files and the ready row, commits, settles; sets fail_* when it
 * could not publish (nothing was committed then). */
void kp_publish_store(kp_publish *p, kp_store *s);

void kp_publish_clear(kp_publish *p);

/* events (a JSON array of the events so far; NULL: none) with one more event
 * {"id":id,"event":event,"data":data_text} appended. Caller frees. */
char *kp_publish_append_event(const char *events, int64_t id, const char *event, const char *data_text);

#endif
