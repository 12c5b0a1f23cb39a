/*
 * blob_fs.h - blob storage in a local directory (development, single host).
 *
 * Layout under root: the blob with key "apps/p1/v1/index.html" is the file
 * "apps/p1/v1/index.html~" (directories for the segments before the last).
 * The '~' suffix, a character keys cannot hold, keeps blob files apart from
 * directories, so "a" and "a/b" can both exist as on an object store. Each
 * file holds the content type, a "\n", then the bytes:
 *
 *     text/html; charset=utf-8\n<!doctype html>...
 *
 * so data and type change together in one rename. put writes a temporary
 * "~tmp.XXXXXX" file in the target directory and renames it over the blob
 * file (readers never see a torn blob); put_many does the same for each blob.
 * Both return once a syncfs(2) of the store's file system that began after
 * their writes has ended, shared by the threads putting at the same time
 * (blob_fs.c: group sync), so what they stored, new directories included,
 * survives a crash or a power loss.
 * Directories left empty by deletions are removed. Files and directories
 * whose names do not follow this layout are ignored.
 */
#ifndef KP_BLOB_FS_H
#define KP_BLOB_FS_H

#include "blob/blob.h"
#include "core/err.h"

/* Opens (creating it if needed, with parents) the store rooted at root.
 * *out is released with (*out)->ops->close(*out). */
kp_status kp_blob_fs_open(const char *root, kp_blob **out, kp_err *err);

/* The syncs the store has run so far (each shared by the puts waiting for it). b must be a store of
 * this kind. */
unsigned long kp_blob_fs_syncs(kp_blob *b);

#endif
