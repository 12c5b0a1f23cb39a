/*
 * blob_s3.c - see blob_s3.h. Each operation is one or a few S3 REST calls
 * made through kp_aws_call(); the only parsing is of ListObjectsV2 pages (a
 * few elements, read by a small scanner below: no XML library is a
 * dependency) and of DeleteObjects answers (any <Error> fails the call).
 */
#include "blob/s3/blob_s3.h"

#include <openssl/evp.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "aws/aws_credentials.h"
#include "aws/aws_http.h"
#include "aws/aws_sigv4.h"

#define DEFAULT_REGION "us-east-1"
#define DEFAULT_CT "application/octet-stream"
#define LIST_PAGE_MAX 1000 /* ListObjectsV2's page and DeleteObjects' batch limit */

typedef struct s3_blob {
    kp_blob blob;
    char *bucket;
    char *endpoint; /* no trailing '/' */
    char region[64];
    int path_style;
    kp_aws_credentials_provider *credentials;
    kp_aws_fetch_pool *pool;
    kp_aws_client client;
} s3_blob;

/* One call on key ("" = the bucket) with an optional query (no '?'). */
typedef struct s3_call {
    const char *method;
    const char *key;
    const char *query;
    const kp_aws_header *headers;
    size_t n_headers;
    const void *body;
    size_t body_len;
} s3_call;

/* The S3 API operation a call is, for messages. */
static const char *operation(const s3_call *c)
{
    int bucket = !c->key || !*c->key;
    if (strcmp(c->method, "HEAD") == 0)
        return bucket ? "HeadBucket" : "HeadObject";
    if (strcmp(c->method, "PUT") == 0)
        return "PutObject";
    if (strcmp(c->method, "DELETE") == 0)
        return "DeleteObject";
    if (strcmp(c->method, "POST") == 0)
        return "DeleteObjects";
    return bucket ? "ListObjectsV2" : "GetObject";
}

/* "s3: ..." from the plumbing becomes "s3 GetObject: ...": the message names
 * the operation that failed as well as the service. */
static void name_operation(const s3_call *c, kp_err *err)
{
    static const char prefix[] = "s3: ";
    char msg[sizeof err->msg];
    if (!err || strncmp(err->msg, prefix, sizeof prefix - 1) != 0)
        return;
    snprintf(msg, sizeof msg, "%s", err->msg + sizeof prefix - 1);
    kp_err_set(err, err->status, "s3 %s: %s", operation(c), msg);
}

static kp_status call(s3_blob *s, const s3_call *c, kp_aws_response *resp, kp_err *err)
{
    kp_buf url = KP_BUF_INIT;
    kp_status rc = kp_aws_s3_url(s->endpoint, s->bucket, c->key, s->path_style, &url, err);
    if (rc == KP_OK && c->query && *c->query && (kp_buf_puts(&url, "?") != 0 || kp_buf_puts(&url, c->query) != 0))
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    if (rc == KP_OK) {
        kp_aws_request req = {KP_AWS_S3, c->method, url.data, c->headers, c->n_headers, c->body, c->body_len, 0};
        rc = kp_aws_call(&s->client, &req, resp, err);
        if (rc != KP_OK)
            name_operation(c, err);
    }
    kp_buf_free(&url);
    return rc;
}

/* A missing bucket is not a missing blob: it is the store being unusable. */
static kp_status bucket_gone(const s3_blob *s, const kp_aws_response *resp, kp_err *err)
{
    return kp_err_set(err, KP_EUNAVAILABLE, "s3: bucket %s does not exist (NoSuchBucket, request id %s)", s->bucket,
                      resp->request_id[0] ? resp->request_id : "-");
}

static int content_type_valid(const char *ct)
{
    size_t n = strlen(ct);
    if (n == 0 || n >= KP_BLOB_CT_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ct[i] < 0x20 || ct[i] > 0x7e)
            return 0;
    return 1;
}

static kp_status s3_put(kp_blob *b, const char *key, const void *data, size_t len, const char *content_type,
                        kp_err *err)
{
    s3_blob *s = b->impl;
    const char *ct = content_type ? content_type : DEFAULT_CT;
    if (!kp_blob_key_valid(key))
        return kp_err_set(err, KP_EINVAL, "invalid blob key");
    if (!content_type_valid(ct))
        return kp_err_set(err, KP_EINVAL, "invalid content type for %s", key);
    kp_aws_header h[] = {{"Content-Type", ct}};
    s3_call c = {"PUT", key, NULL, h, 1, len ? data : "", len};
    kp_aws_response resp = {0};
    kp_status rc = call(s, &c, &resp, err);
    if (rc == KP_ENOTFOUND)
        rc = bucket_gone(s, &resp, err);
    kp_aws_response_free(&resp);
    return rc;
}

/* Moves the response body into out (replacing its contents). */
static void take_body(kp_aws_response *resp, kp_buf *out)
{
    kp_buf_free(out);
    *out = resp->http.body;
    memset(&resp->http.body, 0, sizeof resp->http.body);
}

/* GET of key; if_none_match may be NULL. Fills etag and content type when
 * asked; *not_modified for a 304. */
static kp_status get_object(s3_blob *s, const char *key, const char *if_none_match, kp_buf *out,
                            char content_type[KP_BLOB_CT_MAX], char etag[KP_BLOB_ETAG_MAX], int *not_modified,
                            kp_err *err)
{
    kp_aws_header h[] = {{"If-None-Match", if_none_match}};
    s3_call c = {"GET", key, NULL, h, if_none_match ? 1 : 0, NULL, 0};
    kp_aws_response resp = {0};
    kp_buf value = KP_BUF_INIT;
    kp_buf_reset(out);
    if (!kp_blob_key_valid(key))
        return kp_err_set(err, KP_EINVAL, "invalid blob key");
    kp_status rc = call(s, &c, &resp, err);
    if (rc == KP_ENOTFOUND && strcmp(resp.error_code, "NoSuchBucket") == 0)
        rc = bucket_gone(s, &resp, err);
    else if (rc == KP_ENOTFOUND)
        rc = kp_err_set(err, KP_ENOTFOUND, "no blob %s", key);
    if (rc != KP_OK)
        goto cleanup;
    if (not_modified)
        *not_modified = resp.http.status == 304;
    if (resp.http.status != 304)
        take_body(&resp, out);
    if (content_type) {
        int has = kp_aws_fetch_header(&resp.http, "Content-Type", &value) && value.len > 0;
        snprintf(content_type, KP_BLOB_CT_MAX, "%s", has ? value.data : DEFAULT_CT);
    }
    if (etag) {
        if (!kp_aws_fetch_header(&resp.http, "ETag", &value) || value.len == 0 || value.len >= KP_BLOB_ETAG_MAX) {
            rc = kp_err_set(err, KP_EIO, "s3: no usable ETag for %s", key);
            goto cleanup;
        }
        memcpy(etag, value.data, value.len + 1);
    }
cleanup:
    kp_buf_free(&value);
    kp_aws_response_free(&resp);
    return rc;
}

static kp_status s3_get(kp_blob *b, const char *key, kp_buf *out, char content_type[KP_BLOB_CT_MAX], kp_err *err)
{
    return get_object(b->impl, key, NULL, out, content_type, NULL, NULL, err);
}

/* Whether a client's If-None-Match goes to S3 as is: one strong quoted tag
 * of printable ASCII ("abc"), the common case. Lists, weak tags and "*" stay
 * here: the object is read and the caller compares (blob.h get_tagged). */
static int single_strong_tag(const char *v)
{
    size_t n = strlen(v);
    if (n < 2 || n >= KP_BLOB_ETAG_MAX || v[0] != '"' || v[n - 1] != '"')
        return 0;
    for (size_t i = 1; i + 1 < n; i++)
        if (v[i] < 0x21 || v[i] > 0x7e || v[i] == '"' || v[i] == ',')
            return 0;
    return 1;
}

static kp_status s3_get_tagged(kp_blob *b, const char *key, const char *if_none_match, kp_buf *out,
                               char etag[KP_BLOB_ETAG_MAX], int *not_modified, kp_err *err)
{
    const char *inm = if_none_match && single_strong_tag(if_none_match) ? if_none_match : NULL;
    *not_modified = 0;
    return get_object(b->impl, key, inm, out, NULL, etag, not_modified, err);
}

static kp_status s3_delete(kp_blob *b, const char *key, kp_err *err)
{
    s3_blob *s = b->impl;
    if (!kp_blob_key_valid(key))
        return kp_err_set(err, KP_EINVAL, "invalid blob key");
    s3_call c = {"DELETE", key, NULL, NULL, 0, NULL, 0};
    kp_aws_response resp = {0};
    kp_status rc = call(s, &c, &resp, err);
    if (rc == KP_ENOTFOUND && strcmp(resp.error_code, "NoSuchBucket") == 0)
        rc = bucket_gone(s, &resp, err);
    else if (rc == KP_ENOTFOUND)
        rc = KP_OK; /* S3 answers 204 anyway; a 404 means the same */
    kp_aws_response_free(&resp);
    return rc;
}

/* ---- ListObjectsV2 ---- */

/* Appends text[0..len) with XML's predefined entities and character
 * references decoded. -1 for a malformed reference or allocation failure. */
static int xml_decode(kp_buf *out, const char *text, size_t len)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
    for (size_t i = 0; i < len;) {
        if (text[i] != '&') {
            const char *amp = memchr(text + i, '&', len - i);
            size_t run = amp ? (size_t)(amp - (text + i)) : len - i;
            if (kp_buf_append(out, text + i, run) != 0)
                return -1;
            i += run;
            continue;
        }
        const char *ent = text + i + 1;
        size_t rest = len - i - 1, semi = 0;
        while (semi < rest && semi < 12 && ent[semi] != ';')
            semi++;
        if (semi >= rest || ent[semi] != ';')
            return -1;
        int done = 0;
        for (size_t k = 0; k < sizeof named / sizeof named[0] && !done; k++)
            if (strlen(named[k].name) == semi + 1 && strncmp(ent, named[k].name, semi + 1) == 0) {
                if (kp_buf_append(out, &named[k].c, 1) != 0)
                    return -1;
                done = 1;
            }
        if (!done) {
            /* &#N; or &#xN; -> UTF-8 */
            if (semi < 2 || ent[0] != '#')
                return -1;
            int hex = ent[1] == 'x' || ent[1] == 'X';
            unsigned long cp = 0;
            size_t d = hex ? 2 : 1;
            if (d >= semi)
                return -1;
            for (; d < semi; d++) {
                char ch = ent[d];
                int v = ch >= '0' && ch <= '9'          ? ch - '0'
                        : hex && ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                        : hex && ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                                        : -1;
                if (v < 0)
                    return -1;
                cp = cp * (hex ? 16 : 10) + (unsigned long)v;
                if (cp > 0x10FFFF)
                    return -1;
            }
            if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
                return -1;
            unsigned char u[4];
            size_t n;
            if (cp < 0x80) {
                u[0] = (unsigned char)cp;
                n = 1;
            } else if (cp < 0x800) {
                u[0] = (unsigned char)(0xC0 | (cp >> 6));
                u[1] = (unsigned char)(0x80 | (cp & 0x3F));
                n = 2;
            } else if (cp < 0x10000) {
                u[0] = (unsigned char)(0xE0 | (cp >> 12));
                u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                u[2] = (unsigned char)(0x80 | (cp & 0x3F));
                n = 3;
            } else {
                u[0] = (unsigned char)(0xF0 | (cp >> 18));
                u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
                u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                u[3] = (unsigned char)(0x80 | (cp & 0x3F));
                n = 4;
            }
            if (kp_buf_append(out, u, n) != 0)
                return -1;
        }
        i += semi + 2;
    }
    return 0;
}

/* Finds the next <tag>...</tag> in [p, end): sets *text and *text_len to
 * its content; returns the position after the closing tag, or NULL. */
static const char *find_element(const char *p, const char *end, const char *tag, const char **text, size_t *text_len)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    size_t olen = strlen(open), clen = strlen(close);
    if (end - p < (ptrdiff_t)olen)
        return NULL;
    const char *s = memmem(p, (size_t)(end - p), open, olen);
    if (!s)
        return NULL;
    s += olen;
    const char *e = memmem(s, (size_t)(end - s), close, clen);
    if (!e)
        return NULL;
    *text = s;
    *text_len = (size_t)(e - s);
    return e + clen;
}

kp_status kp_blob_s3_parse_list(const char *xml, size_t len, kp_blob_list_fn fn, void *ud, kp_buf *next, kp_err *err)
{
    const char *end = xml + len, *p = xml, *text;
    size_t text_len;
    kp_buf key = KP_BUF_INIT;
    kp_status rc = KP_OK;
    kp_buf_reset(next);
    if (!memmem(xml, len, "<ListBucketResult", 17))
        return kp_err_set(err, KP_EIO, "s3: ListObjectsV2 answered something else than a ListBucketResult");
    while ((p = find_element(p, end, "Contents", &text, &text_len)) != NULL) {
        const char *k;
        size_t klen;
        if (!find_element(text, text + text_len, "Key", &k, &klen)) {
            rc = kp_err_set(err, KP_EIO, "s3: a listed object without a Key");
            goto cleanup;
        }
        kp_buf_reset(&key);
        if (xml_decode(&key, k, klen) != 0 || kp_buf_puts(&key, "") != 0) {
            rc = kp_err_set(err, KP_EIO, "s3: a listed key is not well-formed XML text");
            goto cleanup;
        }
        rc = fn(ud, kp_buf_cstr(&key), err);
        if (rc != KP_OK)
            goto cleanup;
    }
    if (find_element(xml, end, "NextContinuationToken", &text, &text_len) &&
        (xml_decode(next, text, text_len) != 0 || kp_buf_puts(next, "") != 0))
        rc = kp_err_set(err, KP_EIO, "s3: a continuation token is not well-formed XML text");
cleanup:
    kp_buf_free(&key);
    return rc;
}

/* Calls fn for each key under prefix (every page); all keys, valid or not. */
static kp_status list_raw(s3_blob *s, const char *prefix, kp_blob_list_fn fn, void *ud, kp_err *err)
{
    kp_buf query = KP_BUF_INIT, token = KP_BUF_INIT;
    kp_status rc = KP_OK;
    for (;;) {
        kp_buf_reset(&query);
        int bad = 0;
        if (token.len) {
            bad |= kp_buf_puts(&query, "continuation-token=");
            bad |= kp_aws_sigv4_uri_encode(&query, token.data, token.len, 0);
            bad |= kp_buf_puts(&query, "&");
        }
        bad |= kp_buf_puts(&query, "list-type=2");
        if (*prefix) {
            bad |= kp_buf_puts(&query, "&prefix=");
            bad |= kp_aws_sigv4_uri_encode(&query, prefix, strlen(prefix), 0);
        }
        if (bad) {
            rc = kp_err_set(err, KP_ENOMEM, "out of memory");
            break;
        }
        s3_call c = {"GET", "", query.data, NULL, 0, NULL, 0};
        kp_aws_response resp = {0};
        rc = call(s, &c, &resp, err);
        if (rc == KP_ENOTFOUND)
            rc = bucket_gone(s, &resp, err);
        if (rc == KP_OK)
            rc = kp_blob_s3_parse_list(resp.http.body.data ? resp.http.body.data : "", resp.http.body.len, fn, ud,
                                       &token, err);
        kp_aws_response_free(&resp);
        if (rc != KP_OK || token.len == 0)
            break;
    }
    kp_buf_free(&query);
    kp_buf_free(&token);
    return rc;
}

typedef struct list_filter {
    kp_blob_list_fn fn;
    void *ud;
} list_filter;

static kp_status only_valid(void *ud, const char *key, kp_err *err)
{
    list_filter *f = ud;
    return kp_blob_key_valid(key) ? f->fn(f->ud, key, err) : KP_OK;
}

static kp_status s3_list(kp_blob *b, const char *prefix, kp_blob_list_fn fn, void *ud, kp_err *err)
{
    if (!kp_blob_prefix_valid(prefix))
        return kp_err_set(err, KP_EINVAL, "invalid blob prefix");
    list_filter f = {fn, ud};
    return list_raw(b->impl, prefix, only_valid, &f, err);
}

/* ---- delete_prefix: DeleteObjects per listed page ---- */

typedef struct batch {
    s3_blob *s;
    kp_buf xml; /* the <Delete> body being built */
    int count;
} batch;

static int xml_escape(kp_buf *out, const char *s)
{
    for (; *s; s++) {
        const char *e = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : NULL;
        if (e ? kp_buf_puts(out, e) != 0 : kp_buf_append(out, s, 1) != 0)
            return -1;
    }
    return 0;
}

static kp_status flush_batch(batch *bt, kp_err *err)
{
    unsigned char md5[16];
    unsigned int md5_len = 0;
    char md5_b64[32];
    kp_status rc = KP_OK;
    if (bt->count == 0)
        return KP_OK;
    if (kp_buf_puts(&bt->xml, "</Delete>") != 0)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    if (EVP_Digest(bt->xml.data, bt->xml.len, md5, &md5_len, EVP_md5(), NULL) != 1 || md5_len != sizeof md5)
        return kp_err_set(err, KP_EINTERNAL, "s3: cannot compute Content-MD5");
    sodium_bin2base64(md5_b64, sizeof md5_b64, md5, sizeof md5, sodium_base64_VARIANT_ORIGINAL);
    kp_aws_header h[] = {{"Content-MD5", md5_b64}, {"Content-Type", "application/xml"}};
    s3_call c = {"POST", "", "delete", h, 2, bt->xml.data, bt->xml.len};
    kp_aws_response resp = {0};
    rc = call(bt->s, &c, &resp, err);
    if (rc == KP_ENOTFOUND)
        rc = bucket_gone(bt->s, &resp, err);
    if (rc == KP_OK && resp.http.body.len && memmem(resp.http.body.data, resp.http.body.len, "<Error>", 7))
        rc = kp_err_set(err, KP_EIO, "s3: DeleteObjects left objects undeleted: %.120s", resp.http.body.data);
    kp_aws_response_free(&resp);
    kp_buf_reset(&bt->xml);
    bt->count = 0;
    return rc;
}

static kp_status add_to_batch(void *ud, const char *key, kp_err *err)
{
    batch *bt = ud;
    int bad = 0;
    if (bt->count == 0)
        bad |= kp_buf_puts(&bt->xml, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                                     "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>");
    bad |= kp_buf_puts(&bt->xml, "<Object><Key>");
    bad |= xml_escape(&bt->xml, key);
    bad |= kp_buf_puts(&bt->xml, "</Key></Object>");
    if (bad)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    return ++bt->count >= LIST_PAGE_MAX ? flush_batch(bt, err) : KP_OK;
}

static kp_status s3_delete_prefix(kp_blob *b, const char *prefix, kp_err *err)
{
    if (!kp_blob_prefix_valid(prefix) || !*prefix)
        return kp_err_set(err, KP_EINVAL, "invalid blob prefix");
    batch bt = {b->impl, KP_BUF_INIT, 0};
    kp_status rc = list_raw(b->impl, prefix, add_to_batch, &bt, err);
    if (rc == KP_OK)
        rc = flush_batch(&bt, err);
    kp_buf_free(&bt.xml);
    return rc;
}

/* ---- open/close ---- */

static void s3_close(kp_blob *b)
{
    if (!b)
        return;
    s3_blob *s = b->impl;
    kp_aws_fetch_pool_free(s->pool);
    kp_aws_credentials_shared_release(s->credentials);
    free(s->bucket);
    free(s->endpoint);
    free(s);
}

static const kp_blob_ops S3_OPS = {s3_put, s3_get,        s3_delete, s3_delete_prefix, s3_list, s3_close,
                                   NULL,   s3_get_tagged, NULL};

/* HeadBucket: the bucket must exist and take our credentials; when they are
 * refused, the reason from a GET of the bucket. */
static kp_status check_bucket(s3_blob *s, kp_err *err)
{
    s3_call c = {"HEAD", "", NULL, NULL, 0, NULL, 0};
    kp_aws_response resp = {0};
    kp_status rc = call(s, &c, &resp, err);
    if (rc != KP_OK && resp.http.status == 403 && !resp.error_code[0]) {
        /* a HEAD answer has no body, so no error code: a GET of the bucket
         * (an empty listing) gets one, naming what was refused
         * (SignatureDoesNotMatch, InvalidAccessKeyId, AccessDenied...) */
        s3_call list = {"GET", "", "list-type=2&max-keys=0", NULL, 0, NULL, 0};
        kp_aws_response_free(&resp);
        memset(&resp, 0, sizeof resp);
        rc = call(s, &list, &resp, err);
    }
    if (rc == KP_ENOTFOUND || resp.http.status == 404)
        rc = kp_err_set(err, KP_ENOTFOUND, "S3 bucket %s does not exist (HeadBucket answered 404 at %s)", s->bucket,
                        s->endpoint);
    kp_aws_response_free(&resp);
    return rc;
}

kp_status kp_blob_s3_open(const kp_blob_s3_options *opts, kp_blob **out, kp_err *err)
{
    kp_buf endpoint = KP_BUF_INIT;
    kp_status rc;
    *out = NULL;
    if (!opts || !opts->bucket || !*opts->bucket)
        return kp_err_set(err, KP_EINVAL, "KOUMPA_S3_BUCKET must be set when KOUMPA_STORAGE=s3");
    s3_blob *s = calloc(1, sizeof *s);
    if (!s)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    s->blob.ops = &S3_OPS;
    s->blob.impl = s;
    s->path_style = opts->path_style;
    const char *region = opts->region ? opts->region : kp_aws_region();
    snprintf(s->region, sizeof s->region, "%s", region && *region ? region : DEFAULT_REGION);
    s->bucket = strdup(opts->bucket);
    if (!s->bucket) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kp_aws_endpoint(KP_AWS_S3, s->region, &endpoint, err);
    if (rc != KP_OK)
        goto cleanup;
    s->endpoint = kp_buf_steal(&endpoint);
    if (!s->endpoint) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = kp_aws_credentials_shared_acquire(&s->credentials, err);
    if (rc == KP_OK)
        rc = kp_aws_fetch_pool_new(&s->pool, err);
    if (rc != KP_OK)
        goto cleanup;
    s->client.credentials = s->credentials;
    s->client.region = s->region;
    s->client.pool = s->pool;
    rc = check_bucket(s, err);
cleanup:
    kp_buf_free(&endpoint);
    if (rc != KP_OK) {
        s3_close(&s->blob);
        return rc;
    }
    *out = &s->blob;
    return KP_OK;
}
