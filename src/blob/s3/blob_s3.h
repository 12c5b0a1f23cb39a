/*
 * blob_s3.h - blob storage in an S3 bucket (KOUMPA_STORAGE=s3): the blob
 * with key "apps/p1/v1/index.html" is the object of that key, its content
 * type the object's Content-Type. Requests go through the AWS plumbing
 * (aws/aws_http.h: the credential chain, SigV4, retries) over one connection
 * pool per handle (aws/aws_fetch.h), so a handle serves several threads at
 * once, as blob.h requires.
 *
 * What S3 gives the interface's guarantees: a PUT replaces an object
 * atomically and reads after it see it (S3 is strongly consistent since
 * December 2020). list is ListObjectsV2 (pages of up to 1000 keys, followed
 * by continuation token; S3 lists in ascending UTF-8 byte order, which for
 * blob keys is byte order); objects whose keys are not valid blob keys
 * (written by something else) are skipped by list, but delete_prefix removes
 * them too. delete_prefix lists the prefix and removes each page with one
 * DeleteObjects (Content-MD5 as S3 requires); objects put under the prefix
 * while it runs may stay, as with any object store. get buffers the whole
 * object (as blob_fs's get does); there is no open_read.
 *
 * get_tagged passes the object's own ETag through (for a single-part PUT,
 * the quoted hex MD5 of the bytes) and sends an If-None-Match that is one
 * strong tag to S3, so a matching conditional read costs no transfer of the
 * bytes; other forms (lists, W/, *) are left to the caller's comparison.
 */
#ifndef KP_BLOB_S3_H
#define KP_BLOB_S3_H

#include "blob/blob.h"
#include "core/err.h"

typedef struct kp_blob_s3_options {
    const char *bucket; /* required (KOUMPA_S3_BUCKET) */
    int path_style;     /* {endpoint}/{bucket}/{key} (local servers) instead of {bucket}.{host}/{key} */
    const char *region; /* NULL: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1 */
} kp_blob_s3_options;

/* Opens the store and checks the bucket with HeadBucket: KP_ENOTFOUND when
 * it does not exist, KP_EUNAVAILABLE when S3 cannot be reached or refuses the
 * credentials (the message says which), KP_EINVAL for a missing bucket name
 * or a bad endpoint (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL). *out is
 * released with (*out)->ops->close(*out). */
kp_status kp_blob_s3_open(const kp_blob_s3_options *opts, kp_blob **out, kp_err *err);

/* Parses one ListObjectsV2 result page: calls fn with each <Contents><Key>,
 * entity-decoded (&amp; &lt; &gt; &quot; &apos; &#N; &#xN;), copies
 * <NextContinuationToken> into next (reset first; left empty when the page
 * is the last). KP_EIO for a malformed page. Exposed for tests. */
kp_status kp_blob_s3_parse_list(const char *xml, size_t len, kp_blob_list_fn fn, void *ud, kp_buf *next, kp_err *err);

#endif
