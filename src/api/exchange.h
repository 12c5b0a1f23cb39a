/*
 * exchange.h - what every host does around the router for each request,
 * whatever the wire: the request id (an incoming sane X-Request-Id is kept,
 * else a new one), the body limit (KP_MAX_BODY, 413), the host's own error
 * responses in the host's style, the check of what the handler left (no
 * status or a deferred left: 500), HEAD (answered like GET, without a body
 * and without running a stream's producer), and what is recorded of each
 * request when it ends: one JSON log line ("request") and one metrics
 * observation.
 *
 * The evhttp host (host/evhttp_host.c) and the Lambda host (host/lambda/)
 * both use it, so the two answer alike; nothing here knows a wire library.
 *
 * A host fills a kp_req_summary once the request is read
 * (kp_exchange_begin, kp_exchange_take_request), sets its status when the
 * response is chosen (kp_exchange_check_response), and calls
 * kp_exchange_record() when the request is over (for a stream or a deferred
 * response, later, from the copy they keep).
 *
 * Ownership: a summary is a plain value (no pointers to free; `method` points
 * to a static string); nothing here allocates beyond the log line.
 */
#ifndef KP_EXCHANGE_H
#define KP_EXCHANGE_H

#include <stdint.h>
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

/* Fills resp with a host error in the host's style (NULL: kp_resp_error's JSON). */
typedef void (*kp_error_page_fn)(kp_resp *resp, int status, const char *code, const char *message);

/* A source of request ids for one thread: 8 random hex digits, then a counter. */
typedef struct kp_exchange_ids {
    char prefix[9];
    uint32_t counter;
} kp_exchange_ids;

/* A new random prefix, counter 0. */
void kp_exchange_ids_init(kp_exchange_ids *ids);
/* The request's id into out: incoming when it is sane, else the next of ids. */
void kp_exchange_request_id(kp_exchange_ids *ids, const char *incoming, char out[KP_REQUEST_ID_MAX + 1]);
/* 1 when an incoming request id may be kept: 1..KP_REQUEST_ID_MAX of [A-Za-z0-9-_.]. */
int kp_exchange_id_is_sane(const char *id);

/* A host error response (limits, rejected requests, handler bugs) through
 * page (NULL: JSON {"error":{code,message}}); resp must be empty. */
__attribute__((format(printf, 5, 6))) void kp_exchange_error(kp_error_page_fn page, kp_resp *resp, int status,
                                                             const char *code, const char *fmt, ...);
/* 0 when a body of len bytes is accepted, else -1 with resp filled (413). */
int kp_exchange_check_body(kp_error_page_fn page, size_t len, kp_resp *resp);
/* After dispatch (and any deferred settled): a response without a valid
 * status, or with a deferred left in it, is a handler bug, logged and
 * replaced by a 500. Sets sum->status. */
void kp_exchange_check_response(kp_error_page_fn page, kp_resp *resp, kp_req_summary *sum);
/* 1 for a HEAD request (answered like GET without a body). */
int kp_exchange_is_head(const char *method);
/* 1 when a response of status to method carries a body (not HEAD, 1xx, 204, 304). */
int kp_exchange_has_body(const char *method, int status);
/* HEAD: a stream's producer is not run for a body nobody reads; releases
 * resp->stream (if any) and clears it. */
void kp_exchange_drop_stream(kp_resp *resp);

/* Clears s and sets the method and the start time. */
void kp_exchange_begin(kp_req_summary *s, const char *method, const struct timespec *t0);
/* Copies what is logged of req (route, path, request id, address, user). */
void kp_exchange_take_request(kp_req_summary *s, const kp_req *req);
/* One JSON log line (at info level) and one observation on m (NULL: none). */
void kp_exchange_record(kp_metrics *m, const kp_req_summary *s);

#endif
