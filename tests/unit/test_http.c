/*
 * test_http.c - the handler-facing request and response values (api/http.c):
 * header lists, reading a JSON request body (415 / 400 with a useful message),
 * and turning a kp_err into an error response without leaking internals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "api/http.h"
#include "core/log.h"

/* ---- helpers ---- */

static void req_init(kp_req *req, const char *content_type, const char *body)
{
    memset(req, 0, sizeof *req);
    req->method = "POST";
    req->path = "/v1/test";
    req->request_id = "req-test-1";
    if (content_type)
        assert_int_equal(kp_headers_add(&req->headers, "Content-Type", content_type), 0);
    req->body = body;
    req->body_len = body ? strlen(body) : 0;
}

static void req_free(kp_req *req)
{
    kp_headers_free(&req->headers);
    kp_headers_free(&req->query);
}

/* Parses resp's body as {"error": {"code", "message"}}; returns the decref-able doc. */
static json_t *error_of(const kp_resp *resp, const char **code, const char **message)
{
    json_error_t jerr;
    json_t *doc = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, &jerr);
    if (!doc)
        fail_msg("response body is not JSON (%s): [%.*s]", jerr.text, (int)resp->body.len,
                 resp->body.data ? resp->body.data : "");
    json_t *e = json_object_get(doc, "error");
    assert_true(json_is_object(e));
    *code = json_string_value(json_object_get(e, "code"));
    *message = json_string_value(json_object_get(e, "message"));
    assert_non_null(*code);
    assert_non_null(*message);
    return doc;
}

/* Runs kp_req_json_body on a request with this Content-Type and body; expects failure with status. */
static void expect_body_refused(const char *content_type, const char *body, int status, const char *want_in_message)
{
    kp_req req;
    kp_resp resp = {0};
    json_t *out = (json_t *)&out; /* must be reset to NULL */
    req_init(&req, content_type, body);
    assert_int_equal(kp_req_json_body(&req, &resp, &out), -1);
    assert_null(out);
    assert_int_equal(resp.status, status);
    assert_string_equal(kp_headers_get(&resp.headers, "Content-Type"), "application/json");
    const char *code, *message;
    json_t *doc = error_of(&resp, &code, &message);
    if (want_in_message && !strstr(message, want_in_message))
        fail_msg("message \"%s\" does not contain \"%s\"", message, want_in_message);
    json_decref(doc);
    kp_resp_free(&resp);
    req_free(&req);
}

/* ---- headers ---- */

static void test_headers_add_get_case_insensitive(void **state)
{
    (void)state;
    kp_headers h = {0};
    assert_null(kp_headers_get(&h, "X-Anything"));
    assert_int_equal(kp_headers_add(&h, "Content-Type", "application/json"), 0);
    assert_int_equal(kp_headers_add(&h, "X-Multi", "first"), 0);
    assert_int_equal(kp_headers_add(&h, "x-multi", "second"), 0);
    assert_string_equal(kp_headers_get(&h, "content-type"), "application/json");
    assert_string_equal(kp_headers_get(&h, "CONTENT-TYPE"), "application/json");
    /* the first value wins, and both are kept in order */
    assert_string_equal(kp_headers_get(&h, "X-MULTI"), "first");
    assert_int_equal(h.n, 3);
    assert_string_equal(h.items[2].value, "second");
    assert_null(kp_headers_get(&h, "X-Mult"));
    assert_null(kp_headers_get(&h, "Content-Type2"));
    kp_headers_free(&h);
    assert_null(h.items);
    assert_int_equal(h.n, 0);
    kp_headers_free(&h); /* twice is harmless */
}

static void test_headers_copy_their_strings(void **state)
{
    (void)state;
    kp_headers h = {0};
    char name[16], value[16];
    snprintf(name, sizeof name, "X-Id");
    snprintf(value, sizeof value, "abc");
    kp_headers_add(&h, name, value);
    memset(name, 0, sizeof name);
    memset(value, 0, sizeof value);
    assert_string_equal(kp_headers_get(&h, "x-id"), "abc");
    kp_headers_free(&h);
}

static void test_headers_set_replaces_first(void **state)
{
    (void)state;
    kp_headers h = {0};
    assert_int_equal(kp_headers_set(&h, "Allow", "GET"), 0); /* absent: added */
    assert_int_equal(h.n, 1);
    assert_int_equal(kp_headers_set(&h, "allow", "PUT"), 0); /* present: replaced, any case */
    assert_int_equal(h.n, 1);
    assert_string_equal(kp_headers_get(&h, "ALLOW"), "PUT");
    assert_string_equal(h.items[0].name, "Allow"); /* the original name is kept */
    kp_headers_free(&h);
}

static void test_headers_grow(void **state)
{
    (void)state;
    kp_headers h = {0};
    char name[32], value[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "X-H%d", i);
        snprintf(value, sizeof value, "v%d", i);
        assert_int_equal(kp_headers_add(&h, name, value), 0);
    }
    assert_int_equal(h.n, 100);
    assert_string_equal(kp_headers_get(&h, "x-h0"), "v0");
    assert_string_equal(kp_headers_get(&h, "x-h99"), "v99");
    kp_headers_free(&h);
}

static void test_query_parameters_are_exact(void **state)
{
    (void)state;
    kp_req req;
    req_init(&req, NULL, NULL);
    kp_headers_add(&req.query, "limit", "5");
    kp_headers_add(&req.query, "Cursor", "abc");
    kp_headers_add(&req.headers, "X-Request-Id", "rid");
    assert_string_equal(kp_req_query(&req, "limit"), "5");
    assert_null(kp_req_query(&req, "LIMIT"));
    assert_null(kp_req_query(&req, "cursor"));
    assert_string_equal(kp_req_query(&req, "Cursor"), "abc");
    assert_string_equal(kp_req_header(&req, "x-request-id"), "rid");
    assert_string_equal(kp_headers_get_exact(&req.headers, "X-Request-Id"), "rid");
    assert_null(kp_headers_get_exact(&req.headers, "x-request-id"));
    req_free(&req);
}

/* ---- kp_req_json_body ---- */

static void test_json_body_ok(void **state)
{
    (void)state;
    static const char *types[] = {
        "application/json",  "application/json; charset=utf-8", "application/json;charset=UTF-8", "Application/JSON",
        " application/json",
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        kp_req req;
        kp_resp resp = {0};
        json_t *out = NULL;
        req_init(&req, types[i], "{\"name\": \"Pro\", \"n\": 3}");
        if (kp_req_json_body(&req, &resp, &out) != 0)
            fail_msg("Content-Type \"%s\" refused: %d %s", types[i], resp.status, kp_buf_cstr(&resp.body));
        assert_int_equal(resp.status, 0); /* resp untouched */
        assert_true(json_is_object(out));
        assert_string_equal(json_string_value(json_object_get(out, "name")), "Pro");
        assert_int_equal(json_integer_value(json_object_get(out, "n")), 3);
        json_decref(out);
        kp_resp_free(&resp);
        req_free(&req);
    }
}

static void test_json_body_uses_body_len_not_nul(void **state)
{
    (void)state;
    kp_req req;
    kp_resp resp = {0};
    json_t *out = NULL;
    /* the body is not NUL-terminated where it ends */
    static const char raw[] = "{\"a\":1}garbage";
    req_init(&req, "application/json", NULL);
    req.body = raw;
    req.body_len = 7;
    assert_int_equal(kp_req_json_body(&req, &resp, &out), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "a")), 1);
    json_decref(out);
    kp_resp_free(&resp);
    req_free(&req);
}

static void test_json_body_wrong_content_type_415(void **state)
{
    (void)state;
    expect_body_refused(NULL, "{}", 415, "application/json");
    expect_body_refused("text/plain", "{}", 415, NULL);
    expect_body_refused("application/x-www-form-urlencoded", "a=b", 415, NULL);
    expect_body_refused("application/jsonp", "{}", 415, NULL);
    expect_body_refused("application/json-patch+json", "[]", 415, NULL);
    expect_body_refused("", "{}", 415, NULL);
    /* the media type is checked before the body */
    expect_body_refused("text/plain", "", 415, NULL);
}

static void test_json_body_empty_400(void **state)
{
    (void)state;
    expect_body_refused("application/json", NULL, 400, "empty");
    expect_body_refused("application/json", "", 400, "empty");
}

static void test_json_body_malformed_400_with_position(void **state)
{
    (void)state;
    expect_body_refused("application/json", "{\"a\": }", 400, "position");
    expect_body_refused("application/json", "{\"a\": 1", 400, "position");
    expect_body_refused("application/json", "{\"a\": 1}}", 400, "position"); /* trailing data */
    expect_body_refused("application/json", "{'a': 1}", 400, "line 1");
    expect_body_refused("application/json", "{\n\"a\": tru\n}", 400, "line 2");
    /* invalid UTF-8 inside a string */
    expect_body_refused("application/json", "{\"a\": \"\xff\"}", 400, "position");
}

static void test_json_body_not_object_400(void **state)
{
    (void)state;
    expect_body_refused("application/json", "[1,2]", 400, "must be a JSON object");
    expect_body_refused("application/json", "[]", 400, "must be a JSON object");
    expect_body_refused("application/json", "\"text\"", 400, "must be a JSON object");
    expect_body_refused("application/json", "42", 400, "must be a JSON object");
    expect_body_refused("application/json", "null", 400, "must be a JSON object");
}

static void test_json_body_duplicate_keys_400(void **state)
{
    (void)state;
    expect_body_refused("application/json", "{\"plan_id\": \"free\", \"plan_id\": \"pro\"}", 400, "plan_id");
}

/* ---- responses ---- */

static void test_resp_json_and_text(void **state)
{
    (void)state;
    kp_resp resp = {0};
    kp_resp_json(&resp, 201, json_pack("{s:s,s:i}", "b", "x", "a", 1));
    assert_int_equal(resp.status, 201);
    assert_string_equal(kp_buf_cstr(&resp.body), "{\"b\":\"x\",\"a\":1}"); /* compact, in insertion order */
    assert_string_equal(kp_headers_get(&resp.headers, "content-type"), "application/json");
    /* a second call replaces body and status without a second Content-Type */
    kp_resp_text(&resp, 200, "text/plain", "hi\0there", 8);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.body.len, 8);
    assert_memory_equal(resp.body.data, "hi\0there", 8);
    assert_int_equal(resp.headers.n, 1);
    assert_string_equal(kp_headers_get(&resp.headers, "Content-Type"), "text/plain");
    kp_resp_free(&resp);
    assert_null(resp.body.data);
    assert_int_equal(resp.headers.n, 0);
}

static void test_resp_error_shape(void **state)
{
    (void)state;
    kp_resp resp = {0};
    kp_resp_error(&resp, 404, "not_found", "no plan with id %s", "gold");
    assert_int_equal(resp.status, 404);
    const char *code, *message;
    json_t *doc = error_of(&resp, &code, &message);
    assert_string_equal(code, "not_found");
    assert_string_equal(message, "no plan with id gold");
    assert_int_equal(json_object_size(doc), 1);
    json_decref(doc);
    kp_resp_free(&resp);
}

static void test_resp_error_always_valid_json(void **state)
{
    (void)state;
    kp_resp resp = {0};
    /* quotes and control characters are escaped */
    kp_resp_error(&resp, 400, "invalid_request", "bad \"%s\"\n\t", "x\\y");
    const char *code, *message;
    json_t *doc = error_of(&resp, &code, &message);
    assert_string_equal(message, "bad \"x\\y\"\n\t");
    json_decref(doc);
    kp_resp_free(&resp);

    /* a message longer than the internal buffer is cut, still valid JSON */
    char long_text[2000];
    memset(long_text, 'm', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    kp_resp resp2 = {0};
    kp_resp_error(&resp2, 400, "invalid_request", "%s", long_text);
    doc = error_of(&resp2, &code, &message);
    assert_true(strlen(message) > 100);
    json_decref(doc);
    kp_resp_free(&resp2);

    /* bytes that are not UTF-8 (e.g. a client's percent-decoded path echoed
     * back in a 404) must not cost the client its error body */
    kp_resp resp3 = {0};
    kp_resp_error(&resp3, 404, "not_found", "no such endpoint: GET %s", "/caf\xe9");
    assert_int_equal(resp3.status, 404);
    /* invalid UTF-8 in a message is replaced, never an empty body */
    doc = error_of(&resp3, &code, &message);
    json_decref(doc);
    kp_resp_free(&resp3);
}

/* ---- kp_resp_from_err ---- */

static kp_err make_err(kp_status st, const char *msg)
{
    kp_err err;
    kp_err_set(&err, st, "%s", msg);
    return err;
}

static void test_from_err_4xx_keeps_message(void **state)
{
    (void)state;
    static const struct {
        kp_status st;
        int http;
        const char *code;
    } cases[] = {
        {KP_EINVAL, 400, "invalid_request"},        {KP_EAUTH, 401, "unauthorized"},
        {KP_ECREDITS, 402, "insufficient_credits"}, {KP_EFORBIDDEN, 403, "forbidden"},
        {KP_ENOTFOUND, 404, "not_found"},           {KP_ECONFLICT, 409, "conflict"},
        {KP_ETOOLARGE, 413, "payload_too_large"},   {KP_ERATE, 429, "rate_limited"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kp_resp resp = {0};
        kp_err err = make_err(cases[i].st, "100% sure: %s %n is a literal");
        kp_resp_from_err(&resp, &err, "rid-1");
        assert_int_equal(resp.status, cases[i].http);
        const char *code, *message;
        json_t *doc = error_of(&resp, &code, &message);
        assert_string_equal(code, cases[i].code);
        /* the message is passed through verbatim, never used as a format */
        assert_string_equal(message, "100% sure: %s %n is a literal");
        json_decref(doc);
        kp_resp_free(&resp);
    }
}

/* Runs kp_resp_from_err with stderr captured; returns the log text (caller frees). */
static char *from_err_logged(kp_resp *resp, const kp_err *err, const char *request_id)
{
    char path[] = "/tmp/koumpa-http-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    kp_resp_from_err(resp, err, request_id);
    dup2(saved, STDERR_FILENO);
    close(saved);
    kp_buf out = KP_BUF_INIT;
    char chunk[512];
    ssize_t n;
    lseek(fd, 0, SEEK_SET);
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        kp_buf_append(&out, chunk, (size_t)n);
    close(fd);
    unlink(path);
    return kp_buf_steal(&out);
}

static void test_from_err_500_hides_detail(void **state)
{
    (void)state;
    kp_log_set_level(KP_LOG_INFO);
    static const kp_status internal[] = {KP_EDB, KP_EIO, KP_ENOMEM, KP_EINTERNAL};
    for (size_t i = 0; i < sizeof internal / sizeof internal[0]; i++) {
        kp_resp resp = {0};
        kp_err err = make_err(internal[i], "sqlite: no such table users_v2 at /srv/koumpa/data/koumpa.db");
        char *log = from_err_logged(&resp, &err, "rid-500");
        assert_int_equal(resp.status, 500);
        const char *code, *message;
        json_t *doc = error_of(&resp, &code, &message);
        assert_string_equal(code, "internal_error");
        assert_null(strstr(message, "sqlite"));
        assert_null(strstr(message, "users_v2"));
        assert_null(strstr(message, "/srv"));
        assert_non_null(strstr(message, "rid-500")); /* so support can find the log line */
        assert_null(strstr(kp_buf_cstr(&resp.body), "users_v2"));
        json_decref(doc);
        /* the detail went to the log instead, with the request id */
        assert_non_null(strstr(log, "users_v2"));
        assert_non_null(strstr(log, "rid-500"));
        free(log);
        kp_resp_free(&resp);
    }
}

static void test_from_err_500_without_request_id(void **state)
{
    (void)state;
    kp_resp resp = {0};
    kp_err err = make_err(KP_EDB, "secret detail");
    char *log = from_err_logged(&resp, &err, NULL);
    assert_int_equal(resp.status, 500);
    assert_null(strstr(kp_buf_cstr(&resp.body), "secret detail"));
    const char *code, *message;
    json_t *doc = error_of(&resp, &code, &message);
    assert_string_equal(code, "internal_error");
    json_decref(doc);
    assert_non_null(strstr(log, "secret detail"));
    free(log);
    kp_resp_free(&resp);
}

static void test_from_err_503_keeps_message(void **state)
{
    (void)state;
    kp_resp resp = {0};
    kp_err err = make_err(KP_EUNAVAILABLE, "no LLM provider is configured (set ANTHROPIC_API_KEY)");
    char *log = from_err_logged(&resp, &err, "rid-503");
    free(log);
    assert_int_equal(resp.status, 503);
    const char *code, *message;
    json_t *doc = error_of(&resp, &code, &message);
    assert_string_equal(code, "unavailable");
    assert_string_equal(message, "no LLM provider is configured (set ANTHROPIC_API_KEY)");
    json_decref(doc);
    kp_resp_free(&resp);
}

static void test_from_err_duplicate_is_409(void **state)
{
    (void)state;
    kp_resp resp = {0};
    kp_err err = make_err(KP_EDUPLICATE, "already done");
    kp_resp_from_err(&resp, &err, "r");
    assert_int_equal(resp.status, 409);
    const char *code, *message;
    json_t *doc = error_of(&resp, &code, &message);
    assert_string_equal(code, "duplicate");
    json_decref(doc);
    kp_resp_free(&resp);
}

/* ---- streams ---- */

static int released;
static void stream_release(kp_stream *s)
{
    (void)s;
    released++;
}

static void test_resp_free_releases_stream(void **state)
{
    (void)state;
    kp_stream st = {.release = stream_release};
    kp_resp resp = {0};
    resp.stream = &st;
    released = 0;
    kp_resp_free(&resp);
    assert_int_equal(released, 1);
    assert_null(resp.stream);
    kp_resp_free(&resp); /* not released twice */
    assert_int_equal(released, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_add_get_case_insensitive),
        cmocka_unit_test(test_headers_copy_their_strings),
        cmocka_unit_test(test_headers_set_replaces_first),
        cmocka_unit_test(test_headers_grow),
        cmocka_unit_test(test_query_parameters_are_exact),
        cmocka_unit_test(test_json_body_ok),
        cmocka_unit_test(test_json_body_uses_body_len_not_nul),
        cmocka_unit_test(test_json_body_wrong_content_type_415),
        cmocka_unit_test(test_json_body_empty_400),
        cmocka_unit_test(test_json_body_malformed_400_with_position),
        cmocka_unit_test(test_json_body_not_object_400),
        cmocka_unit_test(test_json_body_duplicate_keys_400),
        cmocka_unit_test(test_resp_json_and_text),
        cmocka_unit_test(test_resp_error_shape),
        cmocka_unit_test(test_resp_error_always_valid_json),
        cmocka_unit_test(test_from_err_4xx_keeps_message),
        cmocka_unit_test(test_from_err_500_hides_detail),
        cmocka_unit_test(test_from_err_500_without_request_id),
        cmocka_unit_test(test_from_err_503_keeps_message),
        cmocka_unit_test(test_from_err_duplicate_is_409),
        cmocka_unit_test(test_resp_free_releases_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
