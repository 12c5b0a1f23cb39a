/* test_metrics.c - kp_metrics: counting, histogram buckets, named metrics,
 * the text exposition format and thread safety. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "core/buf.h"
#include "core/metrics.h"

/* The rendered text of m; the caller frees it. */
static char *render(kp_metrics *m)
{
    kp_buf out = KP_BUF_INIT;
    assert_int_equal(kp_metrics_render(m, &out), 0);
    return kp_buf_steal(&out);
}

/* True when text holds exactly this line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        int at_start = p == text || p[-1] == '\n';
        if (at_start && p[n] == '\n')
            return 1;
    }
    return 0;
}

static void assert_line(const char *text, const char *line)
{
    if (!has_line(text, line))
        fail_msg("missing line: %s\n--- rendered ---\n%s", line, text);
}

static void test_empty_registry_renders_headers(void **state)
{
    (void)state;
    kp_metrics *m = kp_metrics_new();
    assert_non_null(m);
    char *text = render(m);
    assert_line(text, "# TYPE koumpa_http_requests_total counter");
    assert_line(text, "# TYPE koumpa_http_request_duration_seconds histogram");
    assert_line(text, "# TYPE koumpa_process_start_time_seconds gauge");
    assert_null(strstr(text, "koumpa_http_requests_total{"));
    free(text);
    kp_metrics_free(m);
}

static void test_requests_counted_by_route_and_status(void **state)
{
    (void)state;
    kp_metrics *m = kp_metrics_new();
    for (int i = 0; i < 3; i++)
        kp_metrics_observe(m, "/healthz", 200, 0.0001);
    kp_metrics_observe(m, "/v1/me", 401, 0.0001);
    kp_metrics_observe(m, "/v1/me", 200, 0.0001);
    kp_metrics_observe(m, NULL, 404, 0.0001);
    char *text = render(m);
    assert_line(text, "koumpa_http_requests_total{route=\"/healthz\",status=\"200\"} 3");
    assert_line(text, "koumpa_http_requests_total{route=\"/v1/me\",status=\"200\"} 1");
    assert_line(text, "koumpa_http_requests_total{route=\"/v1/me\",status=\"401\"} 1");
    assert_line(text, "koumpa_http_requests_total{route=\"unmatched\",status=\"404\"} 1");
    /* sorted: statuses ascending within a route, routes by name */
    assert_true(strstr(text, "status=\"200\"} 1") < strstr(text, "status=\"401\"} 1"));
    assert_true(strstr(text, "route=\"/healthz\"") < strstr(text, "route=\"/v1/me\""));
    free(text);
    kp_metrics_free(m);
}

static void test_histogram_buckets_are_cumulative(void **state)
{
    (void)state;
    kp_metrics *m = kp_metrics_new();
    kp_metrics_observe(m, "/r", 200, 0.0004); /* <= 0.0005 */
    kp_metrics_observe(m, "/r", 200, 0.0005); /* le is inclusive */
    kp_metrics_observe(m, "/r", 200, 0.003);  /* <= 0.005 */
    kp_metrics_observe(m, "/r", 200, 1000.0); /* above every bound */
    kp_metrics_observe(m, "/r", 200, -1.0);   /* clamped to 0 */
    char *text = render(m);
    assert_line(text, "koumpa_http_request_duration_seconds_bucket{route=\"/r\",le=\"0.0005\"} 3");
    assert_line(text, "koumpa_http_request_duration_seconds_bucket{route=\"/r\",le=\"0.0025\"} 3");
    assert_line(text, "koumpa_http_request_duration_seconds_bucket{route=\"/r\",le=\"0.005\"} 4");
    assert_line(text, "koumpa_http_request_duration_seconds_bucket{route=\"/r\",le=\"300\"} 4");
    assert_line(text, "koumpa_http_request_duration_seconds_bucket{route=\"/r\",le=\"+Inf\"} 5");
    assert_line(text, "koumpa_http_request_duration_seconds_count{route=\"/r\"} 5");
    assert_line(text, "koumpa_http_request_duration_seconds_sum{route=\"/r\"} 1000.003900");
    free(text);
    kp_metrics_free(m);
}

static void test_named_counters_and_gauges(void **state)
{
    (void)state;
    kp_metrics *m = kp_metrics_new();
    assert_int_equal(kp_metrics_register(m, "generations_in_flight", KP_METRIC_GAUGE, "Generations running now."), 0);
    char *text = render(m);
    assert_line(text, "# HELP koumpa_generations_in_flight Generations running now.");
    assert_line(text, "# TYPE koumpa_generations_in_flight gauge");
    assert_line(text, "koumpa_generations_in_flight 0");
    free(text);

    assert_int_equal(kp_metrics_gauge_add(m, "generations_in_flight", 2), 0);
    assert_int_equal(kp_metrics_gauge_add(m, "generations_in_flight", -1), 0);
    assert_int_equal(kp_metrics_counter_add(m, "credits_spent_total", 5), 0);
    assert_int_equal(kp_metrics_counter_add(m, "credits_spent_total", 7), 0);
    assert_int_equal(kp_metrics_gauge_set(m, "users", 42), 0);
    assert_int_equal(kp_metrics_value(m, "generations_in_flight"), 1);
    assert_int_equal(kp_metrics_value(m, "credits_spent_total"), 12);
    assert_int_equal(kp_metrics_value(m, "nothing_here"), 0);

    /* counters only go up; kinds do not change; names are validated */
    assert_int_equal(kp_metrics_counter_add(m, "credits_spent_total", -1), -1);
    assert_int_equal(kp_metrics_gauge_add(m, "credits_spent_total", 1), -1);
    assert_int_equal(kp_metrics_counter_add(m, "users", 1), -1);
    assert_int_equal(kp_metrics_counter_add(m, "bad name", 1), -1);
    assert_int_equal(kp_metrics_counter_add(m, "9lives", 1), -1);
    assert_int_equal(kp_metrics_counter_add(m, "", 1), -1);
    assert_int_equal(kp_metrics_value(m, "credits_spent_total"), 12);

    text = render(m);
    assert_line(text, "# TYPE koumpa_credits_spent_total counter");
    assert_line(text, "koumpa_credits_spent_total 12");
    assert_line(text, "koumpa_generations_in_flight 1");
    assert_line(text, "koumpa_users 42");
    assert_null(strstr(text, "bad name"));
    free(text);
    kp_metrics_free(m);
}

static void test_label_values_are_escaped(void **state)
{
    (void)state;
    kp_metrics *m = kp_metrics_new();
    kp_metrics_observe(m, "/a\"b\\c\nd", 200, 0.0);
    char *text = render(m);
    assert_line(text, "koumpa_http_requests_total{route=\"/a\\\"b\\\\c\\nd\",status=\"200\"} 1");
    free(text);
    kp_metrics_free(m);
}

static void test_route_table_overflow_goes_to_other(void **state)
{
    (void)state;
    kp_metrics *m = kp_metrics_new();
    char route[32];
    for (int i = 0; i < KP_METRICS_MAX_ROUTES + 10; i++) {
        snprintf(route, sizeof route, "/r%d", i);
        kp_metrics_observe(m, route, 200, 0.0);
    }
    char *text = render(m);
    assert_line(text, "koumpa_http_requests_total{route=\"other\",status=\"200\"} 10");
    assert_line(text, "koumpa_http_requests_total{route=\"/r0\",status=\"200\"} 1");
    free(text);
    kp_metrics_free(m);
}

static void test_odd_status_codes_count_as_other(void **state)
{
    (void)state;
    kp_metrics *m = kp_metrics_new();
    kp_metrics_observe(m, "/x", 0, 0.0);
    kp_metrics_observe(m, "/x", 1000, 0.0);
    char *text = render(m);
    assert_line(text, "koumpa_http_requests_total{route=\"/x\",status=\"other\"} 2");
    free(text);
    kp_metrics_free(m);
}

static void test_null_registry_is_a_no_op(void **state)
{
    (void)state;
    kp_buf out = KP_BUF_INIT;
    kp_metrics_observe(NULL, "/x", 200, 0.1);
    assert_int_equal(kp_metrics_counter_add(NULL, "x", 1), 0);
    assert_int_equal(kp_metrics_render(NULL, &out), 0);
    assert_int_equal(out.len, 0);
    kp_metrics_free(NULL);
}

#define THREADS 4
#define PER_THREAD 50000

static void *observe_many(void *arg)
{
    kp_metrics *m = arg;
    static const char *routes[] = {"/a", "/b", "/c"};
    static const int statuses[] = {200, 201, 404, 500};
    for (int i = 0; i < PER_THREAD; i++) {
        kp_metrics_observe(m, routes[i % 3], statuses[i % 4], 0.001);
        kp_metrics_counter_add(m, "events_total", 1);
        kp_metrics_gauge_add(m, "balance", (i % 2) ? 1 : -1);
    }
    return NULL;
}

static void test_concurrent_observations_are_all_counted(void **state)
{
    (void)state;
    kp_metrics *m = kp_metrics_new();
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, observe_many, m), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(kp_metrics_value(m, "events_total"), THREADS * PER_THREAD);
    assert_int_equal(kp_metrics_value(m, "balance"), 0);
    char *text = render(m);
    /* no increment lost: the per-route counts add up to every observation */
    uint64_t total = 0;
    const char *p = text;
    while ((p = strstr(p, "koumpa_http_request_duration_seconds_count{")) != NULL) {
        p = strchr(p, '}') + 2;
        total += strtoull(p, NULL, 10);
    }
    assert_int_equal(total, (uint64_t)THREADS * PER_THREAD);
    uint64_t by_status = 0;
    p = text;
    while ((p = strstr(p, "koumpa_http_requests_total{")) != NULL) {
        p = strchr(p, '}') + 2;
        by_status += strtoull(p, NULL, 10);
    }
    assert_int_equal(by_status, (uint64_t)THREADS * PER_THREAD);
    free(text);
    kp_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_registry_renders_headers),
        cmocka_unit_test(test_requests_counted_by_route_and_status),
        cmocka_unit_test(test_histogram_buckets_are_cumulative),
        cmocka_unit_test(test_named_counters_and_gauges),
        cmocka_unit_test(test_label_values_are_escaped),
        cmocka_unit_test(test_route_table_overflow_goes_to_other),
        cmocka_unit_test(test_odd_status_codes_count_as_other),
        cmocka_unit_test(test_null_registry_is_a_no_op),
        cmocka_unit_test(test_concurrent_observations_are_all_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
