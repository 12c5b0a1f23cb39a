/*
 * framing.h - a strict check of an HTTP/1.1 request head before evhttp sees
 * it.
 *
 * libevent 2.1's parser is lenient where request smuggling lives: it takes
 * the first of two different Content-Length headers, keeps "Transfer-Encoding "
 * (space before the colon) as another header, and reads "+2" as a length. The
 * connection layer (conn.h) holds a request's bytes back until its head is
 * complete, asks kp_framing_check() about it, and hands evhttp only heads that
 * pass; the others are answered with the status this check chose. This is not
 * an HTTP parser: it looks at the request line's shape and at the framing
 * headers (RFC 9112 sections 2.2, 3, 5, 6), and leaves the rest to evhttp.
 *
 * Everything here is pure (no allocation, no state): buffers are borrowed.
 */
#ifndef KP_FRAMING_H
#define KP_FRAMING_H

#include <stddef.h>
#include <stdint.h>

typedef struct kp_framing {
    int status;             /* 0: the head may go to evhttp; else the status to answer (400, 413, 501, 505) */
    const char *code;       /* error code for the body when status != 0 */
    char message[160];      /* what was wrong, for the client */
    int64_t content_length; /* -1: no Content-Length */
    int chunked;            /* Transfer-Encoding: chunked */
} kp_framing;

/*
 * Where the head that starts at buf ends: the offset just past its empty line
 * (CRLF or a bare LF, as evhttp accepts), or 0 when it has not arrived yet.
 * `from` is how many bytes an earlier call already scanned without finding
 * the end, so that a head arriving byte by byte is scanned once.
 */
size_t kp_framing_head_end(const char *buf, size_t len, size_t from);

/* How many empty lines' bytes (CRLF / LF) start buf: RFC 9112 lets a server
 * skip them before a request line. */
size_t kp_framing_leading_empty(const char *buf, size_t len);

/*
 * Checks the complete head buf[0..len) (as kp_framing_head_end delimited it).
 * Fills out; out->status is 0 when the head is acceptable. A declared
 * Content-Length above max_body is 413.
 */
void kp_framing_check(const char *buf, size_t len, size_t max_body, kp_framing *out);

#endif
