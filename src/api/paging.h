/*
 * paging.h - the list endpoints' paging: ?limit= and an opaque ?cursor=.
 *
 * A cursor is base64url of a short text that only the handler that made it
 * understands (e.g. "l:{seq}" for the ledger); clients pass it back as is.
 * Each parser fills resp with a 400 naming the parameter and returns -1 on
 * bad input.
 */
#ifndef KP_PAGING_H
#define KP_PAGING_H

#include <stddef.h>
#include <stdint.h>

#include "api/http.h"

#define KP_CURSOR_MAX 192 /* the longest cursor text, before encoding */

/* ?limit=, 1..max; def when absent. */
int kp_paging_limit(const kp_req *req, kp_resp *resp, size_t def, size_t max, size_t *out);

/* Encodes text as a cursor into out (at least 4/3 of the text + 4 bytes). */
void kp_paging_cursor_encode(const char *text, char *out, size_t n);

/* Decodes ?cursor= into text (KP_CURSOR_MAX + 1 bytes); "" when absent. */
int kp_paging_cursor_decode(const kp_req *req, kp_resp *resp, char text[KP_CURSOR_MAX + 1]);

/* Parses a positive decimal int64 that must span all of s. Returns 0 or -1. */
int kp_paging_parse_int(const char *s, int64_t *out);

/* Fills resp with the 400 for a cursor this server did not make; returns -1. */
int kp_paging_bad_cursor(kp_resp *resp);

#endif
