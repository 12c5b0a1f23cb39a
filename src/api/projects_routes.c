/*
 * projects_routes.c - the caller's generated apps: create a project (its first
 * version), iterate with follow-up versions, watch a generation's events
 * (Server-Sent Events, resumable with Last-Event-ID), cancel it, list, show,
 * download a version as a zip, read one file of a version, delete.
 *
 * The generation service (gen/generator.h, in app->gen) does the charging and
 * the work; these handlers validate input, check ownership and shape JSON.
 * Another user's project answers 404, exactly like a missing one, so ids
 * reveal nothing. Deleting a project that is generating answers 409: cancel
 * it first (POST /v1/projects/{id}/cancel).
 *
 * The list is paged newest first with an opaque cursor: base64url of
 * "p:{created_at}:{id}" of the last project returned.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/handlers.h"
#include "api/offload.h"
#include "api/paging.h"
#include "core/log.h"
#include "domain/projects.h"
#include "gen/generator.h"
#include "gen/prompt.h"
#include "gen/publish.h"
#include "gen/zip.h"

#define LIST_DEFAULT_LIMIT 20
#define LIST_MAX_LIMIT 100

static kp_gen *service(kp_ctx *ctx)
{
    return ctx->app ? ctx->app->gen : NULL;
}

static const char *status_name(kp_version_status s)
{
    switch (s) {
    case KP_VER_GENERATING: return "generating";
    case KP_VER_READY: return "ready";
    case KP_VER_FAILED: return "failed";
    }
    return "unknown";
}

/* ---- JSON shapes ---- */

static json_t *url_or_null(kp_ctx *ctx, const char *project_id, int64_t n)
{
    char url[1024];
    if (n <= 0)
        return json_null();
    kp_gen_version_url(ctx->app->cfg, project_id, n, url, sizeof url);
    return json_string(url);
}

static json_t *files_json(const char *text)
{
    json_t *files = json_loads(text && *text ? text : "[]", 0, NULL);
    if (json_is_array(files))
        return files;
    json_decref(files);
    return json_array();
}

static json_t *version_json(kp_ctx *ctx, const kp_version *v)
{
    json_t *error = json_null();
    if (v->status == KP_VER_FAILED) {
        /* and what it cost: refunded or charged, and why (domain/credits.h) */
        error = json_pack("{s:s,s:s,s:b}", "code", v->error_code, "message", v->error_message ? v->error_message : "",
                          "refunded", v->refunded);
        if (error && v->credit_reason[0])
            json_object_set_new(error, v->refunded ? "refund_reason" : "charge_reason", json_string(v->credit_reason));
    }
    return json_pack("{s:I,s:s,s:s,s:s,s:o,s:{s:I,s:I},s:s,s:I,s:o,s:o,s:o,s:o}", "n", (json_int_t)v->n, "status",
                     status_name(v->status), "prompt", v->prompt ? v->prompt : "", "message",
                     v->message ? v->message : "", "files", files_json(v->files_json), "usage", "input_tokens",
                     (json_int_t)v->input_tokens, "output_tokens", (json_int_t)v->output_tokens, "model", v->model,
                     "duration_ms", (json_int_t)v->duration_ms, "error", error, "url",
                     v->status == KP_VER_READY ? url_or_null(ctx, v->project_id, v->n) : json_null(), "created_at",
                     kp_h_time_json(v->created_at / 1000), "updated_at", kp_h_time_json(v->updated_at / 1000));
}

/* The summary fields shared by the list and the project itself. */
static json_t *project_summary(kp_ctx *ctx, const kp_project *p, const char *status)
{
    return json_pack("{s:s,s:s,s:s,s:I,s:o,s:o,s:o,s:o}", "id", p->id, "name", p->name, "status", status,
                     "latest_version", (json_int_t)p->latest_version, "latest_ready_version",
                     p->latest_ready > 0 ? json_integer(p->latest_ready) : json_null(), "url",
                     url_or_null(ctx, p->id, p->latest_ready), "created_at", kp_h_time_json(p->created_at / 1000),
                     "updated_at", kp_h_time_json(p->updated_at / 1000));
}

/* The highest version of vs that is ready, 0 if none. */
static int64_t newest_ready(const kp_version *vs, size_t n)
{
    int64_t newest = 0;
    for (size_t i = 0; i < n; i++)
        if (vs[i].status == KP_VER_READY && vs[i].n > newest)
            newest = vs[i].n;
    return newest;
}

/* The project with its versions (oldest first). The store may read the
 * project and its versions apart (DynamoDB: two requests, no snapshot): a
 * version that became ready between them is newer than the project's
 * latest_ready, whose url would name the version before. The project is
 * read again then, so that its url names the newest version listed ready. */
static kp_status project_full_json(kp_ctx *ctx, const kp_project *given, json_t **out, kp_err *err)
{
    kp_version *vs = NULL;
    size_t n = 0;
    kp_project again;
    const kp_project *p = given;
    kp_status rc = ctx->store->ops->version_list(ctx->store, given->id, &vs, &n, err);
    if (rc != KP_OK)
        return rc;
    if (newest_ready(vs, n) > given->latest_ready) {
        kp_err ignored = {0};
        if (ctx->store->ops->project_get(ctx->store, given->id, &again, &ignored) == KP_OK)
            p = &again;
    }
    const char *status = "generating";
    json_t *versions = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(versions, version_json(ctx, &vs[i]));
        if (vs[i].n == p->latest_version)
            status = status_name(vs[i].status);
    }
    *out = project_summary(ctx, p, status);
    json_object_set_new(*out, "versions", versions);
    kp_version_free_array(vs, n);
    return KP_OK;
}

/* ---- shared steps ---- */

/* Loads the caller's project params[0]; on failure fills resp (404 when not theirs). */
static int load_own_project(kp_ctx *ctx, kp_req *req, kp_resp *resp, kp_project *p)
{
    kp_err err = {0};
    kp_status rc = ctx->store->ops->project_get(ctx->store, req->params[0], p, &err);
    if (rc == KP_ENOTFOUND || (rc == KP_OK && strcmp(p->user_id, req->principal.user_id) != 0)) {
        kp_resp_error(resp, 404, "not_found", "no such project: %s", req->params[0]);
        return -1;
    }
    if (rc != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return -1;
    }
    return 0;
}

static void respond_project(kp_ctx *ctx, const char *request_id, kp_resp *resp, int status, const char *project_id)
{
    kp_project p;
    kp_err err = {0};
    json_t *body = NULL;
    if (ctx->store->ops->project_get(ctx->store, project_id, &p, &err) != KP_OK ||
        project_full_json(ctx, &p, &body, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, request_id);
        return;
    }
    kp_resp_json(resp, status, body);
}

/* The client asked for the events as a stream, and the host can carry one. */
static int wants_event_stream(const kp_req *req)
{
    const char *accept = kp_req_header(req, "Accept");
    return !req->cannot_stream && accept && strcasestr(accept, "text/event-stream") != NULL;
}

static void sse_headers(kp_resp *resp)
{
    kp_headers_set(&resp->headers, "Content-Type", "text/event-stream; charset=utf-8");
    kp_headers_set(&resp->headers, "Cache-Control", "no-cache, no-store");
    kp_headers_set(&resp->headers, "X-Accel-Buffering", "no");
}

/* Answers a generation that was accepted: SSE (streamed) or 202 with the project to poll. */
static void respond_started(kp_ctx *ctx, const char *request_id, int streamed, kp_resp *resp, const kp_gen_result *res)
{
    char location[256];
    snprintf(location, sizeof location, "/v1/projects/%s", res->project_id);
    if (streamed) {
        kp_stream *st = kp_gen_stream(service(ctx), res->project_id, res->version, 0);
        if (st) {
            resp->status = 200;
            resp->stream = st;
            sse_headers(resp);
            kp_headers_set(&resp->headers, "Location", location);
            return;
        }
        /* out of memory for the stream: the generation runs anyway; poll it */
    }
    respond_project(ctx, request_id, resp, 202, res->project_id);
    kp_headers_set(&resp->headers, "Location", location);
}

static void respond_refused(kp_resp *resp, const char *request_id, kp_status rc, const kp_gen_result *res,
                            const kp_err *err)
{
    if (!res->error_code || !*res->error_code) {
        kp_resp_from_err(resp, err, request_id);
        return;
    }
    json_t *error = json_pack("{s:s,s:s}", "code", res->error_code, "message", err->msg);
    if (rc == KP_ECREDITS)
        json_object_set_new(error, "balance",
                            json_pack("{s:I,s:I,s:I}", "daily", (json_int_t)res->balance.daily, "monthly",
                                      (json_int_t)res->balance.monthly, "total",
                                      (json_int_t)(res->balance.daily + res->balance.monthly)));
    kp_resp_json(resp, kp_status_http(rc), json_pack("{s:o}", "error", error));
}

/* Checks body fields: only those in `allowed` (NULL-terminated) may appear. */
static int only_fields(json_t *body, const char *const *allowed, kp_resp *resp)
{
    const char *key;
    json_t *val;
    json_object_foreach(body, key, val)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            ok |= strcmp(*a, key) == 0;
        if (!ok) {
            kp_resp_error(resp, 400, "invalid_request", "unknown field: %s", key);
            return -1;
        }
    }
    return 0;
}

static int has_visible_char(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
            return 1;
    return 0;
}

/* Validates {prompt}; on failure fills resp. */
static const char *read_prompt(json_t *body, kp_resp *resp)
{
    json_t *prompt = json_object_get(body, "prompt");
    if (!json_is_string(prompt)) {
        kp_resp_error(resp, 400, "invalid_request", "prompt is required and must be a string");
        return NULL;
    }
    const char *text = json_string_value(prompt);
    size_t len = json_string_length(prompt);
    long chars = kp_prompt_utf8_chars(text, len);
    if (strlen(text) != len || chars < 0) {
        kp_resp_error(resp, 400, "invalid_request", "prompt must be text without NUL characters");
        return NULL;
    }
    if (chars < 1 || !has_visible_char(text) || chars > KP_PROMPT_MAX_CHARS) {
        kp_resp_error(resp, 400, "invalid_request", "prompt must be 1 to %d characters", KP_PROMPT_MAX_CHARS);
        return NULL;
    }
    return text;
}

/* Validates the optional name (trimmed into out); on failure fills resp. */
static int read_name(json_t *body, char *out, size_t n, kp_resp *resp)
{
    json_t *name = json_object_get(body, "name");
    out[0] = '\0';
    if (!name || json_is_null(name))
        return 0;
    if (!json_is_string(name)) {
        kp_resp_error(resp, 400, "invalid_request", "name must be a string");
        return -1;
    }
    const char *s = json_string_value(name);
    size_t len = json_string_length(name);
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            kp_resp_error(resp, 400, "invalid_request", "name must not contain control characters");
            return -1;
        }
    }
    long chars = kp_prompt_utf8_chars(s, len);
    if (chars > KP_PROMPT_NAME_MAX_CHARS || len >= n) {
        kp_resp_error(resp, 400, "invalid_request", "name must be at most %d characters (and %zu bytes of UTF-8)",
                      KP_PROMPT_NAME_MAX_CHARS, n - 1);
        return -1;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

/* A submission as the handler read it: what the admission needs, copied, so that it can run on the
 * admissions pool after the request's thread has moved on. */
typedef struct admit_job {
    kp_app *app;
    char request_id[64];
    char user_id[KP_ID_MAX];
    kp_plan plan;
    char project_id[KP_ID_MAX]; /* a follow-up's project, "" for a new one */
    char name[KP_NAME_MAX];
    char *prompt;
    int64_t deadline_ms;
    int streamed;
} admit_job;

static void free_admit_job(void *arg)
{
    admit_job *j = arg;
    if (j)
        free(j->prompt);
    free(j);
}

/* Admits and answers (on the request's thread, or on the admissions pool with the pool's handle). */
static void run_admission(kp_ctx *ctx, const admit_job *j, kp_resp *resp)
{
    kp_gen_result res;
    kp_err err = {0};
    kp_gen *g = service(ctx);
    if (!g) {
        kp_resp_error(resp, 503, "unavailable", "the generation service is not running");
        return;
    }
    kp_gen_request r = {.user_id = j->user_id,
                        .plan = &j->plan,
                        .project_id = j->project_id[0] ? j->project_id : NULL,
                        .name = j->project_id[0] ? NULL : j->name,
                        .prompt = j->prompt,
                        .deadline_ms = j->deadline_ms,
                        .streamed = j->streamed};
    kp_status rc = kp_gen_submit(g, ctx->store, &r, &res, &err);
    if (rc != KP_OK) {
        respond_refused(resp, j->request_id, rc, &res, &err);
        return;
    }
    respond_started(ctx, j->request_id, j->streamed, resp, &res);
}

static void admission_on_pool(void *arg, kp_store *store, kp_resp *resp)
{
    admit_job *j = arg;
    kp_ctx ctx = {.app = j->app, .store = store};
    run_admission(&ctx, j, resp);
}

/* Admits the generation: on the admissions pool when there is one (its writes wait for the disk, and a
 * burst of them batches there), else here. */
static void submit(kp_ctx *ctx, kp_req *req, kp_resp *resp, const char *project_id, const char *name,
                   const char *prompt)
{
    admit_job *j = calloc(1, sizeof *j);
    if (!j || !(j->prompt = strdup(prompt))) {
        free(j);
        kp_resp_error(resp, 503, "busy", "out of memory; try again later");
        return;
    }
    j->app = ctx->app;
    snprintf(j->request_id, sizeof j->request_id, "%s", req->request_id ? req->request_id : "");
    snprintf(j->user_id, sizeof j->user_id, "%s", req->principal.user_id);
    j->plan = req->principal.plan;
    snprintf(j->project_id, sizeof j->project_id, "%s", project_id ? project_id : "");
    snprintf(j->name, sizeof j->name, "%s", name ? name : "");
    j->deadline_ms = req->deadline_ms;
    j->streamed = wants_event_stream(req);
    if (ctx->app && ctx->app->admissions) {
        kp_offload_defer(ctx->app->admissions, resp, admission_on_pool, free_admit_job, j);
        return;
    }
    run_admission(ctx, j, resp);
    free_admit_job(j);
}

/* ---- handlers ---- */

void kp_h_projects_create(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    static const char *const fields[] = {"prompt", "name", NULL};
    json_t *body = NULL;
    char name[KP_NAME_MAX];
    if (kp_req_json_body(req, resp, &body) != 0)
        return;
    const char *prompt = NULL;
    if (only_fields(body, fields, resp) == 0 && (prompt = read_prompt(body, resp)) != NULL &&
        read_name(body, name, sizeof name, resp) == 0)
        submit(ctx, req, resp, NULL, name, prompt);
    json_decref(body);
}

void kp_h_project_versions_create(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    static const char *const fields[] = {"prompt", NULL};
    json_t *body = NULL;
    kp_project p;
    if (load_own_project(ctx, req, resp, &p) != 0 || kp_req_json_body(req, resp, &body) != 0)
        return;
    const char *prompt = NULL;
    if (only_fields(body, fields, resp) == 0 && (prompt = read_prompt(body, resp)) != NULL)
        submit(ctx, req, resp, p.id, NULL, prompt);
    json_decref(body);
}

/* The project list's cursor text is "p:{created_at}:{id}", the last project shown. */
static int parse_cursor(const kp_req *req, kp_resp *resp, int64_t *before_at, char before_id[KP_ID_MAX])
{
    char text[KP_CURSOR_MAX + 1];
    *before_at = 0;
    before_id[0] = '\0';
    if (kp_paging_cursor_decode(req, resp, text) != 0)
        return -1;
    if (!text[0])
        return 0;
    char *colon = strncmp(text, "p:", 2) == 0 ? strchr(text + 2, ':') : NULL;
    if (!colon)
        return kp_paging_bad_cursor(resp);
    *colon = '\0';
    const char *id = colon + 1;
    size_t idlen = strlen(id);
    int ok = kp_paging_parse_int(text + 2, before_at) == 0 && idlen > 0 && idlen < KP_ID_MAX;
    for (size_t i = 0; ok && i < idlen; i++)
        ok = (id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9') || id[i] == '_';
    if (!ok)
        return kp_paging_bad_cursor(resp);
    memcpy(before_id, id, idlen + 1);
    return 0;
}

void kp_h_projects_list(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    size_t limit, n = 0;
    int64_t before_at;
    char before_id[KP_ID_MAX];
    kp_project *items = NULL;
    kp_err err = {0};
    kp_store *s = ctx->store;
    if (kp_paging_limit(req, resp, LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT, &limit) != 0 ||
        parse_cursor(req, resp, &before_at, before_id) != 0)
        return;
    /* one extra row tells whether there is a next page */
    if (s->ops->project_list(s, req->principal.user_id, before_at, before_id, limit + 1, &items, &n, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < n && i < limit; i++) {
        kp_version v;
        memset(&v, 0, sizeof v);
        const char *status = "ready";
        if (items[i].latest_ready != items[i].latest_version) /* else the latest is the ready one */
            status = s->ops->version_get(s, items[i].id, items[i].latest_version, &v, &err) == KP_OK
                         ? status_name(v.status)
                         : "generating";
        kp_version_clear(&v);
        json_array_append_new(list, project_summary(ctx, &items[i], status));
    }
    json_t *next = json_null();
    if (n > limit) {
        char text[KP_CURSOR_MAX + 1], cursor[4 * KP_CURSOR_MAX / 3 + 4];
        snprintf(text, sizeof text, "p:%lld:%s", (long long)items[limit - 1].created_at, items[limit - 1].id);
        kp_paging_cursor_encode(text, cursor, sizeof cursor);
        next = json_string(cursor);
    }
    free(items);
    kp_resp_json(resp, 200, json_pack("{s:o,s:o}", "projects", list, "next_cursor", next));
}

void kp_h_project_get(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_project p;
    kp_err err = {0};
    json_t *body = NULL;
    if (load_own_project(ctx, req, resp, &p) != 0)
        return;
    if (project_full_json(ctx, &p, &body, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    kp_resp_json(resp, 200, body);
}

/* Last-Event-ID (header, or ?last_event_id= for clients that cannot set headers). */
static int parse_last_event_id(const kp_req *req, kp_resp *resp, int64_t *after)
{
    const char *v = kp_req_header(req, "Last-Event-ID");
    if (!v)
        v = kp_req_query(req, "last_event_id");
    *after = 0;
    if (!v || !*v)
        return 0;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || !end || *end || n < 0) {
        kp_resp_error(resp, 400, "invalid_request", "Last-Event-ID must be an event id this server sent");
        return -1;
    }
    *after = n;
    return 0;
}

/* Without a generation service (tests): the persisted events, built whole. */
static void replay_unserviced(kp_ctx *ctx, kp_req *req, kp_resp *resp, const kp_project *p, int64_t after)
{
    char *events = NULL;
    kp_err err = {0};
    kp_buf out = KP_BUF_INIT;
    if (kp_store_events_json(ctx->store, p->id, p->latest_version, after, &events, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    kp_gen_replay_events(events, after, &out);
    free(events);
    kp_resp_text(resp, 200, "text/event-stream; charset=utf-8", out.data ? out.data : "", out.len);
    kp_headers_set(&resp->headers, "Cache-Control", "no-cache, no-store");
    kp_buf_free(&out);
}

/*
 * The latest version's events after Last-Event-ID: an ended version is
 * replayed from a rendering shared by its readers, a piece at a time as the
 * client reads; a generating one is followed live, by at most
 * KOUMPA_MAX_READERS_PER_GENERATION readers (429 beyond).
 */
void kp_h_project_events(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_project p;
    kp_err err = {0};
    kp_stream *st = NULL;
    int64_t after;
    if (load_own_project(ctx, req, resp, &p) != 0 || parse_last_event_id(req, resp, &after) != 0)
        return;
    if (!service(ctx)) {
        replay_unserviced(ctx, req, resp, &p, after);
        return;
    }
    kp_status rc = kp_gen_replay(service(ctx), ctx->store, p.id, p.latest_version, after, &st, &err);
    if (rc == KP_ECONFLICT)
        rc = kp_gen_stream_open(service(ctx), p.id, p.latest_version, after, &st, &err);
    if (rc == KP_ERATE) {
        kp_resp_error(resp, 429, "too_many_readers", "%s", err.msg);
        kp_headers_set(&resp->headers, "Retry-After", "5");
        return;
    }
    if (rc != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    resp->status = 200;
    resp->stream = st;
    sse_headers(resp);
}

/*
 * The cancel of a version generating on another instance (another `serve`, another Lambda invocation): it
 * is stored on the version, and the instance running it reads it at its next lease renewal, every third of
 * the lease (gen/leases.c), then ends the version "canceled" as a local cancel does. 202 with when.
 */
static void request_cancel(kp_ctx *ctx, kp_req *req, kp_resp *resp, const kp_project *p)
{
    kp_err err = {0};
    kp_status rc = ctx->store->ops->version_request_cancel(ctx->store, p->id, p->latest_version, &err);
    if (rc == KP_ECONFLICT) {
        kp_resp_error(resp, 409, "not_generating", "no version of this project is generating");
        return;
    }
    if (rc != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    const kp_config *cfg = ctx->app ? ctx->app->cfg : NULL;
    long lease_s = cfg && cfg->generation_lease_s > 0 ? cfg->generation_lease_s : 30;
    long within_s = (lease_s + 2) / 3;
    char msg[512];
    snprintf(msg, sizeof msg,
             "version %lld is generating on another instance, which cancels it at its next lease renewal, within "
             "about %ld s; GET /v1/projects/%s or its events show the end (an instance that stopped meanwhile "
             "leaves it to recovery once its lease runs out)",
             (long long)p->latest_version, within_s, p->id);
    json_t *body =
        json_pack("{s:s,s:s,s:I,s:I,s:s}", "cancel", "requested", "project_id", p->id, "version",
                  (json_int_t)p->latest_version, "takes_effect_within_s", (json_int_t)within_s, "message", msg);
    kp_resp_json(resp, 202, body);
}

void kp_h_project_cancel(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_project p;
    kp_err err = {0};
    if (load_own_project(ctx, req, resp, &p) != 0)
        return;
    kp_status rc = service(ctx) ? kp_gen_cancel(service(ctx), p.id, p.latest_version, &err)
                                : kp_err_set(&err, KP_ECONFLICT, "not generating here");
    if (rc == KP_ECONFLICT) { /* not running here: perhaps elsewhere */
        request_cancel(ctx, req, resp, &p);
        return;
    }
    if (rc != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    respond_project(ctx, req->request_id, resp, 200, p.id);
}

void kp_h_project_delete(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_project p;
    kp_err err = {0};
    if (load_own_project(ctx, req, resp, &p) != 0)
        return;
    kp_blob *blob = service(ctx) ? kp_gen_blob(service(ctx)) : NULL;
    kp_status rc = kp_projects_delete(ctx->store, blob, &p, &err);
    if (rc == KP_ECONFLICT)
        kp_resp_error(resp, 409, "generation_in_progress",
                      "this project is generating; cancel it first (POST /v1/projects/%s/cancel)", p.id);
    else if (rc == KP_ENOTFOUND)
        kp_resp_error(resp, 404, "not_found", "no such project: %s", p.id);
    else if (rc == KP_EUNAVAILABLE)
        kp_resp_error(resp, 503, "files_not_removed", "%s", err.msg);
    else if (rc != KP_OK)
        kp_resp_from_err(resp, &err, req->request_id);
    else
        resp->status = 204;
}

/* A file name for the download: the project's name in [A-Za-z0-9_-], or its id. */
static void download_name(const kp_project *p, int64_t n, char *out, size_t len)
{
    char safe[64];
    size_t j = 0;
    int dash = 0;
    for (const char *c = p->name; *c && j < sizeof safe - 1; c++) {
        int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_';
        if (ok) {
            safe[j++] = *c;
            dash = 0;
        } else if (!dash && j > 0) {
            safe[j++] = '-';
            dash = 1;
        }
    }
    while (j > 0 && safe[j - 1] == '-')
        j--;
    safe[j] = '\0';
    snprintf(out, len, "%s-v%lld.zip", j ? safe : p->id, (long long)n);
}

static int parse_version_number(const char *s, int64_t *n)
{
    char *end = NULL;
    if (!s || *s < '1' || *s > '9')
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end || v < 1)
        return -1;
    *n = v;
    return 0;
}

static kp_status build_zip(kp_blob *blob, const kp_version *v, kp_buf *zip, kp_err *err)
{
    json_t *files = files_json(v->files_json);
    size_t n = json_array_size(files);
    kp_zip_entry *entries = calloc(n + 1, sizeof *entries);
    kp_buf *data = calloc(n + 1, sizeof *data);
    kp_status rc = KP_OK;
    if (!entries || !data) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n && rc == KP_OK; i++) {
        const char *path = json_string_value(json_object_get(json_array_get(files, i), "path"));
        char key[KP_BLOB_KEY_MAX + 1];
        snprintf(key, sizeof key, "apps/%s/v%lld/%s", v->project_id, (long long)v->n, path ? path : "");
        rc = blob->ops->get(blob, key, &data[i], NULL, err);
        entries[i].path = path;
        entries[i].data = data[i].data ? data[i].data : "";
        entries[i].len = data[i].len;
    }
    if (rc == KP_OK)
        rc = kp_zip_build(entries, n, (time_t)v->updated_at, zip, err);
cleanup:
    for (size_t i = 0; data && i < n; i++)
        kp_buf_free(&data[i]);
    free(data);
    free(entries);
    json_decref(files);
    return rc;
}

/* Loads version params[1] of p, which must be ready (what: "downloaded", ...);
 * on failure fills resp (404 no such version, 409 not ready) and returns -1.
 * The caller clears v. */
static int load_ready_version(kp_ctx *ctx, kp_req *req, kp_resp *resp, const kp_project *p, const char *what,
                              kp_version *v)
{
    kp_err err = {0};
    int64_t n = 0;
    memset(v, 0, sizeof *v);
    if (parse_version_number(req->params[1], &n) != 0) {
        kp_resp_error(resp, 404, "not_found", "no such version: %s", req->params[1]);
        return -1;
    }
    kp_status rc = ctx->store->ops->version_get(ctx->store, p->id, n, v, &err);
    if (rc == KP_ENOTFOUND) {
        kp_resp_error(resp, 404, "not_found", "no such version: %lld", (long long)n);
        return -1;
    }
    if (rc != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return -1;
    }
    if (v->status != KP_VER_READY) {
        kp_resp_error(resp, 409, "version_not_ready", "version %lld is %s; only ready versions can be %s", (long long)n,
                      status_name(v->status), what);
        kp_version_clear(v);
        return -1;
    }
    return 0;
}

void kp_h_project_download(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_project p;
    kp_version v;
    kp_err err = {0};
    if (load_own_project(ctx, req, resp, &p) != 0 || load_ready_version(ctx, req, resp, &p, "downloaded", &v) != 0)
        return;
    int64_t n = v.n;
    kp_buf zip = KP_BUF_INIT;
    kp_gen *g = service(ctx);
    kp_status rc = g ? build_zip(kp_gen_blob(g), &v, &zip, &err) : kp_err_set(&err, KP_EUNAVAILABLE, "no blob store");
    kp_version_clear(&v);
    if (rc != KP_OK) {
        kp_buf_free(&zip);
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    char file[128], disposition[200];
    download_name(&p, n, file, sizeof file);
    snprintf(disposition, sizeof disposition, "attachment; filename=\"%s\"", file);
    kp_resp_text(resp, 200, "application/zip", zip.data, zip.len);
    kp_headers_set(&resp->headers, "Content-Disposition", disposition);
    kp_buf_free(&zip);
}

/* ---- one file of a version ---- */

/* Types shown as source: served as text/plain, never rendered. */
static int is_text_type(const char *ct)
{
    static const char *const text[] = {"application/json", "application/xml", "application/manifest+json",
                                       "image/svg+xml", NULL};
    size_t len = strcspn(ct, ";");
    if (strncmp(ct, "text/", 5) == 0)
        return 1;
    for (const char *const *t = text; *t; t++)
        if (strlen(*t) == len && strncmp(ct, *t, len) == 0)
            return 1;
    return 0;
}

/* The manifest entry named path (borrowed from files), or NULL. */
static json_t *manifest_entry(json_t *files, const char *path)
{
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        const char *p = json_string_value(json_object_get(f, "path"));
        if (p && strcmp(p, path) == 0)
            return f;
    }
    return NULL;
}

/* The file's bytes into resp (its ETag: the manifest's sha256, else the
 * bytes' own; a current If-None-Match is a 304 without reading the blob). */
static void respond_file(kp_ctx *ctx, kp_req *req, kp_resp *resp, const kp_version *v, json_t *entry)
{
    const char *path = json_string_value(json_object_get(entry, "path"));
    const char *sha = json_string_value(json_object_get(entry, "sha256"));
    const char *ct = json_string_value(json_object_get(entry, "content_type"));
    char key[KP_BLOB_KEY_MAX + 1], etag[KP_SHA256_HEX_LEN + 3], hex[KP_SHA256_HEX_LEN + 1];
    kp_buf data = KP_BUF_INIT;
    kp_err err = {0};
    kp_gen *g = service(ctx);
    snprintf(etag, sizeof etag, "\"%s\"", sha ? sha : "");
    if (sha && kp_etag_matches(kp_req_header(req, "If-None-Match"), etag)) {
        resp->status = 304;
    } else {
        snprintf(key, sizeof key, "apps/%s/v%lld/%s", v->project_id, (long long)v->n, path);
        kp_status rc = g ? kp_gen_blob(g)->ops->get(kp_gen_blob(g), key, &data, NULL, &err)
                         : kp_err_set(&err, KP_EUNAVAILABLE, "no blob store");
        if (rc != KP_OK) {
            kp_buf_free(&data);
            kp_resp_from_err(resp, &err, req->request_id);
            return;
        }
        if (!sha) { /* a version from before manifests had sha256 */
            kp_publish_sha256_hex(data.data, data.len, hex);
            snprintf(etag, sizeof etag, "\"%s\"", hex);
        }
        ct = ct ? ct : kp_gen_content_type(path);
        kp_resp_text(resp, 200, is_text_type(ct) ? "text/plain; charset=utf-8" : ct, data.data ? data.data : "",
                     data.len);
        if (kp_etag_matches(kp_req_header(req, "If-None-Match"), etag)) {
            kp_buf_reset(&resp->body);
            resp->status = 304;
        }
    }
    kp_buf_free(&data);
    kp_headers_set(&resp->headers, "ETag", etag);
    kp_headers_set(&resp->headers, "Content-Security-Policy", "sandbox");
    kp_headers_set(&resp->headers, "X-Content-Type-Options", "nosniff");
    /* a version never changes, but the cache is the browser's, not the user's: revalidated (with the token) */
    kp_headers_set(&resp->headers, "Cache-Control", "private, no-cache");
}

void kp_h_project_version_file(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_project p;
    kp_version v;
    const char *path = kp_req_query(req, "path");
    if (load_own_project(ctx, req, resp, &p) != 0)
        return;
    if (!path || !*path) {
        kp_resp_error(resp, 400, "invalid_request",
                      "the path query parameter is required: one of the version's files[].path, e.g. ?path=index.html");
        return;
    }
    if (load_ready_version(ctx, req, resp, &p, "read", &v) != 0)
        return;
    json_t *files = files_json(v.files_json);
    json_t *entry = manifest_entry(files, path);
    if (entry)
        respond_file(ctx, req, resp, &v, entry);
    else
        kp_resp_error(resp, 404, "file_not_found",
                      "version %lld has no file %s (the version's files[] lists the files it has)", (long long)v.n,
                      path);
    json_decref(files);
    kp_version_clear(&v);
}
