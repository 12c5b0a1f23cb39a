/*
 * metrics.c - see metrics.h.
 *
 * Layout: two fixed open-addressing tables (routes, named counters/gauges) of
 * slots that are never removed. A slot becomes visible when its label pointer
 * is published with a release store; readers find slots with acquire loads and
 * then touch only atomic counters (relaxed: every counter is independent, and a
 * scrape may see one request's count before its duration - Prometheus copes).
 * Insertions are serialised by the mutex, which rendering also takes so that
 * HELP texts (only changed under it) are read safely. Durations are kept as
 * integer microseconds so that the hot path is integer atomics only.
 */
#include "core/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUTE_SLOTS 256 /* power of two, comfortably above KP_METRICS_MAX_ROUTES + 1 */
#define NAMED_SLOTS 128 /* power of two, above KP_METRICS_MAX_NAMED */
#define STATUS_SLOTS 16 /* distinct status codes per route before "other" */
#define NAME_MAX_LEN 100

/* Histogram upper bounds: sub-millisecond API calls up to generation streams. */
static const struct {
    uint64_t us;
    const char *le;
} bucket_bounds[] = {
    {500, "0.0005"}, {1000, "0.001"},  {2500, "0.0025"}, {5000, "0.005"},  {10000, "0.01"},    {25000, "0.025"},
    {50000, "0.05"}, {100000, "0.1"},  {250000, "0.25"}, {500000, "0.5"},  {1000000, "1"},     {2500000, "2.5"},
    {5000000, "5"},  {10000000, "10"}, {30000000, "30"}, {60000000, "60"}, {120000000, "120"}, {300000000, "300"},
};
#define NBOUNDS (sizeof bucket_bounds / sizeof bucket_bounds[0])

typedef struct status_count {
    _Atomic int code; /* 0: free */
    _Atomic uint64_t n;
} status_count;

typedef struct route_slot {
    _Atomic(char *) label; /* NULL: free; published last */
    status_count status[STATUS_SLOTS];
    _Atomic uint64_t status_other;
    _Atomic uint64_t bucket[NBOUNDS + 1]; /* per bucket (not cumulative); the last is above every bound */
    _Atomic uint64_t sum_us;
} route_slot;

typedef struct named_slot {
    _Atomic(char *) name; /* NULL: free; published after kind */
    kp_metric_kind kind;
    char *help; /* guarded by kp_metrics.mu */
    _Atomic int64_t value;
} named_slot;

struct kp_metrics {
    pthread_mutex_t mu; /* insertions and rendering */
    size_t nroutes;     /* under mu */
    size_t nnamed;      /* under mu */
    int64_t start_time;
    route_slot routes[ROUTE_SLOTS];
    named_slot named[NAMED_SLOTS];
};

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

kp_metrics *kp_metrics_new(void)
{
    kp_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    m->start_time = (int64_t)time(NULL);
    return m;
}

void kp_metrics_free(kp_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < ROUTE_SLOTS; i++)
        free(atomic_load(&m->routes[i].label));
    for (size_t i = 0; i < NAMED_SLOTS; i++) {
        free(atomic_load(&m->named[i].name));
        free(m->named[i].help);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* ---- routes ---- */

static route_slot *route_find(kp_metrics *m, const char *label)
{
    uint32_t h = hash_str(label);
    for (size_t i = 0; i < ROUTE_SLOTS; i++) {
        route_slot *s = &m->routes[(h + i) & (ROUTE_SLOTS - 1)];
        const char *l = atomic_load_explicit(&s->label, memory_order_acquire);
        if (!l)
            return NULL; /* slots are never removed: the first gap ends the probe */
        if (strcmp(l, label) == 0)
            return s;
    }
    return NULL;
}

/* Caller holds mu; label is not in the table; a free slot exists (the table
 * is sized above KP_METRICS_MAX_ROUTES + "other"). */
static route_slot *route_insert_locked(kp_metrics *m, const char *label)
{
    char *copy = strdup(label);
    if (!copy)
        return NULL;
    uint32_t h = hash_str(label);
    for (size_t i = 0; i < ROUTE_SLOTS; i++) {
        route_slot *s = &m->routes[(h + i) & (ROUTE_SLOTS - 1)];
        if (atomic_load_explicit(&s->label, memory_order_relaxed) == NULL) {
            atomic_store_explicit(&s->label, copy, memory_order_release);
            m->nroutes++;
            return s;
        }
    }
    free(copy);
    return NULL;
}

static route_slot *route_get(kp_metrics *m, const char *label)
{
    route_slot *s = route_find(m, label);
    if (s)
        return s;
    pthread_mutex_lock(&m->mu);
    s = route_find(m, label);
    if (!s && m->nroutes >= KP_METRICS_MAX_ROUTES) {
        label = "other";
        s = route_find(m, label);
    }
    if (!s)
        s = route_insert_locked(m, label);
    pthread_mutex_unlock(&m->mu);
    return s;
}

static void count_status(route_slot *s, int code)
{
    if (code >= 100 && code <= 999) {
        for (size_t i = 0; i < STATUS_SLOTS; i++) {
            int c = atomic_load_explicit(&s->status[i].code, memory_order_relaxed);
            if (c == 0) {
                int expected = 0;
                if (atomic_compare_exchange_strong(&s->status[i].code, &expected, code))
                    c = code;
                else
                    c = expected; /* another thread claimed the slot first */
            }
            if (c == code) {
                atomic_fetch_add_explicit(&s->status[i].n, 1, memory_order_relaxed);
                return;
            }
        }
    }
    atomic_fetch_add_explicit(&s->status_other, 1, memory_order_relaxed);
}

static uint64_t seconds_to_us(double seconds)
{
    if (!(seconds > 0)) /* also NaN */
        return 0;
    if (seconds > 1e9)
        seconds = 1e9;
    return (uint64_t)(seconds * 1e6 + 0.5);
}

void kp_metrics_observe(kp_metrics *m, const char *route, int status, double seconds)
{
    if (!m)
        return;
    route_slot *s = route_get(m, route ? route : "unmatched");
    if (!s)
        return; /* out of memory: drop the sample */
    count_status(s, status);
    uint64_t us = seconds_to_us(seconds);
    size_t b = 0;
    while (b < NBOUNDS && us > bucket_bounds[b].us)
        b++;
    atomic_fetch_add_explicit(&s->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_us, us, memory_order_relaxed);
}

/* ---- named counters and gauges ---- */

static int valid_name(const char *name)
{
    if (!name || !*name || strlen(name) > NAME_MAX_LEN)
        return 0;
    for (const char *p = name; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_';
        int digit = *p >= '0' && *p <= '9';
        if (!alpha && !(digit && p != name))
            return 0;
    }
    return 1;
}

static named_slot *named_find(kp_metrics *m, const char *name)
{
    uint32_t h = hash_str(name);
    for (size_t i = 0; i < NAMED_SLOTS; i++) {
        named_slot *s = &m->named[(h + i) & (NAMED_SLOTS - 1)];
        const char *n = atomic_load_explicit(&s->name, memory_order_acquire);
        if (!n)
            return NULL;
        if (strcmp(n, name) == 0)
            return s;
    }
    return NULL;
}

static named_slot *named_insert_locked(kp_metrics *m, const char *name, kp_metric_kind kind)
{
    if (m->nnamed >= KP_METRICS_MAX_NAMED)
        return NULL;
    char *copy = strdup(name);
    if (!copy)
        return NULL;
    uint32_t h = hash_str(name);
    for (size_t i = 0; i < NAMED_SLOTS; i++) {
        named_slot *s = &m->named[(h + i) & (NAMED_SLOTS - 1)];
        if (atomic_load_explicit(&s->name, memory_order_relaxed) == NULL) {
            s->kind = kind;
            atomic_store_explicit(&s->name, copy, memory_order_release);
            m->nnamed++;
            return s;
        }
    }
    free(copy);
    return NULL;
}

/* The slot for name, created with kind if absent; NULL for an invalid name, a
 * kind mismatch or a full table. If help is given and the slot has none, sets it. */
static named_slot *named_get(kp_metrics *m, const char *name, kp_metric_kind kind, const char *help)
{
    if (!valid_name(name))
        return NULL;
    named_slot *s = named_find(m, name);
    if (!s || help) {
        pthread_mutex_lock(&m->mu);
        s = named_find(m, name);
        if (!s)
            s = named_insert_locked(m, name, kind);
        if (s && help && !s->help && s->kind == kind)
            s->help = strdup(help); /* a failed copy just means no HELP line */
        pthread_mutex_unlock(&m->mu);
    }
    if (s && s->kind != kind)
        return NULL;
    return s;
}

int kp_metrics_register(kp_metrics *m, const char *name, kp_metric_kind kind, const char *help)
{
    if (!m)
        return 0;
    return named_get(m, name, kind, help) ? 0 : -1;
}

int kp_metrics_counter_add(kp_metrics *m, const char *name, int64_t delta)
{
    if (!m)
        return 0;
    if (delta < 0)
        return -1;
    named_slot *s = named_get(m, name, KP_METRIC_COUNTER, NULL);
    if (!s)
        return -1;
    atomic_fetch_add_explicit(&s->value, delta, memory_order_relaxed);
    return 0;
}

int kp_metrics_gauge_add(kp_metrics *m, const char *name, int64_t delta)
{
    if (!m)
        return 0;
    named_slot *s = named_get(m, name, KP_METRIC_GAUGE, NULL);
    if (!s)
        return -1;
    atomic_fetch_add_explicit(&s->value, delta, memory_order_relaxed);
    return 0;
}

int kp_metrics_gauge_set(kp_metrics *m, const char *name, int64_t value)
{
    if (!m)
        return 0;
    named_slot *s = named_get(m, name, KP_METRIC_GAUGE, NULL);
    if (!s)
        return -1;
    atomic_store_explicit(&s->value, value, memory_order_relaxed);
    return 0;
}

int64_t kp_metrics_value(kp_metrics *m, const char *name)
{
    if (!m || !valid_name(name))
        return 0;
    named_slot *s = named_find(m, name);
    return s ? atomic_load_explicit(&s->value, memory_order_relaxed) : 0;
}

/* ---- rendering ---- */

/* Label values escape backslash, double quote and line feed. */
static int put_label_value(kp_buf *out, const char *v)
{
    int rc = kp_buf_puts(out, "\"");
    for (; *v && rc == 0; v++) {
        if (*v == '\\')
            rc = kp_buf_puts(out, "\\\\");
        else if (*v == '"')
            rc = kp_buf_puts(out, "\\\"");
        else if (*v == '\n')
            rc = kp_buf_puts(out, "\\n");
        else
            rc = kp_buf_append(out, v, 1);
    }
    return rc == 0 ? kp_buf_puts(out, "\"") : -1;
}

/* HELP text escapes backslash and line feed. */
static int put_help(kp_buf *out, const char *name, const char *help)
{
    int rc = kp_buf_printf(out, "# HELP koumpa_%s ", name);
    for (const char *p = help; *p && rc == 0; p++) {
        if (*p == '\\')
            rc = kp_buf_puts(out, "\\\\");
        else if (*p == '\n')
            rc = kp_buf_puts(out, "\\n");
        else
            rc = kp_buf_append(out, p, 1);
    }
    return rc == 0 ? kp_buf_puts(out, "\n") : -1;
}

static int cmp_route(const void *a, const void *b)
{
    const route_slot *x = *(route_slot *const *)a, *y = *(route_slot *const *)b;
    return strcmp(atomic_load_explicit(&x->label, memory_order_relaxed),
                  atomic_load_explicit(&y->label, memory_order_relaxed));
}

static int cmp_named(const void *a, const void *b)
{
    const named_slot *x = *(named_slot *const *)a, *y = *(named_slot *const *)b;
    return strcmp(atomic_load_explicit(&x->name, memory_order_relaxed),
                  atomic_load_explicit(&y->name, memory_order_relaxed));
}

static int cmp_status(const void *a, const void *b)
{
    const int *x = a, *y = b;
    return (*x > *y) - (*x < *y);
}

static int render_requests(kp_buf *out, route_slot *const *routes, size_t n)
{
    int rc =
        kp_buf_puts(out, "# HELP koumpa_http_requests_total HTTP requests handled, by route pattern and status code.\n"
                         "# TYPE koumpa_http_requests_total counter\n");
    for (size_t i = 0; i < n && rc == 0; i++) {
        const route_slot *s = routes[i];
        const char *label = atomic_load_explicit(&s->label, memory_order_relaxed);
        int codes[STATUS_SLOTS][2]; /* code, slot index */
        size_t nc = 0;
        for (size_t j = 0; j < STATUS_SLOTS; j++) {
            int c = atomic_load_explicit(&s->status[j].code, memory_order_relaxed);
            if (c != 0) {
                codes[nc][0] = c;
                codes[nc][1] = (int)j;
                nc++;
            }
        }
        qsort(codes, nc, sizeof codes[0], cmp_status);
        for (size_t j = 0; j < nc && rc == 0; j++) {
            uint64_t v = atomic_load_explicit(&s->status[codes[j][1]].n, memory_order_relaxed);
            rc |= kp_buf_puts(out, "koumpa_http_requests_total{route=");
            rc |= put_label_value(out, label);
            rc |= kp_buf_printf(out, ",status=\"%d\"} %" PRIu64 "\n", codes[j][0], v);
        }
        uint64_t other = atomic_load_explicit(&s->status_other, memory_order_relaxed);
        if (other && rc == 0) {
            rc |= kp_buf_puts(out, "koumpa_http_requests_total{route=");
            rc |= put_label_value(out, label);
            rc |= kp_buf_printf(out, ",status=\"other\"} %" PRIu64 "\n", other);
        }
    }
    return rc ? -1 : 0;
}

static int render_durations(kp_buf *out, route_slot *const *routes, size_t n)
{
    int rc = kp_buf_puts(out, "# HELP koumpa_http_request_duration_seconds Time to handle an HTTP request "
                              "(streamed responses: until the stream ends).\n"
                              "# TYPE koumpa_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i < n && rc == 0; i++) {
        const route_slot *s = routes[i];
        const char *label = atomic_load_explicit(&s->label, memory_order_relaxed);
        uint64_t cumulative = 0;
        for (size_t b = 0; b <= NBOUNDS && rc == 0; b++) {
            cumulative += atomic_load_explicit(&s->bucket[b], memory_order_relaxed);
            rc |= kp_buf_puts(out, "koumpa_http_request_duration_seconds_bucket{route=");
            rc |= put_label_value(out, label);
            rc |=
                kp_buf_printf(out, ",le=\"%s\"} %" PRIu64 "\n", b < NBOUNDS ? bucket_bounds[b].le : "+Inf", cumulative);
        }
        /* _count is the +Inf bucket, so a scrape is always self-consistent */
        uint64_t sum_us = atomic_load_explicit(&s->sum_us, memory_order_relaxed);
        rc |= kp_buf_puts(out, "koumpa_http_request_duration_seconds_sum{route=");
        rc |= put_label_value(out, label);
        rc |= kp_buf_printf(out, "} %" PRIu64 ".%06" PRIu64 "\n", sum_us / 1000000, sum_us % 1000000);
        rc |= kp_buf_puts(out, "koumpa_http_request_duration_seconds_count{route=");
        rc |= put_label_value(out, label);
        rc |= kp_buf_printf(out, "} %" PRIu64 "\n", cumulative);
    }
    return rc ? -1 : 0;
}

static int render_named(kp_buf *out, named_slot *const *named, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const named_slot *s = named[i];
        const char *name = atomic_load_explicit(&s->name, memory_order_relaxed);
        if (s->help)
            rc |= put_help(out, name, s->help);
        rc |= kp_buf_printf(out, "# TYPE koumpa_%s %s\nkoumpa_%s %" PRId64 "\n", name,
                            s->kind == KP_METRIC_COUNTER ? "counter" : "gauge", name,
                            (int64_t)atomic_load_explicit(&s->value, memory_order_relaxed));
    }
    return rc ? -1 : 0;
}

int kp_metrics_render(kp_metrics *m, kp_buf *out)
{
    if (!m)
        return 0;
    route_slot *routes[ROUTE_SLOTS];
    named_slot *named[NAMED_SLOTS];
    size_t nr = 0, nn = 0;
    int rc = 0;

    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < ROUTE_SLOTS; i++)
        if (atomic_load_explicit(&m->routes[i].label, memory_order_acquire))
            routes[nr++] = &m->routes[i];
    for (size_t i = 0; i < NAMED_SLOTS; i++)
        if (atomic_load_explicit(&m->named[i].name, memory_order_acquire))
            named[nn++] = &m->named[i];
    qsort(routes, nr, sizeof routes[0], cmp_route);
    qsort(named, nn, sizeof named[0], cmp_named);

    rc |= render_requests(out, routes, nr);
    rc |= render_durations(out, routes, nr);
    rc |= kp_buf_printf(out,
                        "# HELP koumpa_process_start_time_seconds Start time of the process since the unix epoch.\n"
                        "# TYPE koumpa_process_start_time_seconds gauge\n"
                        "koumpa_process_start_time_seconds %" PRId64 "\n",
                        m->start_time);
    rc |= render_named(out, named, nn);
    pthread_mutex_unlock(&m->mu);
    return rc ? -1 : 0;
}
