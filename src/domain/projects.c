/* projects.c - see projects.h. */
#include "domain/projects.h"

#include <stdio.h>

#include "core/log.h"
#include "core/testhook.h"

kp_status kp_projects_delete(kp_store *s, kp_blob *blob, const kp_project *p, kp_err *err)
{
    char prefix[KP_BLOB_KEY_MAX];
    kp_err ignored = {0};
    /* no version generating, and none can start from now on */
    kp_status rc = s->ops->project_mark_deleting(s, p->id, 1, err);
    if (rc != KP_OK)
        return rc;
    kp_testhook_point("before_project_files");
    snprintf(prefix, sizeof prefix, "apps/%s/", p->id);
    if (blob && blob->ops->delete_prefix(blob, prefix, err) != KP_OK) {
        kp_log(KP_LOG_ERROR, "cannot remove the files of project %s (kept): %s", p->id, err->msg);
        s->ops->project_mark_deleting(s, p->id, 0, &ignored);
        return kp_err_set(err, KP_EUNAVAILABLE,
                          "the project's files could not be removed, so the project was kept (some of its files may "
                          "already be gone); try again later");
    }
    return s->ops->project_delete(s, p->id, err); /* checks again, in its transaction */
}
