/* bonus_scheduler.c - see bonus_scheduler.h. */
#include "domain/bonus_scheduler.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/id.h"
#include "core/log.h"
#include "domain/credits.h"

#define BATCH 1000
#define RETRY_S 60

struct kp_bonus_scheduler {
    kp_store *store;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stopping;
};

long kp_bonus_seconds_until_midnight(long now)
{
    return 86400 - (now % 86400);
}

/* Grants today's bonus; returns 0 on success. */
static int run_today(kp_bonus_scheduler *sch)
{
    char date[11];
    size_t granted = 0;
    kp_err err = {0};
    kp_date_utc_today(date);
    if (kp_credits_daily_bonus(sch->store, date, BATCH, &granted, &err) != KP_OK) {
        kp_log_json(KP_LOG_ERROR, "daily bonus failed", json_pack("{s:s,s:s}", "date", date, "error", err.msg));
        return -1;
    }
    kp_log_json(KP_LOG_INFO, "daily bonus", json_pack("{s:s,s:I}", "date", date, "granted", (json_int_t)granted));
    return 0;
}

static void *scheduler_main(void *arg)
{
    kp_bonus_scheduler *sch = arg;
    pthread_mutex_lock(&sch->lock);
    while (!sch->stopping) {
        pthread_mutex_unlock(&sch->lock);
        int ok = run_today(sch) == 0;
        pthread_mutex_lock(&sch->lock);
        long wait = ok ? kp_bonus_seconds_until_midnight((long)time(NULL)) + 1 : RETRY_S;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait;
        while (!sch->stopping && pthread_cond_timedwait(&sch->wake, &sch->lock, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&sch->lock);
    return NULL;
}

kp_status kp_bonus_scheduler_start(kp_store *store, kp_bonus_scheduler **out, kp_err *err)
{
    kp_bonus_scheduler *sch = calloc(1, sizeof *sch);
    if (!sch)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    sch->store = store;
    pthread_mutex_init(&sch->lock, NULL);
    pthread_cond_init(&sch->wake, NULL);
    if (pthread_create(&sch->thread, NULL, scheduler_main, sch) != 0) {
        pthread_mutex_destroy(&sch->lock);
        pthread_cond_destroy(&sch->wake);
        free(sch);
        return kp_err_set(err, KP_EINTERNAL, "cannot start the daily bonus thread");
    }
    *out = sch;
    return KP_OK;
}

void kp_bonus_scheduler_stop(kp_bonus_scheduler *sch)
{
    if (!sch)
        return;
    pthread_mutex_lock(&sch->lock);
    sch->stopping = 1;
    pthread_cond_signal(&sch->wake);
    pthread_mutex_unlock(&sch->lock);
    pthread_join(sch->thread, NULL);
    sch->store->ops->close(sch->store);
    pthread_mutex_destroy(&sch->lock);
    pthread_cond_destroy(&sch->wake);
    free(sch);
}
