/*
 * http_stream.c - see http_stream.h.
 *
 * The classic curl multi + event library integration: curl's socket callback
 * keeps one libevent event per socket curl wants watched, its timer callback
 * keeps one libevent timer, and both events call
 * curl_multi_socket_action(), after which finished transfers are read from
 * curl_multi_info_read().
 *
 * Lanes. A client's transfers are spread over several multi handles (lanes),
 * each with its own connection cache, sockets and timer: libcurl 7.88 walks
 * every connection to a host in its multi's cache for each new transfer
 * (url.c ConnectionExists), so 8,000 transfers to one host in one multi cost
 * 32 million steps to start (perf: most of the loop for the seconds of that
 * burst). A new transfer joins the first lane with fewer than
 * KP_HTTP_STREAM_LANE_TRANSFERS transfers, so a quiet client keeps every
 * transfer, and every idle connection to reuse, in lane 0; lanes are made when
 * first needed and kept until the client is freed.
 *
 * Re-entrancy. curl refuses most multi calls (add, remove) from inside its
 * callbacks, and our callbacks may start or cancel transfers. So while curl
 * runs (client->in_curl) a start is queued on to_add and a cancel on
 * to_reap; both queues are drained as soon as curl returns, before control
 * goes back to the event loop. A stream whose own callback is running
 * (stream->in_cb) is only marked cancelled: the frame that called the
 * callback frees it (or queues it) when the callback returns. Invariants:
 * a stream is in at most one queue; a cancelled stream never calls back; a
 * stream is freed exactly once, by whoever holds it last.
 */
#include "llm/http_stream.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/curl_defaults.h"

/* One socket curl asked us to watch. */
typedef struct sock_watch {
    struct event *ev;
    struct sock_watch *prev, *next;
} sock_watch;

/* One multi handle: its connection cache, its sockets' events and its timer. */
typedef struct lane {
    kp_http_stream_client *c;
    CURLM *multi;
    struct event *timer; /* the multi's one timeout */
    size_t transfers;    /* streams assigned to it and not yet freed */
} lane;

struct kp_http_stream_client {
    struct event_base *base;
    lane **lanes; /* nlanes, made as needed */
    size_t nlanes;
    kp_http_stream *streams; /* every stream not yet freed */
    kp_http_stream *to_add;  /* started while curl was running */
    kp_http_stream *to_reap; /* cancelled while curl was running */
    sock_watch *watches;     /* every socket watched */
    size_t active;
    int in_curl;
};

struct kp_http_stream {
    kp_http_stream_client *c;
    lane *lane;                  /* the multi it is (or will be) added to */
    kp_http_stream *prev, *next; /* c->streams */
    kp_http_stream *next_queued; /* c->to_add or c->to_reap */
    CURL *easy;
    struct curl_slist *headers;
    kp_http_stream_callbacks cb;
    struct event *idle;
    struct timeval idle_tv;
    long idle_ms;
    int in_multi;
    int queued;    /* on to_add or to_reap */
    int responded; /* on_response was called */
    int cancelled;
    int retired; /* no longer counted in c->active */
    int in_cb;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void init_curl(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- streams: bookkeeping ---- */

static void retire(kp_http_stream *s)
{
    if (!s->retired) {
        s->retired = 1;
        s->c->active--;
    }
}

static void unlink_stream(kp_http_stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (s->c->streams == s)
        s->c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* Frees s and everything it holds; s may be half-built. Not while curl runs. */
static void stream_free(kp_http_stream *s)
{
    retire(s);
    if (s->in_multi)
        curl_multi_remove_handle(s->lane->multi, s->easy);
    if (s->lane)
        s->lane->transfers--;
    if (s->idle)
        event_free(s->idle);
    if (s->easy)
        curl_easy_cleanup(s->easy);
    curl_slist_free_all(s->headers);
    unlink_stream(s);
    free(s);
}

static void queue_on(kp_http_stream **queue, kp_http_stream *s)
{
    if (s->queued)
        return;
    s->queued = 1;
    s->next_queued = *queue;
    *queue = s;
}

static void touch(kp_http_stream *s)
{
    event_add(s->idle, &s->idle_tv);
}

static void deliver_response(kp_http_stream *s, long status)
{
    s->responded = 1;
    if (!s->cb.on_response)
        return;
    s->in_cb++;
    s->cb.on_response(s->cb.ud, s, status);
    s->in_cb--;
}

/* Ends a stream that is out of curl's hands or about to be: the last callbacks, then free. */
static void end_stream(kp_http_stream *s, kp_http_outcome outcome, const char *message)
{
    long status = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (s->in_multi) {
        curl_multi_remove_handle(s->lane->multi, s->easy);
        s->in_multi = 0;
    }
    event_del(s->idle);
    retire(s);
    if (!s->cancelled && !s->responded && status >= 200)
        deliver_response(s, status);
    if (!s->cancelled) {
        s->in_cb++;
        s->cb.on_done(s->cb.ud, s, outcome, status, outcome == KP_HTTP_COMPLETE ? "" : message);
        s->in_cb--;
    }
    stream_free(s);
}

/* ---- curl callbacks (run inside curl) ---- */

static int is_blank_line(const char *data, size_t len)
{
    return (len == 1 && data[0] == '\n') || (len == 2 && data[0] == '\r' && data[1] == '\n');
}

/* After a user callback ran inside curl: 1 when the stream must stop. */
static int stopped_in_callback(kp_http_stream *s)
{
    if (!s->cancelled)
        return 0;
    queue_on(&s->c->to_reap, s);
    return 1;
}

static size_t on_curl_header(char *data, size_t size, size_t n, void *ud)
{
    kp_http_stream *s = ud;
    size_t len = size * n;
    if (s->cancelled)
        return 0;
    touch(s);
    if (!s->responded && is_blank_line(data, len)) {
        long status = 0;
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200) {
            deliver_response(s, status);
            if (stopped_in_callback(s))
                return 0;
        }
    }
    return len;
}

static size_t on_curl_write(char *data, size_t size, size_t n, void *ud)
{
    kp_http_stream *s = ud;
    size_t len = size * n;
    if (s->cancelled)
        return 0;
    touch(s);
    if (!s->responded) {
        long status = 0;
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
        deliver_response(s, status);
        if (stopped_in_callback(s))
            return 0;
    }
    if (s->cb.on_body && len > 0) {
        s->in_cb++;
        s->cb.on_body(s->cb.ud, s, data, len);
        s->in_cb--;
        if (stopped_in_callback(s))
            return 0;
    }
    return len;
}

static void watch_free(kp_http_stream_client *c, sock_watch *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        c->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (w->ev)
        event_free(w->ev);
    free(w);
}

static void drive(lane *l, curl_socket_t fd, int mask);

/* arg: the lane whose multi watches fd */
static void on_socket_ready(evutil_socket_t fd, short what, void *arg)
{
    int mask = ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    drive(arg, fd, mask);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    lane *l = userp;
    kp_http_stream_client *c = l->c;
    sock_watch *w = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            curl_multi_assign(l->multi, fd, NULL);
            watch_free(c, w);
        }
        return 0;
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (w && w->ev && event_get_events(w->ev) == kind)
        return 0;
    if (!w) {
        if (!(w = calloc(1, sizeof *w)))
            return -1;
        w->next = c->watches;
        if (c->watches)
            c->watches->prev = w;
        c->watches = w;
        curl_multi_assign(l->multi, fd, w);
    }
    if (w->ev)
        event_free(w->ev);
    w->ev = event_new(c->base, fd, kind, on_socket_ready, l);
    if (!w->ev || event_add(w->ev, NULL) != 0) {
        curl_multi_assign(l->multi, fd, NULL);
        watch_free(c, w);
        return -1;
    }
    return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    lane *l = userp;
    (void)multi;
    if (timeout_ms < 0) {
        event_del(l->timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    return event_add(l->timer, &tv) == 0 ? 0 : -1;
}

/* ---- driving curl ---- */

static kp_http_outcome outcome_of(CURLcode rc)
{
    if (rc == CURLE_OK)
        return KP_HTTP_COMPLETE;
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return KP_HTTP_TIMEOUT;
    return KP_HTTP_NETWORK;
}

static void add_queued(kp_http_stream_client *c)
{
    kp_http_stream *s;
    while ((s = c->to_add)) {
        c->to_add = s->next_queued;
        s->queued = 0;
        if (s->cancelled) {
            stream_free(s);
        } else if (curl_multi_add_handle(s->lane->multi, s->easy) == CURLM_OK) {
            s->in_multi = 1;
        } else {
            end_stream(s, KP_HTTP_NETWORK, "cannot start the transfer");
        }
    }
}

static void reap_cancelled(kp_http_stream_client *c)
{
    kp_http_stream *s;
    while ((s = c->to_reap)) {
        c->to_reap = s->next_queued;
        s->queued = 0;
        stream_free(s);
    }
}

static void read_finished(lane *l)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(l->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        void *p = NULL;
        CURLcode rc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &p);
        kp_http_stream *s = p;
        end_stream(s, outcome_of(rc), s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc));
    }
}

static void drive(lane *l, curl_socket_t fd, int mask)
{
    kp_http_stream_client *c = l->c;
    int running = 0;
    c->in_curl++;
    curl_multi_socket_action(l->multi, fd, mask, &running);
    c->in_curl--;
    reap_cancelled(c);
    add_queued(c);
    read_finished(l);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drive(arg, CURL_SOCKET_TIMEOUT, 0);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    kp_http_stream *s = arg;
    char msg[96];
    (void)fd;
    (void)what;
    snprintf(msg, sizeof msg, "no data received for %ld ms", s->idle_ms);
    end_stream(s, KP_HTTP_TIMEOUT, msg);
}

/* ---- lanes ---- */

static void lane_free(lane *l)
{
    if (l->multi)
        curl_multi_cleanup(l->multi);
    if (l->timer)
        event_free(l->timer);
    free(l);
}

static lane *lane_new(kp_http_stream_client *c)
{
    lane *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->c = c;
    l->multi = curl_multi_init();
    l->timer = evtimer_new(c->base, on_timer, l);
    if (!l->multi || !l->timer || curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) ||
        curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l) ||
        curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) ||
        curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l) ||
        curl_multi_setopt(l->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX) ||
        curl_multi_setopt(l->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, KP_HTTP_STREAM_MAX_STREAMS)) {
        lane_free(l);
        return NULL;
    }
    return l;
}

/* The lane a new transfer joins: the first with room, else a new one; NULL when out of memory. */
static lane *lane_with_room(kp_http_stream_client *c)
{
    for (size_t i = 0; i < c->nlanes; i++)
        if (c->lanes[i]->transfers < KP_HTTP_STREAM_LANE_TRANSFERS)
            return c->lanes[i];
    lane **grown = realloc(c->lanes, (c->nlanes + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    c->lanes = grown;
    lane *l = lane_new(c);
    if (l)
        c->lanes[c->nlanes++] = l;
    return l;
}

/* ---- public ---- */

kp_status kp_http_stream_client_new(struct event_base *base, kp_http_stream_client **out, kp_err *err)
{
    pthread_once(&curl_once, init_curl);
    if (curl_init_result != CURLE_OK)
        return kp_err_set(err, KP_EINTERNAL, "cannot initialise libcurl");
    kp_http_stream_client *c = calloc(1, sizeof *c);
    if (!c)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    c->base = base;
    if (!lane_with_room(c)) { /* lane 0, made now so that a client that cannot work fails here */
        kp_http_stream_client_free(c);
        return kp_err_set(err, KP_EINTERNAL, "cannot create an HTTP client");
    }
    *out = c;
    return KP_OK;
}

void kp_http_stream_client_free(kp_http_stream_client *c)
{
    kp_http_stream *s;
    if (!c)
        return;
    c->to_add = c->to_reap = NULL;
    /* Each list is consumed from its head, whose links are set here so that
     * the loops visibly progress (clang-tidy, not knowing that every stream's
     * c is this client and that a head has no prev, saw a freed head visited
     * again). */
    while ((s = c->streams)) {
        c->streams = s->next;
        if (c->streams)
            c->streams->prev = NULL;
        s->prev = s->next = NULL;
        s->cancelled = 1;
        stream_free(s);
    }
    for (size_t i = 0; i < c->nlanes; i++) {
        curl_multi_cleanup(c->lanes[i]->multi);
        c->lanes[i]->multi = NULL;
    }
    sock_watch *w;
    while ((w = c->watches)) {
        w->prev = NULL; /* the head's: watch_free then moves c->watches on */
        watch_free(c, w);
    }
    for (size_t i = 0; i < c->nlanes; i++)
        lane_free(c->lanes[i]);
    free(c->lanes);
    free(c);
}

int kp_http_version_parse(const char *name, kp_http_version *out)
{
    static const struct {
        const char *name;
        kp_http_version v;
    } names[] = {{"auto", KP_HTTP_VERSION_AUTO}, {"1.1", KP_HTTP_VERSION_1_1}, {"2", KP_HTTP_VERSION_2}};
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].v;
            return 0;
        }
    }
    return -1;
}

int kp_http_stream_h2c_reusable(void)
{
    return curl_version_info(CURLVERSION_NOW)->version_num >= 0x080000;
}

/* Whether a call with version v to url may be multiplexed: HTTP/2 by prior
 * knowledge, or auto over TLS (ALPN tells at the handshake). */
static int may_multiplex(kp_http_version v, const char *url)
{
    return v == KP_HTTP_VERSION_2 || (v == KP_HTTP_VERSION_AUTO && strncasecmp(url, "https://", 8) == 0);
}

/* The HTTP version, and where HTTP/2 may be spoken the wait for a connection
 * that can take one more stream rather than a new connection of one's own
 * (PIPEWAIT). Never on plain http with auto: there the protocol is known only
 * from a connection's first response, so a call would wait for another call's
 * answer, which may take minutes (a model thinking before its first byte). */
static int set_version(CURL *e, kp_http_version v, const char *url)
{
    long curl_version = v == KP_HTTP_VERSION_1_1 ? CURL_HTTP_VERSION_1_1
                        : v == KP_HTTP_VERSION_2 ? CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                                                 : CURL_HTTP_VERSION_2TLS;
    int bad = curl_easy_setopt(e, CURLOPT_HTTP_VERSION, curl_version) != CURLE_OK;
    if (may_multiplex(v, url))
        bad |= curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L) != CURLE_OK;
    return bad;
}

static int set_options(kp_http_stream *s, const kp_http_request *req)
{
    long connect_ms = req->connect_timeout_ms > 0 ? req->connect_timeout_ms : KP_HTTP_STREAM_CONNECT_TIMEOUT_MS;
    long total_ms = req->total_timeout_ms > 0 ? req->total_timeout_ms : KP_HTTP_STREAM_TOTAL_TIMEOUT_MS;
    CURL *e = s->easy;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "") != CURLE_OK;
    bad |= set_version(e, req->version, req->url);
    bad |= curl_easy_setopt(e, CURLOPT_BUFFERSIZE, KP_HTTP_STREAM_RECV_BUFFER) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, KP_HTTP_STREAM_SEND_BUFFER) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "koumpa") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, total_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_curl_header) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)s) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_curl_write) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)s) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)s) != CURLE_OK;
    return bad ? -1 : 0;
}

static kp_status copy_headers(kp_http_stream *s, const char *const *headers, kp_err *err)
{
    for (size_t i = 0; headers && headers[i]; i++) {
        struct curl_slist *l = curl_slist_append(s->headers, headers[i]);
        if (!l)
            return kp_err_set(err, KP_ENOMEM, "out of memory");
        s->headers = l;
    }
    /* No "Expect: 100-continue" round trip before a large body. */
    struct curl_slist *l = curl_slist_append(s->headers, "Expect:");
    if (!l)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    s->headers = l;
    return KP_OK;
}

static void arm_idle_timer(kp_http_stream *s, long idle_ms)
{
    struct timeval tv = {idle_ms / 1000, (idle_ms % 1000) * 1000};
    /* Thousands of timers of one duration: libevent keeps them in an O(1) queue. */
    const struct timeval *common = event_base_init_common_timeout(s->c->base, &tv);
    s->idle_ms = idle_ms;
    s->idle_tv = common ? *common : tv;
    touch(s);
}

kp_status kp_http_stream_start(kp_http_stream_client *c, const kp_http_request *req, const kp_http_stream_callbacks *cb,
                               kp_http_stream **out, kp_err *err)
{
    kp_status st = KP_OK;
    if (!req->url || !*req->url || !cb->on_done)
        return kp_err_set(err, KP_EINVAL, "an HTTP request needs a URL and an on_done callback");
    kp_http_stream *s = calloc(1, sizeof *s);
    if (!s)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    s->c = c;
    s->cb = *cb;
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    c->active++;
    if (!(s->easy = kp_curl_defaults(curl_easy_init())) || !(s->idle = evtimer_new(c->base, on_idle, s))) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    if ((st = copy_headers(s, req->headers, err)) != KP_OK)
        goto cleanup;
    if (set_options(s, req) != 0) {
        st = kp_err_set(err, KP_EINTERNAL, "cannot set up the HTTP request");
        goto cleanup;
    }
    if (!(s->lane = lane_with_room(c))) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    s->lane->transfers++;
    if (c->in_curl) {
        queue_on(&c->to_add, s);
    } else if (curl_multi_add_handle(s->lane->multi, s->easy) == CURLM_OK) {
        s->in_multi = 1;
    } else {
        st = kp_err_set(err, KP_EINTERNAL, "cannot start the HTTP request");
        goto cleanup;
    }
    arm_idle_timer(s, req->idle_timeout_ms > 0 ? req->idle_timeout_ms : KP_HTTP_STREAM_IDLE_TIMEOUT_MS);
    *out = s;
    return KP_OK;
cleanup:
    s->cancelled = 1;
    stream_free(s);
    return st;
}

const char *kp_http_stream_header(kp_http_stream *s, const char *name)
{
    struct curl_header *h = NULL;
    if (curl_easy_header(s->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h)
        return NULL;
    return h->value;
}

void kp_http_stream_cancel(kp_http_stream *s)
{
    if (!s || s->cancelled)
        return;
    s->cancelled = 1;
    retire(s);
    event_del(s->idle);
    if (s->in_cb || s->queued)
        return; /* whoever holds it frees it */
    if (s->c->in_curl) {
        queue_on(&s->c->to_reap, s);
        return;
    }
    stream_free(s);
}

size_t kp_http_stream_client_active(const kp_http_stream_client *c)
{
    return c->active;
}
