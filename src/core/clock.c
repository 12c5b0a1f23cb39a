/* clock.c - see clock.h. */
#include "core/clock.h"

#include <time.h>

int64_t kp_clock_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}
