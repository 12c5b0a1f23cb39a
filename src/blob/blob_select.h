/*
 * blob_select.h - opens the blob store the configuration names
 * (KOUMPA_STORAGE): fs, the directory {data dir}/blobs (blob_fs.h), or s3,
 * the bucket KOUMPA_S3_BUCKET (s3/blob_s3.h, which checks at once that the
 * bucket exists). What every command that needs the apps' files calls.
 */
#ifndef KP_BLOB_SELECT_H
#define KP_BLOB_SELECT_H

#include "blob/blob.h"
#include "core/config.h"
#include "core/err.h"

/* *out is released with (*out)->ops->close(*out). Errors are the backend's,
 * the message naming the setting to look at. */
kp_status kp_blob_open_configured(const kp_config *cfg, kp_blob **out, kp_err *err);

#endif
