/*
 * streams.c - see streams.h.
 *
 * Producers append to a mutex-guarded `pending` buffer from any thread and
 * activate the stream's wake event; the worker moves pending bytes to the
 * connection while its output buffer stays under STREAM_WRITE_HIGH_WATER. A
 * reader STREAM_PENDING_MAX behind is dropped. stream_finish() runs once, on
 * the worker, when the producer ended or the connection closed.
 */
#include "host/evhttp/streams.h"

#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "core/log.h"
#include "host/evhttp/respond.h"

#define STREAM_READ_HIGH_WATER (64 * 1024)   /* buffered client bytes while a stream runs */
#define STREAM_WRITE_HIGH_WATER (256 * 1024) /* stream bytes queued on a connection before we wait for it */
#define STREAM_PENDING_MAX (1024 * 1024) /* a reader this far behind is dropped (it may resume with Last-Event-ID) */

typedef struct host_stream {
    kp_sink sink; /* first member: the sink pointer is the stream state */
    pthread_mutex_t mu;
    struct evbuffer *pending; /* guarded by mu */
    int ended;                /* guarded by mu: the producer called end() */
    int closed;               /* guarded by mu: writes are refused */
    int overflow;             /* guarded by mu: the reader fell STREAM_PENDING_MAX behind */
    struct event *wake;       /* made active under mu; freed only after closed is set */
    /* worker thread only */
    worker *w;
    struct evbuffer *outbox;            /* pending bytes taken out from under mu, on their way to evhttp */
    struct evbuffer *conn_out;          /* the connection's output buffer */
    struct evbuffer_cb_entry *drain_cb; /* wakes us when conn_out drains */
    struct evhttp_request *evreq;
    struct evhttp_connection *evcon;
    kp_stream *stream;
    kp_req_summary sum;
} host_stream;

/* A deferred response on its way (kp_deferred): its reply may come from any
 * thread; send() stores the response under mu and activates wake, and the
 * worker answers. */

static void stream_finish(host_stream *hs, int connection_gone);
static void stream_free(host_stream *hs);

static int sink_write(kp_sink *sink, const char *data, size_t len)
{
    host_stream *hs = (host_stream *)sink;
    int rc = -1;
    pthread_mutex_lock(&hs->mu);
    if (!hs->closed && !hs->ended && evbuffer_get_length(hs->pending) + len > STREAM_PENDING_MAX) {
        hs->overflow = 1; /* the worker closes the connection */
        hs->closed = 1;
        event_active(hs->wake, 0, 0);
    } else if (!hs->closed && !hs->ended && evbuffer_add(hs->pending, data, len) == 0) {
        event_active(hs->wake, 0, 0);
        rc = 0;
    }
    pthread_mutex_unlock(&hs->mu);
    return rc;
}

static void sink_end(kp_sink *sink)
{
    host_stream *hs = (host_stream *)sink;
    pthread_mutex_lock(&hs->mu);
    if (!hs->closed && !hs->ended) {
        hs->ended = 1;
        event_active(hs->wake, 0, 0);
    }
    pthread_mutex_unlock(&hs->mu);
}

/* On the worker, once a pulled stream's bytes have all gone to the socket: ask for the next piece. */
static void on_stream_drained(struct evhttp_connection *evcon, void *arg)
{
    host_stream *hs = arg;
    (void)evcon;
    pthread_mutex_lock(&hs->mu);
    int go = !hs->closed && !hs->ended && evbuffer_get_length(hs->pending) == 0;
    pthread_mutex_unlock(&hs->mu);
    if (go)
        hs->stream->more(hs->stream, &hs->sink);
}

/* The connection's output shrank: below half the high-water mark, move more. */
static void on_stream_drain(struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
    host_stream *hs = arg;
    if (info->n_deleted > 0 && evbuffer_get_length(out) <= STREAM_WRITE_HIGH_WATER / 2)
        event_active(hs->wake, 0, 0);
}

/* On the worker: move what the producer queued to the connection, while the
 * connection's output stays under the high-water mark (the rest waits in
 * pending, where STREAM_PENDING_MAX bounds it). */
static void on_stream_wake(evutil_socket_t fd, short what, void *arg)
{
    host_stream *hs = arg;
    (void)fd;
    (void)what;
    size_t queued = evbuffer_get_length(hs->conn_out);
    size_t room = queued < STREAM_WRITE_HIGH_WATER ? STREAM_WRITE_HIGH_WATER - queued : 0;
    pthread_mutex_lock(&hs->mu);
    if (hs->overflow) {
        pthread_mutex_unlock(&hs->mu);
        kp_log(KP_LOG_INFO, "dropping a stream reader that fell %d bytes behind (request %s)", STREAM_PENDING_MAX,
               hs->sum.request_id);
        evhttp_connection_free(hs->evcon); /* on_stream_closed frees hs */
        return;
    }
    evbuffer_remove_buffer(hs->pending, hs->outbox, room); /* moves whole chains where it can */
    int ended = hs->ended && evbuffer_get_length(hs->pending) == 0;
    pthread_mutex_unlock(&hs->mu);
    /* evhttp is called without holding mu, so none of its callbacks can
     * deadlock against a producer */
    if (evbuffer_get_length(hs->outbox) > 0) {
        evhttp_send_reply_chunk_with_cb(hs->evreq, hs->outbox, hs->stream->more ? on_stream_drained : NULL, hs);
        /* bodyless statuses (204, 304) leave the bytes in place: drop them */
        evbuffer_drain(hs->outbox, evbuffer_get_length(hs->outbox));
    }
    if (ended) {
        /* a request pipelined behind this stream comes next: it must see what the producer wrote */
        kp_store_snapshot_end(hs->w->ctx.store);
        stream_finish(hs, 0);
    }
}

static void on_stream_closed(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    stream_finish(arg, 1);
}

static void stream_finish(host_stream *hs, int connection_gone)
{
    worker *w = hs->w;
    pthread_mutex_lock(&hs->mu);
    hs->closed = 1;
    pthread_mutex_unlock(&hs->mu);

    if (hs->drain_cb)
        evbuffer_remove_cb_entry(hs->conn_out, hs->drain_cb);
    if (connection_gone) {
        /* When the connection failed under a started reply, evhttp detached
         * the request from it and left it to us; when evhttp_free closes the
         * connection, the request is still attached and evhttp frees it. */
        if (evhttp_request_get_connection(hs->evreq) == NULL)
            evhttp_request_free(hs->evreq);
        kp_worker_request_finished(w);
    } else {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(hs->evcon);
        bufferevent_setwatermark(bev, EV_READ, 0, 0);
        evhttp_connection_set_timeout(hs->evcon, KP_IO_TIMEOUT_S);
        kp_worker_watch_close(w, hs->evcon, kp_worker_on_closed_early, w);
        evhttp_send_reply_end(hs->evreq); /* on_request_complete follows */
    }
    kp_exchange_record(w->ctx.app ? w->ctx.app->metrics : NULL, &hs->sum);
    hs->stream->release(hs->stream);

    stream_free(hs);
}

static void stream_free(host_stream *hs)
{
    if (hs->wake)
        event_free(hs->wake);
    if (hs->pending)
        evbuffer_free(hs->pending);
    if (hs->outbox)
        evbuffer_free(hs->outbox);
    pthread_mutex_destroy(&hs->mu);
    free(hs);
}

static host_stream *stream_new(worker *w)
{
    host_stream *hs = calloc(1, sizeof *hs);
    if (!hs)
        return NULL;
    if (pthread_mutex_init(&hs->mu, NULL) != 0) {
        free(hs);
        return NULL;
    }
    hs->pending = evbuffer_new();
    hs->outbox = evbuffer_new();
    hs->wake = event_new(w->base, -1, 0, on_stream_wake, hs);
    if (!hs->pending || !hs->outbox || !hs->wake) {
        stream_free(hs);
        return NULL;
    }
    hs->sink.write = sink_write;
    hs->sink.end = sink_end;
    hs->w = w;
    return hs;
}

/* Starts a streamed response; takes resp->stream. Returns -1 (stream left in
 * resp) when out of memory, before anything was sent. */
int kp_streams_start(worker *w, struct evhttp_request *evreq, kp_resp *resp, const kp_req_summary *sum)
{
    host_stream *hs = stream_new(w);
    if (!hs)
        return -1;
    hs->evreq = evreq;
    hs->evcon = evhttp_request_get_connection(evreq);
    hs->stream = resp->stream;
    resp->stream = NULL;
    hs->sum = *sum;

    kp_respond_headers(w, evreq, resp, sum->request_id);
    evhttp_send_reply_start(evreq, resp->status, kp_respond_reason_phrase(resp->status));
    kp_worker_watch_close(w, hs->evcon, on_stream_closed, hs);
    hs->conn_out = bufferevent_get_output(evhttp_connection_get_bufferevent(hs->evcon));
    hs->drain_cb = evbuffer_add_cb(hs->conn_out, on_stream_drain, hs);
    /* Watch the socket for the client going away (EOF) while we only write:
     * no read timeout (streams may be quiet for long), keep a write timeout,
     * and cap what a client may send meanwhile. */
    struct bufferevent *bev = evhttp_connection_get_bufferevent(hs->evcon);
    struct timeval write_tv = {KP_IO_TIMEOUT_S, 0};
    bufferevent_set_timeouts(bev, NULL, &write_tv);
    bufferevent_setwatermark(bev, EV_READ, 0, STREAM_READ_HIGH_WATER);
    bufferevent_enable(bev, EV_READ);

    hs->stream->start(hs->stream, &hs->sink);
    if (hs->stream->more)
        hs->stream->more(hs->stream, &hs->sink); /* the first piece of a pulled stream */
    return 0;
}
