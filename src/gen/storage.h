/*
 * storage.h - the generation service's storage pool. The slow work that ends
 * a generation (the app's files, an fsync each and one per directory, and
 * the SQLite writes that finish the version and settle its credits, which
 * may wait on the database lock) runs on a few threads of its own
 * (core/pool.h), so the one loop thread that streams every generation never
 * waits for a disk.
 *
 * A job is two functions: work(store, arg) on a pool thread, with a database
 * handle lent for the job, then done(arg) back on the loop (kp_loop_post),
 * where the generation that asked lives. SQLite handles are not used by two
 * threads at once, so the pool opens one handle per thread at start and
 * lends them out; as many jobs run at once as there are threads, so a job
 * always finds a handle.
 *
 * A full queue is not a refusal here (a finished generation must be stored),
 * and not a reason to run the job on the calling thread either (that thread
 * is the loop: a burst of endings would stall every stream): jobs beyond the
 * pool's queue wait on an overflow list, in order, and start as threads come
 * free. The list is bounded by what calls here: at most a few jobs per
 * running generation.
 *
 * Ownership: the pool borrows the loop; it owns its handles and closes them in
 * kp_gen_storage_free(), after running the jobs still queued or waiting.
 */
#ifndef KP_GEN_STORAGE_H
#define KP_GEN_STORAGE_H

#include "core/err.h"
#include "store/store.h"

typedef struct kp_loop kp_loop;
typedef struct kp_gen_storage kp_gen_storage;

typedef kp_status (*kp_gen_storage_open_fn)(void *ud, kp_store **out, kp_err *err);

/* Starts nthreads threads (>= 1), each with a handle from open_store(ud),
 * called on the calling thread. */
kp_status kp_gen_storage_new(int nthreads, kp_loop *loop, kp_gen_storage_open_fn open_store, void *ud,
                             kp_gen_storage **out, kp_err *err);

/*
 * Runs work(store, arg) on a pool thread (later when the queue is full; only
 * when out of memory for the job's record, now, with fallback), then done(arg)
 * on the loop. Thread-safe. Posting done is
 * retried for a while when the loop is out of memory; if it still fails it is
 * logged and done never runs (the rows are as work left them: start-up
 * recovery settles what is left unsettled).
 */
void kp_gen_storage_run(kp_gen_storage *st, kp_store *fallback, void (*work)(kp_store *s, void *arg),
                        void (*done)(void *arg), void *arg);
/* As kp_gen_storage_run, ahead of every job already queued (a lease renewal:
 * late, it loses every generation of the instance). */
void kp_gen_storage_run_first(kp_gen_storage *st, kp_store *fallback, void (*work)(kp_store *s, void *arg),
                              void (*done)(void *arg), void *arg);

/* Jobs queued or waiting on the overflow list, not started yet (for tests and metrics). */
int kp_gen_storage_queued(kp_gen_storage *st);

/* Runs the jobs still queued or waiting, stops the threads, closes the handles. NULL is fine. */
void kp_gen_storage_free(kp_gen_storage *st);

#endif
