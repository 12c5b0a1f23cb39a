/*
 * conn.c - see conn.h.
 *
 * How bytes flow: evhttp reads from a plain socket bufferevent that this
 * layer creates. A callback on that bufferevent's input buffer runs inside
 * every socket read, before evhttp's read callback: it takes the bytes just
 * read off the input (`held`), and gives back to the input only what may be
 * parsed: a checked head, then its body up to Content-Length (or everything,
 * for a chunked body on a connection that closes after it). So evhttp's input
 * buffer only ever holds checked bytes.
 *
 * The evhttp connection itself is only known once evhttp has set it up, right
 * after our bufferevent callback returns: the set's `adopt` event (activated
 * from that callback, so it runs in the same loop iteration, before any read
 * on the new socket) reads it from the bufferevent's callback argument, takes
 * the connection's close callback, and indexes the conn by connection
 * (tsearch) for kp_conn_of().
 */
#include "host/evhttp/conn.h"

#include <errno.h>
#include <pthread.h>
#include <search.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "core/log.h"
#include "host/evhttp/framing.h"

#define COPY_CHUNK 16384
#define ACCEPT_PAUSE_MS 100 /* a listener rests this long after accept() fails */
#define ACCEPT_LOG_EVERY_MS 1000
#define FD_RESERVE_MIN 128 /* descriptors kept for files, databases and upstream connections */
#define FD_RAISE_MAX (1 << 20)
/* the lingering close after a rejection (see conn.h) */
#define LINGER_IDLE_S 2                    /* no byte for this long: close */
#define LINGER_TOTAL_S 5                   /* close this long after the response, whatever arrives */
#define LINGER_MAX_BYTES (8 * 1024 * 1024) /* close once this much has been discarded */

static const char placeholder[] = "GET /.rejected HTTP/1.1\r\nConnection: close\r\n\r\n";

typedef enum deadline_kind {
    DL_NONE,
    DL_HEAD,   /* 408 when it passes */
    DL_BODY,   /* close when it passes */
    DL_CLOSE,  /* close now (armed with no delay, to close outside evhttp's callbacks) */
    DL_LINGER, /* the end of a lingering close */
} deadline_kind;

typedef enum conn_state {
    ST_HEAD,     /* holding bytes until a complete head has been checked */
    ST_BODY,     /* passing body_left more bytes */
    ST_CHUNKED,  /* passing everything: the connection closes after this request */
    ST_REJECTED, /* a placeholder was sent; dropping everything */
} conn_state;

struct kp_conn {
    kp_conn_set *set;
    struct bufferevent *bev;
    struct evhttp_connection *evcon; /* NULL until adopted */
    struct evbuffer_cb_entry *input_cb;
    struct evbuffer *held; /* unchecked bytes */
    struct event *deadline;
    deadline_kind deadline_for;
    size_t chunked_bytes; /* raw bytes of the chunked body passed on */
    conn_state state;
    int64_t body_left;
    size_t scanned;    /* bytes of held already searched for the end of the head */
    int moving;        /* our own moves on the input buffer: not new bytes */
    unsigned released; /* heads handed to evhttp (the placeholder included) */
    unsigned begun;    /* requests the host has seen */
    unsigned reject_seq;
    int in_request; /* the host is answering a request: evhttp must not be made to read */
    int must_close;
    kp_conn_rejection rejection;
    void (*close_cb)(struct evhttp_connection *, void *);
    void *close_arg;
    kp_conn *adopt_next;
    /* a lingering close: evhttp is done with the connection, c reads and
     * discards from its own descriptor until EOF or a bound */
    evutil_socket_t linger_fd;
    struct event *linger_ev;
    size_t linger_bytes;
    kp_conn *linger_next; /* on its set's lingering list */
    /* the registry (guarded by registry.mu) */
    kp_conn *older, *newer;
    kp_conn *evict_next; /* on its set's evict queue */
    int adopted;         /* its evcon is known: it may be evicted */
    int evicting;        /* chosen as a victim (queued) */
    int refused;         /* over the cap with no victim: closed once adopted */
    int lingering;       /* in a lingering close: the first eviction candidate */
    /* written by the owning worker, read by any under registry.mu */
    atomic_int completed; /* a response was written */
    atomic_int busy;      /* a request is being answered */
};

struct kp_conn_set {
    struct event_base *base;
    kp_conn_limits limits;
    struct event *adopt;
    kp_conn *adopt_queue;
    void *by_evcon;   /* tsearch root: kp_conn * ordered by evcon */
    kp_conn *last_of; /* kp_conn_of's last answer: a request asks about its connection several times */
    struct evbuffer *tmp;
    struct event *reaper;       /* closes the queued victims, on this worker */
    kp_conn *evict_queue;       /* guarded by registry.mu */
    struct evconnlistener *lev; /* the worker's listener, while it listens */
    struct event *resume;       /* re-enables lev after an accept error */
    kp_conn_set *next_set;      /* guarded by registry.mu */
    kp_conn *lingering;         /* conns in a lingering close */
};

/*
 * Every connection of the process (both hosts), oldest first, with the cap
 * they share. A new connection over the cap evicts the oldest one that never
 * completed a request (else the oldest idle one); the victim's own worker
 * closes it (its reaper event).
 */
static struct {
    pthread_mutex_t mu;
    kp_conn *oldest, *newest;
    long count;
    long cap;
    kp_conn_set *sets;
} registry = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_llong accept_log_ms; /* when an accept error was last logged */
static atomic_long accept_errors;  /* since then */

static void linger_end(kp_conn *c);

/* ---- deadlines ---- */

static void arm(kp_conn *c, deadline_kind kind)
{
    int s = kind == DL_HEAD     ? c->set->limits.header_timeout_s
            : kind == DL_BODY   ? c->set->limits.body_timeout_s
            : kind == DL_LINGER ? LINGER_TOTAL_S
                                : 0;
    struct timeval tv = {s, 0};
    c->deadline_for = kind;
    evtimer_add(c->deadline, &tv);
}

static void disarm(kp_conn *c)
{
    c->deadline_for = DL_NONE;
    evtimer_del(c->deadline);
}

/* ---- passing checked bytes on ---- */

static void reject(kp_conn *c, struct evbuffer *input, int status, const char *code, const char *message)
{
    c->state = ST_REJECTED;
    c->must_close = 1;
    disarm(c);
    c->rejection.status = status;
    c->rejection.code = code;
    snprintf(c->rejection.message, sizeof c->rejection.message, "%s", message);
    c->reject_seq = ++c->released;
    evbuffer_drain(c->held, evbuffer_get_length(c->held));
    /* outside a socket read the bufferevent keeps its input's end frozen */
    evbuffer_unfreeze(input, 0);
    evbuffer_add(input, placeholder, sizeof placeholder - 1);
    evbuffer_freeze(input, 0);
    /* evhttp reads it now if it is waiting for a request, else when the
     * response in progress is done (its read callback must not run then) */
    if (!c->in_request)
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* Body bytes handed on: count them against the declared length. */
static void body_passed(kp_conn *c, size_t n)
{
    if (c->state != ST_BODY)
        return;
    c->body_left -= (int64_t)n;
    if (c->body_left <= 0) {
        c->state = ST_HEAD;
        disarm(c);
    }
}

/* Raw chunked bytes passed on: past max_chunked the body cannot fit the
 * limit (decoded bytes never outnumber raw ones), so the connection closes
 * before evhttp could answer its own 413 page. */
static void chunked_passed(kp_conn *c, size_t n)
{
    c->chunked_bytes += n;
    if (c->chunked_bytes > c->set->limits.max_chunked && c->deadline_for != DL_CLOSE)
        arm(c, DL_CLOSE);
}

static void head_accepted(kp_conn *c, const kp_framing *f)
{
    c->released++;
    if (f->chunked) {
        c->state = ST_CHUNKED;
        c->must_close = 1;
        arm(c, DL_BODY);
    } else if (f->content_length > 0) {
        c->state = ST_BODY;
        c->body_left = f->content_length;
        arm(c, DL_BODY);
    } else {
        disarm(c);
    }
}

/* In ST_HEAD: checks the head at the start of held once it is complete.
 * Returns 1 when it made progress (call again), 0 when it needs more bytes. */
static int take_head(kp_conn *c, struct evbuffer *input)
{
    size_t len = evbuffer_get_length(c->held);
    size_t max_head = c->set->limits.max_head;
    if (len == 0)
        return 0;
    if (c->deadline_for == DL_NONE)
        arm(c, DL_HEAD); /* the first byte of a head */
    size_t look = len < max_head + 3 ? len : max_head + 3;
    const char *p = (const char *)evbuffer_pullup(c->held, (ev_ssize_t)look);
    if (!p)
        return 0;
    size_t empty = kp_framing_leading_empty(p, look);
    if (empty > 0) {
        evbuffer_drain(c->held, empty);
        c->scanned = 0;
        return 1;
    }
    size_t end = kp_framing_head_end(p, look, c->scanned);
    if (end == 0) {
        c->scanned = look;
        if (len > max_head)
            reject(c, input, 431, "header_too_large", "the request line and headers are too large");
        return 0;
    }
    c->scanned = 0;
    kp_framing f;
    kp_framing_check(p, end, c->set->limits.max_body, &f);
    if (f.status != 0) {
        reject(c, input, f.status, f.code, f.message);
        return 0;
    }
    evbuffer_remove_buffer(c->held, input, end);
    head_accepted(c, &f);
    return 1;
}

/* Hands on what may be parsed from held. */
static void process(kp_conn *c, struct evbuffer *input)
{
    for (;;) {
        size_t len = evbuffer_get_length(c->held);
        switch (c->state) {
        case ST_REJECTED: evbuffer_drain(c->held, len); return;
        case ST_CHUNKED:
            chunked_passed(c, len);
            evbuffer_add_buffer(input, c->held);
            return;
        case ST_BODY: {
            size_t n = (int64_t)len < c->body_left ? len : (size_t)c->body_left;
            if (n == 0)
                return;
            evbuffer_remove_buffer(c->held, input, n);
            body_passed(c, n);
            break;
        }
        case ST_HEAD:
            if (!take_head(c, input))
                return;
            break;
        }
    }
}

/* Moves the last `fresh` bytes of input (just read) to the end of held;
 * body bytes that may pass at once stay where they are. */
static void take_fresh(kp_conn *c, struct evbuffer *input, size_t fresh)
{
    size_t len = evbuffer_get_length(input);
    if (evbuffer_get_length(c->held) == 0 && (c->state == ST_BODY || c->state == ST_CHUNKED)) {
        size_t pass = c->state == ST_CHUNKED || (int64_t)fresh < c->body_left ? fresh : (size_t)c->body_left;
        if (c->state == ST_CHUNKED)
            chunked_passed(c, pass);
        else
            body_passed(c, pass);
        fresh -= pass;
    }
    if (fresh == 0)
        return;
    struct evbuffer *tmp = c->set->tmp;
    evbuffer_remove_buffer(input, tmp, len - fresh);
    char chunk[COPY_CHUNK];
    int n;
    /* copied, not moved: held stays in few chains, so pulling the head up
     * as it grows costs little even when it arrives byte by byte */
    while ((n = evbuffer_remove(input, chunk, sizeof chunk)) > 0)
        evbuffer_add(c->held, chunk, (size_t)n);
    evbuffer_add_buffer(input, tmp);
}

static void on_input(struct evbuffer *input, const struct evbuffer_cb_info *info, void *arg)
{
    kp_conn *c = arg;
    if (c->moving || info->n_added == 0)
        return;
    size_t len = evbuffer_get_length(input);
    c->moving = 1;
    take_fresh(c, input, info->n_added < len ? info->n_added : len);
    process(c, input);
    c->moving = 0;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    kp_conn *c = arg;
    (void)fd;
    (void)what;
    if (c->lingering) {
        linger_end(c);
        return;
    }
    if (!c->evcon)
        return;
    if (c->deadline_for == DL_HEAD) {
        c->moving = 1;
        reject(c, bufferevent_get_input(c->bev), 408, "request_timeout", "the request head did not arrive in time");
        c->moving = 0;
        return;
    }
    kp_log(KP_LOG_DEBUG, "closing a connection whose request body %s",
           c->deadline_for == DL_BODY ? "did not arrive in time" : "is too large");
    evhttp_connection_free(c->evcon); /* frees c through the close callback */
}

/* ---- the connection cap ---- */

/* Victims by preference: lingering (pass 0), never completed a request
 * (pass 1), idle (pass 2). */
static int evictable(kp_conn *c, int pass)
{
    if (!c->adopted || c->evicting || c->refused || atomic_load(&c->busy))
        return 0;
    return pass == 0 ? c->lingering : pass == 1 ? !atomic_load(&c->completed) : 1;
}

/* Under registry.mu. */
static kp_conn *pick_victim(void)
{
    for (int pass = 0; pass <= 2; pass++)
        for (kp_conn *v = registry.oldest; v; v = v->newer)
            if (evictable(v, pass))
                return v;
    return NULL;
}

/* Under registry.mu: links c as the newest; over the cap, queues a victim on
 * its worker (or refuses c when every connection is busy). */
static void registry_add(kp_conn *c)
{
    c->older = registry.newest;
    if (registry.newest)
        registry.newest->newer = c;
    else
        registry.oldest = c;
    registry.newest = c;
    registry.count++;
    if (registry.cap <= 0 || registry.count <= registry.cap)
        return;
    kp_conn *v = pick_victim();
    if (!v) {
        c->refused = 1;
        return;
    }
    v->evicting = 1;
    v->evict_next = v->set->evict_queue;
    v->set->evict_queue = v;
    event_active(v->set->reaper, 0, 0); /* under mu: the set outlives its queued conns */
}

static void registry_remove(kp_conn *c)
{
    pthread_mutex_lock(&registry.mu);
    if (c->older)
        c->older->newer = c->newer;
    else if (registry.oldest == c)
        registry.oldest = c->newer;
    if (c->newer)
        c->newer->older = c->older;
    else if (registry.newest == c)
        registry.newest = c->older;
    registry.count--;
    for (kp_conn **q = &c->set->evict_queue; *q; q = &(*q)->evict_next)
        if (*q == c) {
            *q = c->evict_next;
            break;
        }
    pthread_mutex_unlock(&registry.mu);
}

/* On the victims' worker: close them (each close frees its conn). */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    kp_conn_set *set = arg;
    (void)fd;
    (void)what;
    for (;;) {
        pthread_mutex_lock(&registry.mu);
        kp_conn *c = set->evict_queue;
        if (c) {
            set->evict_queue = c->evict_next;
            c->evicting = atomic_load(&c->busy) == 0; /* it started a request meanwhile: spare it */
        }
        pthread_mutex_unlock(&registry.mu);
        if (!c)
            return;
        if (c->evicting && c->lingering)
            linger_end(c);
        else if (c->evicting)
            evhttp_connection_free(c->evcon);
    }
}

/* The cap when none is configured: the descriptor limit (raised to the hard
 * limit first) minus a reserve for everything that is not a client. */
static long derived_cap(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < FD_RAISE_MAX) {
        struct rlimit raised = rl;
        raised.rlim_cur = rl.rlim_max < FD_RAISE_MAX ? rl.rlim_max : FD_RAISE_MAX;
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl = raised;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > FD_RAISE_MAX)
        rl.rlim_cur = FD_RAISE_MAX;
    long limit = (long)rl.rlim_cur;
    long reserve = limit / 4 > FD_RESERVE_MIN ? limit / 4 : FD_RESERVE_MIN;
    return limit - reserve > 16 ? limit - reserve : 16;
}

long kp_conn_set_cap(long max_connections)
{
    long cap = max_connections > 0 ? max_connections : derived_cap();
    pthread_mutex_lock(&registry.mu);
    registry.cap = cap;
    pthread_mutex_unlock(&registry.mu);
    return cap;
}

/* ---- accept errors ---- */

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    kp_conn_set *set = arg;
    (void)fd;
    (void)what;
    if (set->lev)
        evconnlistener_enable(set->lev);
}

/* accept() failed (EMFILE, ENFILE, ENOBUFS...): rest the listener instead of
 * spinning on a socket that stays readable, and log about once a second. */
static void on_accept_error(struct evconnlistener *lev, void *ptr)
{
    int err = errno;
    kp_conn_set *set = NULL;
    (void)ptr; /* evhttp's; the set is found by listener */
    pthread_mutex_lock(&registry.mu);
    for (kp_conn_set *s = registry.sets; s && !set; s = s->next_set)
        if (s->lev == lev)
            set = s;
    pthread_mutex_unlock(&registry.mu);
    if (set) {
        struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
        evconnlistener_disable(lev);
        evtimer_add(set->resume, &tv);
    }
    long n = atomic_fetch_add(&accept_errors, 1) + 1;
    long long now = mono_ms(), last = atomic_load(&accept_log_ms);
    if (now - last >= ACCEPT_LOG_EVERY_MS && atomic_compare_exchange_strong(&accept_log_ms, &last, now)) {
        atomic_store(&accept_errors, 0);
        kp_log(KP_LOG_WARN, "accept failed %ld time(s) in the last second: %s (listener paused %d ms)", n,
               strerror(err), ACCEPT_PAUSE_MS);
    }
}

void kp_conn_set_listener(kp_conn_set *set, struct evconnlistener *lev)
{
    if (lev)
        evconnlistener_set_error_cb(lev, on_accept_error);
    else
        evtimer_del(set->resume);
    pthread_mutex_lock(&registry.mu);
    set->lev = lev;
    pthread_mutex_unlock(&registry.mu);
}

/* ---- lifetime ---- */

static int by_evcon(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const kp_conn *)a)->evcon, y = (uintptr_t)((const kp_conn *)b)->evcon;
    return x < y ? -1 : x > y;
}

static void conn_free(kp_conn *c)
{
    if (c->input_cb)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
    if (c->linger_ev)
        event_free(c->linger_ev);
    if (c->lingering)
        close(c->linger_fd);
    if (c->held)
        evbuffer_free(c->held);
    if (c->deadline)
        event_free(c->deadline);
    free(c);
}

/* ---- the lingering close ---- */

/* Ends a lingering close: closes its descriptor and frees c. */
static void linger_end(kp_conn *c)
{
    for (kp_conn **p = &c->set->lingering; *p; p = &(*p)->linger_next)
        if (*p == c) {
            *p = c->linger_next;
            break;
        }
    registry_remove(c);
    conn_free(c);
}

/* Reads and discards what the client still sends; ends at EOF, an error,
 * LINGER_IDLE_S without a byte, or LINGER_MAX_BYTES. */
static void on_linger_read(evutil_socket_t fd, short what, void *arg)
{
    kp_conn *c = arg;
    char sink[COPY_CHUNK];
    if (what & EV_TIMEOUT) {
        linger_end(c);
        return;
    }
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(fd, sink, sizeof sink, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0 || (c->linger_bytes += (size_t)n) >= LINGER_MAX_BYTES) {
            linger_end(c);
            return;
        }
    }
}

/*
 * The connection is closing after a rejection whose response was written
 * whole, while the client may still be sending its body: closing the socket
 * with unread bytes would reset it and the client could lose the response.
 * Keeps the socket open on a descriptor of its own (evhttp closes its one),
 * shuts its write side (the client sees EOF after the response), and drains
 * it within the bounds above. Returns 1 when c now lingers (it stays in the
 * registry, counted against the cap), 0 when it must simply be freed.
 */
static int linger_start(kp_conn *c)
{
    if (c->state != ST_REJECTED || c->begun < c->reject_seq || c->evicting || !c->bev ||
        evbuffer_get_length(bufferevent_get_output(c->bev)) != 0)
        return 0;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (fd < 0)
        return 0;
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0)
        return 0;
    c->linger_ev = event_new(c->set->base, dfd, EV_READ | EV_PERSIST, on_linger_read, c);
    struct timeval idle = {LINGER_IDLE_S, 0};
    if (!c->linger_ev || shutdown(dfd, SHUT_WR) != 0 || event_add(c->linger_ev, &idle) != 0) {
        close(dfd);
        return 0;
    }
    evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
    c->input_cb = NULL;
    c->bev = NULL;
    c->evcon = NULL;
    c->linger_fd = dfd;
    arm(c, DL_LINGER);
    c->linger_next = c->set->lingering;
    c->set->lingering = c;
    atomic_store(&c->busy, 0);
    pthread_mutex_lock(&registry.mu);
    c->lingering = 1;
    pthread_mutex_unlock(&registry.mu);
    return 1;
}

static void on_conn_closed(struct evhttp_connection *evcon, void *arg)
{
    kp_conn *c = arg;
    if (c->close_cb)
        c->close_cb(evcon, c->close_arg);
    tdelete(c, &c->set->by_evcon, by_evcon);
    if (c->set->last_of == c)
        c->set->last_of = NULL;
    if (linger_start(c))
        return;
    registry_remove(c);
    conn_free(c);
}

static void adopt(kp_conn *c)
{
    bufferevent_data_cb readcb, writecb;
    bufferevent_event_cb eventcb;
    void *evcon = NULL;
    bufferevent_getcb(c->bev, &readcb, &writecb, &eventcb, &evcon);
    struct bufferevent *bev = c->bev;
    if (!eventcb || !evcon) { /* evhttp gave up on it already */
        registry_remove(c);
        conn_free(c);
        bufferevent_decref(bev);
        return;
    }
    c->evcon = evcon;
    if (!tsearch(c, &c->set->by_evcon, by_evcon)) {
        evhttp_connection_free(evcon); /* out of memory: closes (conn not hooked yet) */
        registry_remove(c);
        conn_free(c);
        bufferevent_decref(bev);
        return;
    }
    evhttp_connection_set_closecb(evcon, on_conn_closed, c);
    bufferevent_decref(bev);
    pthread_mutex_lock(&registry.mu);
    c->adopted = 1;
    int refused = c->refused;
    pthread_mutex_unlock(&registry.mu);
    if (refused)
        evhttp_connection_free(evcon); /* over the cap and nothing to evict */
}

static void on_adopt(evutil_socket_t fd, short what, void *arg)
{
    kp_conn_set *set = arg;
    (void)fd;
    (void)what;
    while (set->adopt_queue) {
        kp_conn *c = set->adopt_queue;
        set->adopt_queue = c->adopt_next;
        adopt(c);
    }
}

/* evhttp's bufferevent factory: called for each accepted connection, before
 * evhttp sets the socket and its callbacks. */
static struct bufferevent *new_bev(struct event_base *base, void *arg)
{
    kp_conn_set *set = arg;
    kp_conn *c = calloc(1, sizeof *c);
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (c && bev) {
        c->held = evbuffer_new();
        c->deadline = evtimer_new(base, on_deadline, c);
    }
    if (c && c->held && c->deadline)
        c->input_cb = evbuffer_add_cb(bufferevent_get_input(bev), on_input, c);
    if (!c || !bev || !c->input_cb) {
        if (c && c->held)
            evbuffer_free(c->held);
        if (c && c->deadline)
            event_free(c->deadline);
        free(c);
        kp_log(KP_LOG_WARN, "out of memory accepting a connection");
        return bev; /* evhttp serves it unguarded, or fails it when NULL */
    }
    c->set = set;
    c->bev = bev;
    arm(c, DL_HEAD); /* the first request's head, from the accept */
    pthread_mutex_lock(&registry.mu);
    registry_add(c);
    pthread_mutex_unlock(&registry.mu);
    bufferevent_incref(bev); /* until adopted: bev stays readable even if evhttp drops it */
    c->adopt_next = set->adopt_queue;
    set->adopt_queue = c;
    event_active(set->adopt, 0, 0);
    return bev;
}

kp_conn_set *kp_conn_set_new(struct event_base *base, struct evhttp *http, const kp_conn_limits *limits)
{
    kp_conn_set *set = calloc(1, sizeof *set);
    if (!set)
        return NULL;
    set->base = base;
    set->limits = *limits;
    set->adopt = event_new(base, -1, 0, on_adopt, set);
    set->reaper = event_new(base, -1, 0, on_reap, set);
    set->resume = evtimer_new(base, on_resume, set);
    set->tmp = evbuffer_new();
    if (!set->adopt || !set->reaper || !set->resume || !set->tmp) {
        kp_conn_set_free(set);
        return NULL;
    }
    pthread_mutex_lock(&registry.mu);
    set->next_set = registry.sets;
    registry.sets = set;
    pthread_mutex_unlock(&registry.mu);
    evhttp_set_bevcb(http, new_bev, set);
    return set;
}

static void free_node(void *node)
{
    (void)node; /* conns are freed by their connections */
}

void kp_conn_set_free(kp_conn_set *set)
{
    if (!set)
        return;
    on_adopt(-1, 0, set); /* none expected: adoption runs in the accepting iteration */
    while (set->lingering) {
        kp_conn *c = set->lingering;
        set->lingering = c->linger_next; /* unlinked here, visibly: linger_end then frees it */
        c->linger_next = NULL;
        linger_end(c);
    }
    tdestroy(set->by_evcon, free_node);
    set->last_of = NULL;
    pthread_mutex_lock(&registry.mu);
    for (kp_conn_set **p = &registry.sets; *p; p = &(*p)->next_set)
        if (*p == set) {
            *p = set->next_set;
            break;
        }
    pthread_mutex_unlock(&registry.mu);
    if (set->adopt)
        event_free(set->adopt);
    if (set->reaper)
        event_free(set->reaper);
    if (set->resume)
        event_free(set->resume);
    if (set->tmp)
        evbuffer_free(set->tmp);
    free(set);
}

/* ---- the host's side ---- */

kp_conn *kp_conn_of(kp_conn_set *set, struct evhttp_connection *evcon)
{
    if (set->last_of && set->last_of->evcon == evcon)
        return set->last_of;
    kp_conn key;
    key.evcon = evcon;
    kp_conn **found = tfind(&key, &set->by_evcon, by_evcon);
    set->last_of = found ? *found : NULL;
    return set->last_of;
}

int kp_conn_request_begin(kp_conn *c, kp_conn_rejection *r)
{
    c->begun++;
    c->in_request = 1;
    atomic_store(&c->busy, 1);
    if (c->state == ST_CHUNKED && c->deadline_for == DL_BODY)
        disarm(c); /* evhttp has read the whole chunked body */
    if (c->state == ST_REJECTED && c->begun == c->reject_seq) {
        *r = c->rejection;
        return 1;
    }
    return 0;
}

void kp_conn_request_end(kp_conn *c)
{
    c->in_request = 0;
    atomic_store(&c->busy, 0);
    atomic_store(&c->completed, 1);
}

int kp_conn_must_close(const kp_conn *c)
{
    return c->must_close;
}

void kp_conn_on_close(kp_conn *c, void (*cb)(struct evhttp_connection *, void *), void *arg)
{
    c->close_cb = cb;
    c->close_arg = arg;
}
