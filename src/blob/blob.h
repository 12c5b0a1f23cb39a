/*
 * blob.h - the blob storage interface: named byte strings with a content type,
 * where generated apps live (keys "apps/{project_id}/v{n}/{path}").
 *
 * A backend (blob_fs.c, s3/blob_s3.c) fills a kp_blob_ops table. The semantics are
 * those of an object store, which every backend can provide:
 *   - keys are flat strings; '/' has no meaning beyond prefix matching, so
 *     "a" and "a/b" can both exist;
 *   - put replaces the whole blob atomically: a reader sees the old blob or
 *     the new one, never a mix or a torn write;
 *   - list and delete_prefix match plain string prefixes ("apps/p1/v1" also
 *     matches "apps/p1/v10/..."; end a prefix with '/' to mean a folder).
 *
 * Keys (kp_blob_key_valid): 1..KP_BLOB_KEY_MAX bytes of [A-Za-z0-9._/-], no
 * leading '/', no empty, "." or ".." segment. Content types: 1..127 bytes of
 * printable ASCII. Every operation checks its key and returns KP_EINVAL for a
 * bad one, and otherwise a kp_status with err filled on failure.
 *
 * Concurrency: a kp_blob may be used from several threads at once.
 */
#ifndef KP_BLOB_H
#define KP_BLOB_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"

#define KP_BLOB_KEY_MAX 1024
#define KP_BLOB_CT_MAX 128   /* content type buffer size, NUL included */
#define KP_BLOB_ETAG_MAX 130 /* ETag buffer size, NUL included */

typedef struct kp_blob kp_blob;

/* Called once per key by list(), in ascending byte order. Returning anything
 * but KP_OK (err filled) stops the listing, which returns that status. */
typedef kp_status (*kp_blob_list_fn)(void *ud, const char *key, kp_err *err);

/* One blob of a put_many. */
typedef struct kp_blob_item {
    const char *key;
    const void *data;
    size_t len;
    const char *content_type; /* NULL: "application/octet-stream" */
} kp_blob_item;

typedef struct kp_blob_ops {
    /* Stores len bytes under key, replacing any blob there. content_type NULL
     * means "application/octet-stream"; KP_EINVAL for a bad one. */
    kp_status (*put)(kp_blob *b, const char *key, const void *data, size_t len, const char *content_type, kp_err *err);
    /* Replaces out's contents with the blob (out NUL-terminated as a kp_buf
     * always is) and, if content_type is not NULL, copies its content type.
     * KP_ENOTFOUND if there is no such blob. */
    kp_status (*get)(kp_blob *b, const char *key, kp_buf *out, char content_type[KP_BLOB_CT_MAX], kp_err *err);
    /* Removes the blob; a missing blob is not an error. */
    kp_status (*delete)(kp_blob *b, const char *key, kp_err *err);
    /* Removes every blob whose key starts with prefix (which must be a
     * non-empty valid key prefix, see kp_blob_prefix_valid). */
    kp_status (*delete_prefix)(kp_blob *b, const char *prefix, kp_err *err);
    /* Calls fn for every key starting with prefix ("" lists everything). */
    kp_status (*list)(kp_blob *b, const char *prefix, kp_blob_list_fn fn, void *ud, kp_err *err);
    /* Releases the handle (b itself included). */
    void (*close)(kp_blob *b);
    /* Optional (NULL: use get): opens the blob for reading without loading it:
     * its bytes are *len bytes of *fd from *offset; the caller closes *fd.
     * KP_ENOTFOUND if there is no such blob. Lets a server send a file with
     * sendfile instead of holding a copy per client. */
    kp_status (*open_read)(kp_blob *b, const char *key, int *fd, int64_t *offset, int64_t *len, kp_err *err);
    /* Optional (NULL: the caller derives an ETag from the bytes, as the apps
     * origin does for the file store): get() plus the blob's own ETag as the
     * store keeps it (a quoted strong entity tag, e.g. S3's MD5, at most
     * KP_BLOB_ETAG_MAX - 1 bytes), copied into etag. if_none_match (an
     * If-None-Match header value, or NULL) is passed on to the store: when
     * the store says it matches, *not_modified is 1 and out is left empty;
     * else *not_modified is 0 and out holds the bytes (the caller may still
     * compare the tag itself). KP_ENOTFOUND if there is no such blob. */
    kp_status (*get_tagged)(kp_blob *b, const char *key, const char *if_none_match, kp_buf *out,
                            char etag[KP_BLOB_ETAG_MAX], int *not_modified, kp_err *err);
    /* Optional (NULL: kp_blob_put_many calls put for each): stores n blobs as
     * n puts in order would, stopping at the first failure (the blobs before
     * it are stored, each whole); every one is durable when it returns. Lets
     * a store make a version's files durable together (the file store waits
     * for one group sync for all of them, not one per file). */
    kp_status (*put_many)(kp_blob *b, const kp_blob_item *items, size_t n, kp_err *err);
} kp_blob_ops;

struct kp_blob {
    const kp_blob_ops *ops;
    void *impl;
};

/* put_many, or put for each item where the store has no put_many. */
static inline kp_status kp_blob_put_many(kp_blob *b, const kp_blob_item *items, size_t n, kp_err *err)
{
    if (b->ops->put_many)
        return b->ops->put_many(b, items, n, err);
    for (size_t i = 0; i < n; i++) {
        kp_status rc = b->ops->put(b, items[i].key, items[i].data, items[i].len, items[i].content_type, err);
        if (rc != KP_OK)
            return rc;
    }
    return KP_OK;
}

static inline int kp_blob__key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-' || c == '/';
}

/*
 * 1 if s is a valid key, or (partial != 0) a valid start of one: the same
 * characters, no leading '/', no empty, "." or ".." segment among those ended
 * by a '/'; the last, unfinished segment of a prefix may be anything (even
 * empty), since more characters may follow it.
 */
static inline int kp_blob__check(const char *s, int partial)
{
    size_t n = strlen(s), seg = 0;
    if (n > KP_BLOB_KEY_MAX || (!partial && n == 0) || s[0] == '/')
        return 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && !kp_blob__key_char(s[i]))
            return 0;
        if (i < n && s[i] != '/')
            continue;
        if (i == n && partial)
            break;
        size_t len = i - seg;
        if (len == 0 || (len == 1 && s[seg] == '.') || (len == 2 && s[seg] == '.' && s[seg + 1] == '.'))
            return 0;
        seg = i + 1;
    }
    return 1;
}

/* 1 if key is a valid key. */
static inline int kp_blob_key_valid(const char *key)
{
    return key && kp_blob__check(key, 0);
}

/* 1 if prefix is a valid key prefix ("" included). */
static inline int kp_blob_prefix_valid(const char *prefix)
{
    return prefix && kp_blob__check(prefix, 1);
}

#endif
