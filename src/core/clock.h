/*
 * clock.h - a clock for measuring intervals: CLOCK_MONOTONIC, which never
 * jumps when the wall clock is set (NTP step, an operator's `date -s`).
 *
 * Use it for every "how long since" decision that must survive a clock step:
 * rate-limit windows, refetch throttles, timeouts. Use time(NULL) only for
 * what is shown or stored (token expiry, created_at).
 */
#ifndef KP_CLOCK_H
#define KP_CLOCK_H

#include <stdint.h>

/* Seconds on the monotonic clock (an arbitrary origin, never decreasing). */
int64_t kp_clock_mono_s(void);

#endif
