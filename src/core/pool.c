/*
 * pool.c - see pool.h. One mutex guards a FIFO of jobs; workers sleep on a
 * condition variable. Stopping lets the workers empty the queue first, so a
 * job that was accepted always runs (its owner may be waiting for it).
 */
#include "core/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct job {
    void (*fn)(void *arg);
    void *arg;
    struct job *next;
} job;

struct kp_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    int queued, queue_cap;
    int busy; /* workers running a job */
    int stopping;
    int nthreads;
    pthread_t *threads;
};

static job *take_job(kp_pool *p)
{
    job *j = p->head;
    p->head = j->next;
    if (!p->head)
        p->tail = NULL;
    p->queued--;
    return j;
}

static void *worker_main(void *arg)
{
    kp_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->head)
            break; /* stopping and nothing left */
        job *j = take_job(p);
        p->busy++;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&p->mu);
        p->busy--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void stop_and_join(kp_pool *p, int started)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < started; i++)
        pthread_join(p->threads[i], NULL);
}

kp_status kp_pool_new(const char *name, int nthreads, int queue_cap, kp_pool **out, kp_err *err)
{
    *out = NULL;
    if (nthreads < 1 || queue_cap < 0)
        return kp_err_set(err, KP_EINVAL, "pool %s: needs at least one thread and a queue of 0 or more", name);
    kp_pool *p = calloc(1, sizeof *p);
    if (!p)
        return kp_err_set(err, KP_ENOMEM, "pool %s: out of memory", name);
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return kp_err_set(err, KP_ENOMEM, "pool %s: out of memory", name);
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->queue_cap = queue_cap;
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
            p->nthreads = i;
            kp_pool_free(p);
            return kp_err_set(err, KP_EINTERNAL, "pool %s: cannot start thread %d", name, i + 1);
        }
        char tname[16]; /* seen by top -H, perf and gdb */
        snprintf(tname, sizeof tname, "kp-%s", name);
        pthread_setname_np(p->threads[i], tname);
    }
    p->nthreads = nthreads;
    *out = p;
    return KP_OK;
}

/* Queues fn(arg) at the tail, or at the head when first. */
static int submit(kp_pool *p, void (*fn)(void *arg), void *arg, int first)
{
    job *j = malloc(sizeof *j);
    if (!j)
        return -1;
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    /* idle workers take a job at once; beyond them, queue_cap may wait */
    if (p->stopping || p->queued >= p->queue_cap + (p->nthreads - p->busy)) {
        pthread_mutex_unlock(&p->mu);
        free(j);
        return -1;
    }
    if (first) {
        j->next = p->head;
        p->head = j;
        if (!p->tail)
            p->tail = j;
    } else {
        if (p->tail)
            p->tail->next = j;
        else
            p->head = j;
        p->tail = j;
    }
    p->queued++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

int kp_pool_submit(kp_pool *p, void (*fn)(void *arg), void *arg)
{
    return submit(p, fn, arg, 0);
}

int kp_pool_submit_first(kp_pool *p, void (*fn)(void *arg), void *arg)
{
    return submit(p, fn, arg, 1);
}

int kp_pool_queued(kp_pool *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->queued;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void kp_pool_free(kp_pool *p)
{
    if (!p)
        return;
    stop_and_join(p, p->nthreads);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}
