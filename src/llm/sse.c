/*
 * sse.c - see sse.h.
 *
 * A line that ends inside the chunk being fed is interpreted straight from the
 * chunk; only a line cut by the end of a chunk is copied into p->line. A CR
 * that ends a line sets after_cr, so an LF starting the next chunk is taken as
 * the second half of a CRLF rather than as an empty line (which would dispatch).
 */
#include "llm/sse.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static const char BOM[3] = {'\xEF', '\xBB', '\xBF'};

void kp_sse_init(kp_sse *p, kp_sse_event_fn on_event, void *ud, size_t max_event)
{
    memset(p, 0, sizeof *p);
    p->on_event = on_event;
    p->ud = ud;
    p->max_event = max_event ? max_event : KP_SSE_DEFAULT_MAX_EVENT;
    p->retry_ms = -1;
    p->status = KP_OK;
}

void kp_sse_free(kp_sse *p)
{
    kp_buf_free(&p->line);
    kp_buf_free(&p->data);
    kp_buf_free(&p->event);
    kp_buf_free(&p->id_buf);
    kp_buf_free(&p->last_id);
}

int kp_sse_stopped(const kp_sse *p)
{
    return p->stop;
}

const char *kp_sse_last_event_id(const kp_sse *p)
{
    return kp_buf_cstr(&p->last_id);
}

long kp_sse_retry_ms(const kp_sse *p)
{
    return p->retry_ms;
}

static kp_status fail(kp_sse *p, kp_status status, kp_err *err)
{
    p->status = status;
    if (status == KP_ETOOLARGE)
        return kp_err_set(err, status, "event stream: an event exceeds %zu bytes", p->max_event);
    return kp_err_set(err, status, "event stream: out of memory");
}

/* The event being assembled, plus `more` bytes, fits the bound. */
static int event_fits(const kp_sse *p, size_t more)
{
    size_t held = p->data.len + p->event.len;
    return held <= p->max_event && more <= p->max_event - held;
}

/* The same, counting the current line's buffered part too. */
static int line_fits(const kp_sse *p, size_t more)
{
    return p->line.len <= p->max_event && event_fits(p, p->line.len + more);
}

static int field_is(const char *name, const char *field, size_t n)
{
    return strlen(name) == n && memcmp(name, field, n) == 0;
}

static kp_status dispatch(kp_sse *p, kp_err *err)
{
    kp_buf_reset(&p->last_id);
    if (kp_buf_append(&p->last_id, p->id_buf.data, p->id_buf.len) != 0)
        return fail(p, KP_ENOMEM, err);
    if (p->data.len == 0) {
        kp_buf_reset(&p->event);
        return KP_OK;
    }
    p->data.len--; /* the "\n" after the last data line */
    p->data.data[p->data.len] = '\0';
    const char *type = p->event.len ? p->event.data : "message";
    int rc = p->on_event(p->ud, type, p->data.data, p->data.len);
    kp_buf_reset(&p->data);
    kp_buf_reset(&p->event);
    if (rc)
        p->stop = rc;
    return KP_OK;
}

static void set_retry(kp_sse *p, const char *v, size_t n)
{
    long ms = 0;
    if (n == 0 || n > 9) /* digits only, and small enough not to overflow */
        return;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return;
        ms = ms * 10 + (v[i] - '0');
    }
    p->retry_ms = ms;
}

static kp_status process_field(kp_sse *p, const char *f, size_t fn, const char *v, size_t vn, kp_err *err)
{
    if (field_is("event", f, fn)) {
        if (memchr(v, '\0', vn)) /* a type with NUL cannot be passed on as a string: ignored, as an id */
            return KP_OK;
        kp_buf_reset(&p->event);
        if (!event_fits(p, vn))
            return fail(p, KP_ETOOLARGE, err);
        if (kp_buf_append(&p->event, v, vn) != 0)
            return fail(p, KP_ENOMEM, err);
    } else if (field_is("data", f, fn)) {
        if (!event_fits(p, vn + 1))
            return fail(p, KP_ETOOLARGE, err);
        if (kp_buf_append(&p->data, v, vn) != 0 || kp_buf_append(&p->data, "\n", 1) != 0)
            return fail(p, KP_ENOMEM, err);
    } else if (field_is("id", f, fn)) {
        if (memchr(v, '\0', vn) == NULL) {
            kp_buf_reset(&p->id_buf);
            if (kp_buf_append(&p->id_buf, v, vn) != 0)
                return fail(p, KP_ENOMEM, err);
        }
    } else if (field_is("retry", f, fn)) {
        set_retry(p, v, vn);
    }
    return KP_OK;
}

static kp_status process_line(kp_sse *p, const char *s, size_t n, kp_err *err)
{
    if (n == 0)
        return dispatch(p, err);
    if (s[0] == ':')
        return KP_OK;
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return process_field(p, s, n, "", 0, err);
    size_t fn = (size_t)(colon - s);
    const char *v = colon + 1;
    size_t vn = n - fn - 1;
    if (vn > 0 && v[0] == ' ') {
        v++;
        vn--;
    }
    return process_field(p, s, fn, v, vn, err);
}

static size_t find_line_end(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] != '\n' && s[i] != '\r')
        i++;
    return i;
}

static kp_status feed_lines(kp_sse *p, const char *s, size_t n, kp_err *err)
{
    size_t i = 0;
    while (i < n && !p->stop) {
        if (p->after_cr) {
            p->after_cr = 0;
            if (s[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t len = find_line_end(s + i, n - i);
        if (!line_fits(p, len))
            return fail(p, KP_ETOOLARGE, err);
        if (i + len == n) { /* the line goes on in the next chunk */
            if (kp_buf_append(&p->line, s + i, len) != 0)
                return fail(p, KP_ENOMEM, err);
            break;
        }
        p->after_cr = s[i + len] == '\r';
        kp_status st;
        if (p->line.len) {
            if (kp_buf_append(&p->line, s + i, len) != 0)
                return fail(p, KP_ENOMEM, err);
            st = process_line(p, p->line.data, p->line.len, err);
            kp_buf_reset(&p->line);
        } else {
            st = process_line(p, s + i, len, err);
        }
        if (st != KP_OK)
            return st;
        i += len + 1;
    }
    return KP_OK;
}

/* Swallows a leading BOM, which may arrive split over several chunks. */
static kp_status skip_bom(kp_sse *p, const char **s, size_t *n, kp_err *err)
{
    /* bom_matched reaches 3 only together with started: BOM[bom_matched] and
     * the feed of the bytes matched stay within BOM (clang-tidy cannot tell) */
    assert(p->started || p->bom_matched < 3);
    while (!p->started && *n > 0) {
        if (**s == BOM[p->bom_matched]) {
            (*s)++;
            (*n)--;
            if (++p->bom_matched == 3)
                p->started = 1;
            continue;
        }
        /* not a BOM after all: what matched so far is ordinary input */
        p->started = 1;
        if (p->bom_matched)
            return feed_lines(p, BOM, (size_t)p->bom_matched, err);
    }
    return KP_OK;
}

kp_status kp_sse_feed(kp_sse *p, const char *data, size_t len, kp_err *err)
{
    if (p->status != KP_OK)
        return fail(p, p->status, err);
    if (p->stop)
        return KP_OK;
    kp_status st = skip_bom(p, &data, &len, err);
    if (st != KP_OK)
        return st;
    return feed_lines(p, data, len, err);
}

int kp_sse_finish(kp_sse *p)
{
    int discarded = p->line.len > 0 || p->data.len > 0 || p->event.len > 0 || (!p->started && p->bom_matched > 0);
    kp_buf_reset(&p->line);
    kp_buf_reset(&p->data);
    kp_buf_reset(&p->event);
    return discarded && p->status == KP_OK && !p->stop;
}
