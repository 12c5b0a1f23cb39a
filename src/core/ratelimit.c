/*
 * ratelimit.c - see ratelimit.h. A flat table scanned linearly: login and
 * sign-up traffic is small next to the password hashing it guards, and a
 * scan makes "the oldest unlimited key" trivial to find. Hashes and windows
 * sit in one compact array (the scan touches 32 bytes a slot); the keys
 * themselves, compared only on a hash match, in another.
 */
#include "core/ratelimit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 300

typedef struct slot {
    uint64_t hash;
    int64_t window_start;
    long count;
    int used;
} slot;

struct kp_ratelimit {
    pthread_mutex_t lock;
    long limit;
    long window_s;
    size_t capacity;
    slot *slots;
    char (*keys)[KEY_MAX]; /* keys[i] belongs to slots[i] */
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

kp_ratelimit *kp_ratelimit_new(long limit, long window_s, size_t capacity)
{
    if (capacity < 1)
        capacity = 1;
    kp_ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->slots = calloc(capacity, sizeof *rl->slots);
    rl->keys = calloc(capacity, sizeof *rl->keys);
    if (!rl->slots || !rl->keys) {
        kp_ratelimit_free(rl);
        return NULL;
    }
    pthread_mutex_init(&rl->lock, NULL);
    rl->limit = limit;
    rl->window_s = window_s;
    rl->capacity = capacity;
    return rl;
}

void kp_ratelimit_free(kp_ratelimit *rl)
{
    if (!rl)
        return;
    if (rl->slots && rl->keys)
        pthread_mutex_destroy(&rl->lock);
    free(rl->slots);
    free(rl->keys);
    free(rl);
}

static long find_slot(const kp_ratelimit *rl, const char *key, uint64_t h)
{
    for (size_t i = 0; i < rl->capacity; i++)
        if (rl->slots[i].used && rl->slots[i].hash == h && strcmp(rl->keys[i], key) == 0)
            return (long)i;
    return -1;
}

static int window_over(const kp_ratelimit *rl, const slot *s, int64_t now)
{
    return now - s->window_start >= rl->window_s || now < s->window_start;
}

static int limited(const kp_ratelimit *rl, const slot *s, int64_t now)
{
    return s->used && !window_over(rl, s, now) && s->count >= rl->limit;
}

/* Seconds until s's window ends (>= 1). */
static long retry_after(const kp_ratelimit *rl, const slot *s, int64_t now)
{
    long retry = (long)(s->window_start + rl->window_s - now);
    return retry < 1 ? 1 : retry;
}

/*
 * A slot for a new key: a free or expired one, else the unlimited one with
 * the oldest window. -1 when every slot holds a limited key; then *retry is
 * the soonest any of them frees.
 */
static long claim_slot(const kp_ratelimit *rl, int64_t now, long *retry)
{
    long oldest = -1, soonest = rl->window_s;
    for (size_t i = 0; i < rl->capacity; i++) {
        const slot *s = &rl->slots[i];
        if (!s->used || window_over(rl, s, now))
            return (long)i;
        if (limited(rl, s, now)) {
            long r = retry_after(rl, s, now);
            if (r < soonest)
                soonest = r;
            continue;
        }
        if (oldest < 0 || s->window_start < rl->slots[oldest].window_start)
            oldest = (long)i;
    }
    if (oldest < 0)
        *retry = soonest;
    return oldest;
}

/* Keys longer than the table holds are compared by their first KEY_MAX - 1 bytes. */
static void bounded_key(const char *key, char out[KEY_MAX])
{
    snprintf(out, KEY_MAX, "%s", key);
}

long kp_ratelimit_hit(kp_ratelimit *rl, const char *full_key, int64_t now)
{
    char key[KEY_MAX];
    bounded_key(full_key, key);
    uint64_t h = hash_key(key);
    long retry = 0;
    pthread_mutex_lock(&rl->lock);
    long i = find_slot(rl, key, h);
    if (i < 0) {
        i = claim_slot(rl, now, &retry);
        if (i < 0)
            goto done; /* full of limited keys: refuse rather than forget one */
        slot *fresh = &rl->slots[i];
        memset(fresh, 0, sizeof *fresh);
        fresh->used = 1;
        fresh->hash = h;
        memcpy(rl->keys[i], key, KEY_MAX);
        fresh->window_start = now;
    }
    slot *s = &rl->slots[i];
    if (window_over(rl, s, now)) {
        s->window_start = now;
        s->count = 0;
    }
    if (s->count >= rl->limit)
        retry = retry_after(rl, s, now);
    else
        s->count++;
done:
    pthread_mutex_unlock(&rl->lock);
    return retry;
}

void kp_ratelimit_reset(kp_ratelimit *rl, const char *full_key)
{
    char key[KEY_MAX];
    bounded_key(full_key, key);
    uint64_t h = hash_key(key);
    pthread_mutex_lock(&rl->lock);
    long i = find_slot(rl, key, h);
    if (i >= 0)
        rl->slots[i].used = 0;
    pthread_mutex_unlock(&rl->lock);
}
