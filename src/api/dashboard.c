/*
 * dashboard.c - see dashboard.h. Everything that depends on the
 * configuration (the policy, config.json and its ETag) is computed once in
 * kp_dashboard_new(); a request only looks its file up (a linear scan of a
 * few dozen entries) and copies the chosen bytes into the response.
 *
 * KOUMPA_WEB_DIR (development only) reads the file on every request, checks
 * its path with the rules generated apps' paths follow (gen/fileblocks.h: no
 * "..", no absolute paths) and refuses hidden ones, hashes it for the ETag, and sends it
 * uncompressed, so an edited file shows on the next reload without a build.
 */
#include "api/dashboard.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/csp.h"
#include "gen/fileblocks.h"
#include "gen/generator.h"

#define ETAG_HASH_BYTES 16
#define ETAG_MAX 48
#define WEB_DIR_MAX_PATH 200
#define WEB_DIR_MAX_FILE (8 * 1024 * 1024)

struct kp_dashboard {
    const kp_web_file *files; /* NULL: web_dir */
    char *web_dir;
    char *csp;
    char *config_json; /* GET /config.json's body */
    char config_etag[ETAG_MAX];
};

static void etag_of(const void *data, size_t len, char out[ETAG_MAX])
{
    unsigned char hash[ETAG_HASH_BYTES];
    char hex[2 * ETAG_HASH_BYTES + 1];
    crypto_generichash(hash, sizeof hash, data, len, NULL, 0);
    sodium_bin2hex(hex, sizeof hex, hash, sizeof hash);
    out[0] = '"';
    memcpy(out + 1, hex, 2 * ETAG_HASH_BYTES);
    out[2 * ETAG_HASH_BYTES + 1] = '"';
    out[2 * ETAG_HASH_BYTES + 2] = '\0';
}

/* {"api_base", "stream_base", "apps_url", "oauth"}: the API and its streams
 * are on this origin (""); oauth is null unless sign-in goes through a
 * provider's hosted UI. */
static json_t *config_doc(const kp_config *cfg)
{
    json_t *oauth = json_null();
    if (cfg->oauth_authorize_url && cfg->oauth_token_url && cfg->oauth_client_id) {
        oauth = json_pack("{s:s,s:s,s:s,s:s}", "authorize_url", cfg->oauth_authorize_url, "token_url",
                          cfg->oauth_token_url, "client_id", cfg->oauth_client_id, "scopes", cfg->oauth_scopes);
        if (oauth && cfg->oauth_logout_url)
            json_object_set_new(oauth, "logout_url", json_string(cfg->oauth_logout_url));
    }
    return json_pack("{s:s,s:s,s:s,s:o}", "api_base", "", "stream_base", "", "apps_url", cfg->apps_url, "oauth", oauth);
}

static kp_status build_csp(const kp_config *cfg, char **out, kp_err *err)
{
    int oauth = cfg->oauth_authorize_url && cfg->oauth_token_url && cfg->oauth_client_id;
    kp_csp_sources src = {
        .api_base = "",
        .stream_base = "",
        .apps_url = cfg->apps_url,
        .oauth_authorize_url = oauth ? cfg->oauth_authorize_url : NULL,
        .oauth_token_url = oauth ? cfg->oauth_token_url : NULL,
        .oauth_logout_url = oauth ? cfg->oauth_logout_url : NULL,
    };
    kp_buf b = KP_BUF_INIT;
    kp_status rc = kp_csp_dashboard(&src, &b, err);
    if (rc == KP_OK && !(*out = kp_buf_steal(&b)))
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_buf_free(&b);
    return rc;
}

kp_status kp_dashboard_new(const kp_config *cfg, const kp_web_file *files, kp_dashboard **out, kp_err *err)
{
    kp_dashboard *d = calloc(1, sizeof *d);
    json_t *doc = config_doc(cfg);
    kp_status rc = KP_OK;
    if (!d || !doc) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    d->files = cfg->web_dir ? NULL : files;
    if (cfg->web_dir && !(d->web_dir = strdup(cfg->web_dir))) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    rc = build_csp(cfg, &d->csp, err);
    if (rc != KP_OK)
        goto cleanup;
    if (!(d->config_json = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER))) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    etag_of(d->config_json, strlen(d->config_json), d->config_etag);
    *out = d;
    d = NULL;
cleanup:
    json_decref(doc);
    kp_dashboard_free(d);
    return rc;
}

void kp_dashboard_free(kp_dashboard *d)
{
    if (!d)
        return;
    free(d->web_dir);
    free(d->csp);
    free(d->config_json);
    free(d);
}

const char *kp_dashboard_csp(const kp_dashboard *d)
{
    return d->csp;
}

/* One coding of an Accept-Encoding list: its name and whether its q is not 0. */
static int coding_accepted(const char *item, size_t len)
{
    const char *semi = memchr(item, ';', len);
    size_t name_len = semi ? (size_t)(semi - item) : len;
    while (name_len > 0 && (item[name_len - 1] == ' ' || item[name_len - 1] == '\t'))
        name_len--;
    int named = (name_len == 4 && strncasecmp(item, "gzip", 4) == 0) ||
                (name_len == 6 && strncasecmp(item, "x-gzip", 6) == 0) || (name_len == 1 && item[0] == '*');
    if (!named)
        return 0;
    for (const char *p = semi; p && p < item + len; p = memchr(p + 1, ';', (size_t)(item + len - p - 1))) {
        const char *v = p + 1;
        while (v < item + len && (*v == ' ' || *v == '\t'))
            v++;
        if (item + len - v >= 2 && (v[0] == 'q' || v[0] == 'Q') && v[1] == '=')
            return strtod(v + 2, NULL) > 0; /* q=0, q=0.0, q=0.000: not acceptable */
    }
    return 1;
}

int kp_dashboard_accepts_gzip(const char *accept_encoding)
{
    const char *p = accept_encoding;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t len = strcspn(p, ",");
        if (len > 0 && coding_accepted(p, len))
            return 1;
        p += len;
    }
    return 0;
}

/* What every dashboard response carries. */
static void policy_headers(const kp_dashboard *d, kp_resp *resp)
{
    kp_headers_set(&resp->headers, "Content-Security-Policy", d->csp);
    kp_headers_set(&resp->headers, "X-Content-Type-Options", "nosniff");
    kp_headers_set(&resp->headers, "Referrer-Policy", "no-referrer");
    kp_headers_set(&resp->headers, "Cache-Control", "no-cache");
}

/* 200 with body (or 304 when If-None-Match names etag), with the headers. */
static void respond(const kp_dashboard *d, const kp_req *req, const char *content_type, const void *body, size_t len,
                    const char *etag, kp_resp *resp)
{
    if (kp_etag_matches(kp_req_header(req, "If-None-Match"), etag))
        resp->status = 304;
    else
        kp_resp_text(resp, 200, content_type, body, len);
    kp_headers_set(&resp->headers, "ETag", etag);
    policy_headers(d, resp);
}

static const kp_web_file *find_file(const kp_web_file *files, const char *path)
{
    for (const kp_web_file *f = files; f && f->path; f++)
        if (strcmp(f->path, path) == 0)
            return f;
    return NULL;
}

static void serve_embedded(const kp_dashboard *d, const kp_req *req, const kp_web_file *f, kp_resp *resp)
{
    if (f->gzip && kp_dashboard_accepts_gzip(kp_req_header(req, "Accept-Encoding"))) {
        respond(d, req, f->content_type, f->gzip, f->gzip_len, f->etag_gzip, resp);
        if (resp->status == 200)
            kp_headers_set(&resp->headers, "Content-Encoding", "gzip");
    } else {
        respond(d, req, f->content_type, f->data, f->len, f->etag, resp);
    }
    if (f->gzip)
        kp_headers_set(&resp->headers, "Vary", "Accept-Encoding");
}

/* A path the development directory may serve: the apps' path rules, and no
 * hidden file or folder (.git, editors' swap files). */
static int dev_path_ok(const char *path)
{
    kp_err err = {0};
    if (kp_fileblocks_check_path(path, strlen(path), WEB_DIR_MAX_PATH, &err) != KP_OK || path[0] == '.')
        return 0;
    return strstr(path, "/.") == NULL;
}

/* path's bytes under the development directory; -1 when it has no such file. */
static int read_dev_file(const char *dir, const char *path, kp_buf *out)
{
    if (!dev_path_ok(path))
        return -1;
    kp_buf full = KP_BUF_INIT;
    kp_buf_printf(&full, "%s/%s", dir, path);
    int fd = full.data ? open(full.data, O_RDONLY | O_CLOEXEC) : -1;
    kp_buf_free(&full);
    struct stat st;
    int rc = -1;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= WEB_DIR_MAX_FILE &&
        kp_buf_reserve(out, (size_t)st.st_size + 1) == 0) {
        rc = 0;
        while (rc == 0 && out->len < (size_t)st.st_size) {
            ssize_t n = read(fd, out->data + out->len, (size_t)st.st_size - out->len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                rc = -1;
            else
                out->len += (size_t)n;
        }
        out->data[out->len] = '\0';
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

static int serve_dev(const kp_dashboard *d, const kp_req *req, const char *path, kp_resp *resp)
{
    kp_buf data = KP_BUF_INIT;
    char etag[ETAG_MAX];
    if (read_dev_file(d->web_dir, path, &data) != 0) {
        kp_buf_free(&data);
        return 0;
    }
    etag_of(data.data ? data.data : "", data.len, etag);
    respond(d, req, kp_gen_content_type(path), data.data ? data.data : "", data.len, etag, resp);
    kp_buf_free(&data);
    return 1;
}

int kp_dashboard_serve(const kp_dashboard *d, const kp_req *req, const char *path, kp_resp *resp)
{
    if (!d || !path)
        return 0;
    if (d->web_dir)
        return serve_dev(d, req, path, resp);
    const kp_web_file *f = find_file(d->files, path);
    if (!f)
        return 0;
    serve_embedded(d, req, f, resp);
    return 1;
}

void kp_dashboard_config(const kp_dashboard *d, const kp_req *req, kp_resp *resp)
{
    respond(d, req, "application/json", d->config_json, strlen(d->config_json), d->config_etag, resp);
}
