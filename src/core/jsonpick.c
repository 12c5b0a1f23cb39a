/*
 * jsonpick.c - see jsonpick.h.
 *
 * yajl calls back once per key and per value, in document order. The reader
 * keeps, for each open object, the fields whose path leads into it (a bit
 * each), and for the key just read the fields whose path goes through that
 * key; a string then completes the fields whose path ends there, an object
 * passes the rest on. A key clears what its earlier twin found, so that the
 * last of duplicate keys wins. A callback returning 0 stops the parse: that
 * is how anything jansson might judge otherwise is handed back to it.
 */
#include "core/jsonpick.h"

#include <jansson.h>
#include <stdint.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#define MAX_DEPTH 64        /* deeper: jansson's own limit (2048) decides */
#define MAX_NUMBER_CHARS 15 /* fits jansson's integers; without an exponent, never a real's overflow */

typedef struct reader {
    kp_jsonpick_field *fields;
    size_t n;
    size_t path_len[KP_JSONPICK_FIELDS_MAX];
    int depth;                    /* containers open around the next value */
    uint32_t into[MAX_DEPTH + 1]; /* per open container: the fields whose path leads into it */
    uint32_t key;                 /* the fields whose path goes through the key just read */
    int root_seen;                /* the root value has started */
    int out_of_memory;            /* a value could not be kept */
    yajl_handle h;
    size_t root_end; /* bytes up to the root's closing brace; 0 until it closed */
} reader;

/* Every value starts here: returns the fields of the key it is the value of; *ok 0 for a root that is not an
 * object. */
static uint32_t value_starts(reader *r, int is_object, int *ok)
{
    uint32_t k = r->key;
    r->key = 0;
    *ok = 1;
    if (!r->root_seen) {
        r->root_seen = 1;
        *ok = is_object;                                    /* anything else: jansson's error message */
        k = is_object ? (uint32_t)((1ull << r->n) - 1) : 0; /* every path starts at the root */
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
    uint32_t k = value_starts(r, 0, &ok);
    for (size_t i = 0; i < r->n; i++) {
        kp_jsonpick_field *f = &r->fields[i];
        if (!(k & (1u << i)) || r->path_len[i] != (size_t)r->depth)
            continue;
        kp_buf_reset(&f->value);
        if (kp_buf_append(&f->value, s, len) != 0) {
            r->out_of_memory = 1;
            return 0;
        }
        f->found = 1;
    }
    return ok;
}

static int on_key(void *ctx, const unsigned char *key, size_t len)
{
    reader *r = ctx;
    size_t d = (size_t)r->depth; /* the key's object is at depth d: the key is path[d - 1] */
    r->key = 0;
    for (size_t i = 0; i < r->n; i++) {
        const char *want = d <= r->path_len[i] ? r->fields[i].path[d - 1] : NULL;
        if (!(r->into[d] & (1u << i)) || !want || strlen(want) != len || memcmp(want, key, len) != 0)
            continue;
        r->key |= 1u << i;
        r->fields[i].found = 0; /* this value replaces what an earlier twin of the key held */
    }
    return 1;
}

static int open_container(reader *r, int is_object)
{
    int ok;
    uint32_t k = value_starts(r, is_object, &ok);
    if (++r->depth > MAX_DEPTH)
        return 0;
    r->into[r->depth] = is_object ? k : 0; /* a path names keys only: none leads into an array */
    return ok;
}

static int close_container(void *ctx)
{
    reader *r = ctx;
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

/* The fields' path lengths into r; 0 when a field has no key. */
static int paths_valid(reader *r)
{
    for (size_t i = 0; i < r->n; i++) {
        size_t k = 0;
        while (k < KP_JSONPICK_PATH_MAX && r->fields[i].path[k])
            k++;
        if (k == 0)
            return 0;
        r->path_len[i] = k;
    }
    return 1;
}

int kp_jsonpick(const char *data, size_t len, kp_jsonpick_field *fields, size_t n)
{
    reader r = {.fields = fields, .n = n};
    for (size_t i = 0; i < n && i < KP_JSONPICK_FIELDS_MAX; i++) {
        fields[i].found = 0;
        kp_buf_reset(&fields[i].value);
    }
    if (n > KP_JSONPICK_FIELDS_MAX || !paths_valid(&r) || !plain_for_jansson(data, len))
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
