/*
 * test_loop.c - the generation loop thread (src/core/loop.c): posted functions
 * run in order on the loop thread, stopping runs what is still queued, and a
 * post never touches the loop once its function may have run (the function
 * may end with the loop being stopped and freed by another thread).
 *
 * The last property is a race too narrow to hit by chance, so this binary
 * interposes libevent's event_active() (a definition in the executable wins
 * over the shared library's): on a poster thread that asks for it, the wrapper
 * waits, before calling the real one, until the posted function has run and
 * the loop has been stopped and freed - or until a short grace period ends,
 * when the loop still holds its lock (the fixed kp_loop_post). Under the old
 * code the real event_active() then touched a freed event (ASan reports it;
 * without ASan the test still sees the task run while the poster was inside
 * kp_loop_post).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "core/loop.h"

/* ---- helpers ---- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct flag {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int set;
} flag;

static void flag_init(flag *f)
{
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->set = 0;
}

static void flag_raise(flag *f)
{
    pthread_mutex_lock(&f->mu);
    f->set = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void flag_wait(flag *f)
{
    pthread_mutex_lock(&f->mu);
    while (!f->set)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

static void flag_free(flag *f)
{
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
}

/* ---- event_active interposed ---- */

static _Thread_local int delay_event_active; /* set on the poster thread under test */
static flag *entered_event_active;           /* raised when that poster reaches event_active */
static atomic_int task_ran;                  /* the posted task ran while the poster was in event_active */
static atomic_int poster_in_event_active;

void event_active(struct event *ev, int res, short ncalls)
{
    static void (*real)(struct event *, int, short);
    if (!real)
        real = (void (*)(struct event *, int, short))dlsym(RTLD_NEXT, "event_active");
    if (delay_event_active) {
        atomic_store(&poster_in_event_active, 1);
        flag_raise(entered_event_active); /* the task is queued: let the loop thread look at the queue */
        /* give the loop thread time to run the task (and the test to stop the loop) if it can */
        for (int i = 0; i < 50 && !atomic_load(&task_ran); i++)
            sleep_ms(2);
        if (atomic_load(&task_ran)) { /* the old kp_loop_post: ev may be freed by now; do not call */
            atomic_store(&poster_in_event_active, 0);
            return;
        }
        atomic_store(&poster_in_event_active, 0);
    }
    real(ev, res, ncalls);
}

/* ---- order and stop ---- */

typedef struct order {
    kp_loop *loop;
    int seen[64];
    int n;
    int off_thread;
} order;

typedef struct item {
    order *o;
    int value;
} item;

static void record(void *arg)
{
    item *it = arg;
    if (!kp_loop_is_current(it->o->loop))
        it->o->off_thread = 1;
    it->o->seen[it->o->n++] = it->value;
}

static void test_posts_run_in_order_and_stop_drains(void **state)
{
    (void)state;
    kp_err err = {0};
    order o = {0};
    item items[64];
    assert_int_equal(kp_loop_start(&o.loop, &err), KP_OK);
    assert_false(kp_loop_is_current(o.loop));
    for (int i = 0; i < 64; i++) {
        items[i] = (item){&o, i};
        assert_int_equal(kp_loop_post(o.loop, record, &items[i]), 0);
    }
    kp_loop_stop(o.loop); /* runs whatever is still queued */
    assert_int_equal(o.n, 64);
    assert_int_equal(o.off_thread, 0);
    for (int i = 0; i < 64; i++)
        assert_int_equal(o.seen[i], i);
}

/* ---- a post racing the loop's end ---- */

typedef struct race {
    kp_loop *loop;
    flag blocker_running; /* the loop thread is inside a task, and will look at the queue right after */
    flag may_go_on;       /* the blocker may return: raised by the poster inside event_active */
    flag task_done;
} race;

static void blocker(void *arg)
{
    race *r = arg;
    flag_raise(&r->blocker_running);
    flag_wait(&r->may_go_on);
}

static void last_task(void *arg)
{
    race *r = arg;
    if (atomic_load(&poster_in_event_active))
        atomic_store(&task_ran, 1);
    flag_raise(&r->task_done);
}

static void *poster(void *arg)
{
    race *r = arg;
    delay_event_active = 1;
    assert_int_equal(kp_loop_post(r->loop, last_task, r), 0);
    return NULL;
}

static void test_post_does_not_touch_the_loop_after_its_task_ran(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        race r;
        kp_err err = {0};
        pthread_t t;
        flag_init(&r.blocker_running);
        flag_init(&r.may_go_on);
        flag_init(&r.task_done);
        atomic_store(&task_ran, 0);
        assert_int_equal(kp_loop_start(&r.loop, &err), KP_OK);
        assert_int_equal(kp_loop_post(r.loop, blocker, &r), 0);
        flag_wait(&r.blocker_running);
        entered_event_active = &r.may_go_on;
        assert_int_equal(pthread_create(&t, NULL, poster, &r), 0);
        flag_wait(&r.task_done);
        /* what a user of the loop may do once its last task ran: stop it and free it */
        kp_loop_stop(r.loop);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(atomic_load(&task_ran), 0); /* the task never ran while the poster was still posting */
        flag_free(&r.blocker_running);
        flag_free(&r.may_go_on);
        flag_free(&r.task_done);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_posts_run_in_order_and_stop_drains),
        cmocka_unit_test(test_post_does_not_touch_the_loop_after_its_task_ran),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
