/*
 * deferreds.c - see deferreds.h.
 */
#include "host/evhttp/deferreds.h"

#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>

#include "host/evhttp/respond.h"

typedef struct host_deferred {
    kp_reply reply; /* first member: the reply pointer is the state */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sent;           /* guarded by mu */
    kp_resp resp;       /* guarded by mu until sent */
    struct event *wake; /* made active under mu by send() */
    /* worker thread only */
    worker *w;
    kp_deferred *deferred;
    struct evhttp_request *evreq; /* NULL once the connection closed */
    kp_req_summary sum;
    struct host_deferred *prev, *next; /* the worker's list of unanswered ones */
} host_deferred;

/* While a request waits for its reply, notice the client leaving: reading on
 * without evhttp's read callback (which must not run before the reply), so
 * only EOF and errors reach evhttp (it then closes the connection). Sending
 * the reply sets evhttp's callbacks again. */
static void watch_eof(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    bufferevent_data_cb readcb, writecb;
    bufferevent_event_cb eventcb;
    void *arg;
    bufferevent_getcb(bev, &readcb, &writecb, &eventcb, &arg);
    bufferevent_setcb(bev, NULL, writecb, eventcb, arg);
    bufferevent_enable(bev, EV_READ);
}

static void deferred_send(kp_reply *reply, kp_resp *resp)
{
    host_deferred *hd = (host_deferred *)reply;
    pthread_mutex_lock(&hd->mu);
    if (!hd->sent) {
        hd->resp = *resp;
        memset(resp, 0, sizeof *resp);
        hd->sent = 1;
        event_active(hd->wake, 0, 0); /* under mu: the worker frees wake only after seeing sent under mu */
        pthread_cond_signal(&hd->cv);
    }
    pthread_mutex_unlock(&hd->mu);
}

static void deferred_unlink(host_deferred *hd)
{
    worker *w = hd->w;
    if (hd->prev)
        hd->prev->next = hd->next;
    else
        w->deferreds = hd->next;
    if (hd->next)
        hd->next->prev = hd->prev;
}

/* After the reply came: release the producer's state and ours. */
static void deferred_free(host_deferred *hd)
{
    hd->deferred->release(hd->deferred);
    kp_resp_free(&hd->resp);
    event_free(hd->wake);
    pthread_cond_destroy(&hd->cv);
    pthread_mutex_destroy(&hd->mu);
    free(hd);
}

/* On the worker, once send() was called: answer, unless the client left. */
static void on_deferred_wake(evutil_socket_t fd, short what, void *arg)
{
    host_deferred *hd = arg;
    worker *w = hd->w;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&hd->mu); /* pairs with deferred_send: resp is complete */
    pthread_mutex_unlock(&hd->mu);
    deferred_unlink(hd);
    /* the reply's thread may have written: a request pipelined behind this one, handled next on this
     * turn, must see it, so the turn's snapshot (begun before) ends here (store.h snapshot_begin) */
    kp_store_snapshot_end(w->ctx.store);
    if (hd->evreq) {
        kp_worker_watch_close(w, evhttp_request_get_connection(hd->evreq), kp_worker_on_closed_early, w);
        kp_respond_reply(w, hd->evreq, &hd->resp, &hd->sum);
    }
    deferred_free(hd);
}

/* The connection closed before the reply: nobody to answer; the request is
 * no longer in flight. */
static void on_deferred_closed(struct evhttp_connection *evcon, void *arg)
{
    host_deferred *hd = arg;
    (void)evcon;
    /* a failed connection detached the unanswered request and left it to us;
     * evhttp_free (stopping) frees the requests still attached */
    if (evhttp_request_get_connection(hd->evreq) == NULL)
        evhttp_request_free(hd->evreq);
    hd->evreq = NULL;
    kp_worker_request_finished(hd->w);
}

/* Starts resp->deferred (taken from resp) with a reply that hands the
 * response back to this worker. Returns -1 (deferred left in resp) when out
 * of memory. */
int kp_deferreds_start(worker *w, struct evhttp_request *evreq, kp_resp *resp, const kp_req_summary *sum)
{
    host_deferred *hd = calloc(1, sizeof *hd);
    if (!hd)
        return -1;
    hd->wake = event_new(w->base, -1, 0, on_deferred_wake, hd);
    if (!hd->wake) {
        free(hd);
        return -1;
    }
    pthread_mutex_init(&hd->mu, NULL);
    pthread_cond_init(&hd->cv, NULL);
    hd->reply.send = deferred_send;
    hd->w = w;
    hd->evreq = evreq;
    hd->sum = *sum;
    hd->deferred = resp->deferred;
    resp->deferred = NULL;
    hd->next = w->deferreds;
    if (hd->next)
        hd->next->prev = hd;
    w->deferreds = hd;
    struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
    kp_worker_watch_close(w, evcon, on_deferred_closed, hd);
    watch_eof(evcon);
    hd->deferred->start(hd->deferred, &hd->reply);
    return 0;
}

/* The worker's loop has ended and its connections are closed: wait for the
 * replies still due (the producers own them until send), then release. */
void kp_deferreds_finish(worker *w)
{
    for (host_deferred *hd = w->deferreds, *next; hd; hd = next) {
        next = hd->next; /* read before hd is freed (producers never touch the list) */
        pthread_mutex_lock(&hd->mu);
        while (!hd->sent)
            pthread_cond_wait(&hd->cv, &hd->mu);
        pthread_mutex_unlock(&hd->mu);
        deferred_unlink(hd);
        deferred_free(hd);
    }
}
