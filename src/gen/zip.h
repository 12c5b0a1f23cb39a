/*
 * zip.h - builds a zip archive in memory (with libzip), for downloading a
 * version of a generated app.
 *
 * Entries are stored deflated, with UTF-8 names, regular-file permissions
 * 0644 and the given modification time. Names must be relative paths that
 * cannot escape the extraction directory (no leading '/', no '\\', no empty,
 * "." or ".." segment), and distinct.
 */
#ifndef KP_ZIP_H
#define KP_ZIP_H

#include <stddef.h>
#include <time.h>

#include "core/buf.h"
#include "core/err.h"

/* One file of the archive; the caller keeps path and data alive during the call. */
typedef struct kp_zip_entry {
    const char *path;
    const void *data;
    size_t len;
} kp_zip_entry;

/*
 * Replaces out's contents with a zip archive of the n entries (n >= 1), each
 * dated mtime (0 means now). Returns KP_EINVAL for no entries, a bad or
 * duplicate path; KP_ENOMEM; KP_EINTERNAL if libzip fails otherwise.
 */
kp_status kp_zip_build(const kp_zip_entry *entries, size_t n, time_t mtime, kp_buf *out, kp_err *err);

#endif
