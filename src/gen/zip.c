/*
 * zip.c - see zip.h.
 *
 * libzip writes the archive into a buffer source opened with
 * zip_open_from_source(); an extra reference (zip_source_keep) keeps that
 * source alive after zip_close() so the finished archive can be read back
 * from it. File data is referenced, not copied, until zip_close() compresses it.
 */
#include "gen/zip.h"

#include <string.h>
#include <zip.h>

#define FILE_MODE 0100644u /* S_IFREG | rw-r--r--, in the high half of the external attributes */

/* Relative, no backslash, no empty, "." or ".." segment. */
static int entry_path_ok(const char *p)
{
    if (!p || !*p || p[0] == '/' || strchr(p, '\\'))
        return 0;
    for (const char *seg = p;;) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return 0;
        if (!end)
            return 1;
        seg = end + 1;
    }
}

static kp_status zip_failure(zip_error_t *ze, const char *what, kp_err *err)
{
    int code = zip_error_code_zip(ze);
    if (code == ZIP_ER_MEMORY)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    return kp_err_set(err, KP_EINTERNAL, "zip: %s: %s", what, zip_error_strerror(ze));
}

static kp_status add_entry(zip_t *za, const kp_zip_entry *e, time_t mtime, kp_err *err)
{
    if (!entry_path_ok(e->path))
        return kp_err_set(err, KP_EINVAL, "zip: invalid file name \"%.100s\"", e->path ? e->path : "");
    zip_source_t *src = zip_source_buffer(za, e->len ? e->data : "", e->len, 0);
    if (!src)
        return zip_failure(zip_get_error(za), "cannot add a file", err);
    zip_int64_t idx = zip_file_add(za, e->path, src, ZIP_FL_ENC_UTF_8);
    if (idx < 0) {
        zip_source_free(src);
        if (zip_error_code_zip(zip_get_error(za)) == ZIP_ER_EXISTS)
            return kp_err_set(err, KP_EINVAL, "zip: \"%.100s\" appears twice", e->path);
        return zip_failure(zip_get_error(za), "cannot add a file", err);
    }
    if (zip_file_set_mtime(za, (zip_uint64_t)idx, mtime, 0) != 0 ||
        zip_file_set_external_attributes(za, (zip_uint64_t)idx, 0, ZIP_OPSYS_UNIX, FILE_MODE << 16) != 0)
        return zip_failure(zip_get_error(za), "cannot set file attributes", err);
    return KP_OK;
}

/* Copies the finished archive out of the buffer source. */
static kp_status read_archive(zip_source_t *src, kp_buf *out, kp_err *err)
{
    zip_stat_t st;
    if (zip_source_open(src) != 0)
        return zip_failure(zip_source_error(src), "cannot read the archive", err);
    kp_status status = KP_OK;
    if (zip_source_stat(src, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
        status = zip_failure(zip_source_error(src), "cannot size the archive", err);
    } else if (kp_buf_reserve(out, (size_t)st.size) != 0) {
        status = kp_err_set(err, KP_ENOMEM, "out of memory");
    } else if (zip_source_read(src, out->data, st.size) != (zip_int64_t)st.size) {
        status = zip_failure(zip_source_error(src), "cannot read the archive", err);
    } else {
        out->len = (size_t)st.size;
        out->data[out->len] = '\0';
    }
    zip_source_close(src);
    return status;
}

kp_status kp_zip_build(const kp_zip_entry *entries, size_t n, time_t mtime, kp_buf *out, kp_err *err)
{
    zip_error_t ze;
    zip_source_t *src = NULL;
    zip_t *za = NULL;
    kp_status st = KP_OK;

    kp_buf_reset(out);
    zip_error_init(&ze);
    if (n == 0) {
        st = kp_err_set(err, KP_EINVAL, "zip: no files to archive");
        goto cleanup;
    }
    if (mtime == 0)
        mtime = time(NULL);
    if (!(src = zip_source_buffer_create(NULL, 0, 0, &ze))) {
        st = zip_failure(&ze, "cannot create a buffer", err);
        goto cleanup;
    }
    if (!(za = zip_open_from_source(src, ZIP_TRUNCATE, &ze))) {
        st = zip_failure(&ze, "cannot open the archive", err);
        goto cleanup;
    }
    zip_source_keep(src); /* ours, beside the archive's */
    for (size_t i = 0; i < n && st == KP_OK; i++)
        st = add_entry(za, &entries[i], mtime, err);
    if (st != KP_OK)
        goto cleanup;
    if (zip_close(za) != 0) {
        st = zip_failure(zip_get_error(za), "cannot write the archive", err);
        goto cleanup;
    }
    za = NULL;
    st = read_archive(src, out, err);
cleanup:
    if (za)
        zip_discard(za);
    if (src)
        zip_source_free(src);
    if (st != KP_OK)
        kp_buf_reset(out);
    zip_error_fini(&ze);
    return st;
}
