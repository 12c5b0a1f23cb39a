/*
 * anthropic_delta.h - a content_block_delta event's data read without
 * building a JSON tree: the fast path of anthropic_events.c.
 *
 * A generation's text arrives as hundreds of content_block_delta events of a
 * few characters each; at thousands of streams their parse is most of the
 * generation loop's work. jansson builds a tree for each (about 1.5 us for
 * one event here); yajl's event (SAX) parser walks the same text about four
 * times faster without allocating per value, and this module keeps only
 * delta.type and delta.text from its callbacks.
 *
 * It answers only for data that jansson would read the same way, and defers
 * to jansson (returns 0) for the rest, so that behaviour is jansson's in every
 * case: \u escapes (jansson refuses U+0000 and lone surrogates, which
 * anthropic_events.c replaces), bytes that are not strict UTF-8 (checked with
 * jansson itself), numbers that jansson might find out of range (more than 15
 * characters, or an exponent), nesting deeper than 64, and anything yajl
 * refuses. Duplicate keys: the last one wins, as in jansson.
 */
#ifndef KP_ANTHROPIC_DELTA_H
#define KP_ANTHROPIC_DELTA_H

#include <stddef.h>

#include "core/buf.h"

/* What a content_block_delta's data says. */
typedef struct kp_anthropic_delta {
    int is_text;  /* delta.type is "text_delta" */
    int has_text; /* delta.text is a string (text holds it, whole UTF-8 characters) */
    kp_buf text;  /* owned: kp_buf_free() it; reused across calls */
} kp_anthropic_delta;

/*
 * Reads data (len bytes) into d (its text reset first). Returns 1 when data is
 * a JSON object and d says what it holds; 0 when the caller must ask jansson
 * (see above; data that is not a JSON object at all also gives 0); -1 when out
 * of memory.
 */
int kp_anthropic_delta_read(const char *data, size_t len, kp_anthropic_delta *d);

#endif
