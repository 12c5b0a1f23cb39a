/*
 * stream.c - see stream.h.
 *
 * State: `pending` (bytes written, not yet taken), `ended`, `closed` and
 * `overflow` and the outcome reader are guarded by mu and shared with the
 * producer; everything else belongs to the invocation's thread (libcurl's
 * callbacks run there). The body goes out in three parts, in order: the
 * prelude and its 8 NULs (`head`), then either the complete body or what
 * the stream queues.
 */
#include "host/lambda/stream.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host/lambda/outcome.h"

#define WAIT_SLICE_MS 250 /* a read waiting for bytes looks at the clock and the runtime this often */
#define PRELUDE_DELIMITER 8

static const char INTERRUPTED[] = "Koumpa.StreamInterrupted";

struct kp_lambda_stream {
    kp_sink sink; /* first member: the sink pointer is the stream state */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kp_buf pending;            /* guarded by mu */
    int ended;                 /* guarded by mu: the producer called end() */
    int closed;                /* guarded by mu: writes are refused */
    int overflow;              /* guarded by mu: the reader fell KP_LAMBDA_STREAM_PENDING_MAX behind */
    kp_lambda_outcome outcome; /* guarded by mu: what the accepted bytes said */
    /* the invocation's thread only */
    kp_lambda_stream_opts o;
    kp_buf head; /* the prelude and its delimiter */
    size_t head_off, body_off;
    int started;  /* stream->start() was called */
    int asked;    /* a pulled stream's more() was called for the piece not yet handed over */
    int finished; /* read gave the end */
    size_t bytes; /* body bytes handed over */
    int fail_set; /* fail_type / fail_msg are final */
    const char *fail_type;
    char fail_msg[256];
};

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- the producer's side ---- */

static int sink_write(kp_sink *sink, const char *data, size_t len)
{
    kp_lambda_stream *s = (kp_lambda_stream *)sink;
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    if (!s->closed && !s->ended && s->pending.len + len > KP_LAMBDA_STREAM_PENDING_MAX) {
        s->overflow = 1;
        s->closed = 1;
    } else if (!s->closed && !s->ended && kp_buf_append(&s->pending, data, len) == 0) {
        kp_lambda_outcome_feed(&s->outcome, data, len);
        rc = 0;
    }
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void sink_end(kp_sink *sink)
{
    kp_lambda_stream *s = (kp_lambda_stream *)sink;
    pthread_mutex_lock(&s->mu);
    if (!s->closed)
        s->ended = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- the invocation's side ---- */

/* The body is over: refuse further writes and settle what the trailers say (type NULL: judge the events). */
static long finish(kp_lambda_stream *s, const char *type, const char *msg)
{
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    if (!s->fail_set) {
        s->fail_set = 1;
        if (type) {
            s->fail_type = type;
            snprintf(s->fail_msg, sizeof s->fail_msg, "%s", msg);
        } else if (s->o.stream) {
            s->fail_type = kp_lambda_outcome_failure(&s->outcome, s->o.ran_generation, s->fail_msg, sizeof s->fail_msg);
        }
    }
    pthread_mutex_unlock(&s->mu);
    s->finished = 1;
    return 0;
}

static size_t take(const char *src, size_t len, size_t *off, char *buf, size_t cap)
{
    size_t n = len - *off < cap ? len - *off : cap;
    memcpy(buf, src + *off, n);
    *off += n;
    return n;
}

/* Why the host ends the stream before its producer does, or NULL. */
static const char *cut_reason(const kp_lambda_stream *s)
{
    if (kp_lambda_runtime_stopping(s->o.rt))
        return "the function is shutting down";
    if (s->o.deadline_ms > 0 && now_ms() >= s->o.deadline_ms - KP_LAMBDA_STREAM_DEADLINE_MARGIN_MS)
        return "the invocation reached its deadline";
    return NULL;
}

static void wait_slice(kp_lambda_stream *s)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_nsec += (long)WAIT_SLICE_MS * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    if (s->pending.len == 0 && !s->ended && !s->overflow)
        pthread_cond_timedwait(&s->cv, &s->mu, &t);
    pthread_mutex_unlock(&s->mu);
}

/* Up to cap queued bytes into buf (0: nothing queued); *state what else is known. */
static size_t take_pending(kp_lambda_stream *s, char *buf, size_t cap, int *ended, int *overflow)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    if (s->pending.len > 0) {
        n = s->pending.len < cap ? s->pending.len : cap;
        memcpy(buf, s->pending.data, n);
        kp_buf_consume(&s->pending, n);
        if (s->pending.len == 0)
            s->asked = 0; /* the piece went out: a pulled stream may write the next */
    }
    *ended = s->ended;
    *overflow = s->overflow;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static long read_stream(kp_lambda_stream *s, char *buf, size_t cap)
{
    kp_stream *st = s->o.stream;
    if (!s->started) {
        s->started = 1;
        st->start(st, &s->sink);
    }
    for (;;) {
        int ended, overflow;
        size_t n = take_pending(s, buf, cap, &ended, &overflow);
        if (n > 0) {
            s->bytes += n;
            return (long)n;
        }
        if (ended)
            return finish(s, NULL, NULL);
        if (overflow) {
            char msg[128];
            snprintf(msg, sizeof msg, "the reader fell %d bytes behind", KP_LAMBDA_STREAM_PENDING_MAX);
            return finish(s, INTERRUPTED, msg);
        }
        const char *why = cut_reason(s);
        if (why)
            return finish(s, INTERRUPTED, why);
        if (st->more && !s->asked) {
            s->asked = 1;
            st->more(st, &s->sink);
            continue;
        }
        wait_slice(s);
    }
}

static long body_read(void *ud, char *buf, size_t cap)
{
    kp_lambda_stream *s = ud;
    if (s->finished || cap == 0)
        return 0;
    if (s->head_off < s->head.len)
        return (long)take(s->head.data, s->head.len, &s->head_off, buf, cap);
    if (s->o.stream)
        return read_stream(s, buf, cap);
    size_t n = s->o.body ? take(s->o.body, s->o.body_len, &s->body_off, buf, cap) : 0;
    s->bytes += n;
    return n > 0 ? (long)n : finish(s, NULL, NULL);
}

static const char *body_failure(void *ud, const char **message)
{
    kp_lambda_stream *s = ud;
    *message = s->fail_msg;
    return s->fail_type;
}

/* Past the deadline, or a reader dropped while the Runtime API takes nothing: give up the response. */
static int body_abandon(void *ud)
{
    kp_lambda_stream *s = ud;
    if (s->o.deadline_ms > 0 && now_ms() >= s->o.deadline_ms)
        return 1;
    pthread_mutex_lock(&s->mu);
    int dropped = s->overflow && !s->finished;
    pthread_mutex_unlock(&s->mu);
    return dropped;
}

/* ---- life ---- */

kp_lambda_stream *kp_lambda_stream_new(const kp_lambda_stream_opts *opts)
{
    static const char delimiter[PRELUDE_DELIMITER] = {0};
    kp_lambda_stream *s = calloc(1, sizeof *s);
    pthread_condattr_t ca;
    int cv_ok = 0;
    if (s && pthread_condattr_init(&ca) == 0) {
        cv_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&s->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    if (!cv_ok || pthread_mutex_init(&s->mu, NULL) != 0) {
        if (cv_ok)
            pthread_cond_destroy(&s->cv);
        free(s);
        if (opts->stream)
            opts->stream->release(opts->stream);
        return NULL;
    }
    s->o = *opts;
    s->sink.write = sink_write;
    s->sink.end = sink_end;
    if (kp_buf_puts(&s->head, opts->prelude ? opts->prelude : "{}") != 0 ||
        kp_buf_append(&s->head, delimiter, sizeof delimiter) != 0) {
        kp_lambda_stream_free(s);
        return NULL;
    }
    return s;
}

kp_lambda_body kp_lambda_stream_body(kp_lambda_stream *s)
{
    kp_lambda_body b = {.read = body_read, .failure = body_failure, .abandon = body_abandon, .ud = s};
    return b;
}

void kp_lambda_stream_report_of(const kp_lambda_stream *s, kp_lambda_stream_report *rep)
{
    memset(rep, 0, sizeof *rep);
    rep->bytes = s->bytes;
    rep->failure = s->fail_type;
    snprintf(rep->message, sizeof rep->message, "%s", s->fail_type ? s->fail_msg : "");
}

void kp_lambda_stream_free(kp_lambda_stream *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    pthread_mutex_unlock(&s->mu);
    if (s->o.stream)
        s->o.stream->release(s->o.stream); /* the producer lets go of the sink here */
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    kp_buf_free(&s->pending);
    kp_buf_free(&s->head);
    free(s);
}

kp_status kp_lambda_stream_respond(kp_lambda_runtime *rt, const char *request_id, const kp_lambda_stream_opts *opts,
                                   kp_lambda_stream_report *rep, kp_err *err)
{
    kp_lambda_stream *s = kp_lambda_stream_new(opts);
    if (rep)
        memset(rep, 0, sizeof *rep);
    if (!s)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_lambda_body body = kp_lambda_stream_body(s);
    kp_status rc = kp_lambda_respond_stream(rt, request_id, KP_LAMBDA_STREAM_CONTENT_TYPE, &body, err);
    if (rep)
        kp_lambda_stream_report_of(s, rep);
    kp_lambda_stream_free(s);
    return rc;
}
