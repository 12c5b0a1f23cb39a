/* testhook.c - see testhook.h. Built twice: plainly (a no-op, in libkoumpa)
 * and with -DKOUMPA_TEST_HOOKS for build/koumpa-hooks only. */
#include "core/testhook.h"

#ifdef KOUMPA_TEST_HOOKS
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

void kp_testhook_point(const char *name)
{
    const char *fault = getenv("KOUMPA_TEST_FAULT");
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
