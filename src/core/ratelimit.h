/*
 * ratelimit.h - a thread-safe fixed-window rate limiter keyed by string
 * (e.g. a client address, a normalised e-mail), used to slow down password
 * guessing and sign-up floods.
 *
 * Use one limiter per kind of key (addresses in one, e-mails in another), so
 * traffic of one kind never competes with the other for room.
 *
 * Memory is bounded: the table holds at most `capacity` keys. When it is
 * full, a new key takes the slot of a key whose window has passed, else of
 * the key with the oldest window that is NOT currently limited. A limited key
 * is never evicted: a lock on one e-mail holds whatever other traffic does.
 * When every slot holds a limited key, a new key is refused as if limited
 * (until the soonest window ends) - the limiter fails closed, never open.
 *
 * Time is the caller's `now`, in seconds of a monotonic clock
 * (kp_clock_mono_s(), core/clock.h), so a wall-clock step neither locks
 * people out nor lifts a lock.
 */
#ifndef KP_RATELIMIT_H
#define KP_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct kp_ratelimit kp_ratelimit;

/* limit events per window_s seconds per key, at most capacity keys (>= 1).
 * Returns NULL on allocation failure. */
kp_ratelimit *kp_ratelimit_new(long limit, long window_s, size_t capacity);
void kp_ratelimit_free(kp_ratelimit *rl);

/* Counts one event for key at time now (monotonic seconds). Returns 0 if
 * allowed, else the number of seconds until the key may try again (>= 1). */
long kp_ratelimit_hit(kp_ratelimit *rl, const char *key, int64_t now);

/* Forgets a key (e.g. after a successful login). */
void kp_ratelimit_reset(kp_ratelimit *rl, const char *key);

#endif
