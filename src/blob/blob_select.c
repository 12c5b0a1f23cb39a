/*
 * blob_select.c - see blob_select.h.
 */
#include "blob/blob_select.h"

#include <string.h>

#include "blob/blob_fs.h"
#include "blob/s3/blob_s3.h"
#include "core/buf.h"

kp_status kp_blob_open_configured(const kp_config *cfg, kp_blob **out, kp_err *err)
{
    if (cfg->storage && strcmp(cfg->storage, "s3") == 0) {
        kp_blob_s3_options o = {.bucket = cfg->s3_bucket, .path_style = cfg->s3_path_style != 0};
        kp_status rc = kp_blob_s3_open(&o, out, err);
        if (rc != KP_OK) {
            kp_err inner = *err;
            kp_err_set(err, rc, "KOUMPA_STORAGE=s3: %s", inner.msg);
        }
        return rc;
    }
    kp_buf root = KP_BUF_INIT;
    kp_status rc = kp_buf_printf(&root, "%s/blobs", cfg->data_dir) == 0 ? kp_blob_fs_open(root.data, out, err)
                                                                        : kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_buf_free(&root);
    return rc;
}
