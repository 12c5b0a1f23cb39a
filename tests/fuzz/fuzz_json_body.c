/*
 * fuzz_json_body.c - libFuzzer target for the request body parser
 * (kp_req_json_body in src/api/http.c), which every JSON endpoint runs on
 * what a client sends.
 *
 * Oracles: the body is accepted exactly when it is a JSON object (the result
 * is then an object); a refused body gets a 400 whose body is the API's error
 * object {"error": {"code": "invalid_json", "message": "..."}} with a
 * non-empty message, whatever bytes the client sent (the message quotes the
 * parser's complaint, which may quote the input).
 */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "api/http.h"
#include "harness.h"

static void check_error(const kp_resp *resp)
{
    json_t *body = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, NULL);
    json_t *error = json_object_get(body, "error");
    const char *code = json_string_value(json_object_get(error, "code"));
    const char *message = json_string_value(json_object_get(error, "message"));
    FZ_CHECK(resp->status == 400 && code && strcmp(code, "invalid_json") == 0 && message && *message,
             "a refused body did not get a 400 with an invalid_json error object");
    json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kp_req req;
    kp_resp resp;
    json_t *doc = NULL;
    memset(&req, 0, sizeof req);
    memset(&resp, 0, sizeof resp);
    FZ_CHECK(kp_headers_add(&req.headers, "Content-Type", "application/json; charset=utf-8") == 0, "out of memory");
    req.method = "POST";
    req.path = "/v1/projects";
    req.body = (const char *)data;
    req.body_len = size;
    if (kp_req_json_body(&req, &resp, &doc) == 0) {
        FZ_CHECK(json_is_object(doc) && resp.status == 0, "an accepted body is not an object, or a status was set");
        json_decref(doc);
    } else {
        FZ_CHECK(doc == NULL, "a refused body left a document");
        check_error(&resp);
    }
    kp_resp_free(&resp);
    kp_headers_free(&req.headers);
    return 0;
}
