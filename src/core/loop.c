/*
 * loop.c - see loop.h. Posted functions go into a mutex-protected FIFO and a
 * user event wakes the loop, which drains the FIFO in order. The loop keeps
 * running while there is nothing to do (a persistent "keep-alive" event).
 * A post touches the loop only while holding its lock, and kp_loop_stop()
 * takes that lock before tearing down, so a post never outlives the loop.
 */
#include "core/loop.h"

#include <event2/thread.h>
#include <pthread.h>
#include <stdlib.h>

typedef struct task {
    void (*fn)(void *arg);
    void *arg;
    struct task *next;
} task;

struct kp_loop {
    struct event_base *base;
    struct event *wake;
    struct event *keepalive;
    pthread_t thread;
    pthread_mutex_t lock;
    task *head, *tail;
    int stopping;
};

static void drain(evutil_socket_t fd, short what, void *arg)
{
    kp_loop *loop = arg;
    (void)fd;
    (void)what;
    for (;;) {
        pthread_mutex_lock(&loop->lock);
        task *t = loop->head;
        if (t) {
            loop->head = t->next;
            if (!loop->head)
                loop->tail = NULL;
        }
        pthread_mutex_unlock(&loop->lock);
        if (!t)
            return;
        t->fn(t->arg);
        free(t);
    }
}

static void idle(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void *loop_main(void *arg)
{
    kp_loop *loop = arg;
    event_base_dispatch(loop->base);
    drain(-1, 0, loop);
    return NULL;
}

static void use_pthreads(void)
{
    evthread_use_pthreads();
}

kp_status kp_loop_start(kp_loop **out, kp_err *err)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, use_pthreads);
    kp_loop *loop = calloc(1, sizeof *loop);
    if (!loop)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    pthread_mutex_init(&loop->lock, NULL);
    loop->base = event_base_new();
    if (loop->base) {
        loop->wake = event_new(loop->base, -1, 0, drain, loop);
        loop->keepalive = event_new(loop->base, -1, EV_PERSIST, idle, loop);
    }
    struct timeval hour = {3600, 0};
    if (!loop->base || !loop->wake || !loop->keepalive || event_add(loop->keepalive, &hour) != 0 ||
        pthread_create(&loop->thread, NULL, loop_main, loop) != 0) {
        if (loop->wake)
            event_free(loop->wake);
        if (loop->keepalive)
            event_free(loop->keepalive);
        if (loop->base)
            event_base_free(loop->base);
        pthread_mutex_destroy(&loop->lock);
        free(loop);
        return kp_err_set(err, KP_EINTERNAL, "cannot start an event loop thread");
    }
    pthread_setname_np(loop->thread, "kp-loop"); /* seen by top -H, perf and gdb */
    *out = loop;
    return KP_OK;
}

struct event_base *kp_loop_base(kp_loop *loop)
{
    return loop->base;
}

int kp_loop_post(kp_loop *loop, void (*fn)(void *arg), void *arg)
{
    task *t = malloc(sizeof *t);
    if (!t)
        return -1;
    t->fn = fn;
    t->arg = arg;
    t->next = NULL;
    pthread_mutex_lock(&loop->lock);
    if (loop->stopping) {
        pthread_mutex_unlock(&loop->lock);
        free(t);
        return -1;
    }
    if (loop->tail)
        loop->tail->next = t;
    else
        loop->head = t;
    loop->tail = t;
    /* Wake the loop before unlocking: once the lock is released the task may
     * run, and whoever waits for it may stop and free the loop at once (the
     * event too). libevent's own lock nests inside this one, never the other
     * way: the loop thread runs callbacks such as drain() without it. */
    event_active(loop->wake, 0, 0);
    pthread_mutex_unlock(&loop->lock);
    return 0;
}

int kp_loop_is_current(const kp_loop *loop)
{
    return pthread_equal(pthread_self(), loop->thread);
}

void kp_loop_stop(kp_loop *loop)
{
    if (!loop)
        return;
    pthread_mutex_lock(&loop->lock);
    loop->stopping = 1;
    pthread_mutex_unlock(&loop->lock);
    event_base_loopexit(loop->base, NULL);
    pthread_join(loop->thread, NULL);
    event_free(loop->wake);
    event_free(loop->keepalive);
    event_base_free(loop->base);
    pthread_mutex_destroy(&loop->lock);
    free(loop);
}
