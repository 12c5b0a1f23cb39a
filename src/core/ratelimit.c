/* ratelimit.c - see ratelimit.h. An open-addressing-free design: a small
 * array scanned linearly is plenty for login traffic, with a hash to skip
 * most string compares. */
#include "core/ratelimit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 300

typedef struct slot {
    uint64_t hash;
    char key[KEY_MAX];
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
    kp_ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->slots = calloc(capacity, sizeof *rl->slots);
    if (!rl->slots) {
        free(rl);
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
    pthread_mutex_destroy(&rl->lock);
    free(rl->slots);
    free(rl);
}

static slot *find_slot(kp_ratelimit *rl, const char *key, uint64_t h)
{
    for (size_t i = 0; i < rl->capacity; i++)
        if (rl->slots[i].used && rl->slots[i].hash == h && strcmp(rl->slots[i].key, key) == 0)
            return &rl->slots[i];
    return NULL;
}

/* A free slot, an expired one, or else the one with the oldest window. */
static slot *claim_slot(kp_ratelimit *rl, int64_t now)
{
    slot *oldest = &rl->slots[0];
    for (size_t i = 0; i < rl->capacity; i++) {
        slot *s = &rl->slots[i];
        if (!s->used || now - s->window_start >= rl->window_s)
            return s;
        if (s->window_start < oldest->window_start)
            oldest = s;
    }
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
    slot *s = find_slot(rl, key, h);
    if (s && now - s->window_start >= rl->window_s) {
        s->window_start = now;
        s->count = 0;
    }
    if (!s) {
        s = claim_slot(rl, now);
        memset(s, 0, sizeof *s);
        s->used = 1;
        s->hash = h;
        memcpy(s->key, key, KEY_MAX);
        s->window_start = now;
    }
    if (s->count >= rl->limit) {
        retry = (long)(s->window_start + rl->window_s - now);
        if (retry < 1)
            retry = 1;
    } else {
        s->count++;
    }
    pthread_mutex_unlock(&rl->lock);
    return retry;
}

void kp_ratelimit_reset(kp_ratelimit *rl, const char *full_key)
{
    char key[KEY_MAX];
    bounded_key(full_key, key);
    uint64_t h = hash_key(key);
    pthread_mutex_lock(&rl->lock);
    slot *s = find_slot(rl, key, h);
    if (s)
        s->used = 0;
    pthread_mutex_unlock(&rl->lock);
}
