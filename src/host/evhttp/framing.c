/*
 * framing.c - see framing.h. The head is walked line by line (a line ends
 * with LF, one CR before it is dropped); the request line must be
 * "METHOD SP target SP HTTP/1.x" and every field line "token: value". Only
 * Content-Length and Transfer-Encoding are interpreted.
 */
#include "host/evhttp/framing.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_LENGTH_DIGITS 15 /* far above any body limit, far below INT64_MAX */

typedef struct line {
    const char *p;
    size_t len;
} line;

static const char *const known_methods[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"};

size_t kp_framing_head_end(const char *buf, size_t len, size_t from)
{
    size_t i = from > 2 ? from - 2 : 0;
    const char *nl;
    /* memchr from line end to line end: the head's bytes are not walked one by one */
    for (; i < len && (nl = memchr(buf + i, '\n', len - i)) != NULL; i++) {
        i = (size_t)(nl - buf);
        if (i + 1 < len && buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

size_t kp_framing_leading_empty(const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (buf[i] == '\n')
            i++;
        else if (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n')
            i += 2;
        else
            break;
    }
    return i;
}

static int fail(kp_framing *out, int status, const char *code, const char *message)
{
    out->status = status;
    out->code = code;
    snprintf(out->message, sizeof out->message, "%s", message);
    return -1;
}

/* RFC 9110 tchar, as a table: every byte of every field name is checked */
static const unsigned char tchar_table[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,
    ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0'] = 1,  ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
    ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1,  ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,  ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1,
    ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1,  ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,  ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,
    ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1,  ['z'] = 1,
};

static int is_tchar(unsigned char c)
{
    return tchar_table[c];
}

static int is_token(const char *p, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!p[i] || !is_tchar((unsigned char)p[i]))
            return 0;
    return 1;
}

/* Takes the next line off *rest (without its LF and one CR before it).
 * Returns 0 at the head's empty line, -1 (out filled) on a bare CR or NUL. */
static int next_line(line *rest, line *out, kp_framing *f)
{
    const char *nl = memchr(rest->p, '\n', rest->len);
    size_t len = nl ? (size_t)(nl - rest->p) : rest->len;
    out->p = rest->p;
    out->len = len;
    rest->p += nl ? len + 1 : len;
    rest->len -= nl ? len + 1 : len;
    if (out->len > 0 && out->p[out->len - 1] == '\r')
        out->len--;
    if (memchr(out->p, '\r', out->len))
        return fail(f, 400, "invalid_request", "a request line contains a bare CR");
    if (memchr(out->p, '\0', out->len))
        return fail(f, 400, "invalid_request", "a request line contains a NUL byte");
    return 0;
}

static int method_known(const char *p, size_t len)
{
    for (size_t i = 0; i < sizeof known_methods / sizeof known_methods[0]; i++)
        if (strlen(known_methods[i]) == len && memcmp(known_methods[i], p, len) == 0)
            return 1;
    return 0;
}

static int check_request_line(const line *l, kp_framing *f)
{
    const char *sp1 = memchr(l->p, ' ', l->len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', l->len - (size_t)(sp1 + 1 - l->p)) : NULL;
    if (!sp1 || !sp2)
        return fail(f, 400, "invalid_request", "malformed request line (expected METHOD target HTTP/1.1)");
    size_t mlen = (size_t)(sp1 - l->p);
    const char *target = sp1 + 1;
    size_t tlen = (size_t)(sp2 - target);
    const char *version = sp2 + 1;
    size_t vlen = l->len - (size_t)(version - l->p);
    if (!is_token(l->p, mlen) || tlen == 0)
        return fail(f, 400, "invalid_request", "malformed request line (expected METHOD target HTTP/1.1)");
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)target[i] <= 0x20 || (unsigned char)target[i] == 0x7f)
            return fail(f, 400, "invalid_request", "the request target contains a space or a control character");
    /* origin-form only (and "*"): evhttp may refuse other forms with its own page */
    if (target[0] != '/' && !(tlen == 1 && target[0] == '*'))
        return fail(f, 400, "invalid_request", "the request target must be a path");
    if (vlen != 8 || memcmp(version, "HTTP/", 5) != 0 || version[6] != '.' || version[5] < '0' || version[5] > '9' ||
        version[7] < '0' || version[7] > '9')
        return fail(f, 400, "invalid_request", "malformed HTTP version in the request line");
    if (version[5] != '1')
        return fail(f, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served here");
    if (!method_known(l->p, mlen))
        return fail(f, 501, "not_implemented", "this request method is not implemented");
    return 0;
}

static void trim_ows(const char **p, size_t *len)
{
    while (*len > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*len)--;
    }
    while (*len > 0 && ((*p)[*len - 1] == ' ' || (*p)[*len - 1] == '\t'))
        (*len)--;
}

static int check_content_length(const char *v, size_t vlen, kp_framing *f)
{
    if (vlen == 0 || vlen > MAX_LENGTH_DIGITS)
        return fail(f, 400, "invalid_request", "Content-Length must be a decimal number");
    int64_t n = 0;
    for (size_t i = 0; i < vlen; i++) {
        if (v[i] < '0' || v[i] > '9')
            return fail(f, 400, "invalid_request", "Content-Length must be a decimal number");
        n = n * 10 + (v[i] - '0');
    }
    if (f->content_length >= 0 && f->content_length != n)
        return fail(f, 400, "invalid_request", "conflicting Content-Length headers");
    f->content_length = n;
    return 0;
}

static int is_control(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* Whether v holds a control character other than HTAB (RFC 9110 field-value:
 * VCHAR, obs-text, SP, HTAB). Eight bytes at a time: a bearer token makes
 * most of a head, and a byte loop was 3 % of a request's instructions. A word
 * with a byte below 0x20 (HTAB included) or a DEL is looked at byte by byte. */
static int has_control(const char *v, size_t len)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, v + i, 8);
        uint64_t low = (x - ones * 0x20) & ~x & highs; /* a byte < 0x20 (of those < 0x80) */
        uint64_t del = x ^ (ones * 0x7f);
        del = (del - ones) & ~del & highs; /* a byte == 0x7f */
        if (low | del)
            for (size_t j = i; j < i + 8; j++)
                if (is_control((unsigned char)v[j]))
                    return 1;
    }
    for (; i < len; i++)
        if (is_control((unsigned char)v[i]))
            return 1;
    return 0;
}

static int check_field(const line *l, int *te_seen, kp_framing *f)
{
    const char *colon = memchr(l->p, ':', l->len);
    if (l->len > 0 && (l->p[0] == ' ' || l->p[0] == '\t'))
        return fail(f, 400, "invalid_request", "folded header lines (obs-fold) are not accepted");
    if (!colon || !is_token(l->p, (size_t)(colon - l->p)))
        return fail(f, 400, "invalid_request", "malformed header line (expected name: value, no space before ':')");
    size_t nlen = (size_t)(colon - l->p);
    const char *v = colon + 1;
    size_t vlen = l->len - nlen - 1;
    trim_ows(&v, &vlen);
    if (has_control(v, vlen))
        return fail(f, 400, "invalid_request", "a header value contains a control character");
    if (nlen == 14 && strncasecmp(l->p, "Content-Length", 14) == 0)
        return check_content_length(v, vlen, f);
    if (nlen == 17 && strncasecmp(l->p, "Transfer-Encoding", 17) == 0) {
        if ((*te_seen)++ || vlen != 7 || strncasecmp(v, "chunked", 7) != 0)
            return fail(f, 400, "invalid_request", "the only Transfer-Encoding accepted is chunked");
        f->chunked = 1;
    }
    return 0;
}

static void too_large(kp_framing *f, size_t max_body)
{
    char msg[64];
    if (max_body >= 1024 * 1024 && max_body % (1024 * 1024) == 0)
        snprintf(msg, sizeof msg, "request body exceeds %zu MiB", max_body / (1024 * 1024));
    else
        snprintf(msg, sizeof msg, "request body exceeds %zu bytes", max_body);
    fail(f, 413, "payload_too_large", msg);
}

void kp_framing_check(const char *buf, size_t len, size_t max_body, kp_framing *out)
{
    line rest = {buf, len}, l;
    int te_seen = 0;
    memset(out, 0, sizeof *out);
    out->content_length = -1;
    if (next_line(&rest, &l, out) != 0 || check_request_line(&l, out) != 0)
        return;
    while (rest.len > 0) {
        if (next_line(&rest, &l, out) != 0)
            return;
        if (l.len == 0)
            break;
        if (check_field(&l, &te_seen, out) != 0)
            return;
    }
    if (out->chunked && out->content_length >= 0) {
        fail(out, 400, "invalid_request", "Transfer-Encoding and Content-Length together");
        return;
    }
    if (out->content_length > (int64_t)max_body)
        too_large(out, max_body);
}
