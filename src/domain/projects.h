/*
 * projects.h - the rules for deleting a project: its rows (store) and its
 * files (blob store, under "apps/{project_id}/").
 *
 * Order: files first, then rows. A project whose files cannot all be removed
 * is kept (its rows still there, some files perhaps already gone) and the
 * caller is told (KP_EUNAVAILABLE: the API answers 503 files_not_removed), so
 * a retried DELETE finishes the job; files are never left behind a deleted
 * project. A project with a version generating is refused (KP_ECONFLICT)
 * before anything is removed, and again by the store in the delete's own
 * transaction (a follow-up admitted in between makes the delete fail).
 */
#ifndef KP_PROJECTS_H
#define KP_PROJECTS_H

#include "blob/blob.h"
#include "store/store.h"

/* Deletes project p (already read and checked to be the caller's). blob NULL:
 * no files to remove. KP_ECONFLICT while a version generates, KP_ENOTFOUND
 * when gone meanwhile, KP_EUNAVAILABLE when files could not be removed. */
kp_status kp_projects_delete(kp_store *s, kp_blob *blob, const kp_project *p, kp_err *err);

#endif
