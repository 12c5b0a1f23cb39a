/*
 * offload.c - see offload.h. A deferred response is a `job` here: start()
 * submits it to the pool (or answers 503 when the queue is full), the pool
 * thread runs the work and sends the reply, the host's release() frees it.
 * After reply->send() the pool thread touches neither the reply nor the job:
 * the host may release it at once.
 */
#include "api/offload.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/pool.h"

typedef struct handle {
    kp_store *store;
    struct handle *next;
} handle;

struct kp_offload {
    kp_pool *pool;
    kp_offload_open_fn open_store;
    void *open_ud;
    pthread_mutex_t mu;
    handle *idle;       /* handles not in use; guarded by mu */
    char busy_what[64]; /* "the server is busy with other {busy_what}" */
};

typedef struct job {
    kp_deferred deferred; /* first: the host's pointer is the job's */
    kp_offload *o;
    kp_reply *reply;
    kp_offload_fn fn;
    void (*free_arg)(void *arg);
    void *arg;
} job;

kp_status kp_offload_new(const char *name, int threads, int queue, kp_offload_open_fn open_store, void *ud,
                         kp_offload **out, kp_err *err)
{
    *out = NULL;
    kp_offload *o = calloc(1, sizeof *o);
    if (!o)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    o->open_store = open_store;
    o->open_ud = ud;
    snprintf(o->busy_what, sizeof o->busy_what, "sign-ins and sign-ups");
    pthread_mutex_init(&o->mu, NULL);
    kp_status rc = kp_pool_new(name, threads, queue, &o->pool, err);
    if (rc != KP_OK) {
        kp_offload_free(o);
        return rc;
    }
    *out = o;
    return KP_OK;
}

void kp_offload_free(kp_offload *o)
{
    if (!o)
        return;
    kp_pool_free(o->pool); /* runs what was queued: their clients wait for replies */
    for (handle *h = o->idle, *next; h; h = next) {
        next = h->next;
        h->store->ops->close(h->store);
        free(h);
    }
    pthread_mutex_destroy(&o->mu);
    free(o);
}

/* An idle handle, or a new one (at most one per pool thread is ever in use). */
static handle *borrow_handle(kp_offload *o, kp_err *err)
{
    pthread_mutex_lock(&o->mu);
    handle *h = o->idle;
    if (h)
        o->idle = h->next;
    pthread_mutex_unlock(&o->mu);
    if (h)
        return h;
    h = calloc(1, sizeof *h);
    if (!h) {
        kp_err_set(err, KP_ENOMEM, "out of memory");
        return NULL;
    }
    if (o->open_store(o->open_ud, &h->store, err) != KP_OK) {
        free(h);
        return NULL;
    }
    return h;
}

static void return_handle(kp_offload *o, handle *h)
{
    pthread_mutex_lock(&o->mu);
    h->next = o->idle;
    o->idle = h;
    pthread_mutex_unlock(&o->mu);
}

void kp_offload_set_busy_what(kp_offload *o, const char *what)
{
    snprintf(o->busy_what, sizeof o->busy_what, "%s", what);
}

static void busy(const kp_offload *o, kp_resp *resp)
{
    char seconds[16];
    snprintf(seconds, sizeof seconds, "%d", KP_OFFLOAD_RETRY_AFTER_S);
    kp_resp_error(resp, 503, "busy", "the server is busy with other %s; try again in %d s (Retry-After)", o->busy_what,
                  KP_OFFLOAD_RETRY_AFTER_S);
    kp_headers_set(&resp->headers, "Retry-After", seconds);
}

static void drop_arg(job *j)
{
    if (j->free_arg && j->arg)
        j->free_arg(j->arg);
    j->arg = NULL;
}

static void run_job(void *p)
{
    job *j = p;
    kp_resp resp = {0};
    kp_err err = {0};
    handle *h = borrow_handle(j->o, &err);
    if (h) {
        j->fn(j->arg, h->store, &resp);
        return_handle(j->o, h);
    } else {
        kp_log_json(KP_LOG_ERROR, "offload cannot open the database", json_pack("{s:s}", "error", err.msg));
        kp_resp_error(&resp, 503, "unavailable", "the database is unavailable; try again later");
    }
    drop_arg(j);
    kp_reply *reply = j->reply;
    reply->send(reply, &resp); /* from here on, j belongs to the host */
}

static void job_start(kp_deferred *d, kp_reply *reply)
{
    job *j = (job *)d;
    j->reply = reply;
    if (kp_pool_submit(j->o->pool, run_job, j) == 0)
        return;
    kp_resp resp = {0};
    busy(j->o, &resp);
    reply->send(reply, &resp);
}

static void job_release(kp_deferred *d)
{
    job *j = (job *)d;
    drop_arg(j);
    free(j);
}

void kp_offload_defer(kp_offload *o, kp_resp *resp, kp_offload_fn fn, void (*free_arg)(void *arg), void *arg)
{
    job *j = calloc(1, sizeof *j);
    if (!j) {
        if (free_arg)
            free_arg(arg);
        busy(o, resp);
        return;
    }
    j->deferred.start = job_start;
    j->deferred.release = job_release;
    j->o = o;
    j->fn = fn;
    j->free_arg = free_arg;
    j->arg = arg;
    resp->deferred = &j->deferred;
}
