/*
 * bonus_scheduler.h - runs the daily bonus inside `koumpa serve`: once at
 * start-up for the current UTC day (a no-op if it already ran), then at every
 * 00:00 UTC. Grants are idempotent per user and date (credits.h), so a
 * scheduler in each of several processes, or a cron job running
 * `koumpa daily-bonus` as well, still grants once.
 */
#ifndef KP_BONUS_SCHEDULER_H
#define KP_BONUS_SCHEDULER_H

#include "core/err.h"
#include "store/store.h"

typedef struct kp_bonus_scheduler kp_bonus_scheduler;

/* Starts the scheduler thread, which owns store (and closes it at stop). */
kp_status kp_bonus_scheduler_start(kp_store *store, kp_bonus_scheduler **out, kp_err *err);
/* Wakes and joins the thread, then frees everything. NULL is a no-op. */
void kp_bonus_scheduler_stop(kp_bonus_scheduler *sch);

/* Seconds from unix time now until the next 00:00 UTC (1..86400). */
long kp_bonus_seconds_until_midnight(long now);

#endif
