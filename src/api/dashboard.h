/*
 * dashboard.h - the web dashboard (src/web/) on the API's origin.
 *
 * The dashboard's files are compiled into the koumpa binary: at build time
 * tools/webembed.c turns every file under src/web/ into a kp_web_file (its
 * bytes, a gzip copy, its Content-Type and a strong ETag) in a generated
 * table, build/gen/web_files.c, linked into build/koumpa only (the Lambda
 * bootstrap serves no dashboard: on AWS it is on S3 + CloudFront).
 * `koumpa serve` makes a kp_dashboard of that table (or, for development, of
 * a directory read per request: KOUMPA_WEB_DIR) and puts it in kp_app.
 *
 * Every dashboard response (a file, a 304, /config.json) carries the
 * dashboard's Content-Security-Policy (api/csp.h, computed once from the
 * configuration), X-Content-Type-Options: nosniff, Referrer-Policy:
 * no-referrer and Cache-Control: no-cache (the URLs are not fingerprinted:
 * the browser revalidates with If-None-Match and gets a 304). A file goes
 * gzip-compressed when the client accepts gzip (Vary: Accept-Encoding; each
 * encoding has its own ETag). Paths the dashboard does not have are not
 * answered here: the router's JSON 404 answers them.
 *
 * Ownership: a kp_dashboard borrows the table (static data) and copies what
 * it needs of the configuration; free with kp_dashboard_free(). It is
 * read-only after kp_dashboard_new(), so every HTTP thread may use it.
 */
#ifndef KP_DASHBOARD_H
#define KP_DASHBOARD_H

#include <stddef.h>

#include "api/http.h"
#include "core/config.h"

/* One embedded file; the generated table is terminated by path == NULL. */
typedef struct kp_web_file {
    const char *path;         /* relative to src/web/: "index.html", "js/main.js" */
    const char *content_type; /* kp_gen_content_type(path) */
    const unsigned char *data;
    size_t len;
    const unsigned char *gzip; /* NULL when compressing does not make it smaller */
    size_t gzip_len;
    const char *etag; /* strong: "\"<BLAKE2b-128 of data, hex>\"" (the gzip copy's: + "-gz") */
    const char *etag_gzip;
} kp_web_file;

/* The generated table (build/gen/web_files.c, linked into build/koumpa only). */
extern const kp_web_file kp_web_files[];

typedef struct kp_dashboard kp_dashboard;

/*
 * A dashboard serving files (the embedded table) or, when cfg->web_dir is
 * set, the files of that directory, read on each request (development).
 * KP_EINVAL when a URL of the configuration cannot go in the policy.
 */
kp_status kp_dashboard_new(const kp_config *cfg, const kp_web_file *files, kp_dashboard **out, kp_err *err);
void kp_dashboard_free(kp_dashboard *d);

/* The Content-Security-Policy every dashboard response carries. */
const char *kp_dashboard_csp(const kp_dashboard *d);

/*
 * Answers a GET or HEAD of the dashboard's file path ("index.html",
 * "js/main.js": no leading '/'): 200 with its bytes (gzip when req accepts
 * it), or 304 when If-None-Match names its ETag. Returns 0 without touching
 * resp when there is no such file.
 */
int kp_dashboard_serve(const kp_dashboard *d, const kp_req *req, const char *path, kp_resp *resp);

/* Answers GET /config.json: {"api_base", "stream_base", "apps_url", "oauth"}
 * (docs/api/openapi.yaml). */
void kp_dashboard_config(const kp_dashboard *d, const kp_req *req, kp_resp *resp);

/* 1 when an Accept-Encoding value accepts gzip (a gzip, x-gzip or * coding
 * whose q is not 0). Exposed for tests. */
int kp_dashboard_accepts_gzip(const char *accept_encoding);

#endif
