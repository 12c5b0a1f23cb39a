/*
 * anthropic_delta.c - see anthropic_delta.h.
 *
 * yajl calls back once per key and per value, in document order; the reader
 * keeps the depth and the key whose value comes next, and so knows when a
 * string is the root object's "delta"."type" or "delta"."text". A key clears
 * what its earlier twin set, so that the last of duplicate keys wins. A
 * callback returning 0 stops the parse: that is how anything jansson might
 * judge otherwise is handed back to it.
 */
#include "llm/anthropic_delta.h"

#include <jansson.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#define MAX_DEPTH 64        /* deeper: jansson's own limit (2048) decides */
#define MAX_NUMBER_CHARS 15 /* fits jansson's integers; without an exponent, never a real's overflow */
#define TEXT_DELTA "text_delta"

typedef enum pending_key { K_OTHER = 0, K_DELTA, K_TYPE, K_TEXT } pending_key;

typedef struct reader {
    kp_anthropic_delta *d;
    int depth;         /* containers open around the next value */
    int root_seen;     /* the root value has started */
    int in_delta;      /* the container open at depth 2 is the root's "delta" object */
    pending_key key;   /* the key whose value comes next */
    int out_of_memory; /* the text could not be kept */
    yajl_handle h;
    size_t root_end; /* bytes up to the root's closing brace; 0 until it closed */
} reader;

/* Every value starts here: the root must be an object; returns the key it is the value of. */
static pending_key value_starts(reader *r, int is_object, int *ok)
{
    pending_key k = r->key;
    r->key = K_OTHER;
    *ok = 1;
    if (!r->root_seen) {
        r->root_seen = 1;
        *ok = is_object; /* anything else: jansson's error message */
    }
    return k;
}

static int on_scalar(void *ctx)
{
    int ok;
    value_starts(ctx, 0, &ok);
    return ok;
}

static int on_boolean(void *ctx, int value)
{
    (void)value;
    return on_scalar(ctx);
}

static int on_number(void *ctx, const char *s, size_t len)
{
    return on_scalar(ctx) && len <= MAX_NUMBER_CHARS && !memchr(s, 'e', len) && !memchr(s, 'E', len);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    reader *r = ctx;
    int ok;
    pending_key k = value_starts(r, 0, &ok);
    if (k == K_TYPE)
        r->d->is_text = len == strlen(TEXT_DELTA) && memcmp(s, TEXT_DELTA, len) == 0;
    else if (k == K_TEXT) {
        kp_buf_reset(&r->d->text);
        if (kp_buf_append(&r->d->text, s, len) != 0) {
            r->out_of_memory = 1;
            return 0;
        }
        r->d->has_text = 1;
    }
    return ok;
}

static int key_is(const unsigned char *key, size_t len, const char *name)
{
    return len == strlen(name) && memcmp(key, name, len) == 0;
}

static int on_key(void *ctx, const unsigned char *key, size_t len)
{
    reader *r = ctx;
    r->key = K_OTHER;
    if (r->depth == 1 && key_is(key, len, "delta")) {
        r->key = K_DELTA;
        r->d->is_text = r->d->has_text = 0;
    } else if (r->depth == 2 && r->in_delta && key_is(key, len, "type")) {
        r->key = K_TYPE;
        r->d->is_text = 0;
    } else if (r->depth == 2 && r->in_delta && key_is(key, len, "text")) {
        r->key = K_TEXT;
        r->d->has_text = 0;
    }
    return 1;
}

static int open_container(reader *r, int is_object)
{
    int ok;
    pending_key k = value_starts(r, is_object, &ok);
    r->depth++;
    if (r->depth == 2)
        r->in_delta = is_object && k == K_DELTA;
    return ok && r->depth <= MAX_DEPTH;
}

static int close_container(void *ctx)
{
    reader *r = ctx;
    if (r->depth == 2)
        r->in_delta = 0;
    if (--r->depth == 0)
        r->root_end = yajl_get_bytes_consumed(r->h); /* the lexer is just past the brace */
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, 1);
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, 0);
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_scalar,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number, /* the number's text: no conversion, and its length is checked */
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = close_container,
    .yajl_start_array = on_start_array,
    .yajl_end_array = close_container,
};

/*
 * Nothing but JSON white space after the root (jansson's rule). yajl itself
 * lets an unfinished token after a complete value pass (`{}"` reads as {}).
 */
static int only_space_after_root(const reader *r, const char *data, size_t len)
{
    if (r->root_end == 0)
        return 0;
    for (size_t i = r->root_end; i < len; i++)
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r')
            return 0;
    return 1;
}

/*
 * Whether jansson would read data as yajl does: no \u escape; no control
 * character but JSON's white space (yajl also skips \f and \v between tokens);
 * strict UTF-8 (jansson's own check, on the whole text when it is not ASCII).
 */
static int plain_for_jansson(const char *data, size_t len)
{
    int ascii = 1;
    if (memmem(data, len, "\\u", 2))
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return 0;
        ascii &= c < 0x80;
    }
    if (ascii)
        return 1;
    json_t *s = json_stringn(data, len);
    json_decref(s);
    return s != NULL;
}

int kp_anthropic_delta_read(const char *data, size_t len, kp_anthropic_delta *d)
{
    reader r = {.d = d};
    d->is_text = d->has_text = 0;
    kp_buf_reset(&d->text);
    if (!plain_for_jansson(data, len))
        return 0;
    yajl_handle h = yajl_alloc(&callbacks, NULL, &r);
    if (!h)
        return -1;
    r.h = h;
    yajl_config(h, yajl_dont_validate_strings, 1); /* plain_for_jansson checked them, strictly */
    int ok = yajl_parse(h, (const unsigned char *)data, len) == yajl_status_ok &&
             yajl_complete_parse(h) == yajl_status_ok && only_space_after_root(&r, data, len);
    yajl_free(h);
    if (r.out_of_memory)
        return -1;
    return ok ? 1 : 0;
}
