/*
 * jsonw.h - a small JSON writer: text appended straight to a kp_buf, for the
 * hot paths where building a jansson tree costs more than the work itself
 * (the request log line, GET /v1/me). No allocation but the buffer's growth,
 * no snprintf for numbers.
 *
 * Usage: kp_jsonw w; kp_jsonw_init(&w, buf); kp_jsonw_open(&w, NULL);
 * kp_jsonw_str(&w, "id", id); ... kp_jsonw_close(&w); if (kp_jsonw_end(&w)) ...
 * Keys are written as given (callers pass literals that need no escaping);
 * string values are escaped, and a byte that is not part of valid UTF-8 is
 * written as U+FFFD (jansson would refuse the whole document).
 * An allocation failure is sticky: later calls do nothing, kp_jsonw_end()
 * returns -1.
 */
#ifndef KP_JSONW_H
#define KP_JSONW_H

#include <stdint.h>

#include "core/buf.h"

#define KP_JSONW_DEPTH 8

typedef struct kp_jsonw {
    kp_buf *out;
    int depth;
    int err;
    unsigned char has_member[KP_JSONW_DEPTH]; /* a comma goes before the next member */
} kp_jsonw;

/* Starts writing at the end of out (which the caller owns). */
void kp_jsonw_init(kp_jsonw *w, kp_buf *out);
/* Continues an object whose opening brace and has_members members (0: none)
 * are already at the end of out, as if kp_jsonw_open() had written them. */
void kp_jsonw_resume(kp_jsonw *w, kp_buf *out, int has_members);
/* Opens an object: the top-level one (key NULL), or a member's. */
void kp_jsonw_open(kp_jsonw *w, const char *key);
void kp_jsonw_close(kp_jsonw *w);
void kp_jsonw_str(kp_jsonw *w, const char *key, const char *value); /* value NULL: null */
void kp_jsonw_int(kp_jsonw *w, const char *key, int64_t value);
void kp_jsonw_bool(kp_jsonw *w, const char *key, int value);
void kp_jsonw_null(kp_jsonw *w, const char *key);
/* A decimal number with three digits after the point: thousandths / 1000. */
void kp_jsonw_milli(kp_jsonw *w, const char *key, int64_t thousandths);
/* 0, or -1 when an allocation failed or an object was left open. */
int kp_jsonw_end(const kp_jsonw *w);

/* Appends s as a quoted, escaped JSON string (see above); 0 or -1. */
int kp_jsonw_quote(kp_buf *out, const char *s);

#endif
