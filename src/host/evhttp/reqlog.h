/*
 * reqlog.h - what the host records of each request: one JSON log line
 * ("request") and one metrics observation when it finishes, and the rule for
 * request ids.
 *
 * The host fills a kp_req_summary once the request is read (kp_reqlog_begin,
 * kp_reqlog_take_request), sets its status when the response is chosen, and
 * calls kp_reqlog_record() when the request is over (for a stream or a
 * deferred response, later, from the copy they keep).
 *
 * Ownership: a summary is a plain value (no pointers to free; `method` points
 * to a static string); nothing here allocates beyond the log line.
 */
#ifndef KP_REQLOG_H
#define KP_REQLOG_H

#include <time.h>

#include "api/http.h"
#include "core/metrics.h"
#include "store/store.h"

#define KP_REQUEST_ID_MAX 64
#define KP_ROUTE_LABEL_MAX 128

/* What a finished request is logged and counted with. */
typedef struct kp_req_summary {
    const char *method;
    char route[KP_ROUTE_LABEL_MAX];
    char path[KP_ROUTE_LABEL_MAX]; /* for error messages only */
    char request_id[KP_REQUEST_ID_MAX + 1];
    char user_id[KP_ID_MAX];
    char remote_addr[64];
    int status;
    struct timespec t0; /* CLOCK_MONOTONIC, when the request arrived */
} kp_req_summary;

/* Clears s and sets the method and the start time. */
void kp_reqlog_begin(kp_req_summary *s, const char *method, const struct timespec *t0);
/* Copies what is logged of req (route, path, request id, address, user). */
void kp_reqlog_take_request(kp_req_summary *s, const kp_req *req);
/* One JSON log line (at info level) and one observation on m (NULL: none). */
void kp_reqlog_record(kp_metrics *m, const kp_req_summary *s);
/* 1 when an incoming request id may be kept: 1..KP_REQUEST_ID_MAX of [A-Za-z0-9-_.]. */
int kp_reqlog_id_is_sane(const char *id);

#endif
