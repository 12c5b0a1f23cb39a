/*
 * aws_sigv4.c - AWS Signature Version 4 (see aws_sigv4.h for why it is
 * computed here and which rules it follows).
 *
 * The three steps, as AWS documents them:
 *   canonical request = method \n canonical URI \n canonical query \n
 *                       canonical headers (name:value\n each) \n signed header names \n payload hash
 *   string to sign    = "AWS4-HMAC-SHA256" \n amz-date \n scope \n hex(SHA-256(canonical request))
 *   signature         = hex(HMAC(kSigning, string to sign)), kSigning = HMAC chain of
 *                       "AWS4"+secret, date, region, service, "aws4_request"
 * Percent-encoding and decoding go through curl_easy_escape / curl_easy_unescape
 * (RFC 3986 unreserved set, upper-case hex).
 */
#include "aws/aws_sigv4.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ALGORITHM "AWS4-HMAC-SHA256"

void kp_aws_sigv4_amz_date(time_t t, char out[KP_AWS_AMZ_DATE_LEN + 1])
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, KP_AWS_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm);
}

static void hex_lower(const unsigned char *bin, size_t len, char *out)
{
    sodium_bin2hex(out, len * 2 + 1, bin, len);
}

void kp_aws_sigv4_sha256_hex(const void *data, size_t len, char out[KP_AWS_SHA256_HEX_LEN + 1])
{
    unsigned char digest[crypto_hash_sha256_BYTES];

    crypto_hash_sha256(digest, data, len);
    hex_lower(digest, sizeof digest, out);
}

/* ---- encoding ---- */

static int append_escaped(kp_buf *out, const char *s, size_t len)
{
    char *e;
    int rc;

    if (len == 0)
        return 0;
    e = curl_easy_escape(NULL, s, (int)len);
    if (!e)
        return -1;
    rc = kp_buf_puts(out, e);
    curl_free(e);
    return rc;
}

int kp_aws_sigv4_uri_encode(kp_buf *out, const char *s, size_t len, int keep_slash)
{
    size_t start = 0;

    if (!keep_slash)
        return append_escaped(out, s, len);
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '/')
            continue;
        if (append_escaped(out, s + start, i - start) != 0)
            return -1;
        if (i < len && kp_buf_append(out, "/", 1) != 0)
            return -1;
        start = i + 1;
    }
    return kp_buf_append(out, "", 0); /* out is a C string even when nothing was appended */
}

int kp_aws_sigv4_encode_key(kp_buf *out, const char *key)
{
    return kp_aws_sigv4_uri_encode(out, key, strlen(key), 1);
}

/* ---- canonical URI ---- */

/* The path without empty, "." and ".." segments (".." drops the one before),
 * keeping a leading and a trailing '/'. */
static int normalize(kp_buf *out, const char *path)
{
    size_t n = strlen(path);
    size_t *starts = NULL; /* where each kept segment begins in out, to drop it on ".." */
    size_t kept = 0;
    size_t i = 0;
    int rc = -1;

    starts = calloc(n / 2 + 2, sizeof *starts);
    if (!starts)
        return -1;
    while (i < n) {
        size_t j = i;
        while (j < n && path[j] != '/')
            j++;
        size_t seg = j - i;
        if (seg == 2 && path[i] == '.' && path[i + 1] == '.') {
            if (kept > 0)
                out->len = starts[--kept];
        } else if (seg > 0 && !(seg == 1 && path[i] == '.')) {
            starts[kept++] = out->len;
            if (kp_buf_append(out, "/", 1) != 0 || kp_buf_append(out, path + i, seg) != 0)
                goto cleanup;
        }
        i = j + 1;
    }
    if (kept == 0 || (n > 0 && path[n - 1] == '/')) {
        if (kp_buf_append(out, "/", 1) != 0)
            goto cleanup;
    }
    if (out->data)
        out->data[out->len] = '\0';
    rc = 0;
cleanup:
    free(starts);
    return rc;
}

int kp_aws_sigv4_canonical_path(kp_buf *out, const char *path, int normalize_path, int double_encode)
{
    kp_buf norm = KP_BUF_INIT;
    const char *p = path && *path ? path : "/";
    int rc;

    if (normalize_path) {
        if (normalize(&norm, p) != 0) {
            kp_buf_free(&norm);
            return -1;
        }
        p = kp_buf_cstr(&norm);
    }
    rc = double_encode ? kp_aws_sigv4_uri_encode(out, p, strlen(p), 1) : kp_buf_puts(out, p);
    kp_buf_free(&norm);
    return rc;
}

/* ---- canonical query ---- */

typedef struct query_param {
    char *name; /* encoded */
    char *value;
} query_param;

static int compare_params(const void *a, const void *b)
{
    const query_param *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->value, y->value);
}

/* Decodes then re-encodes s[0..len) into a new string; NULL on allocation failure. */
static char *reencode(const char *s, size_t len)
{
    kp_buf b = KP_BUF_INIT;
    int dlen = 0;
    char *decoded;

    decoded = curl_easy_unescape(NULL, s, (int)len, &dlen);
    if (!decoded)
        return NULL;
    if (kp_aws_sigv4_uri_encode(&b, decoded, (size_t)dlen, 0) != 0 || kp_buf_append(&b, "", 0) != 0) {
        curl_free(decoded);
        kp_buf_free(&b);
        return NULL;
    }
    curl_free(decoded);
    return kp_buf_steal(&b);
}

kp_status kp_aws_sigv4_canonical_query(kp_buf *out, const char *query, kp_err *err)
{
    query_param *params = NULL;
    size_t count = 0, cap = 0;
    kp_status st = KP_ENOMEM;
    const char *p = query ? query : "";

    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t name_len = eq ? (size_t)(eq - p) : len;
        if (len > 0) {
            if (count == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                query_param *np = realloc(params, ncap * sizeof *np);
                if (!np)
                    goto cleanup;
                params = np;
                cap = ncap;
            }
            params[count].name = reencode(p, name_len);
            params[count].value = eq ? reencode(eq + 1, len - name_len - 1) : reencode("", 0);
            count++;
            if (!params[count - 1].name || !params[count - 1].value)
                goto cleanup;
        }
        p += len + (amp ? 1 : 0);
    }
    if (count > 1)
        qsort(params, count, sizeof *params, compare_params);
    if (kp_buf_append(out, "", 0) != 0)
        goto cleanup;
    for (size_t i = 0; i < count; i++) {
        if (kp_buf_printf(out, "%s%s=%s", i ? "&" : "", params[i].name, params[i].value) != 0)
            goto cleanup;
    }
    st = KP_OK;
cleanup:
    for (size_t i = 0; i < count; i++) {
        free(params[i].name);
        free(params[i].value);
    }
    free(params);
    if (st != KP_OK)
        kp_err_set(err, st, "aws sigv4: out of memory building the canonical query");
    return st;
}

/* ---- canonical headers ---- */

typedef struct canon_header {
    char *name; /* lower case */
    const char *value;
    size_t order; /* position in the request: repeated names keep it */
} canon_header;

static int compare_headers(const void *a, const void *b)
{
    const canon_header *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Appends value with leading/trailing whitespace dropped and inner runs of
 * whitespace collapsed to one space. */
static int append_trimmed(kp_buf *out, const char *v)
{
    int pending_space = 0;
    int any = 0;

    for (; *v; v++) {
        if (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') {
            pending_space = any;
            continue;
        }
        if (pending_space && kp_buf_append(out, " ", 1) != 0)
            return -1;
        if (kp_buf_append(out, v, 1) != 0)
            return -1;
        pending_space = 0;
        any = 1;
    }
    return 0;
}

/* Appends "name:value\n" lines into canon and "a;b" into signed_names. */
static kp_status canonical_headers(const kp_aws_sigv4_request *req, kp_buf *canon, kp_buf *signed_names, kp_err *err)
{
    canon_header *h = NULL;
    kp_status st = KP_ENOMEM;
    size_t n = req->n_headers;

    if (n == 0)
        return kp_err_set(err, KP_EINVAL, "aws sigv4: no headers to sign (Host is required)");
    h = calloc(n, sizeof *h);
    if (!h)
        goto cleanup;
    for (size_t i = 0; i < n; i++) {
        if (!req->headers[i].name || !req->headers[i].value) {
            st = kp_err_set(err, KP_EINVAL, "aws sigv4: header %zu has no name or value", i);
            goto cleanup;
        }
        h[i].name = strdup(req->headers[i].name);
        if (!h[i].name)
            goto cleanup;
        for (char *c = h[i].name; *c; c++)
            *c = (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c);
        h[i].value = req->headers[i].value;
        h[i].order = i;
    }
    qsort(h, n, sizeof *h, compare_headers);
    for (size_t i = 0; i < n; i++) {
        int same = i > 0 && strcmp(h[i].name, h[i - 1].name) == 0;
        if (same) {
            if (kp_buf_append(canon, ",", 1) != 0)
                goto cleanup;
        } else {
            if ((i > 0 && kp_buf_append(canon, "\n", 1) != 0) || kp_buf_printf(canon, "%s:", h[i].name) != 0)
                goto cleanup;
            if (kp_buf_printf(signed_names, "%s%s", i ? ";" : "", h[i].name) != 0)
                goto cleanup;
        }
        if (append_trimmed(canon, h[i].value) != 0)
            goto cleanup;
    }
    if (kp_buf_append(canon, "\n", 1) != 0)
        goto cleanup;
    st = KP_OK;
cleanup:
    if (h) {
        for (size_t i = 0; i < n; i++)
            free(h[i].name);
        free(h);
    }
    if (st == KP_ENOMEM)
        kp_err_set(err, st, "aws sigv4: out of memory building the canonical headers");
    return st;
}

/* ---- signing ---- */

static void hmac(unsigned char out[crypto_auth_hmacsha256_BYTES], const unsigned char *key, size_t key_len,
                 const char *msg, size_t msg_len)
{
    crypto_auth_hmacsha256_state st;

    crypto_auth_hmacsha256_init(&st, key, key_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg, msg_len);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

/* signature = HMAC(HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request"), sts) */
static kp_status compute_signature(const kp_aws_sigv4_params *p, const char *date8, const kp_buf *sts,
                                   char out[KP_AWS_SHA256_HEX_LEN + 1], kp_err *err)
{
    kp_buf k_secret = KP_BUF_INIT;
    unsigned char k[crypto_auth_hmacsha256_BYTES];
    unsigned char sig[crypto_auth_hmacsha256_BYTES];

    if (kp_buf_printf(&k_secret, "AWS4%s", p->secret_access_key) != 0)
        return kp_err_set(err, KP_ENOMEM, "aws sigv4: out of memory");
    hmac(k, (const unsigned char *)k_secret.data, k_secret.len, date8, strlen(date8));
    sodium_memzero(k_secret.data, k_secret.len);
    kp_buf_free(&k_secret);
    hmac(k, k, sizeof k, p->region, strlen(p->region));
    hmac(k, k, sizeof k, p->service, strlen(p->service));
    hmac(k, k, sizeof k, "aws4_request", strlen("aws4_request"));
    hmac(sig, k, sizeof k, sts->data, sts->len);
    sodium_memzero(k, sizeof k);
    hex_lower(sig, sizeof sig, out);
    return KP_OK;
}

static kp_status check_inputs(const kp_aws_sigv4_request *req, const kp_aws_sigv4_params *p, kp_err *err)
{
    if (!req->method || !*req->method || !req->payload_hash)
        return kp_err_set(err, KP_EINVAL, "aws sigv4: method and payload hash are required");
    if (!p->access_key_id || !*p->access_key_id || !p->secret_access_key || !*p->secret_access_key)
        return kp_err_set(err, KP_EINVAL, "aws sigv4: no credentials");
    if (!p->region || !*p->region || !p->service || !*p->service)
        return kp_err_set(err, KP_EINVAL, "aws sigv4: region and service are required");
    return KP_OK;
}

kp_status kp_aws_sigv4_sign(const kp_aws_sigv4_request *req, const kp_aws_sigv4_params *params,
                            kp_aws_sigv4_result *out, kp_err *err)
{
    kp_buf signed_names = KP_BUF_INIT;
    char amz_date[KP_AWS_AMZ_DATE_LEN + 1];
    char date8[9];
    char creq_hash[KP_AWS_SHA256_HEX_LEN + 1];
    kp_status st;

    memset(out, 0, sizeof *out);
    st = check_inputs(req, params, err);
    if (st != KP_OK)
        return st;
    kp_aws_sigv4_amz_date(params->when, amz_date);
    memcpy(date8, amz_date, 8);
    date8[8] = '\0';

    st = KP_ENOMEM;
    if (kp_buf_printf(&out->canonical_request, "%s\n", req->method) != 0 ||
        kp_aws_sigv4_canonical_path(&out->canonical_request, req->path, params->normalize_path,
                                    params->double_encode) != 0 ||
        kp_buf_append(&out->canonical_request, "\n", 1) != 0)
        goto cleanup;
    st = kp_aws_sigv4_canonical_query(&out->canonical_request, req->query, err);
    if (st != KP_OK)
        goto cleanup;
    st = KP_ENOMEM;
    if (kp_buf_append(&out->canonical_request, "\n", 1) != 0)
        goto cleanup;
    st = canonical_headers(req, &out->canonical_request, &signed_names, err);
    if (st != KP_OK)
        goto cleanup;
    st = KP_ENOMEM;
    if (kp_buf_printf(&out->canonical_request, "\n%s\n%s", signed_names.data, req->payload_hash) != 0)
        goto cleanup;

    kp_aws_sigv4_sha256_hex(out->canonical_request.data, out->canonical_request.len, creq_hash);
    if (kp_buf_printf(&out->string_to_sign, ALGORITHM "\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date8,
                      params->region, params->service, creq_hash) != 0)
        goto cleanup;
    st = compute_signature(params, date8, &out->string_to_sign, out->signature, err);
    if (st != KP_OK)
        goto cleanup;
    st = KP_ENOMEM;
    if (kp_buf_printf(
            &out->authorization, ALGORITHM " Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
            params->access_key_id, date8, params->region, params->service, signed_names.data, out->signature) != 0)
        goto cleanup;
    st = KP_OK;
cleanup:
    kp_buf_free(&signed_names);
    if (st != KP_OK) {
        if (st == KP_ENOMEM)
            kp_err_set(err, st, "aws sigv4: out of memory");
        kp_aws_sigv4_result_free(out);
    }
    return st;
}

void kp_aws_sigv4_result_free(kp_aws_sigv4_result *r)
{
    if (!r)
        return;
    kp_buf_free(&r->canonical_request);
    kp_buf_free(&r->string_to_sign);
    kp_buf_free(&r->authorization);
    sodium_memzero(r->signature, sizeof r->signature);
}
