/*
 * test_pool.c - the bounded worker pool: every accepted job runs once, a full
 * queue refuses at once, a job submitted first runs before those queued, and
 * freeing the pool runs what was already queued.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/pool.h"

static atomic_int ran;

static void count_job(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
}

/* A job that blocks until the gate opens, so the test controls when workers are busy. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
    int waiting;
} gate;

static void gated_job(void *arg)
{
    gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->waiting++;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    atomic_fetch_add(&ran, 1);
}

static void wait_for_waiting(gate *g, int n)
{
    pthread_mutex_lock(&g->mu);
    while (g->waiting < n)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void open_gate(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void test_pool_runs_every_accepted_job_once(void **state)
{
    (void)state;
    kp_pool *p;
    kp_err err;
    atomic_store(&ran, 0);
    assert_int_equal(kp_pool_new("t", 3, 1000, &p, &err), KP_OK);
    int accepted = 0;
    for (int i = 0; i < 500; i++)
        accepted += kp_pool_submit(p, count_job, NULL) == 0;
    kp_pool_free(p);
    assert_int_equal(accepted, 500);
    assert_int_equal(atomic_load(&ran), 500);
}

static void test_pool_full_queue_refuses_at_once(void **state)
{
    (void)state;
    kp_pool *p;
    kp_err err;
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    atomic_store(&ran, 0);
    assert_int_equal(kp_pool_new("t", 2, 3, &p, &err), KP_OK);
    /* two jobs occupy both workers... */
    assert_int_equal(kp_pool_submit(p, gated_job, &g), 0);
    assert_int_equal(kp_pool_submit(p, gated_job, &g), 0);
    wait_for_waiting(&g, 2);
    /* ...three may wait, the fourth is refused */
    for (int i = 0; i < 3; i++)
        assert_int_equal(kp_pool_submit(p, gated_job, &g), 0);
    assert_int_equal(kp_pool_queued(p), 3);
    assert_int_equal(kp_pool_submit(p, count_job, NULL), -1);
    open_gate(&g);
    kp_pool_free(p); /* runs the queued ones before stopping */
    assert_int_equal(atomic_load(&ran), 5);
}

/* Records the order jobs ran in: arg is a small number. */
static int order[8];
static atomic_int order_n;

static void record_job(void *arg)
{
    order[atomic_fetch_add(&order_n, 1)] = (int)(intptr_t)arg;
}

static void test_pool_submit_first_goes_ahead_of_the_queue(void **state)
{
    (void)state;
    kp_pool *p;
    kp_err err;
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    atomic_store(&ran, 0);
    atomic_store(&order_n, 0);
    assert_int_equal(kp_pool_new("t", 1, 4, &p, &err), KP_OK);
    assert_int_equal(kp_pool_submit(p, gated_job, &g), 0); /* the one worker is busy */
    wait_for_waiting(&g, 1);
    assert_int_equal(kp_pool_submit(p, record_job, (void *)(intptr_t)1), 0);
    assert_int_equal(kp_pool_submit(p, record_job, (void *)(intptr_t)2), 0);
    assert_int_equal(kp_pool_submit_first(p, record_job, (void *)(intptr_t)3), 0);
    assert_int_equal(kp_pool_submit(p, record_job, (void *)(intptr_t)4), 0);
    /* the queue is full (4): first or not, the next is refused */
    assert_int_equal(kp_pool_submit_first(p, record_job, (void *)(intptr_t)5), -1);
    open_gate(&g);
    kp_pool_free(p);
    assert_int_equal(atomic_load(&order_n), 4);
    assert_int_equal(order[0], 3);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 2);
    assert_int_equal(order[3], 4);
}

static void test_pool_rejects_bad_sizes(void **state)
{
    (void)state;
    kp_pool *p = (kp_pool *)1;
    kp_err err;
    assert_int_equal(kp_pool_new("t", 0, 1, &p, &err), KP_EINVAL);
    assert_null(p);
    assert_int_equal(kp_pool_new("t", 1, -1, &p, &err), KP_EINVAL);
    kp_pool_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_runs_every_accepted_job_once),
        cmocka_unit_test(test_pool_full_queue_refuses_at_once),
        cmocka_unit_test(test_pool_submit_first_goes_ahead_of_the_queue),
        cmocka_unit_test(test_pool_rejects_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
