/*
 * loop.h - a libevent event loop on a thread of its own, for work that waits
 * on the network without a thread per task: the LLM transfers (libcurl's multi
 * interface driven by this loop) and the generations they feed.
 *
 * Anything may post a function to run on the loop thread; everything the loop
 * owns is touched only there, so it needs no locks.
 */
#ifndef KP_LOOP_H
#define KP_LOOP_H

#include <event2/event.h>

#include "core/err.h"

typedef struct kp_loop kp_loop;

/* Starts the thread. */
kp_status kp_loop_start(kp_loop **out, kp_err *err);
/* The loop's event_base (for events to be added on the loop thread). */
struct event_base *kp_loop_base(kp_loop *loop);
/* Runs fn(arg) on the loop thread, soon. Thread-safe. Returns 0, or -1 if stopping. */
int kp_loop_post(kp_loop *loop, void (*fn)(void *arg), void *arg);
/* True when called on the loop thread. */
int kp_loop_is_current(const kp_loop *loop);
/* Runs the posted functions still queued, stops the thread, frees the loop. */
void kp_loop_stop(kp_loop *loop);

#endif
