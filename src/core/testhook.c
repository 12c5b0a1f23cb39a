/* testhook.c - see testhook.h. Built twice: plainly (a no-op, in libkoumpa)
 * and with -DKOUMPA_TEST_HOOKS for build/koumpa-hooks only. */
#include "core/testhook.h"

#ifdef KOUMPA_TEST_HOOKS
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

/* KOUMPA_TEST_DELAY="point:ms": how long to pause at this point (0: none). */
static long delay_ms(const char *name)
{
    const char *d = getenv("KOUMPA_TEST_DELAY");
    size_t n = strlen(name);
    if (!d || strncmp(d, name, n) != 0 || d[n] != ':')
        return 0;
    return strtol(d + n + 1, NULL, 10);
}

void kp_testhook_point(const char *name)
{
    const char *fault = getenv("KOUMPA_TEST_FAULT");
    long ms = delay_ms(name);
    if (ms > 0 && ms <= 10000) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (!fault || strcmp(fault, name) != 0)
        return;
    kp_log(KP_LOG_WARN, "test fault: dying at %s", name);
    raise(SIGKILL);
}
#else
void kp_testhook_point(const char *name)
{
    (void)name;
}
#endif
