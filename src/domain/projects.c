/* projects.c - see projects.h. */
#include "domain/projects.h"

#include <stdio.h>

#include "core/log.h"

/* KP_ECONFLICT when p's latest version (the only one that can be) is generating. */
static kp_status refuse_if_generating(kp_store *s, const kp_project *p, kp_err *err)
{
    kp_version v = {0};
    kp_status rc = s->ops->version_get(s, p->id, p->latest_version, &v, err);
    int generating = rc == KP_OK && v.status == KP_VER_GENERATING;
    kp_version_clear(&v);
    if (rc != KP_OK && rc != KP_ENOTFOUND)
        return rc;
    kp_err_clear(err);
    return generating ? kp_err_set(err, KP_ECONFLICT, "version %lld of this project is generating",
                                   (long long)p->latest_version)
                      : KP_OK;
}

kp_status kp_projects_delete(kp_store *s, kp_blob *blob, const kp_project *p, kp_err *err)
{
    char prefix[KP_BLOB_KEY_MAX];
    kp_status rc = refuse_if_generating(s, p, err);
    if (rc != KP_OK)
        return rc;
    snprintf(prefix, sizeof prefix, "apps/%s/", p->id);
    if (blob && blob->ops->delete_prefix(blob, prefix, err) != KP_OK) {
        kp_log(KP_LOG_ERROR, "cannot remove the files of project %s (kept): %s", p->id, err->msg);
        return kp_err_set(err, KP_EUNAVAILABLE,
                          "the project's files could not be removed, so the project was kept (some of its files may "
                          "already be gone); try again later");
    }
    return s->ops->project_delete(s, p->id, err); /* checks again, in its transaction */
}
