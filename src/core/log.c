/*
 * log.c - see log.h.
 *
 * Buffers: one per thread that logs while buffering is on, taken from a list
 * that only grows (a thread's buffer is handed to a later thread when it
 * exits) and whose nodes are never freed, so the crash handler can walk it
 * without a lock. A buffer's len counts complete lines only and is stored
 * after the line's bytes, so the handler writes whole lines; a flush under way
 * on another thread at the moment of a crash may write some lines twice,
 * never lose them.
 */
#include "core/log.h"

#include "core/buf.h"
#include "core/jsonw.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6))
#define LOG_BUF_CAP (64 * 1024)

typedef struct log_tbuf {
    pthread_mutex_t mu;
    _Atomic size_t len;    /* bytes of complete lines in data */
    int64_t oldest_ms;     /* when the first of them was logged */
    atomic_int in_use;     /* a live thread owns it */
    struct log_tbuf *next; /* the list of all buffers; never freed */
    char data[LOG_BUF_CAP];
} log_tbuf;

static kp_log_level min_level = KP_LOG_INFO;
static int out_fd = STDERR_FILENO;
static __thread char request_id[129]; /* the Lambda host's current invocation ("": none) */

static atomic_int buffering;
static _Atomic(log_tbuf *) all_bufs;
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t flusher_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flusher_cv = PTHREAD_COND_INITIALIZER;
static pthread_t flusher;
static int flusher_running, flusher_stop, flush_interval_ms;
static int atexit_done;

static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};

void kp_log_set_output(int fd)
{
    kp_log_flush();
    out_fd = fd;
}

void kp_log_set_request_id(const char *id)
{
    snprintf(request_id, sizeof request_id, "%s", id ? id : "");
    for (const char *c = request_id; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) {
            request_id[0] = '\0'; /* not written into a JSON string unescaped */
            return;
        }
}

void kp_log_set_level(kp_log_level level)
{
    min_level = level;
}

int kp_log_enabled(kp_log_level level)
{
    return level >= min_level;
}

int kp_log_parse_level(const char *s, kp_log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (kp_log_level)i;
            return 0;
        }
    }
    return -1;
}

static const char *level_name(kp_log_level level)
{
    switch (level) {
    case KP_LOG_DEBUG: return "debug";
    case KP_LOG_INFO: return "info";
    case KP_LOG_WARN: return "warn";
    default: return "error";
    }
}

/* ---- output ---- */

/* write(2) until done; async-signal-safe. Errors are dropped: a log has nowhere to report them. */
static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Caller holds b->mu. */
static void flush_locked(log_tbuf *b)
{
    size_t n = atomic_load(&b->len);
    if (n == 0)
        return;
    write_all(out_fd, b->data, n);
    atomic_store(&b->len, 0);
}

static void flush_buf(log_tbuf *b)
{
    pthread_mutex_lock(&b->mu);
    flush_locked(b);
    pthread_mutex_unlock(&b->mu);
}

void kp_log_flush(void)
{
    for (log_tbuf *b = atomic_load(&all_bufs); b; b = b->next)
        flush_buf(b);
}

/* What a thread keeps: its buffer (while buffering) and the line it builds, reused. */
typedef struct log_thread {
    log_tbuf *buf;
    kp_buf line;
    kp_jsonw fields; /* kp_log_begin()'s writer */
    kp_log_level level;
} log_thread;

static __thread log_thread *my_state;

/* A thread that exits writes what it buffered and hands its buffer on. */
static void release_thread(void *arg)
{
    log_thread *t = arg;
    if (t->buf) {
        flush_buf(t->buf);
        atomic_store(&t->buf->in_use, 0);
    }
    kp_buf_free(&t->line);
    free(t);
}

static void make_thread_key(void)
{
    pthread_key_create(&thread_key, release_thread);
}

/* This thread's state, made on first use; NULL when out of memory. */
static log_thread *thread_state(void)
{
    if (my_state)
        return my_state;
    pthread_once(&thread_key_once, make_thread_key);
    log_thread *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (pthread_setspecific(thread_key, t) != 0) {
        free(t);
        return NULL;
    }
    my_state = t;
    return t;
}

/* This thread's buffer: a free one from the list, or a new one; NULL when out of memory. */
static log_tbuf *thread_buf(log_thread *t)
{
    if (t->buf)
        return t->buf;
    log_tbuf *b = atomic_load(&all_bufs);
    for (; b; b = b->next) {
        int free_one = 0;
        if (atomic_compare_exchange_strong(&b->in_use, &free_one, 1))
            break;
    }
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b)
            return NULL;
        pthread_mutex_init(&b->mu, NULL);
        atomic_store(&b->in_use, 1);
        b->next = atomic_load(&all_bufs);
        while (!atomic_compare_exchange_weak(&all_bufs, &b->next, b))
            ;
    }
    t->buf = b;
    return b;
}

/* Buffers a complete line, or writes it at once (warn and error: after what
 * the thread buffered; a line longer than a buffer; no buffer). */
static void emit(log_thread *t, kp_log_level level, const char *line, size_t n)
{
    log_tbuf *b = t && atomic_load(&buffering) ? thread_buf(t) : NULL;
    if (!b) {
        write_all(out_fd, line, n);
        return;
    }
    pthread_mutex_lock(&b->mu);
    size_t len = atomic_load(&b->len);
    if (level >= KP_LOG_WARN || n > LOG_BUF_CAP - len) {
        flush_locked(b);
        len = 0;
    }
    if (level >= KP_LOG_WARN || n > LOG_BUF_CAP) {
        write_all(out_fd, line, n);
    } else {
        int64_t now = now_ms();
        if (len == 0)
            b->oldest_ms = now;
        memcpy(b->data + len, line, n);
        atomic_store(&b->len, len + n); /* after the bytes: the crash handler sees whole lines */
        if (now - b->oldest_ms >= flush_interval_ms)
            flush_locked(b);
    }
    pthread_mutex_unlock(&b->mu);
}

/* ---- buffering: the flushing thread, exit and crash signals ---- */

static void *flusher_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&flusher_mu);
    while (!flusher_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)(flush_interval_ms % 1000) * 1000000L;
        until.tv_sec += flush_interval_ms / 1000 + until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&flusher_cv, &flusher_mu, &until);
        int64_t now = now_ms();
        for (log_tbuf *b = atomic_load(&all_bufs); b; b = b->next) {
            pthread_mutex_lock(&b->mu);
            if (atomic_load(&b->len) && now - b->oldest_ms >= flush_interval_ms)
                flush_locked(b);
            pthread_mutex_unlock(&b->mu);
        }
    }
    pthread_mutex_unlock(&flusher_mu);
    return NULL;
}

/* Async-signal-safe: no lock, no allocation; complete lines only (see the top). */
static void on_crash(int sig)
{
    for (log_tbuf *b = atomic_load(&all_bufs); b; b = b->next) {
        size_t n = atomic_load(&b->len);
        if (n)
            write_all(out_fd, b->data, n);
    }
    /* SA_RESETHAND restored the default action: the signal, raised again, ends the process once this returns */
    raise(sig);
}

static void install_crash_handlers(void)
{
    for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++) {
        struct sigaction old, sa;
        if (sigaction(crash_signals[i], NULL, &old) != 0 || old.sa_handler != SIG_DFL)
            continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_crash;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND;
        sigaction(crash_signals[i], &sa, NULL);
    }
}

static void flush_at_exit(void)
{
    kp_log_flush();
}

int kp_log_buffering_start(int flush_ms)
{
    pthread_mutex_lock(&flusher_mu);
    int rc = 0;
    if (!flusher_running) {
        flush_interval_ms = flush_ms > 0 ? flush_ms : 1;
        flusher_stop = 0;
        if (pthread_create(&flusher, NULL, flusher_main, NULL) != 0) {
            rc = -1;
            goto out;
        }
        flusher_running = 1;
        if (!atexit_done)
            atexit_done = atexit(flush_at_exit) == 0;
        install_crash_handlers();
        atomic_store(&buffering, 1);
    }
out:
    pthread_mutex_unlock(&flusher_mu);
    return rc;
}

void kp_log_buffering_stop(void)
{
    pthread_mutex_lock(&flusher_mu);
    int running = flusher_running;
    atomic_store(&buffering, 0);
    flusher_stop = 1;
    flusher_running = 0;
    pthread_cond_signal(&flusher_cv);
    pthread_mutex_unlock(&flusher_mu);
    if (running)
        pthread_join(flusher, NULL);
    kp_log_flush();
}

/* ---- lines ---- */

/* Two decimal digits of v at p. */
static void put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" (RFC 3339 UTC, milliseconds) into out[25]. The
 * part up to the seconds is cached per thread: formatted once a second. */
static void format_now(char out[25])
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[20];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = tv.tv_sec;
    }
    memcpy(out, cached, 19);
    int ms = (int)(tv.tv_usec / 1000);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    put2(out + 21, ms % 100);
    out[23] = 'Z';
    out[24] = '\0';
}

/*
 * The line is {"time":…,"level":…,"msg":…, then the fields' members}: time
 * and level are fixed ASCII, msg is escaped, the fields follow as JSON text.
 * Built in the thread's line buffer, reused (a buffer of its own when that
 * could not be made).
 */
static int begin_line(kp_buf *line, kp_log_level level, const char *msg)
{
    char ts[25];
    format_now(ts);
    kp_buf_reset(line);
    int rc = kp_buf_puts(line, "{\"time\":\"");
    rc |= kp_buf_append(line, ts, 24);
    rc |= kp_buf_puts(line, "\",\"level\":\"");
    rc |= kp_buf_puts(line, level_name(level));
    rc |= kp_buf_puts(line, "\",\"msg\":");
    rc |= kp_jsonw_quote(line, msg ? msg : "");
    if (request_id[0]) { /* a sane id (no quote, no backslash): checked by the setter */
        rc |= kp_buf_puts(line, ",\"aws_request_id\":\"");
        rc |= kp_buf_puts(line, request_id);
        rc |= kp_buf_puts(line, "\"");
    }
    return rc;
}

/* Writes the line (unless rc says building it failed) and lets go of a huge buffer. */
static void end_line(log_thread *t, kp_buf *line, kp_log_level level, int rc)
{
    rc |= kp_buf_puts(line, "}\n");
    if (rc == 0)
        emit(t, level, line->data, line->len);
    if (!t || line->cap > LOG_BUF_CAP)
        kp_buf_free(line);
}

/* fields_json: an object's text "{...}", or NULL. */
static void write_line(kp_log_level level, const char *msg, const char *fields_json)
{
    log_thread *t = thread_state();
    kp_buf own = KP_BUF_INIT;
    kp_buf *line = t ? &t->line : &own;
    int rc = begin_line(line, level, msg);
    size_t n = fields_json ? strlen(fields_json) : 0;
    if (n > 2 && fields_json[0] == '{') { /* "{...}" -> ",..." */
        rc |= kp_buf_puts(line, ",");
        rc |= kp_buf_append(line, fields_json + 1, n - 2);
    }
    end_line(t, line, level, rc);
}

kp_jsonw *kp_log_begin(kp_log_level level, const char *msg)
{
    log_thread *t = level >= min_level ? thread_state() : NULL;
    if (!t)
        return NULL;
    if (begin_line(&t->line, level, msg) != 0)
        return NULL;
    t->level = level;
    kp_jsonw_resume(&t->fields, &t->line, 1);
    return &t->fields;
}

void kp_log_commit(kp_jsonw *w)
{
    log_thread *t = my_state;
    if (!w || !t || w != &t->fields)
        return;
    end_line(t, &t->line, t->level, w->err || w->depth != 1 ? -1 : 0);
}

void kp_log_json(kp_log_level level, const char *msg, json_t *fields)
{
    if (level < min_level) {
        json_decref(fields);
        return;
    }
    char *fields_text = fields && json_object_size(fields) ? json_dumps(fields, LOG_DUMP_FLAGS) : NULL;
    json_decref(fields);
    write_line(level, msg, fields_text);
    free(fields_text);
}

void kp_log(kp_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    write_line(level, msg, NULL);
}
