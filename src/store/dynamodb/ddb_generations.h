/*
 * ddb_generations.h - generations on DynamoDB (store.h): admission, leases,
 * the end of a version with its credit, and what recovery reads. The rules
 * live in the conditions of one TransactWriteItems each: the user item's
 * `generating` counter (admit: + 1 below the plan's limit; version_end and
 * version_finish: - 1), the version's status (only a generating version
 * ends, once), the balance version (CAS). Recovery reads GSI2, a sparse
 * index of what needs it: generating versions by lease (LEASE#), ended but
 * unsettled versions (UNSET#), open reservations (RESV#).
 * docs/ARCHITECTURE.md "DynamoDB data model" gives every request's cost.
 * ddb_store.c wires these into its ops table.
 */
#ifndef KP_DDB_GENERATIONS_H
#define KP_DDB_GENERATIONS_H

#include "store/store.h"

kp_status kp_ddb_versions_generating_count(kp_store *s, const char *user_id, int64_t *count, kp_err *err);
kp_status kp_ddb_versions_expired(kp_store *s, int64_t now_ms, size_t limit, kp_version **out, size_t *n, kp_err *err);
kp_status kp_ddb_versions_unsettled(kp_store *s, kp_version **out, size_t *n, kp_err *err);
kp_status kp_ddb_reservations_orphaned(kp_store *s, kp_reservation **out, size_t *n, kp_err *err);
kp_status kp_ddb_version_finish(kp_store *s, const kp_version *v, kp_err *err);
kp_status kp_ddb_version_end(kp_store *s, const kp_version *v, const kp_credit_change *c, kp_balance *out, kp_err *err);
kp_status kp_ddb_admit(kp_store *s, const kp_admission *a, kp_balance *out, kp_err *err);
kp_status kp_ddb_leases_renew(kp_store *s, const char *owner, int64_t now_ms, int64_t until_ms, kp_lease *leases,
                              size_t n, kp_err *err);
kp_status kp_ddb_lease_transfer(kp_store *s, const char *project_id, int64_t n, const char *from_owner,
                                const char *to_owner, int64_t now_ms, int64_t until_ms, kp_err *err);
kp_status kp_ddb_version_request_cancel(kp_store *s, const char *project_id, int64_t n, kp_err *err);

#endif
