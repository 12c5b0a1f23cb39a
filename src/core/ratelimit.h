/*
 * ratelimit.h - a thread-safe fixed-window rate limiter keyed by string
 * (e.g. "ip:127.0.0.1", "email:a@b.c"), used to slow down password guessing.
 *
 * Memory is bounded: the table holds at most `capacity` keys; when full,
 * entries whose window has passed are dropped, and if none has, the oldest
 * window is evicted (an attacker can reset someone's counter only by
 * flooding the table, which itself is rate-limited per IP).
 */
#ifndef KP_RATELIMIT_H
#define KP_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct kp_ratelimit kp_ratelimit;

/* limit events per window_s seconds per key. Returns NULL on allocation failure. */
kp_ratelimit *kp_ratelimit_new(long limit, long window_s, size_t capacity);
void kp_ratelimit_free(kp_ratelimit *rl);

/* Counts one event for key at time now (unix seconds). Returns 0 if allowed,
 * else the number of seconds until the key's window resets (>= 1). */
long kp_ratelimit_hit(kp_ratelimit *rl, const char *key, int64_t now);

/* Forgets a key (e.g. after a successful login). */
void kp_ratelimit_reset(kp_ratelimit *rl, const char *key);

#endif
