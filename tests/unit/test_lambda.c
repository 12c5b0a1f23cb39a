/*
 * test_lambda.c - the Lambda host's translations (host/lambda/): API
 * Gateway payload format 2.0 in (path, query, headers, cookies, base64
 * bodies, the authorizer's flattened claims) and out (headers, cookies,
 * text and binary bodies, HEAD), and the route -> function table against
 * the router's own table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <sodium.h>

#include "api/router.h"
#include "core/log.h"
#include "host/lambda/apigw.h"
#include "host/lambda/functions.h"

static json_t *load(const char *text)
{
    json_error_t e;
    json_t *doc = json_loads(text, 0, &e);
    if (!doc)
        fail_msg("bad test JSON: %s", e.text);
    return doc;
}

#define EVENT_HEAD                                                                                                     \
    "{\"version\":\"2.0\",\"routeKey\":\"POST /v1/webhooks/stripe\",\"rawPath\":\"/v1/a%20b\","                        \
    "\"rawQueryString\":\"email=a%2Bb%40example.com&q=x+y&novalue&e=\","                                               \
    "\"cookies\":[\"a=1\",\"b=2\"],\"headers\":{\"content-type\":\"application/json\",\"x-multi\":\"1,2\"},"           \
    "\"requestContext\":{\"requestId\":\"abc=\",\"http\":{\"method\":\"POST\",\"sourceIp\":\"203.0.113.7\"},"

static void test_parse_request(void **state)
{
    (void)state;
    kp_apigw_event ev;
    kp_err err = {0};
    /* "eyJhIjoxfQo=" is {"a":1} and a newline */
    json_t *doc = load(EVENT_HEAD "\"authorizer\":{\"jwt\":{\"claims\":{\"sub\":\"s-1\",\"email\":\"A@example.com\","
                                  "\"email_verified\":\"true\",\"iss\":\"https://issuer\",\"exp\":\"1900000000\","
                                  "\"cognito:groups\":\"[admin users]\"},\"scopes\":null}}},"
                                  "\"body\":\"eyJhIjoxfQo=\",\"isBase64Encoded\":true}");
    assert_true(kp_apigw_is_http_event(doc));
    assert_int_equal(kp_apigw_parse(doc, &ev, &err), KP_OK);
    assert_string_equal(ev.req.method, "POST");
    assert_string_equal(ev.req.path, "/v1/a b");
    assert_string_equal(ev.req.remote_addr, "203.0.113.7");
    assert_string_equal(ev.req.request_id, "abc=");
    assert_string_equal(kp_req_query(&ev.req, "email"), "a+b@example.com");
    assert_string_equal(kp_req_query(&ev.req, "q"), "x y");
    assert_null(kp_req_query(&ev.req, "novalue"));
    assert_string_equal(kp_req_query(&ev.req, "e"), "");
    assert_string_equal(kp_req_header(&ev.req, "Content-Type"), "application/json");
    assert_string_equal(kp_req_header(&ev.req, "X-Multi"), "1,2");
    assert_string_equal(kp_req_header(&ev.req, "Cookie"), "a=1; b=2");
    assert_int_equal(ev.req.body_len, 8);
    assert_memory_equal(ev.req.body, "{\"a\":1}\n", 8);
    assert_true(ev.has_claims);
    assert_true(ev.claims.external);
    assert_string_equal(ev.claims.sub, "s-1");
    assert_string_equal(ev.claims.email, "A@example.com");
    assert_true(ev.claims.admin_group);
    assert_int_equal(ev.claims.exp, 1900000000);
    assert_string_equal(ev.issuer, "https://issuer");
    kp_apigw_event_free(&ev);
    json_decref(doc);
}

static void test_parse_refusals(void **state)
{
    (void)state;
    kp_apigw_event ev;
    kp_err err = {0};
    json_t *doc = load(EVENT_HEAD "\"x\":1},\"body\":\"not base64!\",\"isBase64Encoded\":true}");
    assert_int_equal(kp_apigw_parse(doc, &ev, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "base64"));
    kp_apigw_event_free(&ev);
    json_decref(doc);

    doc = load("{\"version\":\"2.0\",\"rawPath\":\"/a%00b\",\"requestContext\":{\"http\":{\"method\":\"GET\"}}}");
    assert_int_equal(kp_apigw_parse(doc, &ev, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "NUL"));
    kp_apigw_event_free(&ev);
    json_decref(doc);

    doc = load("{\"version\":\"1.0\",\"path\":\"/v1/me\",\"httpMethod\":\"GET\",\"requestContext\":{}}");
    assert_false(kp_apigw_is_http_event(doc));
    assert_int_equal(kp_apigw_parse(doc, &ev, &err), KP_EINVAL);
    kp_apigw_event_free(&ev);
    json_decref(doc);

    /* claims without a subject: nobody to authenticate */
    doc = load(EVENT_HEAD "\"authorizer\":{\"jwt\":{\"claims\":{\"email\":\"a@example.com\"}}}}}");
    assert_int_equal(kp_apigw_parse(doc, &ev, &err), KP_EAUTH);
    kp_apigw_event_free(&ev);
    json_decref(doc);
}

static void test_claims(void **state)
{
    (void)state;
    kp_claims c;
    kp_err err = {0};
    char iss[64];
    assert_true(kp_apigw_list_contains("[admin users]", "admin"));
    assert_true(kp_apigw_list_contains("[users admin]", "admin"));
    assert_true(kp_apigw_list_contains("admin", "admin"));
    assert_false(kp_apigw_list_contains("[administrators users]", "admin"));
    assert_false(kp_apigw_list_contains("[users]", "admin"));
    assert_false(kp_apigw_list_contains("[]", "admin"));
    assert_false(kp_apigw_list_contains(NULL, "admin"));

    /* an unverified e-mail is dropped (it must not match an admin address) */
    json_t *claims = load("{\"sub\":\"s\",\"email\":\"a@example.com\",\"email_verified\":\"false\","
                          "\"cognito:groups\":\"[users]\"}");
    assert_int_equal(kp_apigw_claims(claims, &c, iss, sizeof iss, &err), KP_OK);
    assert_string_equal(c.email, "");
    assert_false(c.admin_group);
    assert_string_equal(iss, "");
    json_decref(claims);

    /* a real JSON array, as other authorizers may pass it */
    claims = load("{\"sub\":\"s\",\"email_verified\":true,\"email\":\"a@example.com\",\"cognito:groups\":[\"admin\"]}");
    assert_int_equal(kp_apigw_claims(claims, &c, iss, sizeof iss, &err), KP_OK);
    assert_string_equal(c.email, "a@example.com");
    assert_true(c.admin_group);
    json_decref(claims);
}

static json_t *respond(const kp_resp *resp, const char *method)
{
    kp_err err = {0};
    char *text = kp_apigw_response(resp, method, kp_api_default_headers, "rid-1", &err);
    assert_non_null(text);
    json_t *doc = load(text);
    free(text);
    return doc;
}

static void test_response_text(void **state)
{
    (void)state;
    kp_resp resp;
    memset(&resp, 0, sizeof resp);
    kp_resp_json(&resp, 201, json_pack("{s:s}", "name", "caf\xc3\xa9"));
    kp_headers_add(&resp.headers, "Set-Cookie", "a=1; Secure");
    kp_headers_add(&resp.headers, "Set-Cookie", "b=2");
    kp_headers_add(&resp.headers, "Vary", "Accept");
    kp_headers_add(&resp.headers, "Vary", "Origin");
    kp_headers_add(&resp.headers, "Cache-Control", "max-age=5");
    json_t *doc = respond(&resp, "GET");
    assert_int_equal(json_integer_value(json_object_get(doc, "statusCode")), 201);
    json_t *h = json_object_get(doc, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")), "application/json");
    assert_string_equal(json_string_value(json_object_get(h, "vary")), "Accept, Origin");
    assert_string_equal(json_string_value(json_object_get(h, "cache-control")), "max-age=5"); /* its own wins */
    assert_string_equal(json_string_value(json_object_get(h, "x-content-type-options")), "nosniff");
    assert_string_equal(json_string_value(json_object_get(h, "x-request-id")), "rid-1");
    assert_null(json_object_get(h, "set-cookie"));
    json_t *cookies = json_object_get(doc, "cookies");
    assert_int_equal(json_array_size(cookies), 2);
    assert_string_equal(json_string_value(json_array_get(cookies, 0)), "a=1; Secure");
    assert_false(json_is_true(json_object_get(doc, "isBase64Encoded")));
    assert_string_equal(json_string_value(json_object_get(doc, "body")), "{\"name\":\"caf\xc3\xa9\"}");
    json_decref(doc);

    doc = respond(&resp, "HEAD"); /* like GET, without the body */
    assert_int_equal(json_integer_value(json_object_get(doc, "statusCode")), 201);
    assert_string_equal(json_string_value(json_object_get(doc, "body")), "");
    json_decref(doc);
    kp_resp_free(&resp);
}

static void test_response_binary(void **state)
{
    (void)state;
    kp_resp resp;
    const char zip[] = "PK\x03\x04\x00\xff\xfe";
    memset(&resp, 0, sizeof resp);
    kp_resp_text(&resp, 200, "application/zip", zip, sizeof zip - 1);
    json_t *doc = respond(&resp, "GET");
    assert_true(json_is_true(json_object_get(doc, "isBase64Encoded")));
    assert_string_equal(json_string_value(json_object_get(doc, "body")), "UEsDBAD//g==");
    json_decref(doc);
    kp_resp_free(&resp);

    /* text that is not UTF-8 goes as base64 too */
    memset(&resp, 0, sizeof resp);
    kp_resp_text(&resp, 200, "text/plain", "\xff", 1);
    doc = respond(&resp, "GET");
    assert_true(json_is_true(json_object_get(doc, "isBase64Encoded")));
    assert_string_equal(json_string_value(json_object_get(doc, "body")), "/w==");
    json_decref(doc);
    kp_resp_free(&resp);

    /* a file body is read */
    FILE *f = tmpfile();
    assert_non_null(f);
    fwrite("xxPK\x03\x04yy", 1, 8, f);
    fflush(f);
    memset(&resp, 0, sizeof resp);
    kp_resp_set_file(&resp, 200, "application/zip", dup(fileno(f)), 2, 4);
    fclose(f);
    doc = respond(&resp, "GET");
    assert_string_equal(json_string_value(json_object_get(doc, "body")), "UEsDBA==");
    json_decref(doc);
    kp_resp_free(&resp);
}

/* A function URL's event: flagged, and claims in it do not count (no authorizer there). */
static void test_function_url_event(void **state)
{
    (void)state;
    kp_apigw_event ev;
    kp_err err = {0};
    json_t *doc = load("{\"version\":\"2.0\",\"routeKey\":\"$default\",\"rawPath\":\"/v1/projects\","
                       "\"headers\":{\"authorization\":\"Bearer t\"},\"requestContext\":{\"requestId\":\"r-1\","
                       "\"domainName\":\"abc123.lambda-url.eu-west-1.on.aws\",\"routeKey\":\"$default\","
                       "\"authorizer\":{\"jwt\":{\"claims\":{\"sub\":\"forged\",\"iss\":\"https://issuer\"}}},"
                       "\"http\":{\"method\":\"POST\",\"sourceIp\":\"203.0.113.9\"}}}");
    assert_true(kp_apigw_is_function_url(doc));
    assert_int_equal(kp_apigw_parse(doc, &ev, &err), KP_OK);
    assert_true(ev.function_url);
    assert_false(ev.has_claims);
    assert_string_equal(ev.req.path, "/v1/projects");
    assert_string_equal(kp_req_header(&ev.req, "Authorization"), "Bearer t");
    kp_apigw_event_free(&ev);
    json_decref(doc);

    /* the HTTP API's events are not */
    doc = load("{\"version\":\"2.0\",\"rawPath\":\"/v1/me\",\"requestContext\":{\"domainName\":"
               "\"abc.execute-api.eu-west-1.amazonaws.com\",\"http\":{\"method\":\"GET\"}}}");
    assert_false(kp_apigw_is_function_url(doc));
    assert_int_equal(kp_apigw_parse(doc, &ev, &err), KP_OK);
    assert_false(ev.function_url);
    kp_apigw_event_free(&ev);
    json_decref(doc);
}

/* The prelude of a streamed answer: status, headers and cookies as in the 2.0 response, no body; the body raw. */
static void test_prelude_and_body(void **state)
{
    (void)state;
    kp_resp resp;
    kp_err err = {0};
    kp_buf body = KP_BUF_INIT;
    memset(&resp, 0, sizeof resp);
    kp_resp_text(&resp, 404, "application/zip", "PK\x03\x04\xff", 5);
    kp_headers_add(&resp.headers, "Set-Cookie", "a=1");
    char *text = kp_apigw_prelude(&resp, kp_api_default_headers, "rid-2", &err);
    assert_non_null(text);
    json_t *doc = load(text);
    free(text);
    assert_int_equal(json_integer_value(json_object_get(doc, "statusCode")), 404);
    json_t *h = json_object_get(doc, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")), "application/zip");
    assert_string_equal(json_string_value(json_object_get(h, "x-request-id")), "rid-2");
    assert_string_equal(json_string_value(json_object_get(h, "cache-control")), "no-store");
    assert_string_equal(json_string_value(json_array_get(json_object_get(doc, "cookies"), 0)), "a=1");
    assert_null(json_object_get(doc, "body"));
    assert_null(json_object_get(doc, "isBase64Encoded"));
    json_decref(doc);

    assert_int_equal(kp_apigw_body(&resp, "GET", &body, &err), KP_OK); /* binary goes as it is */
    assert_int_equal(body.len, 5);
    assert_memory_equal(body.data, "PK\x03\x04\xff", 5);
    kp_buf_free(&body);
    assert_int_equal(kp_apigw_body(&resp, "HEAD", &body, &err), KP_OK);
    assert_int_equal(body.len, 0);
    kp_resp_free(&resp);

    FILE *f = tmpfile();
    assert_non_null(f);
    fwrite("xxhello", 1, 7, f);
    fflush(f);
    memset(&resp, 0, sizeof resp);
    kp_resp_set_file(&resp, 200, "text/plain", dup(fileno(f)), 2, 5);
    fclose(f);
    assert_int_equal(kp_apigw_body(&resp, "GET", &body, &err), KP_OK);
    assert_string_equal(kp_buf_cstr(&body), "hello");
    kp_buf_free(&body);
    kp_resp_free(&resp);
}

/* Every route of the router is served by exactly one function, or listed as not routed on AWS. */
static void test_route_table_covers_the_router(void **state)
{
    (void)state;
    for (const kp_route *r = kp_routes; r->method; r++) {
        int owners = 0, unrouted = 0;
        for (const kp_lambda_route *l = kp_lambda_routes; l->function; l++)
            owners += strcmp(l->method, r->method) == 0 && strcmp(l->pattern, r->pattern) == 0;
        for (const char *const *n = kp_lambda_not_routed; n[0]; n += 2)
            unrouted += strcmp(n[0], r->method) == 0 && strcmp(n[1], r->pattern) == 0;
        if (owners + unrouted != 1)
            fail_msg("%s %s: %d functions, %d not-routed entries", r->method, r->pattern, owners, unrouted);
    }
    for (const kp_lambda_route *l = kp_lambda_routes; l->function; l++) {
        int found = 0;
        for (const kp_route *r = kp_routes; r->method; r++)
            found |= strcmp(l->method, r->method) == 0 && strcmp(l->pattern, r->pattern) == 0;
        if (!found || !kp_lambda_function_known(l->function))
            fail_msg("%s %s (%s) is not a route of the router", l->method, l->pattern, l->function);
    }
    assert_string_equal(kp_lambda_route_owner("HEAD", "/v1/projects/p1/versions/2/download"), "list-projects");
    assert_string_equal(kp_lambda_route_owner("DELETE", "/v1/projects/p1"), "generate-app");
    assert_null(kp_lambda_route_owner("GET", "/healthz"));
    assert_false(kp_lambda_function_known("koumpa"));
    assert_false(kp_lambda_function_known(NULL));
    json_t *j = kp_lambda_routes_json();
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "route_key")), "GET /v1/me");
    json_decref(j);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    kp_log_set_level(KP_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_request),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_response_text),
        cmocka_unit_test(test_response_binary),
        cmocka_unit_test(test_route_table_covers_the_router),
        cmocka_unit_test(test_function_url_event),
        cmocka_unit_test(test_prelude_and_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
