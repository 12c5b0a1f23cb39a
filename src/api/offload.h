/*
 * offload.h - handler work too slow for an HTTP thread (password hashing:
 * tens of milliseconds and 64 MiB of memory each), run on a small pool of its
 * own threads and answered through a deferred response (api/http.h).
 *
 * A handler checks what is cheap (the body, the rate limits) on its own
 * thread, then calls kp_offload_defer() with a function that does the rest
 * with a database handle of the pool's. The pool is small and its queue is
 * bounded: when the queue is full the answer is 503 with Retry-After at
 * once, never a pile of waiting work (core/pool.h).
 *
 * Thread-safe. Each pool thread borrows a database handle from the
 * offload's own set (opened on first need, at most one per thread, closed
 * by kp_offload_free).
 */
#ifndef KP_OFFLOAD_H
#define KP_OFFLOAD_H

#include "api/http.h"
#include "store/store.h"

#define KP_OFFLOAD_RETRY_AFTER_S 2 /* the Retry-After of a full queue's 503 */

typedef struct kp_offload kp_offload;

/* Opens a database handle for one pool thread (the host's opener). */
typedef kp_status (*kp_offload_open_fn)(void *ud, kp_store **out, kp_err *err);

/* The work: runs on a pool thread with that thread's handle and fills resp
 * (a complete response: status, headers, body). */
typedef void (*kp_offload_fn)(void *arg, kp_store *store, kp_resp *resp);

/* threads >= 1 pool threads; at most queue jobs wait beyond those running.
 * open_store(ud) makes the pool's database handles. Free with kp_offload_free(). */
kp_status kp_offload_new(const char *name, int threads, int queue, kp_offload_open_fn open_store, void *ud,
                         kp_offload **out, kp_err *err);

/* Names the work in the 503's message, "the server is busy with other
 * {what}; ..." (default "sign-ins and sign-ups"). Call before the first defer. */
void kp_offload_set_busy_what(kp_offload *o, const char *what);

/*
 * Makes resp a deferred response whose body fn(arg, store, resp) computes on
 * the pool. Takes arg: free_arg(arg) (may be NULL) runs once, whether fn ran
 * or not (queue full: 503 busy; client gone before the start). On allocation
 * failure resp becomes a 503 at once.
 */
void kp_offload_defer(kp_offload *o, kp_resp *resp, kp_offload_fn fn, void (*free_arg)(void *arg), void *arg);

/* Runs what is queued, stops the threads, closes the handles. NULL is fine.
 * The hosts must be stopped first (they may be waiting for replies). */
void kp_offload_free(kp_offload *o);

#endif
