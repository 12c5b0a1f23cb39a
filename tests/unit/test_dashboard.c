/*
 * test_dashboard.c - the web dashboard on the API origin (api/dashboard.c,
 * api/csp.c, api/dashboard_routes.c): the Content-Security-Policy built from
 * the configuration (origins, the {project} wildcard, OAuth endpoints),
 * Accept-Encoding, a file served from a table (identity or gzip, ETags and
 * 304s, the headers every response carries), /config.json with and without
 * OAuth, the development directory (KOUMPA_WEB_DIR), and the router's
 * fallback that serves files while /v1/ and unknown paths keep the JSON 404.
 * The table here is the test's own; tests/integration/dashboard.test.mjs
 * checks the generated one in the real binary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "api/csp.h"
#include "api/dashboard.h"
#include "api/handlers.h"
#include "testutil.h"

#define APPS "http://127.0.0.1:8081"

static const unsigned char index_html[] = "<!doctype html><title>x</title>";
static const unsigned char index_gz[] = "GZ-INDEX";
static const unsigned char main_js[] = "export {};";

static const kp_web_file files[] = {
    {"index.html", "text/html; charset=utf-8", index_html, sizeof index_html - 1, index_gz, sizeof index_gz - 1,
     "\"aaa\"", "\"aaa-gz\""},
    {"js/main.js", "text/javascript; charset=utf-8", main_js, sizeof main_js - 1, NULL, 0, "\"bbb\"", "\"bbb-gz\""},
    {NULL, NULL, NULL, 0, NULL, 0, NULL, NULL},
};

static kp_config base_config(void)
{
    kp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.apps_url = APPS;
    cfg.oauth_scopes = "openid email";
    return cfg;
}

static kp_dashboard *new_dashboard(const kp_config *cfg)
{
    kp_dashboard *d = NULL;
    kp_err err = {0};
    if (kp_dashboard_new(cfg, files, &d, &err) != KP_OK)
        fail_msg("kp_dashboard_new: %s", err.msg);
    return d;
}

/* ---- the policy ---- */

static void origin_is(const char *url, const char *want)
{
    kp_buf b = KP_BUF_INIT;
    kp_err err = {0};
    if (kp_csp_origin(url, &b, &err) != KP_OK)
        fail_msg("%s: %s", url, err.msg);
    assert_string_equal(kp_buf_cstr(&b), want);
    kp_buf_free(&b);
}

static void origin_refused(const char *url, const char *why)
{
    kp_buf b = KP_BUF_INIT;
    kp_err err = {0};
    assert_int_equal(kp_csp_origin(url, &b, &err), KP_EINVAL);
    assert_int_equal(b.len, 0);
    if (!strstr(err.msg, why))
        fail_msg("%s: \"%s\" does not say \"%s\"", url, err.msg, why);
    kp_buf_free(&b);
}

static void test_origins(void **state)
{
    (void)state;
    origin_is("http://127.0.0.1:8081", "http://127.0.0.1:8081");
    origin_is("https://Apps.Example.com/some/path?q=1", "https://apps.example.com");
    origin_is("http://[::1]:8081/", "http://[::1]:8081");
    /* one origin per project: the wildcard host form */
    origin_is("http://{project}.localhost:8081", "http://*.localhost:8081");
    origin_is("https://{project}.apps.example.com/", "https://*.apps.example.com");
    origin_is("https://app-{project}.example.com", "https://*.example.com");
    origin_is("https://x.{project}.example.com", "https://*.example.com");
    /* a {project} in the path is not a host */
    origin_is("http://127.0.0.1:8081/{project}/", "http://127.0.0.1:8081");
    origin_refused("ftp://example.com", "expected an http(s) URL");
    origin_refused("//example.com", "expected an http(s) URL");
    origin_refused("http://", "no host");
    origin_refused("http://user@example.com", "CSP source cannot hold");
    origin_refused("http://a.example.com;script-src", "CSP source cannot hold");
    origin_refused("http://a b.example.com", "CSP source cannot hold");
    origin_refused("http://{project}:8081", "parent domain");
    origin_refused("http://{project}", "parent domain");
}

static char *csp_of(const kp_csp_sources *src)
{
    kp_buf b = KP_BUF_INIT;
    kp_err err = {0};
    if (kp_csp_dashboard(src, &b, &err) != KP_OK)
        fail_msg("kp_csp_dashboard: %s", err.msg);
    return kp_buf_steal(&b);
}

static void test_policy_same_origin(void **state)
{
    (void)state;
    kp_csp_sources src = {.api_base = "", .stream_base = "", .apps_url = APPS};
    char *csp = csp_of(&src);
    assert_string_equal(csp, "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                             "connect-src 'self'; frame-src http://127.0.0.1:8081; form-action 'self'; "
                             "base-uri 'none'; frame-ancestors 'none'");
    free(csp);
    src.apps_url = NULL; /* nothing to frame: none */
    csp = csp_of(&src);
    assert_non_null(strstr(csp, "; frame-src 'none';"));
    free(csp);
}

static void test_policy_other_origins_and_oauth(void **state)
{
    (void)state;
    kp_csp_sources src = {
        .api_base = "https://api.example.com",
        .stream_base = "https://abc.lambda-url.eu-west-3.on.aws/",
        .apps_url = "https://{project}.apps.example.com",
        .oauth_authorize_url = "https://auth.example.com/oauth2/authorize",
        .oauth_token_url = "https://auth.example.com/oauth2/token",
        .oauth_logout_url = "https://auth.example.com/logout",
    };
    char *csp = csp_of(&src);
    assert_non_null(strstr(csp, "; connect-src 'self' https://api.example.com "
                                "https://abc.lambda-url.eu-west-3.on.aws https://auth.example.com; "));
    assert_non_null(strstr(csp, "; frame-src https://*.apps.example.com; "));
    /* the authorize and logout pages share an origin: listed once */
    assert_non_null(strstr(csp, "; form-action 'self' https://auth.example.com; "));
    free(csp);
    /* the token endpoint on the API's origin: once */
    src.oauth_token_url = "https://API.example.com/token";
    csp = csp_of(&src);
    assert_non_null(strstr(csp, "; connect-src 'self' https://api.example.com https://abc.lambda-url"));
    assert_null(strstr(csp, "https://api.example.com https://api.example.com"));
    free(csp);
    src.stream_base = "javascript:alert(1)";
    kp_buf b = KP_BUF_INIT;
    kp_err err = {0};
    assert_int_equal(kp_csp_dashboard(&src, &b, &err), KP_EINVAL);
    kp_buf_free(&b);
}

static void test_accepts_gzip(void **state)
{
    (void)state;
    const char *yes[] = {"gzip",
                         "GZIP",
                         "deflate, gzip",
                         "gzip;q=0.5",
                         "br;q=1.0, gzip ; q=0.1",
                         "x-gzip",
                         "*",
                         "identity, *;q=0.2",
                         "gzip, deflate, br, zstd"};
    const char *no[] = {"", "br", "identity", "gzip;q=0", "gzip; q=0.000", "*;q=0", "gzipx", "deflate, br;q=1"};
    assert_false(kp_dashboard_accepts_gzip(NULL));
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!kp_dashboard_accepts_gzip(yes[i]))
            fail_msg("\"%s\" accepts gzip", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (kp_dashboard_accepts_gzip(no[i]))
            fail_msg("\"%s\" does not accept gzip", no[i]);
}

/* ---- serving ---- */

/* Serves path with an optional Accept-Encoding and If-None-Match; returns what kp_dashboard_serve did. */
static int serve(const kp_dashboard *d, const char *path, const char *accept, const char *inm, kp_resp *resp)
{
    kp_req req;
    memset(&req, 0, sizeof req);
    memset(resp, 0, sizeof *resp);
    req.method = "GET";
    req.path = path;
    if (accept)
        kp_headers_add(&req.headers, "Accept-Encoding", accept);
    if (inm)
        kp_headers_add(&req.headers, "If-None-Match", inm);
    int served = kp_dashboard_serve(d, &req, path, resp);
    kp_headers_free(&req.headers);
    return served;
}

static const char *header(const kp_resp *resp, const char *name)
{
    return kp_headers_get(&resp->headers, name);
}

static void assert_policy_headers(const kp_dashboard *d, const kp_resp *resp)
{
    assert_string_equal(header(resp, "Content-Security-Policy"), kp_dashboard_csp(d));
    assert_string_equal(header(resp, "X-Content-Type-Options"), "nosniff");
    assert_string_equal(header(resp, "Referrer-Policy"), "no-referrer");
    assert_string_equal(header(resp, "Cache-Control"), "no-cache");
}

static void test_serves_identity_and_gzip(void **state)
{
    (void)state;
    kp_config cfg = base_config();
    kp_dashboard *d = new_dashboard(&cfg);
    kp_resp resp;

    assert_true(serve(d, "index.html", NULL, NULL, &resp));
    assert_int_equal(resp.status, 200);
    assert_string_equal(kp_buf_cstr(&resp.body), (const char *)index_html);
    assert_string_equal(header(&resp, "Content-Type"), "text/html; charset=utf-8");
    assert_string_equal(header(&resp, "ETag"), "\"aaa\"");
    assert_string_equal(header(&resp, "Vary"), "Accept-Encoding");
    assert_null(header(&resp, "Content-Encoding"));
    assert_policy_headers(d, &resp);
    kp_resp_free(&resp);

    assert_true(serve(d, "index.html", "gzip, br", NULL, &resp));
    assert_int_equal(resp.status, 200);
    assert_string_equal(kp_buf_cstr(&resp.body), (const char *)index_gz);
    assert_string_equal(header(&resp, "Content-Encoding"), "gzip");
    assert_string_equal(header(&resp, "ETag"), "\"aaa-gz\"");
    assert_string_equal(header(&resp, "Vary"), "Accept-Encoding");
    assert_policy_headers(d, &resp);
    kp_resp_free(&resp);

    /* a file without a gzip copy: always the bytes, no Vary */
    assert_true(serve(d, "js/main.js", "gzip", NULL, &resp));
    assert_int_equal(resp.status, 200);
    assert_string_equal(kp_buf_cstr(&resp.body), (const char *)main_js);
    assert_null(header(&resp, "Content-Encoding"));
    assert_null(header(&resp, "Vary"));
    assert_string_equal(header(&resp, "Content-Type"), "text/javascript; charset=utf-8");
    kp_resp_free(&resp);

    assert_false(serve(d, "missing.js", NULL, NULL, &resp));
    assert_int_equal(resp.status, 0);
    assert_int_equal(resp.headers.n, 0);
    assert_false(serve(d, "/index.html", NULL, NULL, &resp));
    assert_false(serve(d, "", NULL, NULL, &resp));
    kp_dashboard_free(d);
}

static void test_etags_and_304(void **state)
{
    (void)state;
    kp_config cfg = base_config();
    kp_dashboard *d = new_dashboard(&cfg);
    kp_resp resp;

    assert_true(serve(d, "index.html", NULL, "\"aaa\"", &resp));
    assert_int_equal(resp.status, 304);
    assert_int_equal(resp.body.len, 0);
    assert_string_equal(header(&resp, "ETag"), "\"aaa\"");
    assert_policy_headers(d, &resp);
    kp_resp_free(&resp);

    /* each encoding has its own tag: the identity tag does not validate the gzip copy */
    assert_true(serve(d, "index.html", "gzip", "\"aaa\"", &resp));
    assert_int_equal(resp.status, 200);
    assert_string_equal(header(&resp, "Content-Encoding"), "gzip");
    kp_resp_free(&resp);
    assert_true(serve(d, "index.html", "gzip", "\"zzz\", W/\"aaa-gz\"", &resp));
    assert_int_equal(resp.status, 304);
    assert_null(header(&resp, "Content-Encoding"));
    assert_string_equal(header(&resp, "Vary"), "Accept-Encoding");
    kp_resp_free(&resp);
    assert_true(serve(d, "index.html", NULL, "\"other\"", &resp));
    assert_int_equal(resp.status, 200);
    kp_resp_free(&resp);
    kp_dashboard_free(d);
}

/* ---- /config.json ---- */

static json_t *config_json(const kp_config *cfg, kp_dashboard **out)
{
    kp_req req;
    kp_resp resp;
    memset(&req, 0, sizeof req);
    memset(&resp, 0, sizeof resp);
    req.method = "GET";
    req.path = "/config.json";
    *out = new_dashboard(cfg);
    kp_dashboard_config(*out, &req, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(header(&resp, "Content-Type"), "application/json");
    assert_non_null(header(&resp, "ETag"));
    assert_policy_headers(*out, &resp);
    json_t *doc = json_loadb(resp.body.data, resp.body.len, 0, NULL);
    assert_non_null(doc);
    kp_resp_free(&resp);
    return doc;
}

static void test_config_without_oauth(void **state)
{
    (void)state;
    kp_config cfg = base_config();
    kp_dashboard *d = NULL;
    json_t *doc = config_json(&cfg, &d);
    assert_int_equal(json_object_size(doc), 4);
    assert_string_equal(json_string_value(json_object_get(doc, "api_base")), "");
    assert_string_equal(json_string_value(json_object_get(doc, "stream_base")), "");
    assert_string_equal(json_string_value(json_object_get(doc, "apps_url")), APPS);
    assert_true(json_is_null(json_object_get(doc, "oauth")));
    json_decref(doc);
    kp_dashboard_free(d);
}

static void test_config_with_oauth(void **state)
{
    (void)state;
    kp_config cfg = base_config();
    cfg.apps_url = "http://{project}.localhost:8081";
    cfg.oauth_authorize_url = "https://auth.example.com/oauth2/authorize";
    cfg.oauth_token_url = "https://tokens.example.com/oauth2/token";
    cfg.oauth_client_id = "client-1";
    kp_dashboard *d = NULL;
    json_t *doc = config_json(&cfg, &d);
    json_t *oauth = json_object_get(doc, "oauth");
    assert_string_equal(json_string_value(json_object_get(doc, "apps_url")), "http://{project}.localhost:8081");
    assert_string_equal(json_string_value(json_object_get(oauth, "authorize_url")), cfg.oauth_authorize_url);
    assert_string_equal(json_string_value(json_object_get(oauth, "token_url")), cfg.oauth_token_url);
    assert_string_equal(json_string_value(json_object_get(oauth, "client_id")), "client-1");
    assert_string_equal(json_string_value(json_object_get(oauth, "scopes")), "openid email");
    assert_null(json_object_get(oauth, "logout_url")); /* optional: absent when unset */
    const char *csp = kp_dashboard_csp(d);
    assert_non_null(strstr(csp, "connect-src 'self' https://tokens.example.com;"));
    assert_non_null(strstr(csp, "form-action 'self' https://auth.example.com;"));
    assert_non_null(strstr(csp, "frame-src http://*.localhost:8081;"));
    json_decref(doc);
    kp_dashboard_free(d);

    cfg.oauth_logout_url = "https://logout.example.com/logout";
    doc = config_json(&cfg, &d);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "oauth"), "logout_url")),
                        cfg.oauth_logout_url);
    assert_non_null(strstr(kp_dashboard_csp(d), "form-action 'self' https://auth.example.com "
                                                "https://logout.example.com;"));
    json_decref(doc);
    kp_dashboard_free(d);

    /* without a client id there is no sign-in through the provider, nor its origins in the policy */
    cfg.oauth_client_id = NULL;
    doc = config_json(&cfg, &d);
    assert_true(json_is_null(json_object_get(doc, "oauth")));
    assert_null(strstr(kp_dashboard_csp(d), "example.com"));
    json_decref(doc);
    kp_dashboard_free(d);
}

static void test_unusable_url_is_refused(void **state)
{
    (void)state;
    kp_config cfg = base_config();
    cfg.apps_url = "http://{project}:8081";
    kp_dashboard *d = NULL;
    kp_err err = {0};
    assert_int_equal(kp_dashboard_new(&cfg, files, &d, &err), KP_EINVAL);
    assert_null(d);
    assert_non_null(strstr(err.msg, "{project}"));
}

/* ---- KOUMPA_WEB_DIR ---- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_web_dir_read_per_request(void **state)
{
    (void)state;
    char dir[256], path[512], etag[64];
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/app.css", dir);
    write_file(path, "body{}");
    snprintf(path, sizeof path, "%s/.hidden.css", dir);
    write_file(path, "secret{}");
    kp_config cfg = base_config();
    cfg.web_dir = dir;
    kp_dashboard *d = new_dashboard(&cfg);
    kp_resp resp;

    assert_true(serve(d, "app.css", "gzip", NULL, &resp));
    assert_int_equal(resp.status, 200);
    assert_string_equal(kp_buf_cstr(&resp.body), "body{}");
    assert_string_equal(header(&resp, "Content-Type"), "text/css; charset=utf-8");
    assert_null(header(&resp, "Content-Encoding"));
    assert_policy_headers(d, &resp);
    snprintf(etag, sizeof etag, "%s", header(&resp, "ETag"));
    kp_resp_free(&resp);
    assert_true(serve(d, "app.css", NULL, etag, &resp));
    assert_int_equal(resp.status, 304);
    kp_resp_free(&resp);

    /* an edit shows on the next request, with another ETag */
    snprintf(path, sizeof path, "%s/app.css", dir);
    write_file(path, "body{color:red}");
    assert_true(serve(d, "app.css", NULL, etag, &resp));
    assert_int_equal(resp.status, 200);
    assert_string_equal(kp_buf_cstr(&resp.body), "body{color:red}");
    assert_string_not_equal(header(&resp, "ETag"), etag);
    kp_resp_free(&resp);

    /* the embedded table is not used, and nothing outside or hidden is reachable */
    assert_false(serve(d, "index.html", NULL, NULL, &resp));
    assert_false(serve(d, ".hidden.css", NULL, NULL, &resp));
    assert_false(serve(d, "../app.css", NULL, NULL, &resp));
    assert_false(serve(d, "x/../app.css", NULL, NULL, &resp));
    assert_false(serve(d, "/etc/passwd", NULL, NULL, &resp));
    assert_int_equal(resp.status, 0);
    kp_dashboard_free(d);
    kp_test_rmrf(dir);
}

/* ---- the routes ---- */

static void dispatch(kp_ctx *ctx, const char *method, const char *path, kp_resp *resp, kp_req *req)
{
    memset(req, 0, sizeof *req);
    memset(resp, 0, sizeof *resp);
    req->method = method;
    req->path = path;
    req->request_id = "test";
    kp_router_dispatch(ctx, req, resp);
}

static void assert_json_404(const kp_resp *resp)
{
    assert_int_equal(resp->status, 404);
    assert_string_equal(header(resp, "Content-Type"), "application/json");
    assert_non_null(strstr(kp_buf_cstr(&resp->body), "\"not_found\""));
    assert_null(header(resp, "Content-Security-Policy"));
}

static void test_routes(void **state)
{
    (void)state;
    kp_config cfg = base_config();
    kp_app app;
    memset(&app, 0, sizeof app);
    app.cfg = &cfg;
    app.dashboard = new_dashboard(&cfg);
    kp_ctx ctx = {.app = &app, .store = NULL};
    kp_req req;
    kp_resp resp;

    dispatch(&ctx, "GET", "/", &resp, &req);
    assert_int_equal(resp.status, 200);
    assert_string_equal(kp_buf_cstr(&resp.body), (const char *)index_html);
    assert_string_equal(req.route, "/");
    kp_resp_free(&resp);
    dispatch(&ctx, "HEAD", "/js/main.js", &resp, &req);
    assert_int_equal(resp.status, 200);
    assert_string_equal(req.route, "/{file}");
    kp_resp_free(&resp);
    dispatch(&ctx, "GET", "/config.json", &resp, &req);
    assert_int_equal(resp.status, 200);
    assert_string_equal(req.route, "/config.json");
    kp_resp_free(&resp);

    /* the API keeps its JSON 404s; so do unknown paths and other methods */
    const char *missing[][2] = {{"GET", "/v1/index.html"}, {"GET", "/v1/js/main.js"}, {"GET", "/nope.js"},
                                {"GET", "/js/"},           {"POST", "/js/main.js"},   {"GET", "/js//main.js"}};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        dispatch(&ctx, missing[i][0], missing[i][1], &resp, &req);
        assert_json_404(&resp);
        kp_resp_free(&resp);
    }
    kp_dashboard_free(app.dashboard);

    /* a server without a dashboard (the Lambda bootstrap): /, /config.json and files are JSON 404s */
    app.dashboard = NULL;
    const char *paths[] = {"/", "/config.json", "/js/main.js"};
    for (size_t i = 0; i < 3; i++) {
        dispatch(&ctx, "GET", paths[i], &resp, &req);
        assert_json_404(&resp);
        kp_resp_free(&resp);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_policy_same_origin),
        cmocka_unit_test(test_policy_other_origins_and_oauth),
        cmocka_unit_test(test_accepts_gzip),
        cmocka_unit_test(test_serves_identity_and_gzip),
        cmocka_unit_test(test_etags_and_304),
        cmocka_unit_test(test_config_without_oauth),
        cmocka_unit_test(test_config_with_oauth),
        cmocka_unit_test(test_unusable_url_is_refused),
        cmocka_unit_test(test_web_dir_read_per_request),
        cmocka_unit_test(test_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
