/*
 * jsonpick.h - a few string fields of a JSON object, read without building a
 * tree: the reader of the hot paths that parse many small objects for one or
 * two strings (a provider's text events on the generation loop, a version's
 * delta events read back when it is published).
 *
 * jansson builds a tree for each object (about 1.5 us for a 90-byte event on
 * the development machine); yajl's event (SAX) parser walks the same text
 * about four times faster without allocating per value, and this module
 * keeps only the strings at the paths asked for.
 *
 * It answers only for data that jansson (json_loadb, as the callers use it)
 * would read the same way, and hands back (returns 0) the rest, so that what
 * a caller makes of any input is what jansson makes of it: \u escapes
 * (jansson refuses U+0000 and lone surrogates, which the callers replace or
 * allow), control characters (yajl skips \f and \v between tokens), bytes that
 * are not strict UTF-8 (checked with jansson itself), numbers that jansson
 * might find out of range (more than 15 characters, or an exponent), nesting
 * deeper than 64, bytes after the object (yajl lets an unfinished token pass
 * there), a root that is not an object, and anything yajl refuses. Duplicate
 * keys: the last one wins, as in jansson.
 */
#ifndef KP_JSONPICK_H
#define KP_JSONPICK_H

#include <stddef.h>

#include "core/buf.h"

#define KP_JSONPICK_PATH_MAX 4 /* keys in a path */
#define KP_JSONPICK_FIELDS_MAX 8

/* One field to pick: the object keys from the root to it. */
typedef struct kp_jsonpick_field {
    const char *path[KP_JSONPICK_PATH_MAX]; /* borrowed; NULL after the last key (at least one key) */
    int found;                              /* the value at the path is a string: value holds it */
    kp_buf value;                           /* owned (kp_buf_free); whole UTF-8 characters, decoded */
} kp_jsonpick_field;

/*
 * Reads data (len bytes) for fields[0..n) (n at most KP_JSONPICK_FIELDS_MAX;
 * each found flag cleared and each value reset first). Returns 1 when data is
 * a JSON object and the fields say what it holds; 0 when the caller must ask
 * jansson (see above); -1 when out of memory.
 */
int kp_jsonpick(const char *data, size_t len, kp_jsonpick_field *fields, size_t n);

#endif
