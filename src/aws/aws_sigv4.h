/*
 * aws_sigv4.h - AWS Signature Version 4 (header signing), computed here from
 * libsodium's SHA-256 and HMAC-SHA256 rather than by libcurl's
 * CURLOPT_AWS_SIGV4.
 *
 * Why sign ourselves: Debian 12's libcurl 7.88 signs S3 requests correctly
 * only under a list of caller-side rules (x-amz-content-sha256 set by hand,
 * keys pre-encoded, queries pre-sorted and pre-encoded, no valueless query
 * parameters such as ?location, no header removals such as "Expect:", no
 * header name that prefixes another) and signs a body sent by read callback
 * wrong; those rules would have to be enforced here anyway, and nothing in
 * libcurl can be checked against AWS's test-suite vectors without a server.
 * The algorithm is AWS's own (canonical request -> string to sign -> signing
 * key derived from the secret, date, region and service), short, and checked
 * here against every header-signing case of the AWS test suites
 * (tests/unit/test_aws_sigv4.c). Because the signer sees exactly the headers
 * that will be sent, none of the libcurl rules applies: the caller sends the
 * signed headers verbatim (Host included) and whatever libcurl adds on its
 * own (Accept, Content-Length, Expect) is simply not signed.
 *
 * Paths: services other than S3 sign the path URI-encoded once more and with
 * dot segments and empty segments removed (normalize_path + double_encode);
 * S3 signs the path exactly as sent (both off), so an S3 key must be encoded
 * by the caller with kp_aws_sigv4_encode_key(). Queries are canonicalised
 * here (decoded, RFC 3986-encoded, sorted; "?location" signs as
 * "location="), so the caller may send them in any order.
 *
 * Secrets: the secret key is only read; intermediate keys are wiped with
 * sodium_memzero before returning.
 */
#ifndef KP_AWS_SIGV4_H
#define KP_AWS_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "core/buf.h"
#include "core/err.h"

#define KP_AWS_SHA256_HEX_LEN 64
#define KP_AWS_AMZ_DATE_LEN 16 /* 20150830T123600Z */
#define KP_AWS_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

/* One header as it will be sent. Names compare case-insensitively. */
typedef struct kp_aws_header {
    const char *name;
    const char *value;
} kp_aws_header;

/* The request to sign. headers is every header to sign, exactly as sent:
 * Host, X-Amz-Date and (for temporary credentials) X-Amz-Security-Token
 * included; repeated names are joined in the given order. */
typedef struct kp_aws_sigv4_request {
    const char *method;           /* "GET", "POST", ... */
    const char *path;             /* as on the request line, without the query; "" means "/" */
    const char *query;            /* without '?'; NULL or "" for none */
    const kp_aws_header *headers; /* n_headers entries */
    size_t n_headers;
    const char *payload_hash; /* hex SHA-256 of the body (kp_aws_sigv4_sha256_hex), or KP_AWS_UNSIGNED_PAYLOAD */
} kp_aws_sigv4_request;

typedef struct kp_aws_sigv4_params {
    const char *access_key_id;
    const char *secret_access_key;
    const char *region;  /* "us-east-1" */
    const char *service; /* signing name: "dynamodb", "s3", "secretsmanager" */
    time_t when;         /* the X-Amz-Date of the request, UTC */
    int normalize_path;  /* 1 for every service but S3 */
    int double_encode;   /* 1 for every service but S3 */
} kp_aws_sigv4_params;

/* What signing produced. Free with kp_aws_sigv4_result_free(). */
typedef struct kp_aws_sigv4_result {
    kp_buf canonical_request;
    kp_buf string_to_sign;
    kp_buf authorization; /* the Authorization header's value */
    char signature[KP_AWS_SHA256_HEX_LEN + 1];
} kp_aws_sigv4_result;

/* Signs req. On success out holds the canonical request, string to sign,
 * signature and Authorization value (out is overwritten: pass it zeroed or
 * freed). KP_EINVAL for a missing field, KP_ENOMEM. */
kp_status kp_aws_sigv4_sign(const kp_aws_sigv4_request *req, const kp_aws_sigv4_params *params,
                            kp_aws_sigv4_result *out, kp_err *err);
void kp_aws_sigv4_result_free(kp_aws_sigv4_result *r);

/* The X-Amz-Date form of t (UTC): "YYYYMMDDTHHMMSSZ" into out (17 bytes). */
void kp_aws_sigv4_amz_date(time_t t, char out[KP_AWS_AMZ_DATE_LEN + 1]);

/* Lower-case hex SHA-256 of data (the payload hash) into out (65 bytes). */
void kp_aws_sigv4_sha256_hex(const void *data, size_t len, char out[KP_AWS_SHA256_HEX_LEN + 1]);

/* Appends s RFC 3986-encoded (every byte but A-Za-z0-9-._~ as %XX, upper
 * case); with keep_slash, '/' is kept. Returns 0, or -1 on allocation failure. */
int kp_aws_sigv4_uri_encode(kp_buf *out, const char *s, size_t len, int keep_slash);

/* Appends an S3 object key as it goes into the URL path (and is signed):
 * RFC 3986-encoded with '/' kept, so "a b+ü/c" -> "a%20b%2B%C3%BC/c". */
int kp_aws_sigv4_encode_key(kp_buf *out, const char *key);

/* Appends the canonical form of query (decoded, re-encoded, sorted by name
 * then value; a parameter without '=' gets an empty value; a '%' not followed
 * by two hex digits stands for itself, '+' is a plus). KP_ENOMEM only. */
kp_status kp_aws_sigv4_canonical_query(kp_buf *out, const char *query, kp_err *err);

/* Appends the canonical URI of path (see above for the two flags). */
int kp_aws_sigv4_canonical_path(kp_buf *out, const char *path, int normalize_path, int double_encode);

#endif
