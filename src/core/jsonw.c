/* jsonw.c - see jsonw.h. Strings are copied in runs of bytes that need no
 * escaping, so a typical value is one memcpy. */
#include "core/jsonw.h"

#include <string.h>

/* Appends n bytes to b when they fit: the common case, without kp_buf_append's call. */
static int put_fast(kp_buf *b, const void *s, size_t n)
{
    if (!b->data || n >= b->cap - b->len)
        return kp_buf_append(b, s, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static void put(kp_jsonw *w, const char *s, size_t n)
{
    if (!w->err && put_fast(w->out, s, n) != 0)
        w->err = 1;
}

/* The length of the valid UTF-8 sequence at s (2 to 4), or 0 (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* The escape of a byte below 0x20, a quote or a backslash, into esc (NUL-terminated). */
static void escape_byte(unsigned char c, char esc[8])
{
    static const char hex[] = "0123456789ABCDEF"; /* as jansson writes them */
    const char *named = c == '"'    ? "\\\""
                        : c == '\\' ? "\\\\"
                        : c == '\n' ? "\\n"
                        : c == '\r' ? "\\r"
                        : c == '\t' ? "\\t"
                        : c == '\b' ? "\\b"
                        : c == '\f' ? "\\f"
                                    : NULL;
    if (named) {
        strcpy(esc, named);
        return;
    }
    memcpy(esc, "\\u00", 4);
    esc[4] = hex[c >> 4];
    esc[5] = hex[c & 15];
    esc[6] = '\0';
}

/* The bytes a JSON string holds as they are, by value: printable ASCII but
 * '"' (0x22) and '\\' (0x5c), DEL included (JSON allows it). NUL, the
 * terminator, is not. */
static const unsigned char plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x70 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x80 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x90 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xa0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xb0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xc0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xd0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xe0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xf0 */
};

int kp_jsonw_quote(kp_buf *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    if (put_fast(out, "\"", 1) != 0)
        return -1;
    for (;;) {
        size_t run = 0;
        while (plain[p[run]])
            run++;
        if (run && put_fast(out, p, run) != 0)
            return -1;
        p += run;
        if (!*p)
            break;
        if (*p >= 0x80) {
            size_t n = utf8_len(p);
            if (n ? kp_buf_append(out, p, n) : kp_buf_append(out, "\\ufffd", 6))
                return -1;
            p += n ? n : 1;
            continue;
        }
        char esc[8];
        escape_byte(*p++, esc);
        if (kp_buf_puts(out, esc) != 0)
            return -1;
    }
    return put_fast(out, "\"", 1);
}

/* Writes the comma (when needed) and "key": of the next member, in one piece. */
static void member(kp_jsonw *w, const char *key)
{
    char text[80];
    size_t n = 0, klen = key ? strlen(key) : 0;
    if (w->depth > 0) {
        if (w->has_member[w->depth - 1])
            text[n++] = ',';
        w->has_member[w->depth - 1] = 1;
    }
    if (key && klen > sizeof text - 4) { /* a long key: in pieces */
        put(w, text, n);
        put(w, "\"", 1);
        put(w, key, klen);
        put(w, "\":", 2);
        return;
    }
    if (key) {
        text[n++] = '"';
        memcpy(text + n, key, klen);
        n += klen;
        text[n++] = '"';
        text[n++] = ':';
    }
    put(w, text, n);
}

void kp_jsonw_init(kp_jsonw *w, kp_buf *out)
{
    memset(w, 0, sizeof *w);
    w->out = out;
}

void kp_jsonw_resume(kp_jsonw *w, kp_buf *out, int has_members)
{
    kp_jsonw_init(w, out);
    w->depth = 1;
    w->has_member[0] = has_members != 0;
}

void kp_jsonw_open(kp_jsonw *w, const char *key)
{
    if (w->depth >= KP_JSONW_DEPTH) {
        w->err = 1;
        return;
    }
    member(w, key);
    put(w, "{", 1);
    w->has_member[w->depth++] = 0;
}

void kp_jsonw_close(kp_jsonw *w)
{
    if (w->depth == 0) {
        w->err = 1;
        return;
    }
    w->depth--;
    put(w, "}", 1);
}

void kp_jsonw_str(kp_jsonw *w, const char *key, const char *value)
{
    if (!value) {
        kp_jsonw_null(w, key);
        return;
    }
    member(w, key);
    if (!w->err && kp_jsonw_quote(w->out, value) != 0)
        w->err = 1;
}

/* Decimal digits of v (no sign) ending at end; returns where they start. */
static char *digits(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

void kp_jsonw_int(kp_jsonw *w, const char *key, int64_t value)
{
    char text[24], *end = text + sizeof text;
    uint64_t mag = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    char *p = digits(end, mag);
    if (value < 0)
        *--p = '-';
    member(w, key);
    put(w, p, (size_t)(end - p));
}

void kp_jsonw_milli(kp_jsonw *w, const char *key, int64_t thousandths)
{
    char text[32], *end = text + sizeof text;
    uint64_t mag = thousandths < 0 ? (uint64_t)0 - (uint64_t)thousandths : (uint64_t)thousandths;
    char *p = end - 4;
    p[0] = '.';
    p[1] = (char)('0' + mag / 100 % 10);
    p[2] = (char)('0' + mag / 10 % 10);
    p[3] = (char)('0' + mag % 10);
    p = digits(p, mag / 1000);
    if (thousandths < 0)
        *--p = '-';
    member(w, key);
    put(w, p, (size_t)(end - p));
}

void kp_jsonw_bool(kp_jsonw *w, const char *key, int value)
{
    member(w, key);
    put(w, value ? "true" : "false", value ? 4 : 5);
}

void kp_jsonw_null(kp_jsonw *w, const char *key)
{
    member(w, key);
    put(w, "null", 4);
}

int kp_jsonw_end(const kp_jsonw *w)
{
    return w->err || w->depth != 0 ? -1 : 0;
}
