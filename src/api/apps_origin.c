/*
 * apps_origin.c - see apps_origin.h. A request is resolved in three steps:
 * the path splits into project id, optional version and file path; the rows
 * say which version is meant and whether it is ready; the version's manifest
 * (files_json) says whether the file exists, so a blob is only read for files
 * that were published. Paths are checked with the same rules the model's
 * output was (gen/fileblocks.h), so nothing outside apps/{id}/v{n}/ is ever
 * reachable.
 */
#include "api/apps_origin.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/apps_url.h"
#include "core/log.h"
#include "gen/fileblocks.h"
#include "gen/generator.h"

#define MAX_FILE_PATH 200
#define ETAG_HASH_BYTES 16
#define ETAG_CHUNK 65536
#define ROUTE_LABEL "apps"

typedef struct app_path {
    char project_id[KP_ID_MAX];
    int64_t version; /* 0: the latest ready one */
    char file[MAX_FILE_PATH + 16];
} app_path;

const char *const kp_apps_default_headers[] = {"Content-Security-Policy",
                                               KP_APPS_CSP,
                                               "X-Content-Type-Options",
                                               "nosniff",
                                               "Referrer-Policy",
                                               "no-referrer",
                                               NULL};

const char *const kp_apps_own_origin_headers[] = {"Content-Security-Policy",
                                                  KP_APPS_CSP_OWN_ORIGIN,
                                                  "X-Content-Type-Options",
                                                  "nosniff",
                                                  "Referrer-Policy",
                                                  "no-referrer",
                                                  NULL};

const char *const *kp_apps_headers_for(const kp_config *cfg)
{
    return cfg && kp_apps_url_per_project(cfg->apps_url) ? kp_apps_own_origin_headers : kp_apps_default_headers;
}

void kp_apps_error_page(kp_resp *resp, int status, const char *code, const char *message)
{
    kp_buf body = KP_BUF_INIT;
    (void)code;
    kp_buf_printf(&body, "%d %s\n", status, message);
    kp_resp_text(resp, status, "text/plain; charset=utf-8", body.data ? body.data : "", body.len);
    kp_buf_free(&body);
    kp_headers_set(&resp->headers, "Cache-Control", "no-store");
}

static void common_headers(kp_resp *resp, const kp_config *cfg)
{
    for (const char *const *h = kp_apps_headers_for(cfg); h[0] && h[1]; h += 2)
        kp_headers_set(&resp->headers, h[0], h[1]);
}

/* The blob store could not answer: 503 (with Retry-After) when it is
 * unavailable (S3 throttling or 5xx after the last retry, refused
 * credentials, no answer), saying which call failed; 500 otherwise. The
 * message names the service and the operation, never a secret. */
static void storage_failed(kp_resp *resp, kp_status rc, const char *key, const kp_err *err)
{
    kp_log_json(KP_LOG_WARN, "apps origin: the storage cannot serve a file",
                json_pack("{s:s,s:s}", "key", key, "error", err->msg));
    if (rc != KP_EUNAVAILABLE) {
        kp_resp_text(resp, 500, "text/plain; charset=utf-8", "500 internal error\n", 19);
        return;
    }
    kp_buf msg = KP_BUF_INIT;
    kp_buf_printf(&msg, "the app's files cannot be read now (%s); try again", err->msg);
    kp_apps_error_page(resp, 503, "unavailable", msg.data ? msg.data : "storage unavailable");
    kp_buf_free(&msg);
    kp_headers_set(&resp->headers, "Retry-After", "1");
}

static void not_found_text(kp_resp *resp, const kp_config *cfg, const char *body)
{
    kp_resp_text(resp, 404, "text/plain; charset=utf-8", body, strlen(body));
    kp_headers_set(&resp->headers, "Cache-Control", "no-cache");
    common_headers(resp, cfg);
}

static void not_found(kp_resp *resp, const kp_config *cfg)
{
    not_found_text(resp, cfg, "404 not found\n");
}

/* Each app on its own origin, and this Host names none: say where apps are. */
static void unknown_host(kp_resp *resp, const kp_config *cfg, const char *host)
{
    kp_buf body = KP_BUF_INIT;
    kp_buf_printf(&body, "404 no app at the host name %.100s: each app is served at its own host, %s\n",
                  host ? host : "(no Host header)", cfg->apps_url);
    not_found_text(resp, cfg, body.data ? body.data : "404 not found\n");
    kp_buf_free(&body);
}

static void redirect(kp_resp *resp, const kp_config *cfg, const char *path)
{
    char location[512];
    snprintf(location, sizeof location, "%s/", path);
    kp_resp_text(resp, 301, "text/plain; charset=utf-8", "moved\n", 6);
    kp_headers_set(&resp->headers, "Location", location);
    common_headers(resp, cfg);
}

static int valid_project_id(const char *s, size_t len)
{
    if (len < 5 || len >= KP_ID_MAX || strncmp(s, "prj_", 4) != 0)
        return 0;
    for (size_t i = 4; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
            return 0;
    return 1;
}

/* "@v12" -> 12; 0 when the segment is not a version (then it is part of
 * the file path: an app may have a folder named "v2"). */
static int64_t parse_version_segment(const char *s, size_t len)
{
    size_t plen = strlen(KP_GEN_VERSION_SEGMENT);
    if (len <= plen || len > plen + 11 || strncmp(s, KP_GEN_VERSION_SEGMENT, plen) != 0 || s[plen] < '1' ||
        s[plen] > '9')
        return 0;
    int64_t n = 0;
    for (size_t i = plen; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        n = n * 10 + (s[i] - '0');
    }
    return n;
}

/* Splits what follows the app's root ("@v{n}/file", "file", "" ...) into
 * out's version and file. Returns 0, 1 when it must redirect to path + "/",
 * -1 for 404. */
static int parse_in_app(const char *rest, app_path *out)
{
    size_t seglen = strcspn(rest, "/");
    int64_t n = parse_version_segment(rest, seglen);
    if (n > 0) {
        out->version = n;
        if (rest[seglen] == '\0')
            return 1;
        rest += seglen + 1;
    }
    size_t len = strlen(rest);
    if (len > MAX_FILE_PATH)
        return -1;
    snprintf(out->file, sizeof out->file, "%s%s", rest, (len == 0 || rest[len - 1] == '/') ? "index.html" : "");
    kp_err err = {0};
    return kp_fileblocks_check_path(out->file, strlen(out->file), MAX_FILE_PATH, &err) == KP_OK ? 0 : -1;
}

/* The path form: "/{project_id}/{in app}". Returns as parse_in_app. */
static int parse_path(const char *path, app_path *out)
{
    memset(out, 0, sizeof *out);
    if (!path || path[0] != '/')
        return -1;
    const char *id = path + 1;
    size_t idlen = strcspn(id, "/");
    if (!valid_project_id(id, idlen))
        return -1;
    memcpy(out->project_id, id, idlen);
    if (id[idlen] == '\0')
        return 1;
    return parse_in_app(id + idlen + 1, out);
}

/* The host form: the project from the Host header, "/{in app}" from the path.
 * Returns as parse_in_app, or -2 when the Host names no project. */
static int parse_host_and_path(const kp_config *cfg, const char *host, const char *path, app_path *out)
{
    memset(out, 0, sizeof *out);
    if (kp_apps_url_project_of_host(cfg->apps_url, host, out->project_id, sizeof out->project_id) != 0)
        return -2;
    if (!path || path[0] != '/')
        return -1;
    return parse_in_app(path + 1, out);
}

/* The ready version meant (files_json and n); -1 when there is none. */
static int resolve_version(kp_store *s, const app_path *ap, kp_version *v)
{
    kp_project p;
    kp_err err = {0};
    memset(v, 0, sizeof *v);
    if (s->ops->project_get(s, ap->project_id, &p, &err) != KP_OK)
        return -1;
    int64_t n = ap->version ? ap->version : p.latest_ready;
    if (n <= 0 || s->ops->version_get(s, p.id, n, v, &err) != KP_OK)
        return -1;
    if (v->status != KP_VER_READY) {
        kp_version_clear(v);
        return -1;
    }
    return 0;
}

static int in_manifest(const char *files_json, const char *path)
{
    json_t *files = json_loads(files_json ? files_json : "[]", 0, NULL);
    size_t i;
    json_t *f;
    int found = 0;
    json_array_foreach(files, i, f)
    {
        const char *p = json_string_value(json_object_get(f, "path"));
        if (p && strcmp(p, path) == 0) {
            found = 1;
            break;
        }
    }
    json_decref(files);
    return found;
}

static void etag_from_hash(const unsigned char hash[ETAG_HASH_BYTES], char out[40])
{
    char hex[2 * ETAG_HASH_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, hash, ETAG_HASH_BYTES);
    snprintf(out, 40, "\"%s\"", hex);
}

static void etag_of(const kp_buf *data, char out[40])
{
    unsigned char hash[ETAG_HASH_BYTES];
    crypto_generichash(hash, sizeof hash, (const unsigned char *)(data->data ? data->data : ""), data->len, NULL, 0);
    etag_from_hash(hash, out);
}

/* The same ETag as etag_of, read from len bytes of fd at offset a chunk at a time. */
static int etag_of_file(int fd, int64_t offset, int64_t len, char out[40])
{
    crypto_generichash_state st;
    unsigned char chunk[ETAG_CHUNK], hash[ETAG_HASH_BYTES];
    crypto_generichash_init(&st, NULL, 0, sizeof hash);
    while (len > 0) {
        ssize_t n = pread(fd, chunk, len < (int64_t)sizeof chunk ? (size_t)len : sizeof chunk, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        crypto_generichash_update(&st, chunk, (unsigned long long)n);
        offset += n;
        len -= n;
    }
    crypto_generichash_final(&st, hash, sizeof hash);
    etag_from_hash(hash, out);
    return 0;
}

/* Fills resp with the blob (200 with its bytes, or 304 when if_none_match
 * matches) and its ETag. A store that keeps ETags (S3: get_tagged) gives its
 * own, and is asked the condition itself, so a 304 moves no bytes from it;
 * otherwise the ETag is a BLAKE2b-128 of the bytes. A blob store that can
 * open files hands the file itself to the host (sent without a copy per
 * client); else it is read. */
static kp_status serve_blob(kp_blob *blob, const char *key, const char *ct, const char *if_none_match, kp_resp *resp,
                            kp_err *err)
{
    char etag[KP_BLOB_ETAG_MAX];
    kp_status rc;
    if (blob->ops->get_tagged) {
        kp_buf data = KP_BUF_INIT;
        int not_modified = 0;
        rc = blob->ops->get_tagged(blob, key, if_none_match, &data, etag, &not_modified, err);
        if (rc != KP_OK) {
            kp_buf_free(&data);
            return rc;
        }
        if (not_modified || kp_etag_matches(if_none_match, etag))
            resp->status = 304;
        else
            kp_resp_text(resp, 200, ct, data.data ? data.data : "", data.len);
        kp_buf_free(&data);
    } else if (blob->ops->open_read) {
        int fd = -1;
        int64_t offset = 0, len = 0;
        rc = blob->ops->open_read(blob, key, &fd, &offset, &len, err);
        if (rc != KP_OK)
            return rc;
        if (etag_of_file(fd, offset, len, etag) != 0) {
            close(fd);
            return kp_err_set(err, KP_EIO, "cannot read %s", key);
        }
        if (kp_etag_matches(if_none_match, etag)) {
            close(fd);
            resp->status = 304;
        } else {
            kp_resp_set_file(resp, 200, ct, fd, offset, len);
        }
    } else {
        kp_buf data = KP_BUF_INIT;
        rc = blob->ops->get(blob, key, &data, NULL, err);
        if (rc != KP_OK) {
            kp_buf_free(&data);
            return rc;
        }
        etag_of(&data, etag);
        if (kp_etag_matches(if_none_match, etag))
            resp->status = 304;
        else
            kp_resp_text(resp, 200, ct, data.data ? data.data : "", data.len);
        kp_buf_free(&data);
    }
    kp_headers_set(&resp->headers, "ETag", etag);
    return KP_OK;
}

void kp_apps_dispatch(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    app_path ap;
    kp_version v;
    kp_err err = {0};
    req->route = ROUTE_LABEL;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        kp_resp_text(resp, 405, "text/plain; charset=utf-8", "405 method not allowed\n", 23);
        kp_headers_set(&resp->headers, "Allow", "GET, HEAD");
        common_headers(resp, ctx->app ? ctx->app->cfg : NULL);
        return;
    }
    kp_gen *g = ctx->app ? (kp_gen *)ctx->app->gen : NULL;
    const kp_config *cfg = ctx->app ? ctx->app->cfg : NULL;
    int own_origin = cfg && kp_apps_url_per_project(cfg->apps_url);
    const char *host = kp_req_header(req, "Host");
    int parsed = own_origin ? parse_host_and_path(cfg, host, req->path, &ap) : parse_path(req->path, &ap);
    if (parsed == -2) {
        unknown_host(resp, cfg, host);
        return;
    }
    if (parsed == 1) {
        redirect(resp, cfg, req->path);
        return;
    }
    if (parsed != 0 || !g || !ctx->store || resolve_version(ctx->store, &ap, &v) != 0) {
        not_found(resp, cfg);
        return;
    }
    int listed = in_manifest(v.files_json, ap.file);
    int64_t n = v.n;
    kp_version_clear(&v);
    if (!listed) {
        not_found(resp, cfg);
        return;
    }
    char key[KP_BLOB_KEY_MAX + 1];
    snprintf(key, sizeof key, "apps/%s/v%lld/%s", ap.project_id, (long long)n, ap.file);
    kp_status rc =
        serve_blob(kp_gen_blob(g), key, kp_gen_content_type(ap.file), kp_req_header(req, "If-None-Match"), resp, &err);
    if (rc != KP_OK) {
        kp_resp_free(resp);
        memset(resp, 0, sizeof *resp);
        if (rc == KP_ENOTFOUND)
            not_found(resp, cfg);
        else
            storage_failed(resp, rc, key, &err);
        return;
    }
    kp_headers_set(&resp->headers, "Cache-Control", ap.version ? "public, max-age=31536000, immutable" : "no-cache");
    common_headers(resp, cfg);
}
