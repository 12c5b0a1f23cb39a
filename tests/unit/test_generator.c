/*
 * test_generator.c - the generation service (gen/generator.c) on a real
 * kp_loop, a real SQLite database and a filesystem blob store, with a fake
 * LLM provider that plays scripted streams (text in small chunks, a stop
 * reason or an error) on the loop like the real ones do. Checks what gets
 * published, what gets charged or refunded, the continuation after
 * max_tokens, cancelling, the SSE event log and its replay, and start-up
 * recovery.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>
#include <jansson.h>

#include "blob/blob_fs.h"
#include "core/id.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "domain/credits.h"
#include "gen/generator.h"
#include "store/sqlite/sqlite_store.h"
#include "testutil.h"

/* ---- a fake provider ---- */

#define MAX_SCRIPTS 4
#define MAX_CALLS 8

typedef struct script {
    const char *text; /* played in chunks of chunk bytes */
    size_t chunk;
    long delay_ms;           /* between chunks */
    const char *stop_reason; /* NULL: ends with an error */
    const char *error_code;
    kp_llm_usage usage;
} script;

typedef struct fake_llm {
    kp_llm llm;
    kp_loop *loop;
    pthread_mutex_t mu;
    script scripts[MAX_SCRIPTS];
    int nscripts;
    int calls;                 /* mu */
    int cancels;               /* mu */
    int off_loop;              /* mu: start/cancel called off the loop thread */
    char *requests[MAX_CALLS]; /* mu: each call's messages, "role: content" joined by "\n---\n" */
} fake_llm;

struct kp_llm_call {
    fake_llm *f;
    const script *s;
    size_t pos;
    kp_llm_callbacks cb;
    struct event *ev;
};

static void call_free(kp_llm_call *c)
{
    event_free(c->ev);
    free(c);
}

static void call_tick(evutil_socket_t fd, short what, void *arg)
{
    kp_llm_call *c = arg;
    (void)fd;
    (void)what;
    size_t len = strlen(c->s->text);
    if (c->pos < len) {
        size_t n = c->s->chunk ? c->s->chunk : 7;
        if (n > len - c->pos)
            n = len - c->pos;
        const char *piece = c->s->text + c->pos;
        c->pos += n;
        c->cb.on_text(c->cb.ud, piece, n);
        struct timeval tv = {c->s->delay_ms / 1000, (c->s->delay_ms % 1000) * 1000};
        event_add(c->ev, &tv);
        return;
    }
    if (c->s->stop_reason)
        c->cb.on_done(c->cb.ud, c->s->stop_reason, &c->s->usage);
    else
        c->cb.on_error(c->cb.ud, c->s->error_code, "the fake provider failed", c->pos > 0);
    call_free(c);
}

static char *join_request(const kp_llm_request *req)
{
    kp_buf b = KP_BUF_INIT;
    kp_buf_printf(&b, "system: %s", req->system);
    for (size_t i = 0; i < req->nmessages; i++)
        kp_buf_printf(&b, "\n---\n%s: %s", req->messages[i].role, req->messages[i].content);
    return kp_buf_steal(&b);
}

static kp_status fake_start(kp_llm *llm, const kp_llm_request *req, const kp_llm_callbacks *cb, kp_llm_call **out,
                            kp_err *err)
{
    fake_llm *f = llm->impl;
    (void)err;
    pthread_mutex_lock(&f->mu);
    int i = f->calls++;
    if (!kp_loop_is_current(f->loop))
        f->off_loop = 1;
    if (i < MAX_CALLS)
        f->requests[i] = join_request(req);
    pthread_mutex_unlock(&f->mu);
    kp_llm_call *c = calloc(1, sizeof *c);
    c->f = f;
    c->s = &f->scripts[i < f->nscripts ? i : f->nscripts - 1];
    c->cb = *cb;
    c->ev = evtimer_new(kp_loop_base(f->loop), call_tick, c);
    struct timeval tv = {0, 1000};
    event_add(c->ev, &tv);
    *out = c;
    return KP_OK;
}

static void fake_cancel(kp_llm *llm, kp_llm_call *call)
{
    fake_llm *f = llm->impl;
    pthread_mutex_lock(&f->mu);
    f->cancels++;
    if (!kp_loop_is_current(f->loop))
        f->off_loop = 1;
    pthread_mutex_unlock(&f->mu);
    call_free(call);
}

static void fake_free(kp_llm *llm)
{
    (void)llm;
}

static const kp_llm_ops fake_ops = {"fake", fake_start, fake_cancel, fake_free};

/* ---- a fake SSE sink ---- */

typedef struct test_sink {
    kp_sink sink;
    pthread_mutex_t mu;
    kp_buf data;
    int ended;
} test_sink;

static int tsink_write(kp_sink *s, const char *data, size_t len)
{
    test_sink *t = (test_sink *)s;
    pthread_mutex_lock(&t->mu);
    kp_buf_append(&t->data, data, len);
    pthread_mutex_unlock(&t->mu);
    return 0;
}

static void tsink_end(kp_sink *s)
{
    test_sink *t = (test_sink *)s;
    pthread_mutex_lock(&t->mu);
    t->ended = 1;
    pthread_mutex_unlock(&t->mu);
}

static void tsink_init(test_sink *t)
{
    memset(t, 0, sizeof *t);
    t->sink.write = tsink_write;
    t->sink.end = tsink_end;
    pthread_mutex_init(&t->mu, NULL);
}

static int tsink_ended(test_sink *t)
{
    pthread_mutex_lock(&t->mu);
    int e = t->ended;
    pthread_mutex_unlock(&t->mu);
    return e;
}

static void tsink_free(test_sink *t)
{
    kp_buf_free(&t->data);
    pthread_mutex_destroy(&t->mu);
}

/* ---- fixture ---- */

typedef struct fixture {
    char dir[256];
    char db[512];
    kp_store *s;
    kp_blob *blob;
    kp_loop *loop;
    kp_metrics *metrics;
    fake_llm fake;
    kp_config cfg;
    kp_gen *g;
} fixture;

static kp_status open_store(void *ud, kp_store **out, kp_err *err)
{
    fixture *f = ud;
    return kp_sqlite_open(f->db, out, err);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void start_service(fixture *f, int with_llm)
{
    kp_err err = {0};
    kp_gen_options o = {
        .cfg = &f->cfg,
        .loop = f->loop,
        .llm = with_llm ? &f->fake.llm : NULL,
        .llm_missing = "no LLM provider configured: set ANTHROPIC_API_KEY",
        .blob = f->blob,
        .metrics = f->metrics,
        .open_store = open_store,
        .open_store_ud = f,
        .keepalive_ms = 100,
        .delta_flush_ms = 5,
    };
    assert_int_equal(kp_gen_new(&o, &f->g, &err), KP_OK);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    kp_err err = {0};
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->db, sizeof f->db);
    f->blob = kp_test_blob(f->dir);
    assert_int_equal(kp_loop_start(&f->loop, &err), KP_OK);
    f->metrics = kp_metrics_new();
    f->cfg.apps_url = "http://apps.test/";
    f->cfg.max_tokens = 1000;
    f->cfg.generation_cost = 1;
    f->cfg.context_window = 200000;
    f->cfg.rejected_refunds_per_day = 3;
    f->cfg.cancel_refund_chars = 1000;
    pthread_mutex_init(&f->fake.mu, NULL);
    f->fake.llm.ops = &fake_ops;
    f->fake.llm.model = "fake-model-1";
    f->fake.llm.impl = &f->fake;
    f->fake.loop = f->loop;
    kp_test_user(f->s, "usr_a", "a@example.com", "pro");
    assert_int_equal(kp_credits_grant(f->s, "usr_a", 0, 10, "test", "grant:a", NULL, NULL, &err), KP_OK);
    start_service(f, 1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    kp_gen_shutdown(f->g);
    kp_loop_stop(f->loop);
    kp_gen_free(f->g);
    for (int i = 0; i < MAX_CALLS; i++)
        free(f->fake.requests[i]);
    pthread_mutex_destroy(&f->fake.mu);
    kp_metrics_free(f->metrics);
    f->blob->ops->close(f->blob);
    f->s->ops->close(f->s);
    kp_test_rmrf(f->dir);
    free(f);
    return 0;
}

static void set_script(fixture *f, int i, const char *text, const char *stop_reason)
{
    script *s = &f->fake.scripts[i];
    memset(s, 0, sizeof *s);
    s->text = text;
    s->chunk = 5;
    s->delay_ms = 0;
    s->stop_reason = stop_reason;
    s->usage.input_tokens = 100;
    s->usage.output_tokens = 50;
    if (f->fake.nscripts <= i)
        f->fake.nscripts = i + 1;
}

static kp_status submit(fixture *f, const char *user, const char *project_id, const char *prompt, kp_gen_result *res)
{
    kp_err err = {0};
    kp_plan pro;
    assert_int_equal(f->s->ops->plan_get(f->s, "pro", &pro, &err), KP_OK);
    kp_gen_request r = {.user_id = user, .plan = &pro, .project_id = project_id, .name = "", .prompt = prompt};
    return kp_gen_submit(f->g, f->s, &r, res, &err);
}

/* Waits until version n of the project is no longer generating; returns it, with its events from the
 * event store in events_json (the row keeps none). */
static void wait_version(fixture *f, const char *project_id, int64_t n, kp_version *v)
{
    kp_err err = {0};
    for (int i = 0; i < 1000; i++) {
        memset(v, 0, sizeof *v);
        assert_int_equal(f->s->ops->version_get(f->s, project_id, n, v, &err), KP_OK);
        if (v->status != KP_VER_GENERATING && v->settled && kp_gen_in_flight(f->g) == 0) {
            assert_string_equal(v->events_json, "[]");
            free(v->events_json);
            v->events_json = NULL;
            assert_int_equal(kp_store_events_json(f->s, project_id, n, 0, &v->events_json, &err), KP_OK);
            return;
        }
        kp_version_clear(v);
        sleep_ms(5);
    }
    fail_msg("version %lld of %s still generating", (long long)n, project_id);
}

static int64_t balance_total(fixture *f, const char *user)
{
    kp_balance b, sum;
    kp_err err = {0};
    assert_int_equal(kp_credits_balance(f->s, user, &b, &err), KP_OK);
    assert_int_equal(f->s->ops->ledger_sum(f->s, user, &sum, &err), KP_OK);
    assert_int_equal(b.daily, sum.daily);
    assert_int_equal(b.monthly, sum.monthly);
    return b.daily + b.monthly;
}

static kp_reservation_state reservation_state(fixture *f, const kp_version *v)
{
    kp_reservation r;
    kp_err err = {0};
    assert_int_equal(f->s->ops->reservation_get(f->s, v->reservation_id, &r, &err), KP_OK);
    return r.state;
}

static char *blob_text(fixture *f, const char *project_id, int64_t n, const char *path)
{
    char key[512];
    kp_buf b = KP_BUF_INIT;
    kp_err err = {0};
    snprintf(key, sizeof key, "apps/%s/v%lld/%s", project_id, (long long)n, path);
    if (f->blob->ops->get(f->blob, key, &b, NULL, &err) != KP_OK)
        return NULL;
    if (!b.data)
        return strdup("");
    return kp_buf_steal(&b);
}

static int blob_count(fixture *f, const char *prefix)
{
    return kp_test_blob_count(f->blob, prefix);
}

/* Checks that data holds SSE events with ids first, first+1, ... and returns their types joined by ",". */
static char *event_types(const char *data, int64_t first, int *count)
{
    kp_buf types = KP_BUF_INIT;
    int64_t expect = first;
    int n = 0;
    const char *p = data ? data : "";
    while (*p) {
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        if (*p == ':') { /* comment */
            p = end + 2;
            continue;
        }
        long long id = -1;
        char type[32] = "";
        assert_int_equal(sscanf(p, "id: %lld\nevent: %31[a-z]\n", &id, type), 2);
        assert_int_equal(id, expect);
        expect++;
        kp_buf_printf(&types, "%s%s", n ? "," : "", type);
        n++;
        p = end + 2;
    }
    if (count)
        *count = n;
    char *out = kp_buf_steal(&types);
    return out ? out : strdup("");
}

/* Collapses runs of "delta" in a type list, so that asserts do not depend on chunking. */
static void squash_deltas(char *types)
{
    char *out = types;
    const char *p = types;
    int last_delta = 0;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        int is_delta = len == 5 && strncmp(p, "delta", 5) == 0;
        if (!(is_delta && last_delta)) {
            if (out != types)
                *out++ = ',';
            memmove(out, p, len);
            out += len;
        }
        last_delta = is_delta;
        p += len + (comma ? 1 : 0);
    }
    *out = '\0';
}

static const char app_v1[] = "Here is a greeting app.\n"
                             "<file path=\"index.html\">\n"
                             "<!doctype html><h1>Hi \xc3\xa9t\xc3\xa9</h1><script src=\"app.js\"></script>\n"
                             "</file>\n"
                             "<file path=\"app.js\">\n"
                             "console.log(1);\n"
                             "</file>\n"
                             "<file path=\"old.css\">\n"
                             "body{}\n"
                             "</file>\n"
                             "Enjoy.\n";

static void generate_v1(fixture *f, kp_gen_result *res, kp_version *v)
{
    set_script(f, 0, app_v1, "end_turn");
    assert_int_equal(submit(f, "usr_a", NULL, "Make a greeting app", res), KP_OK);
    assert_int_equal(res->version, 1);
    wait_version(f, res->project_id, 1, v);
}

/* ---- tests ---- */

static void test_generate_publishes_and_charges(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    kp_project p;
    kp_err err = {0};
    generate_v1(f, &res, &v);
    assert_int_equal(v.status, KP_VER_READY);
    assert_int_equal(v.settled, 1);
    assert_int_equal(reservation_state(f, &v), KP_RES_COMMITTED);
    assert_int_equal(balance_total(f, "usr_a"), 9);
    assert_string_equal(v.model, "fake-model-1");
    assert_int_equal(v.input_tokens, 100);
    assert_int_equal(v.output_tokens, 50);
    assert_string_equal(v.message, "Here is a greeting app.\nEnjoy.");
    assert_non_null(strstr(v.files_json, "\"path\":\"index.html\""));
    assert_non_null(strstr(v.files_json, "\"content_type\":\"text/javascript; charset=utf-8\""));
    assert_string_equal(v.prompt, "Make a greeting app");

    char *index = blob_text(f, res.project_id, 1, "index.html");
    assert_non_null(index);
    assert_string_equal(index, "<!doctype html><h1>Hi \xc3\xa9t\xc3\xa9</h1><script src=\"app.js\"></script>");
    free(index);
    char *js = blob_text(f, res.project_id, 1, "app.js");
    assert_string_equal(js, "console.log(1);");
    free(js);

    assert_int_equal(f->s->ops->project_get(f->s, res.project_id, &p, &err), KP_OK);
    assert_int_equal(p.latest_ready, 1);
    assert_string_equal(p.name, "Make a greeting app");

    /* the persisted events: project, deltas, three files, done; deltas hold the whole output */
    kp_buf frames = KP_BUF_INIT;
    assert_int_equal(kp_gen_replay_events(v.events_json, 0, &frames), 0);
    char *types = event_types(frames.data, 1, NULL);
    squash_deltas(types);
    assert_string_equal(types, "project,delta,file,delta,file,delta,file,delta,done");
    free(types);
    json_t *events = json_loads(v.events_json, 0, NULL);
    kp_buf text = KP_BUF_INIT;
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        if (strcmp(json_string_value(json_object_get(ev, "event")), "delta") == 0)
            kp_buf_puts(&text, json_string_value(json_object_get(json_object_get(ev, "data"), "text")));
    }
    assert_string_equal(text.data, app_v1);
    json_t *done = json_object_get(json_array_get(events, json_array_size(events) - 1), "data");
    char url[256];
    snprintf(url, sizeof url, "http://apps.test/%s/@v1/", res.project_id);
    assert_string_equal(json_string_value(json_object_get(done, "url")), url);
    assert_int_equal(json_integer_value(json_object_get(done, "credits_left")), 9);
    assert_int_equal(json_array_size(json_object_get(done, "files")), 3);
    json_decref(events);
    kp_buf_free(&text);
    kp_buf_free(&frames);
    assert_int_equal(kp_metrics_value(f->metrics, "credits_spent_total"), 1);
    assert_int_equal(kp_metrics_value(f->metrics, "generations_in_flight"), 0);
    assert_int_equal(f->fake.off_loop, 0);
    kp_version_clear(&v);
}

static void assert_failed_and_refunded(fixture *f, kp_version *v, const char *code)
{
    assert_int_equal(v->status, KP_VER_FAILED);
    assert_string_equal(v->error_code, code);
    assert_int_equal(v->settled, 1);
    assert_int_equal(reservation_state(f, v), KP_RES_REFUNDED);
    assert_int_equal(balance_total(f, "usr_a"), 10);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "apps/%s/", v->project_id);
    assert_int_equal(blob_count(f, prefix), 0);
    /* the last persisted event is the error, with the refund */
    json_t *events = json_loads(v->events_json, 0, NULL);
    json_t *last = json_array_get(events, json_array_size(events) - 1);
    assert_string_equal(json_string_value(json_object_get(last, "event")), "error");
    json_t *data = json_object_get(last, "data");
    assert_string_equal(json_string_value(json_object_get(data, "code")), code);
    assert_int_equal(json_integer_value(json_object_get(data, "credits_refunded")), 1);
    assert_true(json_is_true(json_object_get(data, "refunded")));
    assert_int_equal(v->refunded, 1);
    json_decref(events);
}

static void test_output_without_index_is_refunded(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    set_script(f, 0, "<file path=\"app.js\">\nx\n</file>\n", "end_turn");
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_failed_and_refunded(f, &v, "invalid_output");
    assert_non_null(strstr(v.error_message, "index.html"));
    kp_version_clear(&v);
}

static void test_path_traversal_is_refunded(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    set_script(f, 0, "<file path=\"index.html\">\nok\n</file>\n<file path=\"../../etc/passwd\">\nroot\n</file>\n",
               "end_turn");
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_failed_and_refunded(f, &v, "invalid_output");
    assert_non_null(strstr(v.error_message, "invalid_path"));
    kp_version_clear(&v);
}

static void test_oversize_output_is_refunded(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    size_t big = 2 * 1024 * 1024 + 10;
    kp_buf text = KP_BUF_INIT;
    kp_buf_puts(&text, "<file path=\"index.html\">\n");
    char line[1025];
    memset(line, 'a', 1024);
    line[1024] = '\0';
    for (size_t n = 0; n < big; n += 1025)
        kp_buf_printf(&text, "%s\n", line);
    kp_buf_puts(&text, "</file>\n");
    set_script(f, 0, text.data, "end_turn");
    f->fake.scripts[0].chunk = 64 * 1024;
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_failed_and_refunded(f, &v, "invalid_output");
    assert_non_null(strstr(v.error_message, "too_large"));
    kp_version_clear(&v);
    kp_buf_free(&text);
}

static void test_provider_error_is_refunded(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    set_script(f, 0, "<file path=\"index.html\">\nhal", NULL);
    f->fake.scripts[0].error_code = "overloaded";
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_failed_and_refunded(f, &v, "overloaded");
    kp_version_clear(&v);
}

/* Ids and created_at sort by creation time in milliseconds: 50 projects made
 * one after the other (most in the same second) list newest first exactly. */
static void test_projects_list_in_creation_order(void **state)
{
    fixture *f = *state;
    enum { N = 50 };
    char ids[N][KP_ID_MAX];
    kp_gen_result res;
    kp_version v;
    kp_err err = {0};
    set_script(f, 0, "x", NULL);
    f->fake.scripts[0].error_code = "overloaded";
    for (int i = 0; i < N; i++) {
        assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
        memcpy(ids[i], res.project_id, KP_ID_MAX);
        wait_version(f, res.project_id, 1, &v);
        kp_version_clear(&v);
    }
    kp_project *list = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->project_list(f->s, "usr_a", 0, "", 100, &list, &n, &err), KP_OK);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++)
        assert_string_equal(list[i].id, ids[N - 1 - i]);
    free(list);
}

static void test_max_tokens_continues(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    const char *first = "Two files.\n<file path=\"index.html\">\n<p>one</p>\n</file>\n<file path=\"b.js\">\npart";
    set_script(f, 0, first, "max_tokens");
    set_script(f, 1, "<file path=\"b.js\">\nwhole();\n</file>\n", "end_turn");
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_int_equal(v.status, KP_VER_READY);
    assert_int_equal(f->fake.calls, 2);
    assert_int_equal(v.input_tokens, 200);
    assert_int_equal(v.output_tokens, 100);
    assert_int_equal(balance_total(f, "usr_a"), 9); /* one generation, one credit */
    char *b = blob_text(f, res.project_id, 1, "b.js");
    assert_string_equal(b, "whole();");
    free(b);
    /* the second call got the output up to the last complete file, then a request to go on */
    const char *req = f->fake.requests[1];
    assert_non_null(strstr(req, "\n---\nassistant: Two files.\n<file path=\"index.html\">\n<p>one</p>\n</file>\n"
                                "\n---\nuser: "));
    assert_null(strstr(req, "part"));
    kp_version_clear(&v);
}

/* Two continuations: the files published are what the first parse kept, each continuation taking
 * over where the output was cut back to (publishing parses the output again, rewound at the same
 * points: the live parse kept the files' sizes only). */
static void test_two_continuations_publish_every_file(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    set_script(f, 0, "An app.\n<file path=\"index.html\">\n<p>one</p>\n</file>\n<file path=\"app.js\">\npar",
               "max_tokens");
    set_script(f, 1, "<file path=\"app.js\">\ngo();\n</file>\n<file path=\"style.css\">\np {", "max_tokens");
    set_script(f, 2, "<file path=\"style.css\">\np { margin: 0 }\n</file>\nDone.\n", "end_turn");
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_int_equal(v.status, KP_VER_READY);
    assert_int_equal(f->fake.calls, 3);
    static const char *const want[][2] = {
        {"index.html", "<p>one</p>"}, {"app.js", "go();"}, {"style.css", "p { margin: 0 }"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char *text = blob_text(f, res.project_id, 1, want[i][0]);
        assert_string_equal(text, want[i][1]);
        free(text);
    }
    assert_non_null(strstr(v.files_json, "\"path\":\"style.css\",\"size\":15"));
    kp_version_clear(&v);
}

/* The output is held once, in the delta events, and read back from them to publish and to continue:
 * escapes, control characters and multi-byte text come back byte for byte, on both sides of a cut. */
static void test_output_read_back_byte_for_byte(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    set_script(f, 0,
               "Hi \"there\".\n<file path=\"index.html\">\n<p title=\"a\\b\">\t\u00e9t\u00e9 \u65e5\u672c "
               "\xf0\x9f\x98\x80</p>\r\n</file>\n<file path=\"app.js\">\nlet s = '\\u0041",
               "max_tokens");
    set_script(f, 1, "<file path=\"app.js\">\nlet s = \"\\\"\\n\u00e9\";\n</file>\n", "end_turn");
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_int_equal(v.status, KP_VER_READY);
    assert_int_equal(f->fake.calls, 2);
    char *html = blob_text(f, res.project_id, 1, "index.html");
    assert_string_equal(html, "<p title=\"a\\b\">\t\u00e9t\u00e9 \u65e5\u672c \xf0\x9f\x98\x80</p>\r");
    free(html);
    char *js = blob_text(f, res.project_id, 1, "app.js");
    assert_string_equal(js, "let s = \"\\\"\\n\u00e9\";");
    free(js);
    /* the continuation's prompt carried the output up to the cut, escapes intact */
    assert_non_null(strstr(f->fake.requests[1], "<p title=\"a\\b\">"));
    assert_null(strstr(f->fake.requests[1], "\\u0041"));
    kp_version_clear(&v);
}

static void test_third_max_tokens_is_too_long(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    set_script(f, 0, "<file path=\"index.html\">\nnever ends", "max_tokens");
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_int_equal(f->fake.calls, 3);
    assert_failed_and_refunded(f, &v, "too_long");
    kp_version_clear(&v);
}

static void test_cancel_refunds(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    kp_err err = {0};
    set_script(f, 0, "<file path=\"index.html\">\nslow slow slow slow slow\n</file>\n", "end_turn");
    f->fake.scripts[0].delay_ms = 200;
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    for (int i = 0; i < 200 && kp_gen_in_flight(f->g) == 0; i++)
        sleep_ms(5);
    sleep_ms(50);
    assert_int_equal(kp_gen_cancel(f->g, res.project_id, 1, &err), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_failed_and_refunded(f, &v, "canceled");
    assert_string_equal(v.credit_reason, "canceled_early"); /* fewer than 1,000 characters written */
    assert_int_equal(f->fake.cancels, 1);
    assert_int_equal(kp_gen_cancel(f->g, res.project_id, 1, &err), KP_ECONFLICT);
    kp_version_clear(&v);
}

static void test_shutdown_interrupts_and_refunds(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    set_script(f, 0, "<file path=\"index.html\">\nslow slow slow slow slow\n</file>\n", "end_turn");
    f->fake.scripts[0].delay_ms = 200;
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    for (int i = 0; i < 200 && kp_gen_in_flight(f->g) == 0; i++)
        sleep_ms(5);
    kp_gen_shutdown(f->g);
    wait_version(f, res.project_id, 1, &v);
    assert_failed_and_refunded(f, &v, "interrupted");
    kp_version_clear(&v);
    kp_gen_result again;
    assert_int_equal(submit(f, "usr_a", NULL, "another", &again), KP_EUNAVAILABLE);
}

static void test_refusals_charge_nothing(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_err err = {0};
    kp_project *list = NULL;
    size_t n = 9;

    /* context too large: checked before charging */
    f->cfg.context_window = 2000;
    char *prompt = malloc(6001);
    memset(prompt, 'x', 6000);
    prompt[6000] = '\0';
    assert_int_equal(submit(f, "usr_a", NULL, prompt, &res), KP_EINVAL);
    assert_string_equal(res.error_code, "context_too_large");
    free(prompt);
    f->cfg.context_window = 200000;

    /* not enough credits */
    kp_test_user(f->s, "usr_poor", "poor@example.com", "pro");
    assert_int_equal(submit(f, "usr_poor", NULL, "an app", &res), KP_ECREDITS);
    assert_string_equal(res.error_code, "insufficient_credits");
    assert_int_equal(res.balance.daily + res.balance.monthly, 0);
    assert_int_equal(f->s->ops->project_list(f->s, "usr_poor", 0, "", 10, &list, &n, &err), KP_OK);
    assert_int_equal(n, 0);
    free(list);

    /* someone else's project */
    kp_gen_result mine;
    kp_version v;
    generate_v1(f, &mine, &v);
    kp_version_clear(&v);
    kp_test_user(f->s, "usr_b", "b@example.com", "pro");
    assert_int_equal(kp_credits_grant(f->s, "usr_b", 0, 5, "test", "grant:b", NULL, NULL, &err), KP_OK);
    assert_int_equal(submit(f, "usr_b", mine.project_id, "change it", &res), KP_ENOTFOUND);
    assert_int_equal(balance_total(f, "usr_b"), 5);
    assert_int_equal(balance_total(f, "usr_a"), 9);
}

static void test_plan_limits_concurrency(void **state)
{
    fixture *f = *state;
    kp_gen_result res, second;
    kp_version v;
    kp_err err = {0};
    kp_test_user(f->s, "usr_f", "f@example.com", "free");
    assert_int_equal(kp_credits_grant(f->s, "usr_f", 0, 5, "test", "grant:f", NULL, NULL, &err), KP_OK);
    set_script(f, 0, "<file path=\"index.html\">\nslow slow slow\n</file>\n", "end_turn");
    f->fake.scripts[0].delay_ms = 30;
    kp_plan free_plan;
    assert_int_equal(f->s->ops->plan_get(f->s, "free", &free_plan, &err), KP_OK);
    kp_gen_request r = {.user_id = "usr_f", .plan = &free_plan, .prompt = "one"};
    assert_int_equal(kp_gen_submit(f->g, f->s, &r, &res, &err), KP_OK);
    r.prompt = "two";
    assert_int_equal(kp_gen_submit(f->g, f->s, &r, &second, &err), KP_ERATE);
    assert_string_equal(second.error_code, "too_many_generations");
    wait_version(f, res.project_id, 1, &v);
    assert_int_equal(v.status, KP_VER_READY);
    kp_version_clear(&v);
    assert_int_equal(balance_total(f, "usr_f"), 4);
}

static void test_llm_not_configured(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_gen_shutdown(f->g);
    kp_gen_free(f->g);
    start_service(f, 0);
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_EUNAVAILABLE);
    assert_string_equal(res.error_code, "llm_not_configured");
    assert_int_equal(balance_total(f, "usr_a"), 10);
}

static void test_follow_up_carries_files_over(void **state)
{
    fixture *f = *state;
    kp_gen_result res, next;
    kp_version v, v2;
    generate_v1(f, &res, &v);
    kp_version_clear(&v);
    set_script(f, 1, "Updated.\n<file path=\"app.js\">\nconsole.log(2);\n</file>\n<delete path=\"old.css\"/>\n",
               "end_turn");
    assert_int_equal(submit(f, "usr_a", res.project_id, "log 2 instead", &next), KP_OK);
    assert_string_equal(next.project_id, res.project_id);
    assert_int_equal(next.version, 2);
    wait_version(f, res.project_id, 2, &v2);
    assert_int_equal(v2.status, KP_VER_READY);
    assert_int_equal(balance_total(f, "usr_a"), 8);
    char *index = blob_text(f, res.project_id, 2, "index.html");
    assert_non_null(index);
    assert_non_null(strstr(index, "<h1>Hi"));
    free(index);
    char *js = blob_text(f, res.project_id, 2, "app.js");
    assert_string_equal(js, "console.log(2);");
    free(js);
    assert_null(blob_text(f, res.project_id, 2, "old.css"));
    assert_null(strstr(v2.files_json, "old.css"));
    /* version 1 is untouched */
    char *js1 = blob_text(f, res.project_id, 1, "app.js");
    assert_string_equal(js1, "console.log(1);");
    free(js1);
    /* the model saw the conversation and the current files */
    const char *req = f->fake.requests[1];
    assert_non_null(strstr(req, "user: Make a greeting app\n---\nassistant: Here is a greeting app.\nEnjoy."));
    assert_non_null(strstr(req, "<file path=\"app.js\">\nconsole.log(1);\n</file>"));
    assert_non_null(strstr(req, "log 2 instead"));
    kp_version_clear(&v2);
}

#define SHA_JS1 "35c146f76e129477c64061bc84511e1090f3d4d8059713e6663dd4b35b1f7642" /* console.log(1); */
#define SHA_JS2 "43b3c328592d68aa43a67e043ad0f028eddd4a1854977a84771f69582aa169a9" /* console.log(2); */
#define SHA_INDEX "dfeb0636d7bac38fe0a08231a5e168d8cd6902b545b76b71cbd797b827dd4d1d"

/* Manifests carry each file's sha256: a new file's, a carried-over file's
 * from the previous manifest, or from its bytes when that manifest (made
 * before sha256 existed) has none. */
static void test_manifest_sha256(void **state)
{
    fixture *f = *state;
    kp_gen_result res, next;
    kp_version v, v2;
    generate_v1(f, &res, &v);
    assert_non_null(strstr(v.files_json, "\"path\":\"app.js\",\"size\":15,\"content_type\":\"text/javascript; "
                                         "charset=utf-8\",\"sha256\":\"" SHA_JS1 "\""));
    assert_non_null(strstr(v.files_json, "\"sha256\":\"" SHA_INDEX "\""));
    kp_version_clear(&v);
    /* version 1 as an older server wrote it: no sha256 */
    kp_test_sql_exec(f->db, "UPDATE versions SET files_json = "
                            "json_remove(files_json, '$[0].sha256', '$[1].sha256', '$[2].sha256') WHERE n = 1");
    assert_int_equal(kp_test_sql_int(f->db, "SELECT count(*) FROM versions WHERE files_json LIKE '%sha256%'"), 0);
    set_script(f, 1, "Updated.\n<file path=\"app.js\">\nconsole.log(2);\n</file>\n", "end_turn");
    assert_int_equal(submit(f, "usr_a", res.project_id, "log 2 instead", &next), KP_OK);
    wait_version(f, res.project_id, 2, &v2);
    assert_int_equal(v2.status, KP_VER_READY);
    assert_non_null(strstr(v2.files_json, "\"sha256\":\"" SHA_JS2 "\""));
    assert_non_null(strstr(v2.files_json, "\"sha256\":\"" SHA_INDEX "\"")); /* carried over, hashed from its bytes */
    assert_null(strstr(v2.files_json, SHA_JS1));
    kp_version_clear(&v2);
}

static void test_follow_up_while_generating_conflicts(void **state)
{
    fixture *f = *state;
    kp_gen_result res, next;
    kp_version v;
    set_script(f, 0, "<file path=\"index.html\">\nslow slow slow\n</file>\n", "end_turn");
    f->fake.scripts[0].delay_ms = 30;
    assert_int_equal(submit(f, "usr_a", NULL, "one", &res), KP_OK);
    assert_int_equal(submit(f, "usr_a", res.project_id, "two", &next), KP_ECONFLICT);
    assert_string_equal(next.error_code, "generation_in_progress");
    wait_version(f, res.project_id, 1, &v);
    kp_version_clear(&v);
    assert_int_equal(balance_total(f, "usr_a"), 9);
}

static kp_stream *subscribe(fixture *f, const char *project_id, int64_t n, int64_t after, test_sink *t)
{
    tsink_init(t);
    kp_stream *st = kp_gen_stream(f->g, project_id, n, after);
    assert_non_null(st);
    st->start(st, &t->sink);
    return st;
}

static void wait_ended(test_sink *t)
{
    for (int i = 0; i < 1000 && !tsink_ended(t); i++)
        sleep_ms(5);
    assert_true(tsink_ended(t));
}

/* A failed version's outcome, in its row and in its persisted error event. */
static void assert_outcome(const kp_version *v, int refunded, const char *reason)
{
    assert_int_equal(v->status, KP_VER_FAILED);
    assert_int_equal(v->settled, 1);
    assert_int_equal(v->refunded, refunded);
    assert_string_equal(v->credit_reason, reason);
    json_t *events = json_loads(v->events_json, 0, NULL);
    json_t *data = json_object_get(json_array_get(events, json_array_size(events) - 1), "data");
    assert_int_equal(json_is_true(json_object_get(data, "refunded")), refunded);
    assert_string_equal(json_string_value(json_object_get(data, refunded ? "refund_reason" : "charge_reason")), reason);
    assert_int_equal(json_integer_value(json_object_get(data, "credits_refunded")), refunded ? 1 : 0);
    json_decref(events);
}

static int ledger_count(fixture *f, const char *reason)
{
    kp_ledger_entry *e = NULL;
    size_t n = 0;
    int count = 0;
    kp_err err = {0};
    assert_int_equal(f->s->ops->ledger_list(f->s, "usr_a", 0, 1000, &e, &n, &err), KP_OK);
    for (size_t i = 0; i < n; i++)
        count += strcmp(e[i].reason, reason) == 0;
    free(e);
    return count;
}

/* Rejected output is refunded 3 times a day (the test's allowance), then charged. */
static void test_rejected_output_refunded_up_to_allowance(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    set_script(f, 0, "I will not write files, only prose.", "end_turn");
    for (int i = 0; i < 5; i++) {
        assert_int_equal(submit(f, "usr_a", NULL, "answer in prose, create no files", &res), KP_OK);
        wait_version(f, res.project_id, 1, &v);
        assert_string_equal(v.error_code, "invalid_output");
        if (i < 3) {
            assert_outcome(&v, 1, "rejected_output_allowance");
            assert_int_equal(reservation_state(f, &v), KP_RES_REFUNDED);
        } else {
            assert_outcome(&v, 0, "rejected_output_allowance_used");
            assert_int_equal(reservation_state(f, &v), KP_RES_COMMITTED);
        }
        kp_version_clear(&v);
    }
    assert_int_equal(balance_total(f, "usr_a"), 8);
    assert_int_equal(ledger_count(f, "refund:rejected_output_allowance"), 3);
    assert_int_equal(ledger_count(f, "charge:rejected_output_allowance_used"), 2);
    /* the service's own failures stay refunded after the allowance is used */
    set_script(f, 0, "x", NULL);
    f->fake.scripts[0].error_code = "overloaded";
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_outcome(&v, 1, "service_failure");
    assert_int_equal(ledger_count(f, "refund:service_failure"), 1);
    assert_int_equal(balance_total(f, "usr_a"), 8);
    kp_version_clear(&v);
}

/* A cancel after the model wrote 1,000 characters or more is charged. */
static void test_cancel_after_output_is_charged(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    kp_err err = {0};
    test_sink reader;
    static char text[3001];
    memset(text, 'a', sizeof text - 1);
    set_script(f, 0, text, "end_turn");
    f->fake.scripts[0].chunk = 1100;
    f->fake.scripts[0].delay_ms = 10000; /* the rest never comes before the cancel */
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    kp_stream *st = subscribe(f, res.project_id, 1, 0, &reader);
    int seen = 0;
    for (int i = 0; i < 1000 && !seen; i++) {
        pthread_mutex_lock(&reader.mu);
        seen = reader.data.data && strstr(reader.data.data, "event: delta") != NULL;
        pthread_mutex_unlock(&reader.mu);
        if (!seen)
            sleep_ms(5);
    }
    assert_true(seen);
    assert_int_equal(kp_gen_cancel(f->g, res.project_id, 1, &err), KP_OK);
    wait_ended(&reader);
    wait_version(f, res.project_id, 1, &v);
    assert_outcome(&v, 0, "canceled_after_output");
    assert_int_equal(reservation_state(f, &v), KP_RES_COMMITTED);
    assert_int_equal(balance_total(f, "usr_a"), 9);
    assert_int_equal(ledger_count(f, "charge:canceled_after_output"), 1);
    /* the readers were told the same */
    assert_non_null(strstr(reader.data.data, "\"refunded\":false,\"charge_reason\":\"canceled_after_output\""));
    st->release(st);
    tsink_free(&reader);
    kp_version_clear(&v);
}

static void test_subscribers_replay_after_last_event_id(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    test_sink live, late, leaver, after_done;
    set_script(f, 0, app_v1, "end_turn");
    f->fake.scripts[0].chunk = 3;
    f->fake.scripts[0].delay_ms = 2;
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    kp_stream *s1 = subscribe(f, res.project_id, 1, 0, &live);
    kp_stream *s3 = subscribe(f, res.project_id, 1, 0, &leaver);
    sleep_ms(40);
    s3->release(s3); /* a reader that goes away cancels nothing */
    kp_stream *s2 = subscribe(f, res.project_id, 1, 2, &late);
    wait_ended(&live);
    wait_ended(&late);
    wait_version(f, res.project_id, 1, &v);
    assert_int_equal(v.status, KP_VER_READY);
    assert_int_equal(reservation_state(f, &v), KP_RES_COMMITTED);

    int nlive = 0, nlate = 0;
    char *t1 = event_types(live.data.data, 1, &nlive);
    char *t2 = event_types(late.data.data, 3, &nlate);
    assert_int_equal(nlate, nlive - 2);
    assert_true(strncmp(t1, "project,", 8) == 0);
    assert_non_null(strstr(t1, ",done"));
    /* the live stream is exactly what was persisted */
    kp_buf persisted = KP_BUF_INIT;
    assert_int_equal(kp_gen_replay_events(v.events_json, 0, &persisted), 0);
    char *t3 = event_types(persisted.data, 1, NULL);
    assert_string_equal(t1, t3);
    free(t1);
    free(t2);
    free(t3);

    /* a reader of the finished version gets the rest from the database, then the end */
    kp_stream *s4 = subscribe(f, res.project_id, 1, (int64_t)nlive - 1, &after_done);
    wait_ended(&after_done);
    int ndone = 0;
    char *t4 = event_types(after_done.data.data, nlive, &ndone);
    assert_string_equal(t4, "done");
    free(t4);

    s1->release(s1);
    s2->release(s2);
    s4->release(s4);
    kp_buf_free(&persisted);
    tsink_free(&live);
    tsink_free(&late);
    tsink_free(&leaver);
    tsink_free(&after_done);
    kp_version_clear(&v);
}

static void test_readers_get_keep_alives(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    kp_err err = {0};
    test_sink t;
    set_script(f, 0, "<file path=\"index.html\">\nslow slow slow\n</file>\n", "end_turn");
    f->fake.scripts[0].delay_ms = 10000;
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    kp_stream *st = subscribe(f, res.project_id, 1, 0, &t);
    sleep_ms(350); /* the fixture's keep-alive interval is 100 ms */
    pthread_mutex_lock(&t.mu);
    assert_non_null(t.data.data);
    assert_non_null(strstr(t.data.data, "\n\n: keep-alive\n\n"));
    pthread_mutex_unlock(&t.mu);
    assert_int_equal(kp_gen_cancel(f->g, res.project_id, 1, &err), KP_OK);
    wait_ended(&t);
    wait_version(f, res.project_id, 1, &v);
    assert_string_equal(v.error_code, "canceled");
    kp_version_clear(&v);
    st->release(st);
    tsink_free(&t);
}

static void make_unsettled(fixture *f, const char *pid, kp_version_status end_status, kp_version *out)
{
    kp_err err = {0};
    kp_project p;
    kp_version v;
    memset(&p, 0, sizeof p);
    memset(&v, 0, sizeof v);
    snprintf(p.id, sizeof p.id, "%s", pid);
    snprintf(p.user_id, sizeof p.user_id, "usr_a");
    snprintf(p.name, sizeof p.name, "crashed");
    p.latest_version = 1;
    p.created_at = p.updated_at = (int64_t)time(NULL);
    snprintf(v.project_id, sizeof v.project_id, "%s", pid);
    v.n = 1;
    v.status = KP_VER_GENERATING;
    snprintf(v.reservation_id, sizeof v.reservation_id, "res_%s", pid);
    v.prompt = "x";
    v.created_at = v.updated_at = p.created_at;
    assert_int_equal(kp_credits_reserve(f->s, "usr_a", v.reservation_id, 1, "generation", NULL, &err), KP_OK);
    assert_int_equal(f->s->ops->project_create(f->s, &p, &v, &err), KP_OK);
    if (end_status != KP_VER_GENERATING) {
        v.status = end_status;
        v.files_json = "[]";
        v.events_json = "[]";
        if (end_status == KP_VER_FAILED)
            snprintf(v.error_code, sizeof v.error_code, "provider_error");
        assert_int_equal(f->s->ops->version_finish(f->s, &v, &err), KP_OK);
    }
    v.prompt = NULL;
    v.files_json = v.events_json = NULL;
    *out = v;
}

static void test_recovery_settles_everything(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_version gen, ready, failed, v;
    size_t repaired = 0;
    make_unsettled(f, "prj_gen", KP_VER_GENERATING, &gen);
    make_unsettled(f, "prj_ready", KP_VER_READY, &ready);
    make_unsettled(f, "prj_failed", KP_VER_FAILED, &failed);
    char key[] = "apps/prj_gen/v1/index.html";
    assert_int_equal(f->blob->ops->put(f->blob, key, "x", 1, NULL, &err), KP_OK);
    assert_int_equal(balance_total(f, "usr_a"), 7);

    assert_int_equal(kp_gen_recover(f->s, f->blob, &repaired, &err), KP_OK);
    assert_int_equal(repaired, 3);

    assert_int_equal(f->s->ops->version_get(f->s, "prj_gen", 1, &v, &err), KP_OK);
    assert_int_equal(v.status, KP_VER_FAILED);
    assert_string_equal(v.error_code, "interrupted");
    assert_int_equal(v.settled, 1);
    assert_int_equal(reservation_state(f, &v), KP_RES_REFUNDED);
    kp_version_clear(&v);
    assert_int_equal(blob_count(f, "apps/prj_gen/"), 0);
    assert_int_equal(f->s->ops->version_get(f->s, "prj_ready", 1, &v, &err), KP_OK);
    assert_int_equal(v.settled, 1);
    assert_int_equal(reservation_state(f, &v), KP_RES_COMMITTED);
    kp_version_clear(&v);
    assert_int_equal(f->s->ops->version_get(f->s, "prj_failed", 1, &v, &err), KP_OK);
    assert_int_equal(v.settled, 1);
    assert_int_equal(reservation_state(f, &v), KP_RES_REFUNDED);
    kp_version_clear(&v);
    assert_int_equal(balance_total(f, "usr_a"), 9);

    kp_version *left = NULL;
    size_t n = 9;
    assert_int_equal(f->s->ops->versions_unsettled(f->s, &left, &n, &err), KP_OK);
    assert_int_equal(n, 0);
    kp_version_free_array(left, n);
    /* running it again changes nothing */
    assert_int_equal(kp_gen_recover(f->s, f->blob, &repaired, &err), KP_OK);
    assert_int_equal(repaired, 0);
    assert_int_equal(balance_total(f, "usr_a"), 9);
}

/* A reservation that no version refers to (an admission cut short by an
 * older build, which reserved and created rows in two transactions) is
 * refunded at start-up. */
static void test_recovery_refunds_reservations_without_version(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    size_t repaired = 0;
    kp_reservation r;
    assert_int_equal(kp_credits_reserve(f->s, "usr_a", "res_orphan", 1, "generation", NULL, &err), KP_OK);
    assert_int_equal(balance_total(f, "usr_a"), 9);
    assert_int_equal(kp_gen_recover(f->s, f->blob, &repaired, &err), KP_OK);
    assert_int_equal(balance_total(f, "usr_a"), 10);
    assert_int_equal(f->s->ops->reservation_get(f->s, "res_orphan", &r, &err), KP_OK);
    assert_int_equal(r.state, KP_RES_REFUNDED);
    /* once only */
    assert_int_equal(kp_gen_recover(f->s, f->blob, &repaired, &err), KP_OK);
    assert_int_equal(balance_total(f, "usr_a"), 10);
}

/* ---- leases ---- */

/* Restarts the service with a lease of lease_s seconds (renewed every third). */
static void restart_with_lease(fixture *f, long lease_s)
{
    kp_gen_shutdown(f->g);
    kp_gen_free(f->g);
    f->cfg.generation_lease_s = lease_s;
    start_service(f, 1);
}

/* A generation outlives its lease several times over: the service renews it
 * (its own periodic recovery would otherwise end it), and it publishes. */
static void test_running_generation_renews_its_lease(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    kp_err err = {0};
    restart_with_lease(f, 1);
    set_script(f, 0, "<file path=\"index.html\">\nslow slow slow slow slow slow slow slow slow\n</file>\n", "end_turn");
    f->fake.scripts[0].delay_ms = 150; /* about 3 s: three leases */
    int64_t before = balance_total(f, "usr_a");
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    assert_int_equal(f->s->ops->version_get(f->s, res.project_id, 1, &v, &err), KP_OK);
    assert_string_equal(v.owner, kp_gen_instance_id(f->g));
    assert_true(strncmp(v.owner, "ins_", 4) == 0);
    int64_t first_lease = v.lease_until;
    assert_true(first_lease > kp_time_now_ms());
    kp_version_clear(&v);

    wait_version(f, res.project_id, 1, &v);
    assert_int_equal(v.status, KP_VER_READY);
    assert_true(v.lease_until > first_lease); /* renewed while it ran */
    assert_int_equal(reservation_state(f, &v), KP_RES_COMMITTED);
    kp_version_clear(&v);
    assert_int_equal(balance_total(f, "usr_a"), before - 1);
}

/* A running generation's events reach the event store before it ends (in
 * batches, and after each file), in order from id 1; the ending adds the
 * rest, so the stored events are exactly what a live reader got. */
static void test_events_stored_while_running(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    kp_err err = {0};
    test_sink live;
    set_script(f, 0,
               "<file path=\"index.html\">\nhello\n</file>\n"
               "and then a long slow tail of text that keeps the generation running for a while.\n",
               "end_turn");
    f->fake.scripts[0].delay_ms = 40; /* about 2 s */
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    kp_stream *st = subscribe(f, res.project_id, 1, 0, &live);

    int seen_running = 0;
    for (int i = 0; i < 2000 && !seen_running; i++) {
        kp_event *evs = NULL;
        size_t n = 0;
        assert_int_equal(f->s->ops->events_list(f->s, res.project_id, 1, 0, 100, &evs, &n, &err), KP_OK);
        int has_file = 0;
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(evs[k].id, (int64_t)k + 1); /* contiguous from 1 */
            has_file |= strcmp(evs[k].type, "file") == 0;
        }
        kp_event_free_array(evs, n);
        /* read after the events: still generating, so they were stored before the end */
        assert_int_equal(f->s->ops->version_get(f->s, res.project_id, 1, &v, &err), KP_OK);
        seen_running = has_file && v.status == KP_VER_GENERATING;
        int ended = v.status != KP_VER_GENERATING;
        kp_version_clear(&v);
        if (ended)
            break;
        sleep_ms(5);
    }
    assert_true(seen_running);

    wait_version(f, res.project_id, 1, &v);
    assert_int_equal(v.status, KP_VER_READY);
    wait_ended(&live);
    kp_buf stored = KP_BUF_INIT;
    assert_int_equal(kp_gen_replay_events(v.events_json, 0, &stored), 0);
    int nlive = 0, nstored = 0;
    pthread_mutex_lock(&live.mu);
    char *t1 = event_types(live.data.data, 1, &nlive);
    pthread_mutex_unlock(&live.mu);
    char *t2 = event_types(stored.data, 1, &nstored);
    assert_int_equal(nstored, nlive);
    assert_string_equal(t1, t2);
    assert_non_null(strstr(t2, ",file,"));
    assert_true(nstored > 4);
    free(t1);
    free(t2);
    kp_buf_free(&stored);
    kp_version_clear(&v);
    st->release(st);
    tsink_free(&live);
}

/* Another instance recovers the version (its lease ran out: here the test
 * says so): the next renewal finds the lease lost, the generation stops
 * (provider call cancelled), writes nothing more, and its reader gets the
 * ending that won; the credit came back once. */
static void test_lost_lease_stops_the_generation_once(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    kp_err err = {0};
    test_sink reader;
    size_t repaired = 0;
    restart_with_lease(f, 1);
    set_script(f, 0, "<file path=\"index.html\">\nslow slow slow slow slow slow slow slow slow\n</file>\n", "end_turn");
    f->fake.scripts[0].delay_ms = 1000; /* long enough to be stopped first */
    int64_t before = balance_total(f, "usr_a");
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    kp_stream *st = subscribe(f, res.project_id, 1, 0, &reader);
    assert_int_equal(balance_total(f, "usr_a"), before - 1);

    kp_test_sql_exec(f->db, "UPDATE versions SET lease_until = 1 WHERE status = 1");
    assert_int_equal(kp_gen_recover(f->s, f->blob, &repaired, &err), KP_OK); /* "another instance" */
    assert_int_equal(repaired, 1);
    assert_int_equal(balance_total(f, "usr_a"), before);

    wait_ended(&reader);
    for (int i = 0; i < 1000 && kp_gen_in_flight(f->g) > 0; i++)
        sleep_ms(5);
    assert_int_equal(kp_gen_in_flight(f->g), 0);
    assert_int_equal(f->fake.cancels, 1);
    pthread_mutex_lock(&reader.mu);
    assert_non_null(strstr(reader.data.data, "event: error\ndata: {\"code\":\"interrupted\""));
    assert_non_null(strstr(reader.data.data, "\"refunded\":true"));
    pthread_mutex_unlock(&reader.mu);
    assert_int_equal(f->s->ops->version_get(f->s, res.project_id, 1, &v, &err), KP_OK);
    assert_int_equal(v.status, KP_VER_FAILED);
    assert_string_equal(v.error_code, "interrupted");
    assert_int_equal(reservation_state(f, &v), KP_RES_REFUNDED);
    kp_version_clear(&v);
    assert_int_equal(ledger_count(f, "refund:service_failure"), 1);
    assert_int_equal(balance_total(f, "usr_a"), before);
    st->release(st);
    tsink_free(&reader);
}

/* Injected store failures: finishing a failed version fails (a trigger makes
 * every status change of a version abort). Nothing is half written (the row
 * stays generating, its credit reserved, the ledger equal to the balance),
 * and as soon as the store works again the version is ended, settled and
 * refunded, without a restart, freeing the user's slot. */
static void test_failed_version_recorded_after_store_failure(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    kp_err err = {0};
    kp_test_sql_exec(f->db, "CREATE TRIGGER fail_end BEFORE UPDATE OF status ON versions "
                            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END;");
    set_script(f, 0, "x", NULL);
    f->fake.scripts[0].error_code = "overloaded";
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    for (int i = 0; i < 1000 && kp_gen_in_flight(f->g) > 0; i++)
        sleep_ms(5);
    assert_int_equal(kp_gen_in_flight(f->g), 0);
    assert_int_equal(f->s->ops->version_get(f->s, res.project_id, 1, &v, &err), KP_OK);
    assert_int_equal(v.status, KP_VER_GENERATING);
    assert_int_equal(v.settled, 0);
    assert_int_equal(reservation_state(f, &v), KP_RES_RESERVED);
    assert_int_equal(balance_total(f, "usr_a"), 9);
    kp_version_clear(&v);

    kp_test_sql_exec(f->db, "DROP TRIGGER fail_end;");
    wait_version(f, res.project_id, 1, &v);
    assert_failed_and_refunded(f, &v, "overloaded");
    assert_string_equal(v.credit_reason, "service_failure");
    kp_version_clear(&v);
    int64_t running = -1;
    assert_int_equal(f->s->ops->versions_generating_count(f->s, "usr_a", &running, &err), KP_OK);
    assert_int_equal(running, 0);
}

/* Publishing fails at the ready row (injected): the version fails instead,
 * refunded, its files removed; never ready without its commit or the reverse. */
static void test_publish_store_failure_refunds(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_version v;
    kp_test_sql_exec(f->db, "CREATE TRIGGER fail_ready BEFORE UPDATE OF status ON versions WHEN NEW.status = 2 "
                            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END;");
    set_script(f, 0, app_v1, "end_turn");
    assert_int_equal(submit(f, "usr_a", NULL, "an app", &res), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_failed_and_refunded(f, &v, "internal_error");
    kp_version_clear(&v);
}

static void test_content_types_and_urls(void **state)
{
    (void)state;
    char url[128];
    kp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.apps_url = "https://apps.example.com";
    kp_gen_version_url(&cfg, "prj_1", 3, url, sizeof url);
    assert_string_equal(url, "https://apps.example.com/prj_1/@v3/");
    assert_string_equal(kp_gen_content_type("index.html"), "text/html; charset=utf-8");
    assert_string_equal(kp_gen_content_type("js/app.MJS"), "text/javascript; charset=utf-8");
    assert_string_equal(kp_gen_content_type("a.svg"), "image/svg+xml");
    assert_string_equal(kp_gen_content_type("fonts/x.woff2"), "font/woff2");
    assert_string_equal(kp_gen_content_type("Makefile"), "application/octet-stream");
    assert_string_equal(kp_gen_content_type("dir.js/README"), "application/octet-stream");
}

/* ---- time limits (gen/timeout.c) ---- */

/* A stream that would take a minute: only a time limit ends it. */
static void set_endless_script(fixture *f)
{
    set_script(f, 0, "<file path=\"index.html\">\nslow slow slow slow slow slow slow slow slow slow\n</file>\n",
               "end_turn");
    f->fake.scripts[0].delay_ms = 2000;
}

static kp_status submit_by(fixture *f, const char *prompt, int64_t deadline_ms, kp_gen_result *res, kp_err *err)
{
    kp_plan pro;
    assert_int_equal(f->s->ops->plan_get(f->s, "pro", &pro, err), KP_OK);
    kp_gen_request r = {.user_id = "usr_a", .plan = &pro, .name = "", .prompt = prompt, .deadline_ms = deadline_ms};
    return kp_gen_submit(f->g, f->s, &r, res, err);
}

/* Submits a generation that only a time limit ends, with deadline_ms, and follows it: it fails timed_out
 * for the reason why, its call cancelled once, refunded once ("time_limit"), its reader told; and it stays
 * ended (its timer went with it). */
static void expect_timed_out(fixture *f, int64_t deadline_ms, const char *why)
{
    kp_gen_result res;
    kp_version v;
    test_sink reader;
    kp_err err = {0};
    set_endless_script(f);
    assert_int_equal(submit_by(f, "an app", deadline_ms, &res, &err), KP_OK);
    kp_stream *st = subscribe(f, res.project_id, 1, 0, &reader);
    wait_ended(&reader);
    wait_version(f, res.project_id, 1, &v);
    assert_failed_and_refunded(f, &v, "timed_out");
    assert_outcome(&v, 1, "time_limit");
    assert_non_null(strstr(v.error_message, why));
    assert_int_equal(f->fake.calls, 1);
    assert_int_equal(f->fake.cancels, 1);
    assert_non_null(strstr(reader.data.data, "\"code\":\"timed_out\""));
    assert_non_null(strstr(reader.data.data, "\"refunded\":true,\"refund_reason\":\"time_limit\""));
    sleep_ms(100);
    assert_int_equal(balance_total(f, "usr_a"), 10);
    assert_int_equal(ledger_count(f, "refund:time_limit"), 1);
    st->release(st);
    tsink_free(&reader);
    kp_version_clear(&v);
}

static void test_generation_past_its_timeout_fails_and_is_refunded(void **state)
{
    fixture *f = *state;
    f->cfg.generation_timeout_s = 1;
    expect_timed_out(f, 0, "longer than its limit of 1 s");
}

static void test_deadline_cap_wins_over_the_timeout(void **state)
{
    fixture *f = *state;
    f->cfg.generation_timeout_s = 600;
    f->cfg.generation_settle_ms = 300;
    expect_timed_out(f, kp_time_now_ms() + KP_GEN_MIN_RUN_MS + 600,
                     "the end of the function's invocation (its deadline, less 300 ms");
}

static void test_too_close_deadline_is_refused(void **state)
{
    fixture *f = *state;
    kp_gen_result res;
    kp_err err = {0};
    kp_project *list = NULL;
    size_t n = 9;
    f->cfg.generation_settle_ms = 5000;
    set_endless_script(f);
    /* 5.9 s left, 5 s kept to settle: less than KP_GEN_MIN_RUN_MS to run */
    assert_int_equal(submit_by(f, "an app", kp_time_now_ms() + 5000 + KP_GEN_MIN_RUN_MS - 100, &res, &err),
                     KP_EUNAVAILABLE);
    assert_string_equal(res.error_code, "deadline_too_close");
    assert_non_null(strstr(err.msg, "KOUMPA_GENERATION_SETTLE_MS"));
    /* a deadline already past */
    assert_int_equal(submit_by(f, "an app", kp_time_now_ms() - 1, &res, &err), KP_EUNAVAILABLE);
    assert_string_equal(res.error_code, "deadline_too_close");
    /* nothing written, nothing charged, the provider never called */
    assert_int_equal(f->s->ops->project_list(f->s, "usr_a", 0, "", 10, &list, &n, &err), KP_OK);
    assert_int_equal(n, 0);
    free(list);
    assert_int_equal(balance_total(f, "usr_a"), 10);
    assert_int_equal(f->fake.calls, 0);
    /* with room left it is admitted */
    set_script(f, 0, app_v1, "end_turn");
    kp_version v;
    assert_int_equal(submit_by(f, "an app", kp_time_now_ms() + 5000 + 60000, &res, &err), KP_OK);
    wait_version(f, res.project_id, 1, &v);
    assert_int_equal(v.status, KP_VER_READY);
    kp_version_clear(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_generate_publishes_and_charges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_without_index_is_refunded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_traversal_is_refunded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_output_is_refunded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_error_is_refunded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_projects_list_in_creation_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_tokens_continues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_continuations_publish_every_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_read_back_byte_for_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_third_max_tokens_is_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_refunds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_interrupts_and_refunds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_charge_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_limits_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_llm_not_configured, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow_up_carries_files_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_sha256, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow_up_while_generating_conflicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscribers_replay_after_last_event_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_get_keep_alives, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejected_output_refunded_up_to_allowance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_after_output_is_charged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_settles_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_refunds_reservations_without_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_running_generation_renews_its_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_stored_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_lease_stops_the_generation_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_version_recorded_after_store_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_store_failure_refunds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generation_past_its_timeout_fails_and_is_refunded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_cap_wins_over_the_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_close_deadline_is_refused, setup, teardown),
        cmocka_unit_test(test_content_types_and_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
