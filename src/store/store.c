/* store.c - helpers shared by every store backend (see store.h). */
#include "store/store.h"

#include <stdlib.h>

void kp_version_clear(kp_version *v)
{
    free(v->error_message);
    free(v->prompt);
    free(v->message);
    free(v->files_json);
    free(v->events_json);
    v->error_message = v->prompt = v->message = v->files_json = v->events_json = NULL;
}

void kp_version_free_array(kp_version *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        kp_version_clear(&v[i]);
    free(v);
}
