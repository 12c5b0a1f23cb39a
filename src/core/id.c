/* id.c - see id.h. */
#include "core/id.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <time.h>

#define TIME_MASK ((UINT64_C(1) << 48) - 1)

/* The last id's time and random part: the next one must be above both. */
static pthread_mutex_t last_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_ms;
static uint64_t last_rand;

int64_t kp_time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The (time, random) pair of the next id, above the previous one. */
static void next_parts(uint64_t now, uint64_t *ms, uint64_t *rnd)
{
    uint64_t fresh;
    randombytes_buf(&fresh, sizeof fresh);
    pthread_mutex_lock(&last_mu);
    if (now > last_ms) {
        last_ms = now;
        last_rand = fresh;
    } else if (++last_rand == 0) {
        last_ms++; /* the random part wrapped: borrow the next millisecond */
    }
    *ms = last_ms;
    *rnd = last_rand;
    pthread_mutex_unlock(&last_mu);
}

void kp_id_new_at(const char *prefix, char *out, size_t out_size, int64_t *ms_out)
{
    uint64_t ms, rnd;
    next_parts((uint64_t)kp_time_now_ms() & TIME_MASK, &ms, &rnd);
    snprintf(out, out_size, "%s_%012llx%016llx", prefix, (unsigned long long)ms, (unsigned long long)rnd);
    if (ms_out)
        *ms_out = (int64_t)ms;
}

void kp_id_new(const char *prefix, char *out, size_t out_size)
{
    kp_id_new_at(prefix, out, out_size, NULL);
}

void kp_date_utc_today(char out[11])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}
