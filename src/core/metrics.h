/*
 * metrics.h - process metrics in the Prometheus text exposition format.
 *
 * Hosts call kp_metrics_observe() once per request; services add to named
 * counters and gauges (e.g. "generations_in_flight", "credits_spent_total");
 * GET /metrics renders everything with kp_metrics_render().
 *
 * Cheap on the hot path and thread-safe without a global lock: each route owns
 * a slot of atomic counters in a fixed open-addressing table, found by hashing
 * the route label; only the first observation of a new route (or the first use
 * of a new name) takes a mutex. Route labels come from the route table, so the
 * set is small and bounded; pass NULL for requests that matched no route (they
 * are counted under "unmatched"). Past KP_METRICS_MAX_ROUTES distinct labels,
 * further ones are counted under "other".
 *
 * Names of counters and gauges are given without the "koumpa_" prefix, which
 * rendering adds; they must match [a-zA-Z_][a-zA-Z0-9_]*.
 *
 * Ownership: kp_metrics_new() returns an object freed with kp_metrics_free();
 * it copies every string it keeps. Every function accepts m == NULL and then
 * does nothing (render writes nothing), so a host without metrics needs no
 * special cases.
 */
#ifndef KP_METRICS_H
#define KP_METRICS_H

#include <stdint.h>

#include "core/buf.h"

#define KP_METRICS_MAX_ROUTES 128 /* distinct route labels */
#define KP_METRICS_MAX_NAMED 64   /* distinct counters + gauges */

typedef struct kp_metrics kp_metrics;

typedef enum kp_metric_kind { KP_METRIC_COUNTER = 0, KP_METRIC_GAUGE } kp_metric_kind;

/* A new, empty registry; NULL when out of memory. */
kp_metrics *kp_metrics_new(void);
void kp_metrics_free(kp_metrics *m);

/*
 * Records one handled request: koumpa_http_requests_total{route,status} and the
 * koumpa_http_request_duration_seconds{route} histogram. route NULL means
 * "unmatched"; seconds < 0 counts as 0.
 */
void kp_metrics_observe(kp_metrics *m, const char *route, int status, double seconds);

/*
 * Declares a counter or gauge with its # HELP text (copied; may be NULL), so
 * that it is rendered (at 0) before its first change. Returns 0, or -1 for an
 * invalid name, a name already declared with the other kind, or a full table.
 */
int kp_metrics_register(kp_metrics *m, const char *name, kp_metric_kind kind, const char *help);

/* Adds delta (>= 0) to a counter, creating it if needed. Returns 0 or -1 as above
 * (also -1 for a negative delta: counters only go up). */
int kp_metrics_counter_add(kp_metrics *m, const char *name, int64_t delta);
/* Adds delta (may be negative) to a gauge, creating it if needed. */
int kp_metrics_gauge_add(kp_metrics *m, const char *name, int64_t delta);
/* Sets a gauge, creating it if needed. */
int kp_metrics_gauge_set(kp_metrics *m, const char *name, int64_t value);
/* The current value of a counter or gauge; 0 when unknown. */
int64_t kp_metrics_value(kp_metrics *m, const char *name);

/*
 * Appends the text exposition (# HELP / # TYPE lines, then samples; routes and
 * names in sorted order) to out. Returns 0, or -1 on allocation failure.
 */
int kp_metrics_render(kp_metrics *m, kp_buf *out);

#endif
