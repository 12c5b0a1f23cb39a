/*
 * lambda_host.c - see lambda_host.h.
 */
#include "host/lambda/lambda_host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/log.h"
#include "domain/credits.h"
#include "gen/generator.h"
#include "host/lambda/apigw.h"
#include "host/lambda/functions.h"
#include "host/lambda/stream.h"
#include "host/lambda/worker.h"

#define BONUS_BATCH 1000

static void set_error(kp_lambda_result *out, const char *type, const kp_err *err)
{
    out->payload = NULL;
    out->error_type = type;
    out->err = *err;
}

/* ---- API Gateway events ---- */

/* The request id: a sane X-Request-Id, else the gateway's (its ids often
 * end in '=', which the rule refuses), else the invocation's (the
 * aws_request_id of the log lines), else a new one. */
static void choose_request_id(kp_lambda_host *h, const kp_apigw_event *ev, char rid[KP_REQUEST_ID_MAX + 1])
{
    const char *incoming = kp_req_header(&ev->req, "X-Request-Id");
    if (!kp_exchange_id_is_sane(incoming))
        incoming = ev->request_id;
    if (!kp_exchange_id_is_sane(incoming))
        incoming = h->invocation_id;
    kp_exchange_request_id(&h->ids, incoming, rid);
}

/* 0 when the invoked function serves the request, else resp is the 404. */
static int check_owner(const kp_lambda_host *h, const kp_req *req, kp_resp *resp)
{
    const char *owner = kp_lambda_route_owner(req->method, req->path);
    if (owner && strcmp(owner, h->function) == 0)
        return 0;
    if (owner)
        kp_resp_error(resp, 404, "not_found", "%s %s is served by the function %s, not %s", req->method, req->path,
                      owner, h->function);
    else
        kp_resp_error(resp, 404, "not_found", "no such endpoint on AWS: %s %s", req->method, req->path);
    return -1;
}

/* The authorizer's claims authenticate the caller when their issuer is ours. */
static int take_claims(kp_lambda_host *h, kp_apigw_event *ev, kp_resp *resp)
{
    const char *ours = h->ctx.app->cfg->jwt_issuer;
    if (!ev->has_claims)
        return 0;
    if (!ours || strcmp(ours, ev->issuer) != 0) {
        kp_resp_error(resp, 401, "unauthorized", "the token's issuer is not the configured one (KOUMPA_JWT_ISSUER)");
        return -1;
    }
    ev->req.verified_claims = &ev->claims;
    return 0;
}

/* The HTTP API cannot carry a stream: the function URL does; a HEAD drops it. */
static void settle_stream(kp_resp *resp, const char *method, const char *rid)
{
    if (!resp->stream)
        return;
    kp_exchange_drop_stream(resp);
    if (kp_exchange_is_head(method))
        return;
    kp_headers_free(&resp->headers);
    kp_buf_free(&resp->body);
    memset(resp, 0, sizeof *resp);
    kp_resp_error(resp, 501, "streaming_not_available",
                  "this response is a stream, which API Gateway's HTTP API cannot carry: make this request to "
                  "the generate-app function URL (Terraform's output generate_app_stream_url), which streams it "
                  "(request %s)",
                  rid);
}

/* The HTTP API's answer: the 2.0 response as the invocation's payload. */
static void prepare_payload(const kp_req *req, kp_resp *resp, kp_req_summary *sum, kp_lambda_result *out)
{
    kp_err err = {0};
    settle_stream(resp, req->method, req->request_id);
    sum->status = resp->status;
    out->payload = kp_apigw_response(resp, req->method, kp_api_default_headers, req->request_id, &err);
    if (!out->payload)
        set_error(out, "Runtime.ResponseError", &err);
}

/* ---- function URL events: answered in streaming mode ---- */

static void streamed_free(kp_lambda_streamed *a)
{
    if (!a)
        return;
    if (a->stream)
        a->stream->release(a->stream);
    free(a->prelude);
    kp_buf_free(&a->body);
    free(a);
}

void kp_lambda_result_free(kp_lambda_result *res)
{
    free(res->payload);
    streamed_free(res->streamed);
    res->payload = NULL;
    res->streamed = NULL;
}

/* The caller's token is verified here, with the identity provider's keys:
 * wait for the fetch started at init (a cold start's first request). */
static void wait_for_keys(kp_lambda_host *h, const kp_req *req)
{
    if (kp_req_header(req, "Authorization"))
        kp_auth_wait_keys(h->ctx.app->auth);
}

/* The summary outlives the event: its method must be a static string. */
static const char *static_method(const char *method)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", NULL};
    for (const char *const *m = known; *m; m++)
        if (strcmp(*m, method) == 0)
            return *m;
    return "OTHER";
}

/* Takes resp's body or stream into out->streamed, to be sent by kp_lambda_serve. 0, or -1 with out's error. */
static int prepare_streamed(const kp_req *req, kp_resp *resp, const kp_req_summary *sum, kp_lambda_result *out)
{
    kp_err err = {0};
    if (kp_exchange_is_head(req->method))
        kp_exchange_drop_stream(resp);
    kp_lambda_streamed *a = calloc(1, sizeof *a);
    if (!a || !(a->prelude = kp_apigw_prelude(resp, kp_api_default_headers, req->request_id, &err)) ||
        kp_apigw_body(resp, req->method, &a->body, &err) != KP_OK) {
        if (!a)
            kp_err_set(&err, KP_ENOMEM, "out of memory");
        set_error(out, "Runtime.ResponseError", &err);
        streamed_free(a);
        return -1;
    }
    a->stream = resp->stream;
    resp->stream = NULL;
    a->ran_generation = a->stream && strcmp(req->method, "POST") == 0;
    a->deadline_ms = req->deadline_ms;
    a->sum = *sum;
    a->sum.method = static_method(req->method);
    out->streamed = a;
    return 0;
}

static void handle_http(kp_lambda_host *h, const json_t *doc, int64_t deadline_ms, kp_lambda_result *out)
{
    kp_apigw_event ev;
    kp_resp resp;
    kp_req_summary sum;
    kp_err err = {0};
    char rid[KP_REQUEST_ID_MAX + 1];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(&resp, 0, sizeof resp);

    int function_url = kp_apigw_is_function_url(doc);
    kp_status st = kp_apigw_parse(doc, &ev, &err);
    choose_request_id(h, &ev, rid);
    ev.req.request_id = rid;
    ev.req.deadline_ms = deadline_ms;
    ev.req.cannot_stream = !function_url; /* the HTTP API neither streams nor waits past 30 s */
    if (!ev.req.method)
        ev.req.method = "GET";
    if (!ev.req.remote_addr)
        ev.req.remote_addr = "";
    if (st != KP_OK)
        kp_resp_from_err(&resp, &err, rid);
    else if (kp_exchange_check_body(NULL, ev.req.body_len, &resp) == 0 && check_owner(h, &ev.req, &resp) == 0 &&
             take_claims(h, &ev, &resp) == 0) {
        if (function_url)
            wait_for_keys(h, &ev.req);
        kp_router_dispatch(&h->ctx, &ev.req, &resp);
    }
    kp_resp_settle(&resp); /* one request at a time: a deferred response is waited for here */
    kp_exchange_begin(&sum, ev.req.method, &t0);
    kp_exchange_take_request(&sum, &ev.req);
    kp_exchange_check_response(NULL, &resp, &sum);
    int sent_later = 0; /* a streamed answer is logged and counted once sent */
    if (function_url)
        sent_later = prepare_streamed(&ev.req, &resp, &sum, out) == 0;
    else
        prepare_payload(&ev.req, &resp, &sum, out);
    if (!sent_later)
        kp_exchange_record(h->ctx.app->metrics, &sum);
    kp_resp_free(&resp);
    kp_apigw_event_free(&ev);
}

/* ---- EventBridge: the daily bonus and the recovery of expired leases ---- */

static int is_scheduled_event(const json_t *doc)
{
    const char *source = json_string_value(json_object_get(doc, "source"));
    const char *type = json_string_value(json_object_get(doc, "detail-type"));
    return source && type && strcmp(source, "aws.events") == 0 && strcmp(type, "Scheduled Event") == 0;
}

/* The recovery schedule's event: the constant input of its EventBridge target. */
static int is_recovery_event(const json_t *doc)
{
    const char *what = json_string_value(json_object_get(doc, "koumpa"));
    return what && strcmp(what, "recover") == 0;
}

static void set_summary(kp_lambda_result *out, const char *what, json_t *res)
{
    kp_err err = {0};
    kp_log_json(KP_LOG_INFO, what, json_incref(res));
    out->payload = res ? json_dumps(res, JSON_COMPACT) : NULL;
    json_decref(res);
    if (!out->payload) {
        kp_err_set(&err, KP_ENOMEM, "out of memory");
        set_error(out, "Runtime.ResponseError", &err);
    }
}

static void handle_schedule(kp_lambda_host *h, const json_t *doc, kp_lambda_result *out)
{
    kp_err err = {0};
    char date[11] = "";
    size_t granted = 0, repaired = 0;
    const char *t = json_string_value(json_object_get(doc, "time")); /* "2026-12-02T00:00:00Z" */
    if (t && strlen(t) >= 10)
        memcpy(date, t, 10);
    if (!kp_credits_valid_date(date)) {
        kp_err_set(&err, KP_EINVAL, "the scheduled event has no usable time (expected YYYY-MM-DDThh:mm:ssZ)");
        set_error(out, "Runtime.InvalidEvent", &err);
        return;
    }
    kp_status st = kp_credits_daily_bonus(h->ctx.store, date, BONUS_BATCH, &granted, &err);
    if (st == KP_OK)
        st = kp_gen_recover(h->ctx.store, h->blob, &repaired, &err);
    if (st != KP_OK) {
        set_error(out, "Koumpa.DailyBonusFailed", &err);
        return;
    }
    set_summary(
        out, "daily bonus",
        json_pack("{s:s,s:I,s:I}", "date", date, "granted", (json_int_t)granted, "recovered", (json_int_t)repaired));
}

/* Every few minutes (terraform/modules/cron): generations whose lease ran out
 * are failed and refunded, so none holds its user's limit for long. */
static void handle_recovery(kp_lambda_host *h, kp_lambda_result *out)
{
    kp_err err = {0};
    size_t repaired = 0;
    if (kp_gen_recover(h->ctx.store, h->blob, &repaired, &err) != KP_OK) {
        set_error(out, "Koumpa.RecoveryFailed", &err);
        return;
    }
    set_summary(out, "recovery", json_pack("{s:I}", "recovered", (json_int_t)repaired));
}

void kp_lambda_handle(kp_lambda_host *h, const char *event, size_t len, int64_t deadline_ms, kp_lambda_result *out)
{
    kp_err err = {0};
    json_error_t jerr;
    memset(out, 0, sizeof *out);
    json_t *doc = json_loadb(event, len, 0, &jerr);
    if (!json_is_object(doc)) {
        kp_err_set(&err, KP_EINVAL, "the event is not a JSON object: %s", doc ? "another JSON value" : jerr.text);
        set_error(out, "Runtime.InvalidEvent", &err);
    } else if (kp_apigw_is_http_event(doc)) {
        handle_http(h, doc, deadline_ms, out);
    } else if (is_scheduled_event(doc) && strcmp(h->function, "daily-bonus") == 0) {
        handle_schedule(h, doc, out);
    } else if (is_recovery_event(doc) && strcmp(h->function, "daily-bonus") == 0) {
        handle_recovery(h, out);
    } else if (kp_lambda_is_worker_event(doc) && strcmp(h->function, "generate-app") == 0) {
        kp_lambda_worker_handle(h, doc, deadline_ms, out);
    } else {
        kp_err_set(&err, KP_EINVAL, "the function %s does not take this event (expected %s)", h->function,
                   strcmp(h->function, "daily-bonus") == 0
                       ? "an EventBridge scheduled event or {\"koumpa\":\"recover\"}"
                       : "an API Gateway payload format 2.0 event");
        set_error(out, "Runtime.InvalidEvent", &err);
    }
    json_decref(doc);
}

/* ---- the loop ---- */

static void log_invocation(const kp_lambda_invocation *inv, const kp_lambda_result *res)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    json_t *f = json_pack("{s:s}", "function_arn", inv->function_arn);
    if (inv->deadline_ms > 0)
        json_object_set_new(f, "remaining_ms", json_integer(inv->deadline_ms - now_ms));
    if (res->payload || res->streamed) {
        kp_log_json(KP_LOG_DEBUG, "invocation done", f);
        return;
    }
    json_object_set_new(f, "error_type", json_string(res->error_type));
    json_object_set_new(f, "error", json_string(res->err.msg));
    kp_log_json(KP_LOG_ERROR, "invocation failed", f);
}

/* A function URL's answer, in streaming mode: logged and counted once over. A
 * response given up (the deadline passed, a reader dropped) is not the loop's end. */
static kp_status answer_streamed(kp_lambda_host *h, kp_lambda_runtime *rt, const kp_lambda_invocation *inv,
                                 kp_lambda_streamed *a, kp_err *err)
{
    kp_lambda_stream_report rep;
    kp_lambda_stream_opts o = {
        .prelude = a->prelude,
        .body = a->body.data,
        .body_len = a->body.len,
        .stream = a->stream,
        .deadline_ms = a->deadline_ms,
        .ran_generation = a->ran_generation,
        .rt = rt,
    };
    a->stream = NULL; /* taken */
    kp_status rc = kp_lambda_stream_respond(rt, inv->request_id, &o, &rep, err);
    json_t *f = json_pack("{s:I}", "bytes", (json_int_t)rep.bytes);
    if (rep.failure) {
        json_object_set_new(f, "error_type", json_string(rep.failure));
        json_object_set_new(f, "error", json_string(rep.message));
    }
    if (rc != KP_OK)
        json_object_set_new(f, "send_error", json_string(err->msg));
    kp_log_json(rep.failure || rc != KP_OK ? KP_LOG_ERROR : KP_LOG_DEBUG, "streamed response", f);
    kp_exchange_record(h->ctx.app->metrics, &a->sum);
    return rc == KP_EIO ? KP_OK : rc;
}

static kp_status answer(kp_lambda_host *h, kp_lambda_runtime *rt, const kp_lambda_invocation *inv,
                        kp_lambda_result *res, kp_err *err)
{
    if (res->streamed)
        return answer_streamed(h, rt, inv, res->streamed, err);
    if (res->payload) {
        kp_status rc = kp_lambda_respond(rt, inv->request_id, res->payload, strlen(res->payload), err);
        if (rc != KP_ETOOLARGE)
            return rc;
        kp_log_json(KP_LOG_ERROR, "response refused", json_pack("{s:s}", "error", err->msg));
        return kp_lambda_fail(rt, inv->request_id, "Function.ResponseSizeTooLarge", err->msg, err);
    }
    return kp_lambda_fail(rt, inv->request_id, res->error_type, res->err.msg, err);
}

kp_status kp_lambda_serve(kp_lambda_host *h, kp_lambda_runtime *rt, kp_err *err)
{
    kp_lambda_invocation inv;
    kp_status rc = KP_OK;
    memset(&inv, 0, sizeof inv);
    while (rc == KP_OK) {
        rc = kp_lambda_next(rt, &inv, err);
        if (rc != KP_OK)
            break;
        kp_log_set_request_id(inv.request_id);
        /* X-Ray: what the AWS SDKs read to join the trace */
        if (inv.trace_id[0])
            setenv("_X_AMZN_TRACE_ID", inv.trace_id, 1);
        else
            unsetenv("_X_AMZN_TRACE_ID");
        kp_lambda_result res;
        h->invocation_id = inv.request_id;
        kp_lambda_handle(h, kp_buf_cstr(&inv.payload), inv.payload.len, inv.deadline_ms, &res);
        h->invocation_id = NULL;
        log_invocation(&inv, &res);
        rc = answer(h, rt, &inv, &res, err);
        kp_lambda_result_free(&res);
        kp_log_set_request_id(NULL);
    }
    kp_lambda_invocation_free(&inv);
    return rc;
}
