/*
 * projects.h - the rules for deleting a project: its rows (store) and its
 * files (blob store, under "apps/{project_id}/").
 *
 * Order: files first, then rows. A project whose files cannot all be removed
 * is kept (its rows still there, some files perhaps already gone) and the
 * caller is told (KP_EUNAVAILABLE: the API answers 503 files_not_removed), so
 * a retried DELETE finishes the job; files are never left behind a deleted
 * project. Before anything is removed, the project is marked as being
 * deleted in a transaction that checks no version generates (else
 * KP_ECONFLICT): from then on no follow-up can start on it (they get "not
 * found"), so its files never vanish under a generation. A crash after the
 * mark leaves the project without new versions until a DELETE is retried.
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
