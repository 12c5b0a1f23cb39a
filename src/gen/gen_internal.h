/*
 * gen_internal.h - what the files of the generation service share (see
 * generator.c's top comment for who owns what, and on which thread): the
 * generation and service structs, the event log's records, subscribers, and
 * the functions one file lends another. Internal to src/gen/.
 */
#ifndef KP_GEN_INTERNAL_H
#define KP_GEN_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "core/buf.h"
#include "domain/credits.h"
#include "gen/fileblocks.h"
#include "gen/generator.h"
#include "gen/prompt.h"
#include "gen/replay.h"
#include "gen/storage.h"

#define MAX_CONTINUATIONS 2
#define MAX_APP_FILES KP_PUBLISH_MAX_FILES
#define MAX_APP_BYTES KP_PUBLISH_MAX_BYTES
#define DELTA_FLUSH_BYTES 1024
/* Deltas are coalesced for up to this long: 10 updates a second for a reader,
 * half the events (written to readers, stored, read back to publish) of 50 ms;
 * bench-generations at 8,000 measured p99 24.6-24.8 s against 25.3-25.4 s and
 * the storage threads' CPU 7.8-8.1 s against 9.3-9.4 s. */
#define DEFAULT_FLUSH_MS 100
#define GEN_EVENTS_BATCH_MS 250 /* events.c: how often a running generation's events are stored */
#define GEN_READER_BUCKETS 4096 /* readers.c: buckets of the reader slots (a list each) */
#define GEN_TABLE_BUCKETS 4096  /* table.c: buckets of each index of the running generations */
#define GEN_FOLLOW_POLL_MS 300  /* readers.c: how often a follower of another instance's generation polls */
#define GEN_FOLLOW_PAGE 500     /* events a poll reads at a time */
#define GEN_FOLLOW_ROUNDS 20    /* pages a poll reads at most */

#define KP_GEN_CANCELED_MESSAGE "the generation was canceled" /* a cancel's error event, local or requested */

#define METRIC_IN_FLIGHT "generations_in_flight"
#define METRIC_SPENT "credits_spent_total"

typedef enum event_type { EV_PROJECT = 0, EV_DELTA, EV_FILE, EV_DONE, EV_ERROR } event_type;
extern const char *const gen_event_names[];

/* One event in a generation's log: its SSE frame ends at `end` in the log;
 * its data (JSON) is at data_off, data_len bytes. 16 bytes: a generation
 * keeps one per event (hundreds), and a log never reaches 4 GiB (gen_emit
 * refuses an event that would take it there). */
typedef struct event_rec {
    uint32_t end;
    uint32_t data_off;
    uint32_t data_len;
    uint8_t type; /* event_type */
} event_rec;

typedef struct generation generation;
typedef struct sync_cmd sync_cmd;
typedef struct unended unended;

/* When a generation must have ended (timeout.c). */
typedef struct gen_limit {
    int64_t at_ms;   /* epoch ms */
    int by_deadline; /* the invocation's deadline (less the settling margin) set it, not the total timeout */
} gen_limit;

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
    /* following from the event store a version generating on another instance (readers.c): loop and its
     * storage jobs, one at a time */
    int following;
    int follow_done;
    struct event *poll_timer;
} subscriber;

struct generation {
    generation *next; /* the service's running generations (table.c) */
    generation *prev;
    generation *serial_next; /* its bucket by serial */
    generation *key_next;    /* its bucket by (project_id, n) */
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
    /* The model's text is held once, in the log's delta events and `pending` (output.c builds the output
     * from them when it is needed). */
    int64_t output_chars; /* characters the model has written, over every call (the cancel policy's measure) */
    int continuations;
    size_t resumes[MAX_CONTINUATIONS]; /* the output's length kept at each continuation (publish.h) */
    size_t cuts[MAX_CONTINUATIONS];    /* the length of every call's text so far, at each continuation */
    kp_llm_usage usage;                /* summed over calls */
    kp_buf pending;                    /* delta text not sent yet */
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
    sync_cmd *waiter; /* a resume waiting for it to end (kp_gen_resume), or NULL */
    char fail_code[64];
    char fail_message[512];
    /* the event store (events.c) */
    int64_t events_stored;   /* the events with ids up to this one are stored */
    int append_queued;       /* on the service's append queue: events to store */
    generation *append_prev; /* the append queue (doubly linked: a generation leaves it in O(1)) */
    generation *append_next;
    uint64_t append_batch; /* the batch on the storage pool that holds its events (0: none) */
    int64_t append_upto;   /* with append_batch: the last event id it holds */
    /* its time limit (timeout.c) */
    gen_limit limit;
    struct event *limit_timer; /* fails it timed_out at limit.at_ms; armed once it runs on the loop */
};

struct kp_gen {
    kp_gen_options opt;
    kp_refund_policy policy;                  /* from the configuration */
    kp_store *store;                          /* the loop's handle */
    kp_gen_storage *storage;                  /* where generations end: files, rows, credits (off the loop) */
    kp_replay_cache *replays;                 /* finished versions' events, rendered once for every reader */
    reader_slot *readers[GEN_READER_BUCKETS]; /* mu: live readers per version, for the cap (hashed) */
    pthread_mutex_t mu;
    int stopping; /* mu: no new submissions */
    _Atomic int64_t in_flight;
    /* loop-only */
    generation *gens;                         /* the running generations, newest first (table.c) */
    generation *by_serial[GEN_TABLE_BUCKETS]; /* hashed indexes over them */
    generation *by_key[GEN_TABLE_BUCKETS];
    uint64_t next_serial;
    struct event *keepalive;
    int shut;                  /* shutdown ran on the loop */
    sync_cmd *shutdown_wait;   /* the shutdown waiting for the last generation (and replay) to end */
    int replaying;             /* replays running on the storage pool */
    int shut_done;             /* shutdown returned: storage work runs on the loop */
    unended *unended;          /* failed versions whose ending could not be written yet */
    struct event *retry_timer; /* retries them */
    long retry_ms;
    /* leases (leases.c): instance_id and lease_ms never change after kp_gen_new (any thread reads them) */
    char instance_id[KP_ID_MAX]; /* this process's name on the leases of the versions it generates */
    int64_t lease_ms;            /* KOUMPA_GENERATION_LEASE_S, in ms */
    struct event *lease_timer;   /* loop-only: renews this instance's leases every lease_ms / 3 */
    struct event *recover_timer; /* loop-only: recovers versions whose lease ran out, every lease_ms */
    int renewing;                /* loop-only: a renewal is on the storage pool */
    int recovering;              /* loop-only: a recovery is on the storage pool */
    /* the running generations' events on their way to the event store (events.c), loop-only */
    int appends;              /* batches on the storage pool (one at a time) */
    generation *append_queue; /* generations with events to store, oldest first */
    generation *append_tail;
    struct event *append_timer; /* the next batch */
    int append_again;           /* a batch was due while one was on the pool: the next goes at once */
    uint64_t append_seq;        /* the last batch's number */
};

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

/* What a version builds on (history.c): the earlier ready versions and the latest ready one's files. */
typedef struct gen_history {
    kp_version *versions;
    size_t nversions;
    kp_prompt_turn *turns;
    size_t nturns;
    json_t *manifest; /* the latest ready version's files_json (owns the paths) */
    kp_prompt_file *files;
    kp_buf *contents; /* contents[i] backs files[i] */
    size_t nfiles;
    const kp_version *latest_ready;
} gen_history;

/* history.c: the versions before before_n (0: all) of project_id; KP_ECONFLICT when one is generating. */
kp_status gen_history_load(kp_gen *g, kp_store *s, const char *project_id, int64_t before_n, gen_history *h,
                           kp_err *err);
void gen_history_free(gen_history *h);

/* submit.c: a version admitted but never run fails (code, message) and is refunded, here and now; a
 * generation never posted to the loop is freed */
void gen_fail_unstarted(kp_store *s, const char *project_id, int64_t n, const char *res_id, const char *code,
                        const char *message);
void gen_discard_unposted(generation *gen);

/* generator.c */
void gen_copy_str(char *dst, size_t n, const char *src);
struct timeval gen_ms_to_tv(long ms);
void gen_sync_cmd_finish(sync_cmd *c, kp_status rc);
/* Posts gen to the loop to start, then waits until it has ended (freed); KP_EUNAVAILABLE when the loop
 * refused it (gen is then still the caller's). */
kp_status gen_start_and_wait(kp_gen *g, generation *gen);

/* readers.c */
int gen_emit(generation *gen, event_type type, json_t *data);
char *gen_events_json(const generation *gen, event_type extra_type, const char *extra);
void gen_sub_write(subscriber *sub, const char *data, size_t len);
void gen_sub_end(subscriber *sub);
void gen_sub_detach(subscriber *sub);

/* events.c */
void gen_events_emitted(generation *gen, event_type type);
/* A generation leaves the append queue (gen_destroy). */
void gen_events_free(generation *gen);
/* The batch timer is freed (shutdown, on the loop; or kp_gen_free). */
void gen_events_stop(kp_gen *g);

/* leases.c */
void gen_leases_init(kp_gen *g);
int gen_leases_start(kp_gen *g);
void gen_leases_stop(kp_gen *g);
int gen_leases_busy(const kp_gen *g);
int64_t gen_lease_until(const kp_gen *g);

/* timeout.c */
/* Sets gen->limit for a generation starting now (any thread, before it is posted to the loop). */
void gen_timeout_init(generation *gen, const kp_gen_request *r);
/* 1 when r's deadline leaves too little time to start (res->error_code "deadline_too_close", err
 * KP_EUNAVAILABLE saying why); 0 otherwise. Called before anything is written. */
int gen_timeout_refuses(kp_gen *g, const kp_gen_request *r, kp_gen_result *res, kp_err *err);
/* On the loop, as it starts: arms its timer. -1 when out of memory. */
int gen_timeout_start(generation *gen);
/* Frees its timer (gen_destroy). */
void gen_timeout_free(generation *gen);

/* output.c: on the loop, or on a storage thread while gen is storing (its log is not written then) */
/* Into out (empty): the output as the file parser saw it, read back from every call's text (the delta
 * events, then the deltas not sent yet) with each continuation's cut applied (resumes and cuts);
 * *text_len (may be NULL) gets the length of that whole text. -1 when out of memory, an event cannot be
 * read or the cuts do not fit the text. */
int gen_output_build(const generation *gen, kp_buf *out, size_t *text_len);

/* table.c (loop-only) */
/* FNV-1a of a version's key (project_id, n), for the hashed tables of the service. */
uint64_t gen_key_hash(const char *project_id, int64_t n);
/* gen joins the running generations, under its serial and its version; it leaves them as it ends. */
void gen_table_add(kp_gen *g, generation *gen);
void gen_table_remove(kp_gen *g, generation *gen);
/* The running generation with that serial, or that version; NULL if none. */
generation *gen_find_serial(kp_gen *g, uint64_t serial);
generation *gen_find(kp_gen *g, const char *project_id, int64_t n);

/* run.c */
extern const kp_refund_policy gen_fallback_policy;
generation *gen_generation_new(kp_gen *g, const kp_gen_request *r, const char *project_id, int64_t n,
                               const char *res_id, const kp_version *latest_ready, kp_prompt *prompt, kp_err *err);
void gen_task_start(void *arg);
void gen_fail(generation *gen, const char *code, const char *message);
void gen_run_storage(kp_gen *g, void (*work)(kp_store *s, void *arg), void (*done)(void *arg), void *arg);
/* As gen_run_storage, ahead of the storage pool's queue (lease renewals). */
void gen_run_storage_first(kp_gen *g, void (*work)(kp_store *s, void *arg), void (*done)(void *arg), void *arg);
void gen_shutdown_maybe_done(kp_gen *g);
void gen_unended_drop_all(kp_gen *g);
void gen_unended_free_all(kp_gen *g);
void gen_on_flush_timer(evutil_socket_t fd, short what, void *arg);
int gen_describe_failure(void *ud, const kp_credits_outcome *o, kp_version *v);

#endif
