/*
 * test_router.c - the application's front door (api/router.c) with the real
 * route table and handlers: path matching, 404 / 405 with Allow, bearer
 * authentication (401 with WWW-Authenticate), admin-only routes (403), and
 * the /v1/me, /v1/me/ledger and /v1/admin/... endpoints end to end on a
 * migrated SQLite database, without any HTTP library in between.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <pthread.h>
#include <sodium.h>

#include "api/handlers.h"
#include "api/offload.h"
#include "api/router.h"
#include "auth/auth.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/ratelimit.h"
#include "domain/accounts.h"
#include "domain/credits.h"
#include "domain/verify.h"
#include "gen/generator.h"
#include "store/sqlite/sqlite_store.h"
#include "fake_secrets.h"
#include "testutil.h"

#define SECRET "router-test-secret-0123456789abcdef-xyz"
#define ADMIN_EMAIL "admin@example.com"
#define LOGIN_LIMIT 3
#define SIGNUP_LIMIT 3

typedef struct fixture {
    char dir[256];
    char db[512];
    kp_store *s;
    kp_config cfg;
    char *admins[2];
    kp_fake_secrets *secrets; /* KOUMPA_JWT_SECRET = SECRET */
    kp_app app;
    kp_ctx ctx;
} fixture;

/* The offload's database opener: another handle on the fixture's database. */
static kp_status open_db(void *ud, kp_store **out, kp_err *err)
{
    fixture *f = ud;
    return kp_sqlite_open(f->db, out, err);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    kp_err err = {0};
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->db, sizeof f->db);
    f->cfg.pwhash_opslimit = 1;
    f->cfg.pwhash_memlimit_kib = 8192;
    f->admins[0] = ADMIN_EMAIL;
    f->admins[1] = NULL;
    f->cfg.admin_emails = f->admins;

    f->secrets = kp_fake_secrets_new();
    kp_fake_secrets_put(f->secrets, "KOUMPA_JWT_SECRET", SECRET);
    f->app.secrets = kp_fake_secrets_service(f->secrets);
    kp_auth_options o;
    memset(&o, 0, sizeof o);
    o.secrets = f->app.secrets;
    o.local_issuer = "koumpa";
    if (kp_auth_new(&o, &f->app.auth, &err) != KP_OK)
        fail_msg("kp_auth_new: %s", err.msg);
    f->app.cfg = &f->cfg;
    f->app.login_ip_limit = kp_ratelimit_new(LOGIN_LIMIT, 60, 64);
    f->app.login_email_limit = kp_ratelimit_new(LOGIN_LIMIT, 60, 64);
    f->app.signup_limit = kp_ratelimit_new(SIGNUP_LIMIT, 3600, 64);
    /* one hashing thread, one job may wait: a third at once is a 503 */
    if (kp_offload_new("pwhash", 1, 1, open_db, f, &f->app.pwhash, &err) != KP_OK)
        fail_msg("kp_offload_new: %s", err.msg);
    f->app.metrics = kp_metrics_new();
    assert_non_null(f->app.login_ip_limit);
    assert_non_null(f->app.login_email_limit);
    assert_non_null(f->app.metrics);
    f->ctx.app = &f->app;
    f->ctx.store = f->s;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    kp_auth_free(f->app.auth);
    kp_fake_secrets_free(f->secrets);
    kp_ratelimit_free(f->app.login_ip_limit);
    kp_ratelimit_free(f->app.login_email_limit);
    kp_ratelimit_free(f->app.signup_limit);
    kp_offload_free(f->app.pwhash);
    kp_metrics_free(f->app.metrics);
    f->s->ops->close(f->s);
    kp_test_rmrf(f->dir);
    free(f);
    return 0;
}

/* ---- helpers ---- */

/*
 * Dispatches one request. query is "k=v&k2=v2" (no decoding) or NULL; a
 * token, if any, goes in Authorization: Bearer; a body, if any, is sent as
 * application/json. resp must be zeroed; the caller frees it.
 */
static void call(fixture *f, const char *method, const char *path, const char *query, const char *token,
                 const char *body, kp_resp *resp)
{
    kp_req req;
    memset(&req, 0, sizeof req);
    memset(resp, 0, sizeof *resp);
    req.method = method;
    req.path = path;
    req.request_id = "test";
    req.remote_addr = "192.0.2.1";
    if (token) {
        char auth[4096];
        snprintf(auth, sizeof auth, "Bearer %s", token);
        kp_headers_add(&req.headers, "Authorization", auth);
    }
    if (body) {
        kp_headers_add(&req.headers, "Content-Type", "application/json");
        req.body = body;
        req.body_len = strlen(body);
    }
    if (query) {
        char *copy = strdup(query), *save = NULL;
        for (char *kv = strtok_r(copy, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
            char *eq = strchr(kv, '=');
            if (eq)
                *eq++ = '\0';
            kp_headers_add(&req.query, kv, eq ? eq : "");
        }
        free(copy);
    }
    kp_router_dispatch(&f->ctx, &req, resp);
    kp_resp_settle(resp); /* sign-up and login answer from the hashing pool */
    kp_headers_free(&req.headers);
    kp_headers_free(&req.query);
}

/* The response body as JSON (asserts it is JSON); caller decrefs. */
static json_t *body_json(const kp_resp *resp)
{
    json_error_t jerr;
    json_t *doc = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, &jerr);
    if (!doc)
        fail_msg("status %d, body is not JSON (%s): [%.*s]", resp->status, jerr.text, (int)resp->body.len,
                 resp->body.data ? resp->body.data : "");
    return doc;
}

/* Asserts status and, for errors, the JSON error code. */
static void expect(const kp_resp *resp, int status, const char *code)
{
    if (resp->status != status)
        fail_msg("expected %d, got %d: %s", status, resp->status, kp_buf_cstr(&resp->body));
    if (code) {
        json_t *doc = body_json(resp);
        const char *got = json_string_value(json_object_get(json_object_get(doc, "error"), "code"));
        if (!got || strcmp(got, code) != 0)
            fail_msg("expected error code %s, got %s", code, got ? got : "(none)");
        assert_non_null(json_string_value(json_object_get(json_object_get(doc, "error"), "message")));
        json_decref(doc);
    }
}

static char *user_with_token(fixture *f, const char *email, kp_user *out);

/* The listed admin, with its address verified (the list trusts nothing else). */
static char *admin_with_token(fixture *f)
{
    kp_err err = {0};
    kp_user u;
    char *token = user_with_token(f, ADMIN_EMAIL, &u);
    if (f->s->ops->user_set_email_verified(f->s, u.id, &err) != KP_OK)
        fail_msg("verify: %s", err.msg);
    return token;
}

/* Signs a user up through the domain layer and issues a token for it; caller frees the token. */
static char *user_with_token(fixture *f, const char *email, kp_user *out)
{
    kp_err err = {0};
    kp_user u;
    char *token = NULL;
    if (kp_accounts_signup(f->s, &f->cfg, email, "password-123", &u, &err) != KP_OK)
        fail_msg("signup: %s", err.msg);
    if (kp_auth_issue(f->app.auth, u.id, u.email, &token, NULL, &err) != KP_OK)
        fail_msg("issue: %s", err.msg);
    if (out)
        *out = u;
    return token;
}

/* ---- kp_router_match ---- */

static void test_match_literal_and_params(void **state)
{
    (void)state;
    kp_req req;
    memset(&req, 0, sizeof req);
    assert_true(kp_router_match("/v1/me", "/v1/me", &req));
    assert_int_equal(req.nparams, 0);
    assert_true(kp_router_match("/v1/admin/users/{id}/plan", "/v1/admin/users/usr_abc/plan", &req));
    assert_int_equal(req.nparams, 1);
    assert_string_equal(req.params[0], "usr_abc");
    assert_true(kp_router_match("/p/{a}/q/{b}", "/p/one/q/two", &req));
    assert_int_equal(req.nparams, 2);
    assert_string_equal(req.params[0], "one");
    assert_string_equal(req.params[1], "two");
    /* a parameter takes exactly one segment */
    assert_false(kp_router_match("/v1/admin/plans/{id}", "/v1/admin/plans/a/b", NULL));
    assert_false(kp_router_match("/v1/admin/users/{id}/plan", "/v1/admin/users/a/b/plan", NULL));
    /* NULL req is allowed */
    assert_true(kp_router_match("/v1/admin/plans/{id}", "/v1/admin/plans/pro", NULL));
}

static void test_match_mismatches(void **state)
{
    (void)state;
    kp_req req;
    memset(&req, 0, sizeof req);
    assert_false(kp_router_match("/v1/me", "/v1/me/", &req)); /* trailing slash */
    assert_false(kp_router_match("/v1/me/", "/v1/me", &req));
    assert_false(kp_router_match("/v1/admin/plans/{id}", "/v1/admin/plans/pro/", &req));
    assert_false(kp_router_match("/v1/me", "/v1/m", &req)); /* prefix */
    assert_false(kp_router_match("/v1/me", "/v1/mine", &req));
    assert_false(kp_router_match("/v1/me", "/V1/ME", &req)); /* paths are case-sensitive */
    assert_false(kp_router_match("/v1/me", "", &req));
    /* an empty segment is not a parameter */
    assert_false(kp_router_match("/v1/admin/plans/{id}", "/v1/admin/plans/", &req));
    assert_false(kp_router_match("/v1/admin/users/{id}/plan", "/v1/admin/users//plan", &req));
}

static void test_match_segment_length(void **state)
{
    (void)state;
    kp_req req;
    char path[400], seg[300];
    memset(&req, 0, sizeof req);
    /* KP_NAME_MAX - 1 characters fit */
    memset(seg, 'x', KP_NAME_MAX - 1);
    seg[KP_NAME_MAX - 1] = '\0';
    snprintf(path, sizeof path, "/v1/admin/plans/%s", seg);
    assert_true(kp_router_match("/v1/admin/plans/{id}", path, &req));
    assert_int_equal(strlen(req.params[0]), KP_NAME_MAX - 1);
    /* one more does not match (rather than being cut) */
    memset(seg, 'x', KP_NAME_MAX);
    seg[KP_NAME_MAX] = '\0';
    snprintf(path, sizeof path, "/v1/admin/plans/%s", seg);
    assert_false(kp_router_match("/v1/admin/plans/{id}", path, &req));
    memset(seg, 'x', 250);
    seg[250] = '\0';
    snprintf(path, sizeof path, "/v1/admin/users/%s/plan", seg);
    assert_false(kp_router_match("/v1/admin/users/{id}/plan", path, &req));
}

static void test_match_too_many_params(void **state)
{
    (void)state;
    kp_req req;
    memset(&req, 0, sizeof req);
    assert_true(kp_router_match("/{a}/{b}/{c}/{d}", "/1/2/3/4", &req));
    assert_int_equal(req.nparams, KP_MAX_PARAMS);
    assert_false(kp_router_match("/{a}/{b}/{c}/{d}/{e}", "/1/2/3/4/5", &req));
}

/* ---- 404 / 405 ---- */

static void test_unknown_path_404(void **state)
{
    fixture *f = *state;
    kp_resp resp;
    call(f, "GET", "/v1/nothing", NULL, NULL, NULL, &resp);
    expect(&resp, 404, "not_found");
    assert_null(kp_headers_get(&resp.headers, "Allow"));
    kp_resp_free(&resp);
    call(f, "GET", "/v1/me/", NULL, NULL, NULL, &resp); /* trailing slash is another path */
    expect(&resp, 404, "not_found");
    kp_resp_free(&resp);
    call(f, "DELETE", "/nope", NULL, NULL, NULL, &resp);
    expect(&resp, 404, "not_found");
    kp_resp_free(&resp);
}

static void test_unknown_path_with_non_utf8_bytes(void **state)
{
    fixture *f = *state;
    kp_resp resp;
    /* a percent-decoded path can hold any byte, e.g. GET /caf%E9 */
    call(f, "GET", "/caf\xe9", NULL, NULL, NULL, &resp);
    assert_int_equal(resp.status, 404);
    /* the 404 message echoes the path: invalid bytes are replaced */
    expect(&resp, 404, "not_found");
    kp_resp_free(&resp);
}

static void test_wrong_method_405_with_allow(void **state)
{
    fixture *f = *state;
    kp_resp resp;
    call(f, "POST", "/v1/me", NULL, NULL, "{}", &resp);
    expect(&resp, 405, "method_not_allowed");
    assert_string_equal(kp_headers_get(&resp.headers, "Allow"), "GET, HEAD");
    kp_resp_free(&resp);

    call(f, "GET", "/v1/admin/plans/pro", NULL, NULL, NULL, &resp);
    expect(&resp, 405, "method_not_allowed");
    assert_string_equal(kp_headers_get(&resp.headers, "Allow"), "PUT");
    kp_resp_free(&resp);

    call(f, "DELETE", "/v1/admin/users/usr_x/plan", NULL, NULL, NULL, &resp);
    expect(&resp, 405, "method_not_allowed");
    assert_string_equal(kp_headers_get(&resp.headers, "Allow"), "PUT");
    kp_resp_free(&resp);

    call(f, "GET", "/v1/auth/login", NULL, NULL, NULL, &resp);
    expect(&resp, 405, "method_not_allowed");
    assert_string_equal(kp_headers_get(&resp.headers, "Allow"), "POST");
    kp_resp_free(&resp);
}

/* ---- public endpoints ---- */

static void test_public_endpoints(void **state)
{
    fixture *f = *state;
    kp_resp resp;
    call(f, "GET", "/healthz", NULL, NULL, NULL, &resp);
    expect(&resp, 200, NULL);
    json_t *doc = body_json(&resp);
    assert_string_equal(json_string_value(json_object_get(doc, "status")), "ok");
    json_decref(doc);
    kp_resp_free(&resp);

    /* HEAD is answered by the GET route */
    call(f, "HEAD", "/healthz", NULL, NULL, NULL, &resp);
    expect(&resp, 200, NULL);
    kp_resp_free(&resp);

    /* no dashboard in this app (the Lambda bootstrap's case): / is a JSON 404 (test_dashboard.c serves one) */
    call(f, "GET", "/", NULL, NULL, NULL, &resp);
    expect(&resp, 404, "not_found");
    kp_resp_free(&resp);

    call(f, "GET", "/v1/plans", NULL, NULL, NULL, &resp);
    expect(&resp, 200, NULL);
    doc = body_json(&resp);
    json_t *plans = json_object_get(doc, "plans");
    assert_true(json_array_size(plans) >= 2);
    int free_seen = 0;
    for (size_t i = 0; i < json_array_size(plans); i++)
        free_seen |= strcmp(json_string_value(json_object_get(json_array_get(plans, i), "id")), "free") == 0;
    assert_true(free_seen);
    json_decref(doc);
    kp_resp_free(&resp);

    call(f, "GET", "/metrics", NULL, NULL, NULL, &resp);
    expect(&resp, 200, NULL);
    assert_non_null(strstr(kp_headers_get(&resp.headers, "Content-Type"), "text/plain"));
    kp_resp_free(&resp);
}

/* ---- authentication ---- */

static void test_me_without_token_401(void **state)
{
    fixture *f = *state;
    kp_resp resp;
    call(f, "GET", "/v1/me", NULL, NULL, NULL, &resp);
    expect(&resp, 401, "unauthorized");
    const char *www = kp_headers_get(&resp.headers, "WWW-Authenticate");
    assert_non_null(www);
    assert_string_equal(www, "Bearer realm=\"koumpa\"");
    kp_resp_free(&resp);
}

static void expect_401_with_header(fixture *f, const char *authorization, int invalid_token)
{
    kp_req req;
    kp_resp resp = {0};
    memset(&req, 0, sizeof req);
    req.method = "GET";
    req.path = "/v1/me";
    req.request_id = "test";
    kp_headers_add(&req.headers, "Authorization", authorization);
    kp_router_dispatch(&f->ctx, &req, &resp);
    expect(&resp, 401, "unauthorized");
    const char *www = kp_headers_get(&resp.headers, "WWW-Authenticate");
    assert_non_null(www);
    assert_memory_equal(www, "Bearer realm=\"koumpa\"", 21);
    if (invalid_token != (strstr(www, "error=\"invalid_token\"") != NULL))
        fail_msg("Authorization \"%.40s\": WWW-Authenticate is %s", authorization, www);
    /* a quoted-string with no stray quotes inside: exactly an even number */
    size_t quotes = 0;
    for (const char *c = www; *c; c++)
        quotes += *c == '"';
    assert_int_equal(quotes % 2, 0);
    assert_false(req.principal.authenticated);
    kp_resp_free(&resp);
    kp_headers_free(&req.headers);
}

static void test_bad_tokens_401(void **state)
{
    fixture *f = *state;
    expect_401_with_header(f, "Bearer garbage", 1);
    expect_401_with_header(f, "Bearer a.b.c", 1);
    expect_401_with_header(f, "Bearer \"quoted\"\\token", 1);
    expect_401_with_header(f, "Basic dXNlcjpwYXNz", 0);
    expect_401_with_header(f, "Bearer ", 0);
    expect_401_with_header(f, "Bearer    ", 0);
    expect_401_with_header(f, "", 0);

    /* a well-formed token signed with another secret */
    kp_auth *other = NULL;
    kp_auth_options o;
    kp_err err = {0};
    char *token = NULL;
    memset(&o, 0, sizeof o);
    o.hs256_secret = "another-secret-another-secret-another-secret";
    o.hs256_secret_len = strlen(o.hs256_secret);
    o.local_issuer = "koumpa";
    assert_int_equal(kp_auth_new(&o, &other, &err), KP_OK);
    kp_user u;
    char *good = user_with_token(f, "forged@example.com", &u);
    assert_int_equal(kp_auth_issue(other, u.id, u.email, &token, NULL, &err), KP_OK);
    char header[4096];
    snprintf(header, sizeof header, "Bearer %s", token);
    expect_401_with_header(f, header, 1);
    free(token);
    free(good);
    kp_auth_free(other);
}

static void test_token_for_missing_user_401(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    char *token = NULL;
    assert_int_equal(kp_auth_issue(f->app.auth, "usr_000000000000000000000000", "gone@example.com", &token, NULL, &err),
                     KP_OK);
    kp_resp resp;
    call(f, "GET", "/v1/me", NULL, token, NULL, &resp);
    expect(&resp, 401, "unauthorized");
    assert_non_null(strstr(kp_headers_get(&resp.headers, "WWW-Authenticate"), "invalid_token"));
    kp_resp_free(&resp);
    free(token);
}

static void test_me_200(void **state)
{
    fixture *f = *state;
    kp_user u;
    char *token = user_with_token(f, "Someone@Example.com", &u);
    kp_resp resp;
    call(f, "GET", "/v1/me", NULL, token, NULL, &resp);
    expect(&resp, 200, NULL);
    json_t *doc = body_json(&resp);
    assert_string_equal(json_string_value(json_object_get(doc, "id")), u.id);
    assert_string_equal(json_string_value(json_object_get(doc, "email")), "someone@example.com");
    assert_true(json_is_false(json_object_get(doc, "is_admin")));
    json_t *credits = json_object_get(doc, "credits");
    assert_int_equal(json_integer_value(json_object_get(credits, "daily")), 5);
    assert_int_equal(json_integer_value(json_object_get(credits, "monthly")), 0);
    assert_int_equal(json_integer_value(json_object_get(credits, "total")), 5);
    json_t *plan = json_object_get(doc, "plan");
    assert_string_equal(json_string_value(json_object_get(plan, "id")), "free");
    const char *created = json_string_value(json_object_get(doc, "created_at"));
    assert_non_null(created);
    assert_int_equal(strlen(created), 20); /* 2026-11-24T19:41:18Z */
    assert_int_equal(created[19], 'Z');
    json_decref(doc);
    kp_resp_free(&resp);

    /* "bearer" is case-insensitive */
    kp_req req;
    memset(&req, 0, sizeof req);
    req.method = "GET";
    req.path = "/v1/me";
    req.request_id = "test";
    char header[4096];
    snprintf(header, sizeof header, "bearer %s", token);
    kp_headers_add(&req.headers, "authorization", header);
    memset(&resp, 0, sizeof resp);
    kp_router_dispatch(&f->ctx, &req, &resp);
    expect(&resp, 200, NULL);
    assert_true(req.principal.authenticated);
    assert_string_equal(req.principal.user_id, u.id);
    assert_string_equal(req.route, "/v1/me");
    kp_resp_free(&resp);
    kp_headers_free(&req.headers);
    free(token);
}

/* ---- admin routes ---- */

static void test_non_admin_403(void **state)
{
    fixture *f = *state;
    char *token = user_with_token(f, "user@example.com", NULL);
    kp_resp resp;
    call(f, "PUT", "/v1/admin/plans/pro", NULL, token, "{\"daily_bonus\":9}", &resp);
    expect(&resp, 403, "forbidden");
    kp_resp_free(&resp);
    call(f, "GET", "/v1/admin/users", "email=user@example.com", token, NULL, &resp);
    expect(&resp, 403, "forbidden");
    kp_resp_free(&resp);
    /* nothing changed */
    kp_plan p;
    kp_err err = {0};
    assert_int_equal(f->s->ops->plan_get(f->s, "pro", &p, &err), KP_OK);
    assert_int_not_equal(p.daily_bonus, 9);
    /* without a token it is 401, not 403 */
    call(f, "PUT", "/v1/admin/plans/pro", NULL, NULL, "{\"daily_bonus\":9}", &resp);
    expect(&resp, 401, "unauthorized");
    kp_resp_free(&resp);
    free(token);
}

/* Issue 9, item 2: a listed address is admin only once verified. */
static void test_admin_via_config(void **state)
{
    fixture *f = *state;
    kp_user u;
    kp_err err = {0};
    char *token = user_with_token(f, " Admin@Example.com ", &u);
    kp_resp resp;
    call(f, "GET", "/v1/me", NULL, token, NULL, &resp);
    expect(&resp, 200, NULL);
    json_t *doc = body_json(&resp);
    assert_true(json_is_false(json_object_get(doc, "is_admin")));
    assert_true(json_is_false(json_object_get(doc, "email_verified")));
    json_decref(doc);
    kp_resp_free(&resp);
    call(f, "PUT", "/v1/admin/plans/pro", NULL, token, "{\"daily_bonus\":9}", &resp);
    expect(&resp, 403, "forbidden");
    kp_resp_free(&resp);

    /* the link's token, through the route */
    char verify_token[KP_VERIFY_TOKEN_MAX], body[160];
    assert_int_equal(kp_verify_issue(f->s, u.id, 3600, verify_token, &err), KP_OK);
    snprintf(body, sizeof body, "{\"token\":\"%s\"}", verify_token);
    call(f, "POST", "/v1/auth/verify", NULL, NULL, body, &resp);
    expect(&resp, 200, NULL);
    kp_resp_free(&resp);
    call(f, "POST", "/v1/auth/verify", NULL, NULL, body, &resp);
    expect(&resp, 409, "token_used");
    kp_resp_free(&resp);
    call(f, "POST", "/v1/auth/verify", NULL, NULL, "{\"token\":\"nope\"}", &resp);
    expect(&resp, 400, "invalid_token");
    kp_resp_free(&resp);
    call(f, "POST", "/v1/auth/verify", NULL, NULL, "{}", &resp);
    expect(&resp, 400, "invalid_request");
    kp_resp_free(&resp);
    /* no SMTP here: asking for another mail says so */
    call(f, "POST", "/v1/auth/verify/resend", NULL, token, NULL, &resp);
    expect(&resp, 503, "verification_unavailable");
    kp_resp_free(&resp);

    call(f, "GET", "/v1/me", NULL, token, NULL, &resp);
    expect(&resp, 200, NULL);
    doc = body_json(&resp);
    assert_true(json_is_true(json_object_get(doc, "is_admin")));
    assert_true(json_is_true(json_object_get(doc, "email_verified")));
    json_decref(doc);
    kp_resp_free(&resp);

    call(f, "PUT", "/v1/admin/plans/pro", NULL, token, "{\"daily_bonus\":9}", &resp);
    expect(&resp, 200, NULL);
    doc = body_json(&resp);
    assert_string_equal(json_string_value(json_object_get(doc, "id")), "pro");
    assert_int_equal(json_integer_value(json_object_get(doc, "daily_bonus")), 9);
    json_decref(doc);
    kp_resp_free(&resp);
    free(token);
}

static void test_admin_via_stored_flag(void **state)
{
    fixture *f = *state;
    kp_user u, out;
    kp_err err = {0};
    char *token = user_with_token(f, "flagged@example.com", &u);
    assert_int_equal(kp_accounts_set_admin(f->s, "flagged@example.com", 1, &out, &err), KP_OK);
    kp_resp resp;
    call(f, "GET", "/v1/admin/users", "email=flagged@example.com", token, NULL, &resp);
    expect(&resp, 200, NULL);
    kp_resp_free(&resp);
    free(token);
}

static void test_admin_plan_put(void **state)
{
    fixture *f = *state;
    char *token = admin_with_token(f);
    kp_resp resp;
    const char *full = "{\"name\":\"Team\",\"price_cents\":9900,\"monthly_credits\":500,\"daily_bonus\":10,"
                       "\"max_concurrent_generations\":5}";
    call(f, "PUT", "/v1/admin/plans/team", NULL, token, full, &resp);
    expect(&resp, 201, NULL);
    json_t *doc = body_json(&resp);
    assert_string_equal(json_string_value(json_object_get(doc, "id")), "team");
    assert_string_equal(json_string_value(json_object_get(doc, "name")), "Team");
    assert_string_equal(json_string_value(json_object_get(doc, "currency")), "EUR");
    json_decref(doc);
    kp_resp_free(&resp);

    call(f, "PUT", "/v1/admin/plans/team", NULL, token, "{\"price_cents\":12900}", &resp);
    expect(&resp, 200, NULL);
    doc = body_json(&resp);
    assert_int_equal(json_integer_value(json_object_get(doc, "price_cents")), 12900);
    assert_string_equal(json_string_value(json_object_get(doc, "name")), "Team");
    json_decref(doc);
    kp_resp_free(&resp);

    /* the public list shows it */
    call(f, "GET", "/v1/plans", NULL, NULL, NULL, &resp);
    assert_non_null(strstr(kp_buf_cstr(&resp.body), "\"team\""));
    kp_resp_free(&resp);

    call(f, "PUT", "/v1/admin/plans/team", NULL, token, "{\"colour\":\"red\"}", &resp);
    expect(&resp, 400, "invalid_request");
    assert_non_null(strstr(kp_buf_cstr(&resp.body), "colour"));
    kp_resp_free(&resp);

    call(f, "PUT", "/v1/admin/plans/team", NULL, token, "{\"price_cents\":-1}", &resp);
    expect(&resp, 400, "invalid_request");
    kp_resp_free(&resp);
    call(f, "PUT", "/v1/admin/plans/team", NULL, token, "{\"max_concurrent_generations\":\"5\"}", &resp);
    expect(&resp, 400, "invalid_request");
    kp_resp_free(&resp);
    call(f, "PUT", "/v1/admin/plans/new", NULL, token, "{\"name\":\"New\"}", &resp); /* missing fields */
    expect(&resp, 400, "invalid_request");
    kp_resp_free(&resp);
    call(f, "PUT", "/v1/admin/plans/Team", NULL, token, full, &resp); /* invalid id */
    expect(&resp, 400, "invalid_request");
    kp_resp_free(&resp);
    call(f, "PUT", "/v1/admin/plans/team", NULL, token, "{\"price_cents\":", &resp);
    expect(&resp, 400, "invalid_json");
    kp_resp_free(&resp);

    /* without Content-Type: 415 */
    kp_req req;
    memset(&req, 0, sizeof req);
    req.method = "PUT";
    req.path = "/v1/admin/plans/team";
    req.request_id = "test";
    char header[4096];
    snprintf(header, sizeof header, "Bearer %s", token);
    kp_headers_add(&req.headers, "Authorization", header);
    req.body = "{\"price_cents\":1}";
    req.body_len = strlen(req.body);
    memset(&resp, 0, sizeof resp);
    kp_router_dispatch(&f->ctx, &req, &resp);
    expect(&resp, 415, "unsupported_media_type");
    kp_resp_free(&resp);
    kp_headers_free(&req.headers);

    /* none of the refusals changed the plan */
    kp_plan p;
    kp_err err = {0};
    assert_int_equal(f->s->ops->plan_get(f->s, "team", &p, &err), KP_OK);
    assert_int_equal(p.price_cents, 12900);
    assert_int_equal(p.max_concurrent_generations, 5);
    free(token);
}

static void test_admin_user_plan_put(void **state)
{
    fixture *f = *state;
    char *admin = admin_with_token(f);
    kp_user u;
    char *token = user_with_token(f, "customer@example.com", &u);
    char path[256];
    kp_resp resp;
    snprintf(path, sizeof path, "/v1/admin/users/%s/plan", u.id);

    call(f, "PUT", path, NULL, admin, "{\"plan_id\":\"platinum\"}", &resp);
    expect(&resp, 404, "not_found");
    kp_resp_free(&resp);
    call(f, "PUT", "/v1/admin/users/usr_nobody/plan", NULL, admin, "{\"plan_id\":\"pro\"}", &resp);
    expect(&resp, 404, "not_found");
    kp_resp_free(&resp);
    call(f, "PUT", path, NULL, admin, "{\"plan\":\"pro\"}", &resp);
    expect(&resp, 400, "invalid_request");
    kp_resp_free(&resp);
    call(f, "PUT", path, NULL, admin, "{\"plan_id\":5}", &resp);
    expect(&resp, 400, "invalid_request");
    kp_resp_free(&resp);

    call(f, "PUT", path, NULL, admin, "{\"plan_id\":\"pro\"}", &resp);
    expect(&resp, 200, NULL);
    json_t *doc = body_json(&resp);
    assert_string_equal(json_string_value(json_object_get(doc, "id")), u.id);
    assert_string_equal(json_string_value(json_object_get(doc, "plan_id")), "pro");
    json_decref(doc);
    kp_resp_free(&resp);

    /* the user sees the new plan */
    call(f, "GET", "/v1/me", NULL, token, NULL, &resp);
    expect(&resp, 200, NULL);
    doc = body_json(&resp);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "plan"), "id")), "pro");
    json_decref(doc);
    kp_resp_free(&resp);
    free(admin);
    free(token);
}

static void test_admin_users_find(void **state)
{
    fixture *f = *state;
    char *admin = admin_with_token(f);
    kp_user u;
    char *token = user_with_token(f, "findme@example.com", &u);
    kp_resp resp;

    call(f, "GET", "/v1/admin/users", "email=FindMe@Example.com", admin, NULL, &resp);
    expect(&resp, 200, NULL);
    json_t *doc = body_json(&resp);
    json_t *users = json_object_get(doc, "users");
    assert_int_equal(json_array_size(users), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(users, 0), "id")), u.id);
    assert_string_equal(json_string_value(json_object_get(json_array_get(users, 0), "email")), "findme@example.com");
    assert_true(json_is_false(json_object_get(json_array_get(users, 0), "is_admin")));
    json_decref(doc);
    kp_resp_free(&resp);

    call(f, "GET", "/v1/admin/users", "email=nobody@example.com", admin, NULL, &resp);
    expect(&resp, 200, NULL);
    doc = body_json(&resp);
    assert_true(json_is_array(json_object_get(doc, "users")));
    assert_int_equal(json_array_size(json_object_get(doc, "users")), 0);
    json_decref(doc);
    kp_resp_free(&resp);

    call(f, "GET", "/v1/admin/users", NULL, admin, NULL, &resp);
    expect(&resp, 400, "invalid_request");
    kp_resp_free(&resp);
    call(f, "GET", "/v1/admin/users", "email=not-an-email", admin, NULL, &resp);
    expect(&resp, 400, "invalid_request");
    kp_resp_free(&resp);
    free(admin);
    free(token);
}

/* ---- the loop turn's snapshot (ctx.share_reads) ---- */

/* GET /v1/me's total and is_admin. */
static void me_now(fixture *f, const char *token, json_int_t *total, int *is_admin)
{
    kp_resp resp;
    call(f, "GET", "/v1/me", NULL, token, NULL, &resp);
    expect(&resp, 200, NULL);
    json_t *doc = body_json(&resp);
    *total = json_integer_value(json_object_get(json_object_get(doc, "credits"), "total"));
    *is_admin = json_is_true(json_object_get(doc, "is_admin"));
    json_decref(doc);
    kp_resp_free(&resp);
}

/* With a host that ends the store's snapshot after each loop turn, the
 * requests of a turn that only read share one view; a route that does more
 * reads the latest data, and ends the view for those after it. */
static void test_snapshot_shared_by_read_routes(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_store *other = NULL;
    kp_user u;
    char *admin = admin_with_token(f);
    char *token = user_with_token(f, "turn@example.com", &u);
    char query[320];
    json_int_t total, before;
    int is_admin;
    assert_int_equal(kp_sqlite_open(f->db, &other, &err), KP_OK);
    f->ctx.share_reads = 1;

    me_now(f, token, &before, &is_admin);
    assert_false(is_admin);
    /* another connection (another thread, or process) changes the account */
    assert_int_equal(other->ops->user_set_admin(other, u.id, 1, &err), KP_OK);
    int applied = 0;
    assert_int_equal(kp_credits_grant(other, u.id, 0, 7, "admin_grant", "turn-g1", NULL, &applied, &err), KP_OK);
    me_now(f, token, &total, &is_admin); /* same turn: the view of its first read */
    assert_int_equal(total, before);
    assert_false(is_admin);

    /* an admin route is not marked as only reading: its handler sees the change */
    snprintf(query, sizeof query, "email=%s", u.email);
    kp_resp resp;
    call(f, "GET", "/v1/admin/users", query, admin, NULL, &resp);
    expect(&resp, 200, NULL);
    json_t *doc = body_json(&resp);
    assert_true(json_is_true(json_object_get(json_array_get(json_object_get(doc, "users"), 0), "is_admin")));
    json_decref(doc);
    kp_resp_free(&resp);
    me_now(f, token, &total, &is_admin); /* and the view ended with it */
    assert_int_equal(total, before + 7);
    assert_true(is_admin);

    /* the turn's end (the host's) ends the view */
    kp_store_snapshot_end(f->s);
    assert_int_equal(kp_credits_grant(other, u.id, 0, 1, "admin_grant", "turn-g2", NULL, &applied, &err), KP_OK);
    me_now(f, token, &total, &is_admin);
    assert_int_equal(total, before + 8);
    kp_store_snapshot_end(f->s);
    other->ops->close(other);
    free(admin);
    free(token);
}

/* ---- ledger ---- */

static void grant(fixture *f, const char *user_id, int64_t monthly, const char *reason, const char *key)
{
    kp_err err = {0};
    int applied = 0;
    assert_int_equal(kp_credits_grant(f->s, user_id, 0, monthly, reason, key, NULL, &applied, &err), KP_OK);
    assert_int_equal(applied, 1);
}

/* GET /v1/me/ledger with query; returns the parsed body (caller decrefs). */
static json_t *ledger(fixture *f, const char *token, const char *query)
{
    kp_resp resp;
    call(f, "GET", "/v1/me/ledger", query, token, NULL, &resp);
    expect(&resp, 200, NULL);
    json_t *doc = body_json(&resp);
    kp_resp_free(&resp);
    return doc;
}

static void test_ledger_paging(void **state)
{
    fixture *f = *state;
    kp_user u;
    char *token = user_with_token(f, "ledger@example.com", &u); /* 1 entry: the welcome bonus */
    grant(f, u.id, 10, "admin_grant", "test:g1");
    grant(f, u.id, 20, "admin_grant", "test:g2");
    /* someone else's entries never show */
    kp_user other;
    char *other_token = user_with_token(f, "other@example.com", &other);
    grant(f, other.id, 99, "admin_grant", "test:other");

    json_t *all = ledger(f, token, NULL);
    json_t *entries = json_object_get(all, "entries");
    assert_int_equal(json_array_size(entries), 3);
    assert_true(json_is_null(json_object_get(all, "next_cursor")));
    /* newest first */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(entries, 0), "delta_monthly")), 20);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(entries, 1), "delta_monthly")), 10);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(entries, 2), "delta_daily")), 5);
    json_t *balance = json_object_get(json_array_get(entries, 0), "balance");
    assert_int_equal(json_integer_value(json_object_get(balance, "monthly")), 30);
    assert_int_equal(json_integer_value(json_object_get(balance, "daily")), 5);

    /* one at a time, following the cursor */
    char query[256] = "limit=1";
    int64_t seen[3];
    int pages = 0;
    for (;;) {
        json_t *page = ledger(f, token, query);
        json_t *items = json_object_get(page, "entries");
        assert_int_equal(json_array_size(items), 1);
        json_t *e = json_array_get(items, 0);
        assert_true(pages < 3);
        seen[pages] = json_integer_value(json_object_get(e, "delta"));
        pages++;
        json_t *next = json_object_get(page, "next_cursor");
        if (json_is_null(next)) {
            json_decref(page);
            break;
        }
        assert_true(json_is_string(next));
        snprintf(query, sizeof query, "limit=1&cursor=%s", json_string_value(next));
        json_decref(page);
    }
    assert_int_equal(pages, 3);
    assert_int_equal(seen[0], 20);
    assert_int_equal(seen[1], 10);
    assert_int_equal(seen[2], 5);

    /* limit=2: two, then one */
    json_t *p1 = ledger(f, token, "limit=2");
    assert_int_equal(json_array_size(json_object_get(p1, "entries")), 2);
    snprintf(query, sizeof query, "limit=2&cursor=%s", json_string_value(json_object_get(p1, "next_cursor")));
    json_t *p2 = ledger(f, token, query);
    assert_int_equal(json_array_size(json_object_get(p2, "entries")), 1);
    assert_true(json_is_null(json_object_get(p2, "next_cursor")));
    json_decref(p1);
    json_decref(p2);

    /* exactly limit entries left: no next page announced */
    json_t *p3 = ledger(f, token, "limit=3");
    assert_true(json_is_null(json_object_get(p3, "next_cursor")));
    json_decref(p3);

    json_t *o = ledger(f, other_token, NULL);
    assert_int_equal(json_array_size(json_object_get(o, "entries")), 2);
    json_decref(o);
    json_decref(all);
    free(token);
    free(other_token);
}

static void expect_ledger_400(fixture *f, const char *token, const char *query, const char *word)
{
    kp_resp resp;
    call(f, "GET", "/v1/me/ledger", query, token, NULL, &resp);
    expect(&resp, 400, "invalid_request");
    if (!strstr(kp_buf_cstr(&resp.body), word))
        fail_msg("%s: body %s does not mention %s", query, kp_buf_cstr(&resp.body), word);
    kp_resp_free(&resp);
}

static void test_ledger_bad_parameters(void **state)
{
    fixture *f = *state;
    char *token = user_with_token(f, "params@example.com", NULL);
    expect_ledger_400(f, token, "limit=0", "limit");
    expect_ledger_400(f, token, "limit=-1", "limit");
    expect_ledger_400(f, token, "limit=101", "limit");
    expect_ledger_400(f, token, "limit=abc", "limit");
    expect_ledger_400(f, token, "limit=5x", "limit");
    expect_ledger_400(f, token, "limit=", "limit");
    expect_ledger_400(f, token, "cursor=!!!not-base64", "cursor");
    expect_ledger_400(f, token, "cursor=AAAA", "cursor");

    /* well-formed base64 of things that are not our cursors */
    static const char *fakes[] = {"l:0", "l:-5", "l:12x", "x:12", "l:", "l:99999999999999999999999", "l: 5"};
    for (size_t i = 0; i < sizeof fakes / sizeof fakes[0]; i++) {
        char b64[64], query[128];
        sodium_bin2base64(b64, sizeof b64, (const unsigned char *)fakes[i], strlen(fakes[i]),
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        snprintf(query, sizeof query, "cursor=%s", b64);
        expect_ledger_400(f, token, query, "cursor");
    }
    /* a cursor longer than any we make */
    char query[512] = "cursor=";
    memset(query + 7, 'A', 300);
    query[307] = '\0';
    expect_ledger_400(f, token, query, "cursor");

    /* limit=100 and an empty cursor are fine */
    json_t *ok = ledger(f, token, "limit=100&cursor=");
    assert_int_equal(json_array_size(json_object_get(ok, "entries")), 1);
    json_decref(ok);
    free(token);
}

/* ---- sign-up and login through the router ---- */

static void test_signup_and_login(void **state)
{
    fixture *f = *state;
    kp_resp resp;
    call(f, "POST", "/v1/auth/signup", NULL, NULL, "{\"email\":\"Web@Example.com\",\"password\":\"password-123\"}",
         &resp);
    expect(&resp, 201, NULL);
    json_t *doc = body_json(&resp);
    const char *token = json_string_value(json_object_get(doc, "token"));
    assert_non_null(token);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "user"), "email")), "web@example.com");
    assert_null(strstr(kp_buf_cstr(&resp.body), "password"));
    assert_null(strstr(kp_buf_cstr(&resp.body), "argon2"));
    kp_resp me;
    call(f, "GET", "/v1/me", NULL, token, NULL, &me);
    expect(&me, 200, NULL);
    kp_resp_free(&me);
    json_decref(doc);
    kp_resp_free(&resp);

    call(f, "POST", "/v1/auth/signup", NULL, NULL, "{\"email\":\"web@example.com\",\"password\":\"password-456\"}",
         &resp);
    expect(&resp, 409, "conflict");
    kp_resp_free(&resp);
    call(f, "POST", "/v1/auth/signup", NULL, NULL, "{\"email\":\"x@example.com\"}", &resp);
    expect(&resp, 400, "invalid_request");
    kp_resp_free(&resp);

    call(f, "POST", "/v1/auth/login", NULL, NULL, "{\"email\":\"web@example.com\",\"password\":\"password-123\"}",
         &resp);
    expect(&resp, 200, NULL);
    doc = body_json(&resp);
    assert_non_null(json_string_value(json_object_get(doc, "token")));
    json_decref(doc);
    kp_resp_free(&resp);

    call(f, "POST", "/v1/auth/login", NULL, NULL, "{\"email\":\"web@example.com\",\"password\":\"wrong-pass\"}", &resp);
    expect(&resp, 401, "unauthorized");
    kp_resp_free(&resp);
}

static void test_login_rate_limited(void **state)
{
    fixture *f = *state;
    kp_resp resp;
    for (int i = 0; i < LOGIN_LIMIT; i++) {
        call(f, "POST", "/v1/auth/login", NULL, NULL, "{\"email\":\"nobody@example.com\",\"password\":\"guess-123\"}",
             &resp);
        expect(&resp, 401, "unauthorized");
        kp_resp_free(&resp);
    }
    call(f, "POST", "/v1/auth/login", NULL, NULL, "{\"email\":\"nobody@example.com\",\"password\":\"guess-123\"}",
         &resp);
    expect(&resp, 429, "rate_limited");
    const char *retry = kp_headers_get(&resp.headers, "Retry-After");
    assert_non_null(retry);
    long seconds = strtol(retry, NULL, 10);
    assert_true(seconds >= 1 && seconds <= 60);
    kp_resp_free(&resp);
}

static void test_signup_limited_per_address(void **state)
{
    fixture *f = *state;
    kp_resp resp;
    char body[128];
    for (int i = 0; i < SIGNUP_LIMIT; i++) {
        snprintf(body, sizeof body, "{\"email\":\"faucet-%d@example.com\",\"password\":\"password-123\"}", i);
        call(f, "POST", "/v1/auth/signup", NULL, NULL, body, &resp);
        expect(&resp, 201, NULL);
        kp_resp_free(&resp);
    }
    call(f, "POST", "/v1/auth/signup", NULL, NULL, "{\"email\":\"faucet-x@example.com\",\"password\":\"password-123\"}",
         &resp);
    expect(&resp, 429, "rate_limited");
    assert_non_null(strstr(kp_buf_cstr(&resp.body), "sign-ups from this address"));
    long seconds = strtol(kp_headers_get(&resp.headers, "Retry-After"), NULL, 10);
    assert_true(seconds >= 3590 && seconds <= 3600);
    kp_resp_free(&resp);
    assert_int_equal(kp_test_sql_int(f->db, "SELECT COUNT(*) FROM users"), SIGNUP_LIMIT);
}

/* A deferred job that holds the only hashing thread until the gate opens. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running, open;
} gate;

static void gated_work(void *arg, kp_store *store, kp_resp *resp)
{
    gate *g = arg;
    (void)store;
    pthread_mutex_lock(&g->mu);
    g->running = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    kp_resp_text(resp, 204, "text/plain", "", 0);
}

typedef struct test_reply {
    kp_reply reply;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sent;
    kp_resp resp;
} test_reply;

static void test_reply_send(kp_reply *reply, kp_resp *resp)
{
    test_reply *r = (test_reply *)reply;
    pthread_mutex_lock(&r->mu);
    r->resp = *resp;
    memset(resp, 0, sizeof *resp);
    r->sent = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Password hashing runs on its pool, and a full queue is a 503 with
 * Retry-After at once rather than a wait. */
static void test_hashing_queue_full_is_503(void **state)
{
    fixture *f = *state;
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    test_reply r[2] = {
        {.reply = {test_reply_send}, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER},
        {.reply = {test_reply_send}, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER},
    };
    kp_resp held[2] = {{0}, {0}}, resp;

    for (int i = 0; i < 2; i++) { /* one runs (and waits at the gate), one waits in the queue */
        kp_offload_defer(f->app.pwhash, &held[i], gated_work, NULL, &g);
        held[i].deferred->start(held[i].deferred, &r[i].reply);
        pthread_mutex_lock(&g.mu);
        while (!g.running)
            pthread_cond_wait(&g.cv, &g.mu);
        pthread_mutex_unlock(&g.mu);
    }

    /* the only thread is busy and the queue is full */
    call(f, "POST", "/v1/auth/signup", NULL, NULL, "{\"email\":\"busy@example.com\",\"password\":\"password-123\"}",
         &resp);
    expect(&resp, 503, "busy");
    assert_string_equal(kp_headers_get(&resp.headers, "Retry-After"), "2");
    assert_non_null(strstr(kp_buf_cstr(&resp.body), "try again"));
    kp_resp_free(&resp);
    call(f, "POST", "/v1/auth/login", NULL, NULL, "{\"email\":\"busy@example.com\",\"password\":\"password-123\"}",
         &resp);
    expect(&resp, 503, "busy");
    kp_resp_free(&resp);
    assert_int_equal(kp_test_sql_int(f->db, "SELECT COUNT(*) FROM users"), 0);

    pthread_mutex_lock(&g.mu);
    g.open = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < 2; i++) {
        pthread_mutex_lock(&r[i].mu);
        while (!r[i].sent)
            pthread_cond_wait(&r[i].cv, &r[i].mu);
        pthread_mutex_unlock(&r[i].mu);
        held[i].deferred->release(held[i].deferred);
        held[i].deferred = NULL;
        assert_int_equal(r[i].resp.status, 204);
        kp_resp_free(&r[i].resp);
        kp_resp_free(&held[i]);
    }

    /* free again: the same sign-up goes through */
    call(f, "POST", "/v1/auth/signup", NULL, NULL, "{\"email\":\"busy@example.com\",\"password\":\"password-123\"}",
         &resp);
    expect(&resp, 201, NULL);
    kp_resp_free(&resp);
}

/* A store that reads the project before version 2 ended and its versions
 * after (DynamoDB's two requests, with the ending between them): its first
 * project_get answers latest_ready 1. */
static const kp_store_ops *real_project_ops;
static int stale_reads;
static kp_status project_get_before_the_end(kp_store *s, const char *id, kp_project *out, kp_err *err)
{
    kp_store real = {.ops = real_project_ops, .impl = s->impl};
    kp_status rc = real_project_ops->project_get(&real, id, out, err);
    if (rc == KP_OK && stale_reads++ == 0)
        out->latest_ready = 1;
    return rc;
}

/* A version of prj_race, n, created (n > 1) then ended ready. */
static void ready_version(kp_store *s, int64_t n)
{
    kp_err err = {0};
    kp_version v;
    memset(&v, 0, sizeof v);
    snprintf(v.project_id, sizeof v.project_id, "prj_race");
    v.n = n;
    v.status = KP_VER_GENERATING;
    v.prompt = "make it";
    if (n > 1 && s->ops->version_create(s, &v, &err) != KP_OK)
        fail_msg("version_create: %s", err.msg);
    v.status = KP_VER_READY;
    if (s->ops->version_finish(s, &v, &err) != KP_OK)
        fail_msg("version_finish: %s", err.msg);
}

static void test_project_url_names_the_newest_ready_version(void **state)
{
    fixture *f = *state;
    kp_user u;
    kp_err err = {0};
    char *token = user_with_token(f, "race@example.com", &u);
    kp_project p;
    kp_version v1;
    memset(&p, 0, sizeof p);
    memset(&v1, 0, sizeof v1);
    snprintf(p.id, sizeof p.id, "prj_race");
    snprintf(p.user_id, sizeof p.user_id, "%s", u.id);
    snprintf(p.name, sizeof p.name, "An app");
    snprintf(v1.project_id, sizeof v1.project_id, "prj_race");
    v1.n = 1;
    v1.status = KP_VER_GENERATING;
    v1.prompt = "make an app";
    if (f->s->ops->project_create(f->s, &p, &v1, &err) != KP_OK)
        fail_msg("project_create: %s", err.msg);
    ready_version(f->s, 1);
    ready_version(f->s, 2);

    kp_store_ops ops = *f->s->ops;
    real_project_ops = f->s->ops;
    stale_reads = 0;
    ops.project_get = project_get_before_the_end;
    kp_store racing = {.ops = &ops, .impl = f->s->impl};
    f->ctx.store = &racing;
    kp_resp resp;
    call(f, "GET", "/v1/projects/prj_race", NULL, token, NULL, &resp);
    f->ctx.store = f->s;
    json_t *doc = body_json(&resp);
    char want[1024];
    kp_gen_version_url(&f->cfg, "prj_race", 2, want, sizeof want);
    assert_int_equal(resp.status, 200);
    assert_int_equal(stale_reads, 2); /* the stale read, then the one that matched the versions */
    assert_string_equal(json_string_value(json_object_get(doc, "url")), want);
    assert_int_equal(json_integer_value(json_object_get(doc, "latest_ready_version")), 2);
    json_decref(doc);
    kp_resp_free(&resp);
    free(token);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

/* kp_h_time_text formats without gmtime_r and strftime: it must agree with
 * them on every day from 1600 to 2400 (leap years, centuries, the epoch,
 * before it), at a second that moves through the day, and on the years it
 * hands back to them. */
static void test_time_text_agrees_with_strftime(void **state)
{
    (void)state;
    const int64_t from = -11676096000LL, to = 13569465600LL; /* 1600-01-01 .. 2400-01-01 */
    int64_t second = 0;
    for (int64_t t = from; t <= to; t += 86400) {
        int64_t at = t + second;
        second = (second + 7919) % 86400;
        char got[KP_H_TIME_MAX], want[KP_H_TIME_MAX];
        struct tm tm;
        time_t tt = (time_t)at;
        assert_non_null(gmtime_r(&tt, &tm));
        assert_true(strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0);
        kp_h_time_text(at, got);
        assert_string_equal(got, want);
    }
    char got[KP_H_TIME_MAX];
    kp_h_time_text(0, got);
    assert_string_equal(got, "1970-01-01T00:00:00Z");
    kp_h_time_text(-1, got);
    assert_string_equal(got, "1969-12-31T23:59:59Z");
    kp_h_time_text(951782400, got);
    assert_string_equal(got, "2000-02-29T00:00:00Z");
    kp_h_time_text(253402300800LL, got); /* year 10000: strftime's */
    assert_string_equal(got, "10000-01-01T00:00:00Z");
}

int main(void)
{
    kp_log_set_level(KP_LOG_WARN);
    const struct CMUnitTest tests[] = {
        T(test_project_url_names_the_newest_ready_version),
        cmocka_unit_test(test_time_text_agrees_with_strftime),
        cmocka_unit_test(test_match_literal_and_params),
        cmocka_unit_test(test_match_mismatches),
        cmocka_unit_test(test_match_segment_length),
        cmocka_unit_test(test_match_too_many_params),
        T(test_unknown_path_404),
        T(test_unknown_path_with_non_utf8_bytes),
        T(test_wrong_method_405_with_allow),
        T(test_public_endpoints),
        T(test_me_without_token_401),
        T(test_bad_tokens_401),
        T(test_token_for_missing_user_401),
        T(test_me_200),
        T(test_non_admin_403),
        T(test_admin_via_config),
        T(test_admin_via_stored_flag),
        T(test_admin_plan_put),
        T(test_admin_user_plan_put),
        T(test_admin_users_find),
        T(test_snapshot_shared_by_read_routes),
        T(test_ledger_paging),
        T(test_ledger_bad_parameters),
        T(test_signup_and_login),
        T(test_login_rate_limited),
        T(test_signup_limited_per_address),
        T(test_hashing_queue_full_is_503),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
