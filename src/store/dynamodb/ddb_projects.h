/*
 * ddb_projects.h - the DynamoDB backend's projects and versions (store.h's
 * project_* and version_* ops) over the items docs/ARCHITECTURE.md "DynamoDB
 * data model" lists: the project PROJ#{pid}/A (GSI1 UPROJ#{uid} /
 * {created:015}#{pid}: a user's projects newest first), its versions
 * PROJ#{pid}/V#{n:010} (GSI2 keys while generating). ddb_store.c wires these
 * into its ops table; each takes that store (kp_ddb_store_client()).
 *
 * Here: project_create, project_get, project_list, version_create,
 * version_get, version_list, version_set_settled, project_mark_deleting,
 * project_delete. A new generating version also bumps its user's generating
 * counter (the admission counter) and records its reservation's reference;
 * ending versions, admission and recovery's reads are in ddb_generations.c.
 */
#ifndef KP_DDB_PROJECTS_H
#define KP_DDB_PROJECTS_H

#include "store/store.h"

kp_status kp_ddb_project_create(kp_store *s, const kp_project *p, const kp_version *v, kp_err *err);
kp_status kp_ddb_project_get(kp_store *s, const char *id, kp_project *out, kp_err *err);
kp_status kp_ddb_project_list(kp_store *s, const char *user_id, int64_t before_created_at, const char *before_id,
                              size_t limit, kp_project **out, size_t *n, kp_err *err);
kp_status kp_ddb_version_create(kp_store *s, const kp_version *v, kp_err *err);
kp_status kp_ddb_version_get(kp_store *s, const char *project_id, int64_t n, kp_version *out, kp_err *err);
kp_status kp_ddb_version_list(kp_store *s, const char *project_id, kp_version **out, size_t *n, kp_err *err);
kp_status kp_ddb_project_mark_deleting(kp_store *s, const char *id, int on, kp_err *err);
kp_status kp_ddb_project_delete(kp_store *s, const char *id, kp_err *err);
kp_status kp_ddb_version_set_settled(kp_store *s, const char *project_id, int64_t n, kp_err *err);

#endif
