/*
 * ddb_events.h - the DynamoDB backend's event store ops (store.h
 * events_append, events_append_many, events_list, events_last_id); ddb_store.c wires them into
 * its ops table. events_list results are freed with kp_event_free_array.
 */
#ifndef KP_DDB_EVENTS_H
#define KP_DDB_EVENTS_H

#include "store/store.h"

kp_status kp_ddb_events_append(kp_store *s, const char *project_id, int64_t n, const kp_event *events, size_t count,
                               kp_err *err);
/* Version by version (each its own requests): not one transaction. */
kp_status kp_ddb_events_append_many(kp_store *s, const kp_event_batch *batches, size_t n, kp_err *err);
kp_status kp_ddb_events_list(kp_store *s, const char *project_id, int64_t n, int64_t after_id, size_t limit,
                             kp_event **out, size_t *count, kp_err *err);
kp_status kp_ddb_events_last_id(kp_store *s, const char *project_id, int64_t n, int64_t *last_id, kp_err *err);

#endif
