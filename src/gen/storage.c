/*
 * storage.c - see storage.h. The handles sit in a small array behind a mutex:
 * a job takes one when it starts and gives it back when its work returns,
 * before done is posted, so the handle is free again for the next job.
 *
 * Jobs the pool's queue has no room for wait on an overflow list behind the
 * same mutex, oldest first; while it holds any, new jobs join it too (so
 * jobs start in the order they came), and each thread that finishes a job
 * moves as many as fit into the pool's queue.
 */
#include "gen/storage.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/pool.h"

#define QUEUE_CAP 4096    /* beyond this, jobs run on the caller's thread */
#define POST_ATTEMPTS 100 /* posting done back to the loop, when out of memory */
#define POST_RETRY_NS 10000000L

struct kp_gen_storage {
    kp_pool *pool;
    kp_loop *loop;
    pthread_mutex_t mu;
    kp_store **free_handles; /* mu: a stack of handles not lent */
    int nfree;
    kp_store **handles; /* all of them, for closing */
    int nhandles;
    struct job *overflow; /* mu: jobs waiting for room in the pool's queue, oldest first */
    struct job *overflow_tail;
    int noverflow;
};

typedef struct job {
    kp_gen_storage *st;
    void (*work)(kp_store *s, void *arg);
    void (*done)(void *arg);
    void *arg;
    struct job *next; /* on the overflow list */
} job;

static kp_store *take_handle(kp_gen_storage *st)
{
    pthread_mutex_lock(&st->mu);
    kp_store *s = st->nfree > 0 ? st->free_handles[--st->nfree] : NULL;
    pthread_mutex_unlock(&st->mu);
    return s;
}

static void give_handle(kp_gen_storage *st, kp_store *s)
{
    pthread_mutex_lock(&st->mu);
    st->free_handles[st->nfree++] = s;
    pthread_mutex_unlock(&st->mu);
}

static void post_done(kp_gen_storage *st, void (*done)(void *arg), void *arg)
{
    struct timespec pause = {0, POST_RETRY_NS};
    for (int i = 0; i < POST_ATTEMPTS; i++) {
        if (kp_loop_post(st->loop, done, arg) == 0)
            return;
        nanosleep(&pause, NULL);
    }
    kp_log(KP_LOG_ERROR, "storage pool: cannot hand a finished job back to the generation loop");
}

static void run_job(void *arg);

/* With st->mu held: moves the oldest overflow jobs into the pool's queue while it has room. */
static void refill_locked(kp_gen_storage *st)
{
    while (st->overflow && st->pool && kp_pool_submit(st->pool, run_job, st->overflow) == 0) {
        st->overflow = st->overflow->next;
        st->noverflow--;
    }
    if (!st->overflow)
        st->overflow_tail = NULL;
}

/* With st->mu held: j waits on the overflow list, at its end (or its head, for a first job). */
static void overflow_add_locked(kp_gen_storage *st, job *j, int first)
{
    j->next = NULL;
    if (!st->overflow) {
        st->overflow = st->overflow_tail = j;
    } else if (first) {
        j->next = st->overflow;
        st->overflow = j;
    } else {
        st->overflow_tail->next = j;
        st->overflow_tail = j;
    }
    st->noverflow++;
}

static void run_job(void *arg)
{
    job *j = arg;
    kp_gen_storage *st = j->st;
    kp_store *s = take_handle(st); /* never NULL: no more jobs run than handles exist */
    j->work(s, j->arg);
    give_handle(st, s);
    post_done(st, j->done, j->arg);
    free(j);
    pthread_mutex_lock(&st->mu);
    refill_locked(st);
    pthread_mutex_unlock(&st->mu);
}

static void storage_run(kp_gen_storage *st, kp_store *fallback, void (*work)(kp_store *s, void *arg),
                        void (*done)(void *arg), void *arg, int first)
{
    job *j = malloc(sizeof *j);
    if (!j) { /* out of memory for its record: run it here */
        work(fallback, arg);
        post_done(st, done, arg);
        return;
    }
    *j = (job){.st = st, .work = work, .done = done, .arg = arg};
    pthread_mutex_lock(&st->mu);
    int queued = -1;
    if (first)
        queued = kp_pool_submit_first(st->pool, run_job, j);
    else if (!st->overflow) /* else it would start before older jobs */
        queued = kp_pool_submit(st->pool, run_job, j);
    if (queued != 0) {
        overflow_add_locked(st, j, first);
        refill_locked(st); /* room may have come since (a thread between its job and its refill) */
    }
    pthread_mutex_unlock(&st->mu);
}

/* Waits until the pool's threads have taken every overflow job into the queue (a stopping pool takes none). */
static void wait_overflow_drained(kp_gen_storage *st)
{
    struct timespec pause = {0, 1000000};
    pthread_mutex_lock(&st->mu);
    while (st->overflow) {
        refill_locked(st);
        pthread_mutex_unlock(&st->mu);
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
}

/* After the pool has stopped: runs what still waits on the overflow list, here. */
static void run_overflow(kp_gen_storage *st)
{
    for (;;) {
        pthread_mutex_lock(&st->mu);
        job *j = st->overflow;
        if (j) {
            st->overflow = j->next;
            st->noverflow--;
        }
        pthread_mutex_unlock(&st->mu);
        if (!j)
            break;
        run_job(j);
    }
    st->overflow_tail = NULL;
}

void kp_gen_storage_run(kp_gen_storage *st, kp_store *fallback, void (*work)(kp_store *s, void *arg),
                        void (*done)(void *arg), void *arg)
{
    storage_run(st, fallback, work, done, arg, 0);
}

void kp_gen_storage_run_first(kp_gen_storage *st, kp_store *fallback, void (*work)(kp_store *s, void *arg),
                              void (*done)(void *arg), void *arg)
{
    storage_run(st, fallback, work, done, arg, 1);
}

int kp_gen_storage_queued(kp_gen_storage *st)
{
    pthread_mutex_lock(&st->mu);
    int waiting = st->noverflow;
    pthread_mutex_unlock(&st->mu);
    return kp_pool_queued(st->pool) + waiting;
}

void kp_gen_storage_free(kp_gen_storage *st)
{
    if (!st)
        return;
    wait_overflow_drained(st);
    kp_pool_free(st->pool); /* its threads are joined: every handle is free */
    pthread_mutex_lock(&st->mu);
    st->pool = NULL;
    pthread_mutex_unlock(&st->mu);
    run_overflow(st);
    for (int i = 0; i < st->nhandles; i++)
        st->handles[i]->ops->close(st->handles[i]);
    free(st->handles);
    free(st->free_handles);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

kp_status kp_gen_storage_new(int nthreads, kp_loop *loop, kp_gen_storage_open_fn open_store, void *ud,
                             kp_gen_storage **out, kp_err *err)
{
    *out = NULL;
    if (nthreads < 1)
        return kp_err_set(err, KP_EINVAL, "the storage pool needs at least one thread");
    kp_gen_storage *st = calloc(1, sizeof *st);
    if (!st)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    pthread_mutex_init(&st->mu, NULL);
    st->nhandles = 0; /* none open yet; stated: clang-tidy loses calloc's zero past the mutex init */
    st->loop = loop;
    st->handles = calloc((size_t)nthreads, sizeof *st->handles);
    st->free_handles = calloc((size_t)nthreads, sizeof *st->free_handles);
    if (!st->handles || !st->free_handles) {
        kp_gen_storage_free(st); /* no handle open yet */
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    kp_status rc = KP_OK;
    for (int i = 0; i < nthreads && rc == KP_OK; i++) {
        rc = open_store(ud, &st->handles[i], err);
        if (rc == KP_OK) {
            st->free_handles[st->nfree++] = st->handles[i];
            st->nhandles++;
        }
    }
    if (rc == KP_OK)
        rc = kp_pool_new("storage", nthreads, QUEUE_CAP, &st->pool, err);
    if (rc != KP_OK) {
        kp_gen_storage_free(st);
        return rc;
    }
    *out = st;
    return KP_OK;
}
