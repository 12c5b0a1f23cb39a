/*
 * pool.h - a small pool of threads with a bounded queue, for work too slow
 * for a thread that serves many clients: password hashing (off the HTTP
 * threads) and storage work (off the generation loop).
 *
 * A full queue is an answer, not a wait: kp_pool_submit() returns -1 at once,
 * so the caller can refuse politely (503 + Retry-After) instead of piling up
 * work behind a slow disk or a burst of sign-ups.
 */
#ifndef KP_POOL_H
#define KP_POOL_H

#include <stddef.h>

#include "core/err.h"

typedef struct kp_pool kp_pool;

/* Starts nthreads threads (>= 1) named for logs as name; at most queue_cap
 * jobs wait beyond those running (>= 0). Free with kp_pool_free(). */
kp_status kp_pool_new(const char *name, int nthreads, int queue_cap, kp_pool **out, kp_err *err);
/*
 * Queues fn(arg) to run on one of the pool's threads. Thread-safe. Returns 0,
 * or -1 when the queue is full or the pool is stopping: then fn is not called
 * and arg stays the caller's.
 */
int kp_pool_submit(kp_pool *pool, void (*fn)(void *arg), void *arg);
/* As kp_pool_submit, but fn(arg) goes ahead of every job already queued: for
 * a small job whose lateness costs more than the others' (a lease renewal
 * behind a burst of publishing). */
int kp_pool_submit_first(kp_pool *pool, void (*fn)(void *arg), void *arg);
/* Jobs queued but not yet started (a gauge for metrics and tests). */
int kp_pool_queued(kp_pool *pool);
/* Runs every job already queued, then stops and joins the threads and frees
 * the pool. NULL is fine. Must not be called from one of the pool's threads. */
void kp_pool_free(kp_pool *pool);

#endif
