/*
 * test_gen_storage.c - the generation service's storage pool
 * (gen/storage.h): work runs on the pool's threads, never on the caller's,
 * each job with a handle of its own (no two running jobs share one), and its
 * done runs afterwards on the loop thread; every job submitted runs, also
 * when more are submitted than there are threads, and when more are submitted
 * than the queue holds (then in order, still off the caller); freeing closes
 * the handles.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/loop.h"
#include "gen/storage.h"

#define THREADS 2
#define JOBS 200

typedef struct fake_store {
    kp_store base;
    _Atomic int in_use; /* jobs using it now */
} fake_store;

static _Atomic int closed;
static _Atomic int shared_handle; /* a job found its handle in use */

static void fake_close(kp_store *s)
{
    atomic_fetch_add(&closed, 1);
    free(s);
}

static const kp_store_ops fake_ops = {.close = fake_close};

static kp_status open_fake(void *ud, kp_store **out, kp_err *err)
{
    (void)ud;
    (void)err;
    fake_store *f = calloc(1, sizeof *f);
    f->base.ops = &fake_ops;
    *out = &f->base;
    return KP_OK;
}

typedef struct job {
    kp_loop *loop;
    pthread_t caller;
    int off_caller; /* work ran on another thread than the caller's */
    int on_loop;    /* done ran on the loop */
    _Atomic int *done;
} job;

static void work(kp_store *s, void *arg)
{
    job *j = arg;
    fake_store *f = (fake_store *)s;
    if (atomic_fetch_add(&f->in_use, 1) != 0)
        atomic_store(&shared_handle, 1);
    struct timespec ts = {0, 200000}; /* a little disk time */
    nanosleep(&ts, NULL);
    j->off_caller = !pthread_equal(pthread_self(), j->caller);
    atomic_fetch_sub(&f->in_use, 1);
}

static void done(void *arg)
{
    job *j = arg;
    j->on_loop = kp_loop_is_current(j->loop);
    atomic_fetch_add(j->done, 1);
}

static void test_jobs_run_off_the_caller_then_done_on_the_loop(void **state)
{
    (void)state;
    kp_err err = {0};
    kp_loop *loop = NULL;
    kp_gen_storage *st = NULL;
    _Atomic int ndone = 0;
    job *jobs = calloc(JOBS, sizeof *jobs);
    atomic_store(&closed, 0);
    assert_int_equal(kp_loop_start(&loop, &err), KP_OK);
    assert_int_equal(kp_gen_storage_new(THREADS, loop, open_fake, NULL, &st, &err), KP_OK);
    kp_store *fallback = NULL;
    open_fake(NULL, &fallback, &err);
    for (int i = 0; i < JOBS; i++) {
        jobs[i] = (job){.loop = loop, .caller = pthread_self(), .done = &ndone};
        kp_gen_storage_run(st, fallback, work, done, &jobs[i]);
    }
    for (int i = 0; i < 5000 && atomic_load(&ndone) < JOBS; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(atomic_load(&ndone), JOBS);
    for (int i = 0; i < JOBS; i++) {
        assert_true(jobs[i].off_caller);
        assert_true(jobs[i].on_loop);
    }
    assert_int_equal(atomic_load(&shared_handle), 0);
    assert_int_equal(kp_gen_storage_queued(st), 0);
    kp_gen_storage_free(st);
    assert_int_equal(atomic_load(&closed), THREADS);
    fallback->ops->close(fallback);
    kp_loop_stop(loop);
    free(jobs);
}

/* More jobs than the pool's queue holds (4,096): none runs on the caller, and with one thread they run in
 * the order they came. */
typedef struct ordered_job {
    kp_loop *loop;
    pthread_t caller;
    int seq;
    _Atomic int *next_seq; /* the seq the next job to run must have */
    _Atomic int *out_of_order;
    _Atomic int *on_caller;
    _Atomic int *done;
} ordered_job;

static void ordered_work(kp_store *s, void *arg)
{
    (void)s;
    ordered_job *j = arg;
    if (pthread_equal(pthread_self(), j->caller))
        atomic_fetch_add(j->on_caller, 1);
    if (atomic_fetch_add(j->next_seq, 1) != j->seq)
        atomic_fetch_add(j->out_of_order, 1);
}

static void ordered_done(void *arg)
{
    ordered_job *j = arg;
    atomic_fetch_add(j->done, 1);
}

static void test_a_full_queue_waits_in_order_never_on_the_caller(void **state)
{
    (void)state;
    enum { N = 10000 };
    kp_err err = {0};
    kp_loop *loop = NULL;
    kp_gen_storage *st = NULL;
    _Atomic int next_seq = 0, out_of_order = 0, on_caller = 0, ndone = 0;
    ordered_job *jobs = calloc(N, sizeof *jobs);
    atomic_store(&closed, 0);
    assert_int_equal(kp_loop_start(&loop, &err), KP_OK);
    assert_int_equal(kp_gen_storage_new(1, loop, open_fake, NULL, &st, &err), KP_OK);
    kp_store *fallback = NULL;
    open_fake(NULL, &fallback, &err);
    for (int i = 0; i < N; i++) {
        jobs[i] = (ordered_job){.loop = loop,
                                .caller = pthread_self(),
                                .seq = i,
                                .next_seq = &next_seq,
                                .out_of_order = &out_of_order,
                                .on_caller = &on_caller,
                                .done = &ndone};
        kp_gen_storage_run(st, fallback, ordered_work, ordered_done, &jobs[i]);
    }
    kp_gen_storage_free(st); /* runs every job still queued or waiting */
    for (int i = 0; i < 5000 && atomic_load(&ndone) < N; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(atomic_load(&ndone), N);
    assert_int_equal(atomic_load(&next_seq), N);
    assert_int_equal(atomic_load(&out_of_order), 0);
    assert_int_equal(atomic_load(&on_caller), 0);
    assert_int_equal(atomic_load(&closed), 1);
    fallback->ops->close(fallback);
    kp_loop_stop(loop);
    free(jobs);
}

static void test_refuses_no_threads(void **state)
{
    (void)state;
    kp_err err = {0};
    kp_gen_storage *st = NULL;
    assert_int_equal(kp_gen_storage_new(0, NULL, open_fake, NULL, &st, &err), KP_EINVAL);
    assert_null(st);
    kp_gen_storage_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_run_off_the_caller_then_done_on_the_loop),
        cmocka_unit_test(test_a_full_queue_waits_in_order_never_on_the_caller),
        cmocka_unit_test(test_refuses_no_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
