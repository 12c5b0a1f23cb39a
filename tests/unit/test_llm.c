/*
 * test_llm.c - the LLM providers end to end over real HTTP: each test runs a
 * kp_loop and a provider against the fake servers
 * (tests/integration/fake-anthropic.mjs, fake-openai.mjs), started here as
 * node child processes and steered through their control endpoints
 * (POST /__scenario, GET /__requests). Also kp_llm_from_config's choices.
 * Run from the repository root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/loop.h"
#include "llm/anthropic.h"
#include "llm/http_stream.h"
#include "llm/llm.h"
#include "llm/llm_engine.h"
#include "llm/openai.h"
#include "fake_secrets.h"

#define API_KEY "sk-ant-test-0123456789"
#define OPENAI_KEY "sk-openai-test-42"
#define WAIT_MS 20000

/* ---- fake servers ---- */

typedef struct fake {
    pid_t pid;
    int stdin_fd;
    char url[256];
} fake;

static fake anthropic_fake, openai_fake;
static kp_loop *loop;
static kp_fake_secrets *secrets; /* ANTHROPIC_API_KEY */

/* Runs `node script --port 0 ...` and reads the URL it prints; -1 (with a message) on failure. */
static int fake_start(fake *f, const char *script, const char *key)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* stdin is a pipe from this process: the fake exits when the test does, even on a crash */
        dup2(in[0], 0);
        dup2(out[1], 1);
        execlp("node", "node", script, "--port", "0", "--api-key", key, "--exit-on-stdin-close", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    f->pid = pid;
    f->stdin_fd = in[1];
    FILE *r = fdopen(out[0], "r");
    int ok = r && fgets(f->url, sizeof f->url, r) && strncmp(f->url, "http://", 7) == 0;
    if (r)
        fclose(r);
    if (!ok) {
        fprintf(stderr, "cannot start %s with node (run the tests from the repository root)\n", script);
        return -1;
    }
    f->url[strcspn(f->url, "\r\n")] = '\0';
    return 0;
}

static void fake_stop(fake *f)
{
    if (f->pid <= 0)
        return;
    close(f->stdin_fd);
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
    f->pid = 0;
}

static size_t collect(char *data, size_t size, size_t n, void *ud)
{
    kp_buf_append(ud, data, size * n);
    return size * n;
}

/* A blocking request to a fake's control endpoint; returns the HTTP status. */
static long control(const fake *f, const char *path, const char *post_body, kp_buf *out)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", f->url, path);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, (void *)out);
    if (post_body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, post_body);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
}

static void set_scenario(const fake *f, const char *json)
{
    kp_buf out = KP_BUF_INIT;
    assert_int_equal(control(f, "/__reset", "", &out), 204);
    assert_int_equal(control(f, "/__scenario", json, &out), 204);
    kp_buf_free(&out);
}

/* The recorded API requests; caller decrefs. */
static json_t *recorded(const fake *f)
{
    kp_buf out = KP_BUF_INIT;
    assert_int_equal(control(f, "/__requests", NULL, &out), 200);
    json_t *arr = json_loadb(out.data, out.len, 0, NULL);
    kp_buf_free(&out);
    assert_true(json_is_array(arr));
    return arr;
}

static size_t request_count(const fake *f)
{
    json_t *arr = recorded(f);
    size_t n = json_array_size(arr);
    json_decref(arr);
    return n;
}

/* ---- running calls on the loop ---- */

typedef struct outcome {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kp_llm *llm;
    kp_llm_call *call;
    kp_llm_request req;
    kp_status start_status;
    int started;
    kp_buf text;
    int ntext;
    int finals; /* on_done + on_error calls: must end at 1 (or 0 when cancelled) */
    int done;
    char stop_reason[64];
    kp_llm_usage usage;
    char code[64];
    char message[256];
    int output_started;
    int cancel_in_text; /* cancel from inside on_text, at the first piece */
    int free_in_text;   /* free the provider from inside on_text, at the first piece */
    int cancelled;
    int ntext_at_cancel;
} outcome;

static void outcome_init(outcome *o, kp_llm *llm, const kp_llm_request *req)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    o->llm = llm;
    o->req = *req;
}

static void outcome_free(outcome *o)
{
    kp_buf_free(&o->text);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
}

static void on_text(void *ud, const char *text, size_t len)
{
    outcome *o = ud;
    assert_true(kp_loop_is_current(loop));
    pthread_mutex_lock(&o->mu);
    kp_buf_append(&o->text, text, len);
    o->ntext++;
    int cancel = o->cancel_in_text && !o->cancelled;
    if (cancel) {
        o->cancelled = 1;
        o->ntext_at_cancel = o->ntext;
    }
    int free_llm = o->free_in_text && o->ntext == 1;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    if (cancel)
        o->llm->ops->cancel(o->llm, o->call);
    if (free_llm)
        o->llm->ops->free(o->llm);
}

static void on_done(void *ud, const char *stop_reason, const kp_llm_usage *usage)
{
    outcome *o = ud;
    pthread_mutex_lock(&o->mu);
    o->finals++;
    o->done = 1;
    snprintf(o->stop_reason, sizeof o->stop_reason, "%s", stop_reason);
    o->usage = *usage;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static void on_error(void *ud, const char *code, const char *message, int output_started)
{
    outcome *o = ud;
    pthread_mutex_lock(&o->mu);
    o->finals++;
    snprintf(o->code, sizeof o->code, "%s", code);
    snprintf(o->message, sizeof o->message, "%s", message);
    o->output_started = output_started;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static void start_on_loop(void *arg)
{
    outcome *o = arg;
    kp_llm_callbacks cb = {o, on_text, on_done, on_error};
    kp_err err = {0};
    kp_llm_call *call = NULL;
    kp_status st = o->llm->ops->start(o->llm, &o->req, &cb, &call, &err);
    pthread_mutex_lock(&o->mu);
    o->call = call;
    o->start_status = st;
    o->started = 1;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static void cancel_on_loop(void *arg)
{
    outcome *o = arg;
    pthread_mutex_lock(&o->mu);
    int live = o->finals == 0 && !o->cancelled;
    o->cancelled = 1;
    o->ntext_at_cancel = o->ntext;
    pthread_mutex_unlock(&o->mu);
    if (live)
        o->llm->ops->cancel(o->llm, o->call);
}

static void deadline_in(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Waits until pred(o) holds (under the lock); returns 0 on timeout. */
static int wait_for(outcome *o, int (*pred)(const outcome *), long ms)
{
    struct timespec ts;
    deadline_in(&ts, ms);
    int ok = 1;
    pthread_mutex_lock(&o->mu);
    while (!pred(o) && ok)
        ok = pthread_cond_timedwait(&o->cv, &o->mu, &ts) != ETIMEDOUT;
    ok = pred(o);
    pthread_mutex_unlock(&o->mu);
    return ok;
}

static int has_started(const outcome *o)
{
    return o->started;
}

static int has_final(const outcome *o)
{
    return o->finals > 0;
}

static int has_text(const outcome *o)
{
    return o->ntext > 0;
}

static void start_call(outcome *o)
{
    assert_int_equal(kp_loop_post(loop, start_on_loop, o), 0);
    assert_true(wait_for(o, has_started, WAIT_MS));
    assert_int_equal(o->start_status, KP_OK);
}

static void run_call(outcome *o)
{
    start_call(o);
    assert_true(wait_for(o, has_final, WAIT_MS));
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* ---- providers under test ---- */

static void fast_tuning(kp_llm_tuning *t)
{
    kp_llm_engine_default_tuning(t);
    t->retry_base_ms = 1;
    t->retry_max_ms = 5000;
    t->idle_timeout_ms = 5000;
}

static void barrier_on_loop(void *arg)
{
    outcome *o = arg;
    pthread_mutex_lock(&o->mu);
    o->started = 1;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

/* Waits until everything posted to the loop so far has run. */
static void loop_barrier(void)
{
    outcome o;
    kp_llm_request none = {0};
    outcome_init(&o, NULL, &none);
    assert_int_equal(kp_loop_post(loop, barrier_on_loop, &o), 0);
    assert_true(wait_for(&o, has_started, WAIT_MS));
    outcome_free(&o);
}

/* free() off the loop thread posts itself to the loop: wait until it has run. */
static void provider_free(kp_llm *llm)
{
    llm->ops->free(llm);
    loop_barrier();
}

static kp_llm *anthropic_provider(const kp_llm_tuning *tuning, const char *key, const char *model)
{
    kp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    kp_fake_secrets_put(secrets, "ANTHROPIC_API_KEY", key);
    cfg.anthropic_base_url = anthropic_fake.url;
    cfg.anthropic_version = "2026-10-21";
    cfg.model = (char *)model;
    cfg.max_tokens = 16000;
    kp_llm *llm = NULL;
    kp_err err = {0};
    kp_status st = kp_llm_anthropic_new(&cfg, kp_fake_secrets_service(secrets), loop, tuning, &llm, &err);
    if (st != KP_OK)
        fail_msg("kp_llm_anthropic_new: %s", err.msg);
    return llm;
}

static kp_llm *openai_provider(const kp_llm_tuning *tuning)
{
    kp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.openai_api_key = OPENAI_KEY;
    cfg.openai_base_url = openai_fake.url;
    cfg.model = "qwen2.5-coder:7b";
    cfg.max_tokens = 4000;
    kp_llm *llm = NULL;
    kp_err err = {0};
    kp_status st = kp_llm_openai_new(&cfg, loop, tuning, &llm, &err);
    if (st != KP_OK)
        fail_msg("kp_llm_openai_new: %s", err.msg);
    return llm;
}

static const kp_llm_message one_prompt[] = {{"user", "Write a to-do app."}};
static const kp_llm_request default_req = {"You write web apps.", one_prompt, 1, 0};

/* ---- tests: Anthropic ---- */

#define STREAM_TEXT "Ready: <html>\\u00e9t\\u00e9 \\u65e5\\u672c\\u8a9e \\ud83d\\ude00 \\\"quoted\\\"\\n</html> end"
#define STREAM_TEXT_BYTES                                                                                              \
    "Ready: <html>\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 \"quoted\"\n</html> end"

static void test_anthropic_stream_assembled_exactly(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    assert_string_equal(llm->ops->name, "anthropic");
    assert_string_equal(llm->model, "claude-sonnet-5-5");
    set_scenario(&anthropic_fake, "{\"type\":\"text\",\"text\":\"" STREAM_TEXT "\",\"chunkSizes\":[1,2,3,5,7,11],"
                                  "\"pieceChars\":3,\"inputTokens\":42,\"outputTokens\":17}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    assert_true(o.done);
    assert_string_equal(o.text.data, STREAM_TEXT_BYTES);
    assert_true(o.ntext > 1);
    assert_string_equal(o.stop_reason, "end_turn");
    assert_int_equal(o.usage.input_tokens, 42);
    assert_int_equal(o.usage.output_tokens, 17);

    json_t *reqs = recorded(&anthropic_fake);
    assert_int_equal(json_array_size(reqs), 1);
    json_t *r = json_array_get(reqs, 0);
    json_t *h = json_object_get(r, "headers"), *body = json_object_get(r, "body");
    assert_string_equal(json_string_value(json_object_get(r, "path")), "/v1/messages");
    assert_string_equal(json_string_value(json_object_get(h, "x-api-key")), API_KEY);
    assert_string_equal(json_string_value(json_object_get(h, "anthropic-version")), "2026-10-21");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")), "application/json");
    assert_string_equal(json_string_value(json_object_get(h, "accept")), "text/event-stream");
    assert_null(json_object_get(h, "expect"));
    assert_string_equal(json_string_value(json_object_get(body, "model")), "claude-sonnet-5-5");
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 16000);
    assert_true(json_is_true(json_object_get(body, "stream")));
    assert_string_equal(json_string_value(json_object_get(body, "system")), "You write web apps.");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(body, "messages"), 0), "content")),
        "Write a to-do app.");
    assert_null(json_object_get(body, "temperature"));
    assert_null(json_object_get(body, "top_p"));
    assert_null(json_object_get(body, "top_k"));
    json_decref(reqs);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_model_and_max_tokens_overrides(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, "claude-opus-5");
    assert_string_equal(llm->model, "claude-opus-5");
    set_scenario(&anthropic_fake, "{\"type\":\"text\",\"text\":\"ok\"}");
    kp_llm_request req = default_req;
    req.max_tokens = 1234;
    req.system = NULL;
    outcome o;
    outcome_init(&o, llm, &req);
    run_call(&o);
    assert_true(o.done);
    json_t *reqs = recorded(&anthropic_fake);
    json_t *body = json_object_get(json_array_get(reqs, 0), "body");
    assert_string_equal(json_string_value(json_object_get(body, "model")), "claude-opus-5");
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 1234);
    assert_null(json_object_get(body, "system"));
    json_decref(reqs);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_429_retried_after_retry_after(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake,
                 "[{\"type\":\"rate_limited\",\"retryAfter\":1},{\"type\":\"text\",\"text\":\"second try\"}]");
    outcome o;
    outcome_init(&o, llm, &default_req);
    double t0 = now_ms();
    run_call(&o);
    double elapsed = now_ms() - t0;
    assert_int_equal(o.finals, 1);
    assert_true(o.done);
    assert_string_equal(o.text.data, "second try");
    assert_int_equal(request_count(&anthropic_fake), 2);
    assert_true(elapsed >= 950); /* retry-after: 1 honoured although the backoff base is 1 ms */
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_5xx_retried_until_success(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake,
                 "[{\"type\":\"server_error\"},{\"type\":\"overloaded\"},{\"type\":\"text\",\"text\":\"third\"}]");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    assert_true(o.done);
    assert_string_equal(o.text.data, "third");
    assert_int_equal(request_count(&anthropic_fake), 3);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_529_three_times_is_overloaded(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"overloaded\"}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    sleep_ms(100); /* a fourth try would show up by now */
    assert_int_equal(o.finals, 1);
    assert_false(o.done);
    assert_string_equal(o.code, "overloaded");
    assert_string_equal(o.message, "Overloaded");
    assert_int_equal(o.output_started, 0);
    assert_int_equal(request_count(&anthropic_fake), 3);
    assert_int_equal(kp_llm_engine_active(llm), 0);
    outcome_free(&o);
    provider_free(llm);
}

/* An error answer's long message is cut between characters: it goes into JSON (the error event). */
static void test_anthropic_long_error_message_stays_utf8(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    kp_buf sc = KP_BUF_INIT;
    kp_buf_puts(&sc, "{\"type\":\"invalid_request\",\"message\":\"");
    for (int i = 0; i < 200; i++)
        kp_buf_puts(&sc, "\xC3\xA9"); /* 400 bytes: a cut at 255 falls inside a character */
    kp_buf_puts(&sc, "\"}");
    set_scenario(&anthropic_fake, sc.data);
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_string_equal(o.code, "invalid_request");
    assert_int_equal(strlen(o.message), 254);
    json_t *j = json_string(o.message);
    assert_non_null(j);
    json_decref(j);
    kp_buf_free(&sc);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_400_not_retried(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"invalid_request\",\"message\":\"messages.0.content: too long\"}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    assert_string_equal(o.code, "invalid_request");
    assert_string_equal(o.message, "messages.0.content: too long");
    assert_int_equal(request_count(&anthropic_fake), 1);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_wrong_key_is_auth_failed(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, "sk-ant-wrong", NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"text\"}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_string_equal(o.code, "auth_failed");
    assert_string_equal(o.message, "invalid x-api-key");
    assert_int_equal(request_count(&anthropic_fake), 1);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_error_event_mid_stream(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"error_event\",\"text\":\"Partial output. \",\"afterChars\":100,"
                                  "\"errorType\":\"overloaded_error\",\"message\":\"Overloaded\"}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    sleep_ms(100);
    assert_int_equal(o.finals, 1);
    assert_string_equal(o.code, "overloaded");
    assert_string_equal(o.message, "Overloaded");
    assert_int_equal(o.output_started, 1);
    assert_string_equal(o.text.data, "Partial output. ");
    assert_int_equal(request_count(&anthropic_fake), 1); /* output was delivered: no retry */
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_error_event_before_output_retried(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "[{\"type\":\"error_event\",\"text\":\"\"},{\"type\":\"text\",\"text\":\"fine\"}]");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    assert_true(o.done);
    assert_string_equal(o.text.data, "fine");
    assert_int_equal(request_count(&anthropic_fake), 2);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_cut_stream_is_network_error(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake,
                 "{\"type\":\"cut\",\"text\":\"0123456789abcdefghijklmnopqrstuvwxyz\",\"afterChars\":12}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    assert_false(o.done);
    assert_string_equal(o.code, "network_error");
    assert_int_equal(o.output_started, 1);
    assert_true(o.text.len >= 12);
    assert_memory_equal(o.text.data, "0123456789abcdefghijklmnopqrstuvwxyz", o.text.len);
    assert_int_equal(request_count(&anthropic_fake), 1);
    outcome_free(&o);
    provider_free(llm);
}

/* A connection reset before any answer is retried like a 429, within the same budget of tries. */
static void test_anthropic_reset_before_answer_retried(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "[{\"type\":\"reset\"},{\"type\":\"reset\"},{\"type\":\"text\",\"text\":\"ok\"}]");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    assert_true(o.done);
    assert_string_equal(o.text.data, "ok");
    assert_int_equal(request_count(&anthropic_fake), 3);
    outcome_free(&o);
    provider_free(llm);

    /* every try reset: the budget runs out. A new provider, because libcurl
     * itself retries once on a kept-alive connection that turns out dead. */
    llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"reset\"}");
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    assert_string_equal(o.code, "network_error");
    assert_int_equal(o.output_started, 0);
    assert_int_equal(request_count(&anthropic_fake), 3);
    outcome_free(&o);
    provider_free(llm);
}

/* A 200 whose connection dies before any text came is retried too; after text it is not (cut test above). */
static void test_anthropic_cut_before_output_retried(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "[{\"type\":\"cut\",\"text\":\"abcdef\",\"afterChars\":0},"
                                  "{\"type\":\"text\",\"text\":\"whole\"}]");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    assert_true(o.done);
    assert_string_equal(o.text.data, "whole");
    assert_int_equal(request_count(&anthropic_fake), 2);
    outcome_free(&o);
    provider_free(llm);
}

static void test_openai_reset_before_answer_retried(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = openai_provider(&t);
    set_scenario(&openai_fake, "[{\"type\":\"reset\"},{\"type\":\"text\",\"text\":\"fine\"}]");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_true(o.done);
    assert_string_equal(o.text.data, "fine");
    assert_int_equal(request_count(&openai_fake), 2);
    outcome_free(&o);
    provider_free(llm);
}

#define LONG_TEXT "<!doctype html><title>Todo</title><p>Part-one-of-the-app;part-two-of-the-app.</p>"

static void test_anthropic_max_tokens_and_continuation(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"max_tokens\",\"text\":\"" LONG_TEXT "\",\"maxChars\":45}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_true(o.done);
    assert_string_equal(o.stop_reason, "max_tokens");
    assert_int_equal(o.text.len, 45);
    assert_memory_equal(o.text.data, LONG_TEXT, 45);

    /* Continue: the partial answer as an assistant prefill. */
    kp_llm_message convo[] = {{"user", "Write a to-do app."}, {"assistant", o.text.data}};
    kp_llm_request req = {"You write web apps.", convo, 2, 0};
    outcome o2;
    outcome_init(&o2, llm, &req);
    run_call(&o2);
    assert_true(o2.done);
    assert_string_equal(o2.stop_reason, "end_turn");
    assert_string_equal(o2.text.data, LONG_TEXT + 45);
    outcome_free(&o2);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_cancel_inside_on_text(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"slow\",\"bytes\":3000,\"durationMs\":1500}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    o.cancel_in_text = 1;
    start_call(&o);
    assert_true(wait_for(&o, has_text, WAIT_MS));
    sleep_ms(500); /* the stream goes on for a while: nothing more may come */
    pthread_mutex_lock(&o.mu);
    assert_int_equal(o.ntext, 1);
    assert_int_equal(o.finals, 0);
    pthread_mutex_unlock(&o.mu);
    assert_int_equal(kp_llm_engine_active(llm), 0);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_cancel_from_the_loop(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"slow\",\"bytes\":3000,\"durationMs\":1500}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    start_call(&o);
    assert_true(wait_for(&o, has_text, WAIT_MS));
    assert_int_equal(kp_loop_post(loop, cancel_on_loop, &o), 0);
    sleep_ms(500);
    pthread_mutex_lock(&o.mu);
    assert_true(o.cancelled);
    assert_int_equal(o.ntext, o.ntext_at_cancel);
    assert_int_equal(o.finals, 0);
    pthread_mutex_unlock(&o.mu);
    outcome_free(&o);
    provider_free(llm);
}

/* Calls in flight at once each get their own connection: while one stream
 * is still open, the next request reaches the API (not queued behind it). */
static void test_anthropic_concurrent_calls_not_queued(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"hang\"}");
    outcome a, b;
    outcome_init(&a, llm, &default_req);
    outcome_init(&b, llm, &default_req);
    start_call(&a);
    start_call(&b);
    size_t seen = 0;
    for (int i = 0; i < 100 && seen < 2; i++) {
        sleep_ms(50);
        seen = request_count(&anthropic_fake);
    }
    assert_int_equal(seen, 2);
    assert_int_equal(kp_loop_post(loop, cancel_on_loop, &a), 0);
    assert_int_equal(kp_loop_post(loop, cancel_on_loop, &b), 0);
    loop_barrier();
    outcome_free(&a);
    outcome_free(&b);
    provider_free(llm);
}

static void test_anthropic_cancel_while_waiting_to_retry(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "[{\"type\":\"rate_limited\",\"retryAfter\":1},{\"type\":\"text\"}]");
    outcome o;
    outcome_init(&o, llm, &default_req);
    start_call(&o);
    for (int i = 0; i < 100 && request_count(&anthropic_fake) == 0; i++)
        sleep_ms(10);
    sleep_ms(100); /* the 429 has been read: the call waits for its second try */
    assert_int_equal(kp_loop_post(loop, cancel_on_loop, &o), 0);
    sleep_ms(1300);
    assert_int_equal(request_count(&anthropic_fake), 1);
    assert_int_equal(o.finals, 0);
    assert_int_equal(kp_llm_engine_active(llm), 0);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_idle_timeout(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    t.idle_timeout_ms = 300;
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"hang\"}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    double t0 = now_ms();
    run_call(&o);
    double elapsed = now_ms() - t0;
    assert_string_equal(o.code, "timeout");
    assert_int_equal(o.output_started, 0);
    assert_true(elapsed >= 280 && elapsed < 5000);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_idle_timeout_mid_stream(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    t.idle_timeout_ms = 300;
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    /* a few chunks, then 1 s of silence between chunks */
    set_scenario(&anthropic_fake,
                 "{\"type\":\"text\",\"text\":\"abcdefghijklmnop\",\"chunkSizes\":[400],\"delayMs\":1000}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_string_equal(o.code, "timeout");
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_connection_refused(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    kp_fake_secrets_put(secrets, "ANTHROPIC_API_KEY", API_KEY);
    cfg.anthropic_base_url = "http://127.0.0.1:1/";
    kp_llm *llm = NULL;
    kp_err err = {0};
    assert_int_equal(kp_llm_anthropic_new(&cfg, kp_fake_secrets_service(secrets), loop, &t, &llm, &err), KP_OK);
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_string_equal(o.code, "network_error");
    assert_int_equal(o.output_started, 0);
    outcome_free(&o);
    provider_free(llm);
}

static void test_anthropic_free_with_calls_in_flight(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"slow\",\"bytes\":3000,\"durationMs\":1500}");
    outcome a, b;
    outcome_init(&a, llm, &default_req);
    outcome_init(&b, llm, &default_req);
    start_call(&a);
    start_call(&b);
    assert_true(wait_for(&a, has_text, WAIT_MS));
    provider_free(llm);
    sleep_ms(300);
    assert_int_equal(a.finals, 0);
    assert_int_equal(b.finals, 0);
    outcome_free(&a);
    outcome_free(&b);
}

static void test_anthropic_free_inside_on_text(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"slow\",\"bytes\":3000,\"durationMs\":1500}");
    outcome a, b;
    outcome_init(&a, llm, &default_req);
    outcome_init(&b, llm, &default_req);
    a.free_in_text = 1;
    start_call(&a);
    start_call(&b);
    assert_true(wait_for(&a, has_text, WAIT_MS));
    sleep_ms(400);
    loop_barrier();
    pthread_mutex_lock(&a.mu);
    assert_int_equal(a.ntext, 1);
    assert_int_equal(a.finals, 0);
    assert_int_equal(b.finals, 0);
    pthread_mutex_unlock(&a.mu);
    outcome_free(&a);
    outcome_free(&b);
}

/* Starts n calls of llm at once (o: n outcomes, initialised here; the caller frees them) and waits
 * for each: every one must end done with the whole of STREAM_TEXT. */
static void run_at_once(kp_llm *llm, outcome *o, int n)
{
    for (int i = 0; i < n; i++) {
        outcome_init(&o[i], llm, &default_req);
        assert_int_equal(kp_loop_post(loop, start_on_loop, &o[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        assert_true(wait_for(&o[i], has_final, 60000));
        assert_int_equal(o[i].start_status, KP_OK);
        if (!o[i].done)
            fail_msg("call %d: %s: %s", i, o[i].code, o[i].message);
        assert_string_equal(o[i].text.data, STREAM_TEXT_BYTES);
    }
}

static void test_anthropic_many_concurrent_calls(void **state)
{
    (void)state;
    enum { N = 200 };
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"text\",\"text\":\"" STREAM_TEXT "\",\"delayMs\":2}");
    outcome *o = calloc(N, sizeof *o);
    assert_non_null(o);
    run_at_once(llm, o, N);
    assert_int_equal(request_count(&anthropic_fake), N);
    for (int i = 0; i < N; i++)
        outcome_free(&o[i]);
    free(o);
    provider_free(llm);
}

/* The connections the fake has accepted so far. */
static long connections_accepted(const fake *f)
{
    kp_buf out = KP_BUF_INIT;
    assert_int_equal(control(f, "/__connections", NULL, &out), 200);
    json_t *o = json_loadb(out.data, out.len, 0, NULL);
    kp_buf_free(&out);
    assert_true(json_is_object(o));
    long total = (long)json_integer_value(json_object_get(o, "total"));
    json_decref(o);
    return total;
}

/* More calls at once than one multi handle takes (http_stream.h, lanes):
 * every call, in every lane, streams its whole text; afterwards calls one at
 * a time go back to lane 0 and reuse its idle connections, opening none. */
static void test_anthropic_calls_over_several_lanes(void **state)
{
    (void)state;
    enum { N = 2 * KP_HTTP_STREAM_LANE_TRANSFERS + 10, LATER = 3 };
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    /* each stream lasts a second: all N are in flight together */
    set_scenario(&anthropic_fake, "{\"type\":\"text\",\"text\":\"" STREAM_TEXT "\",\"durationMs\":1000}");
    long before = connections_accepted(&anthropic_fake);
    outcome *o = calloc(N, sizeof *o);
    assert_non_null(o);
    run_at_once(llm, o, N);
    for (int i = 0; i < N; i++)
        outcome_free(&o[i]);
    long after_burst = connections_accepted(&anthropic_fake);
    assert_true(after_burst - before >= N); /* HTTP/1.1: a connection each while they overlapped */
    for (int i = 0; i < LATER; i++) {
        outcome_init(&o[i], llm, &default_req);
        assert_int_equal(kp_loop_post(loop, start_on_loop, &o[i]), 0);
        assert_true(wait_for(&o[i], has_final, WAIT_MS));
        assert_true(o[i].done);
        assert_string_equal(o[i].text.data, STREAM_TEXT_BYTES);
        outcome_free(&o[i]);
    }
    /* each query of the fake's control endpoint comes on a connection of its own: only the next one's */
    assert_int_equal(connections_accepted(&anthropic_fake), after_burst + 1);
    free(o);
    provider_free(llm);
}

static void test_anthropic_start_rejects_bad_requests(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    kp_llm_message bad_role[] = {{"system", "hi"}};
    kp_llm_request reqs[] = {{NULL, NULL, 0, 0}, {NULL, bad_role, 1, 0}};
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        outcome o;
        outcome_init(&o, llm, &reqs[i]);
        assert_int_equal(kp_loop_post(loop, start_on_loop, &o), 0);
        assert_true(wait_for(&o, has_started, WAIT_MS));
        assert_int_equal(o.start_status, KP_EINVAL);
        outcome_free(&o);
    }
    /* off the loop thread */
    kp_llm_callbacks cb = {NULL, on_text, on_done, on_error};
    kp_llm_call *call = NULL;
    kp_err err = {0};
    assert_int_equal(llm->ops->start(llm, &default_req, &cb, &call, &err), KP_EINTERNAL);
    provider_free(llm);
}

/* ---- tests: OpenAI-compatible ---- */

static void test_openai_stream_with_usage(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = openai_provider(&t);
    assert_string_equal(llm->ops->name, "openai");
    set_scenario(&openai_fake, "{\"type\":\"text\",\"text\":\"" STREAM_TEXT "\",\"chunkSizes\":[1,4,9],"
                               "\"inputTokens\":31,\"outputTokens\":13}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    assert_true(o.done);
    assert_string_equal(o.text.data, STREAM_TEXT_BYTES);
    assert_string_equal(o.stop_reason, "end_turn");
    assert_int_equal(o.usage.input_tokens, 31);
    assert_int_equal(o.usage.output_tokens, 13);
    json_t *reqs = recorded(&openai_fake);
    assert_int_equal(json_array_size(reqs), 1);
    json_t *r = json_array_get(reqs, 0);
    json_t *h = json_object_get(r, "headers"), *body = json_object_get(r, "body");
    assert_string_equal(json_string_value(json_object_get(r, "path")), "/v1/chat/completions");
    assert_string_equal(json_string_value(json_object_get(h, "authorization")), "Bearer " OPENAI_KEY);
    assert_string_equal(json_string_value(json_object_get(body, "model")), "qwen2.5-coder:7b");
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 4000);
    assert_true(json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage")));
    json_t *first = json_array_get(json_object_get(body, "messages"), 0);
    assert_string_equal(json_string_value(json_object_get(first, "role")), "system");
    assert_null(json_object_get(body, "temperature"));
    json_decref(reqs);
    outcome_free(&o);
    provider_free(llm);
}

/* U+0000 and lone surrogates, which jansson will not decode, are what a model
 * may write: each becomes U+FFFD and the call succeeds (a proper pair stays). */
#define ODD_TEXT "a\\u0000b\\ud800c\\udc00d \\ud83d\\ude00 \\\\u0000"
#define ODD_TEXT_BYTES                                                                                                 \
    "a\xEF\xBF\xBD"                                                                                                    \
    "b\xEF\xBF\xBD"                                                                                                    \
    "c\xEF\xBF\xBD"                                                                                                    \
    "d \xF0\x9F\x98\x80 \\u0000"

static void check_odd_text(kp_llm *llm, const fake *f)
{
    set_scenario(f, "{\"type\":\"text\",\"text\":\"" ODD_TEXT "\",\"chunkSizes\":[1,3,7],\"pieceChars\":2}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    assert_true(o.done);
    assert_int_equal(o.text.len, strlen(ODD_TEXT_BYTES));
    assert_string_equal(o.text.data, ODD_TEXT_BYTES);
    outcome_free(&o);
    provider_free(llm);
}

static void test_nul_and_lone_surrogates_become_replacement_characters(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    check_odd_text(anthropic_provider(&t, API_KEY, NULL), &anthropic_fake);
    check_odd_text(openai_provider(&t), &openai_fake);
}

static void test_openai_length_is_max_tokens(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = openai_provider(&t);
    set_scenario(&openai_fake, "{\"type\":\"max_tokens\",\"text\":\"" LONG_TEXT "\",\"maxChars\":25}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_true(o.done);
    assert_string_equal(o.stop_reason, "max_tokens");
    assert_int_equal(o.text.len, 25);
    outcome_free(&o);
    provider_free(llm);
}

static void test_openai_errors(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = openai_provider(&t);

    set_scenario(&openai_fake, "{\"type\":\"server_error\"}");
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_string_equal(o.code, "provider_error");
    assert_string_equal(o.message, "The server had an error while processing your request");
    assert_int_equal(request_count(&openai_fake), 3);
    outcome_free(&o);

    set_scenario(&openai_fake, "{\"type\":\"invalid_request\",\"message\":\"model 'x' not found\"}");
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_string_equal(o.code, "invalid_request");
    assert_string_equal(o.message, "model 'x' not found");
    assert_int_equal(request_count(&openai_fake), 1);
    outcome_free(&o);

    set_scenario(&openai_fake, "{\"type\":\"error_event\",\"text\":\"So far \",\"message\":\"CUDA out of memory\"}");
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_string_equal(o.code, "provider_error");
    assert_string_equal(o.message, "CUDA out of memory");
    assert_int_equal(o.output_started, 1);
    assert_string_equal(o.text.data, "So far ");
    outcome_free(&o);

    set_scenario(&openai_fake, "[{\"type\":\"rate_limited\"},{\"type\":\"text\",\"text\":\"ok\"}]");
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_true(o.done);
    assert_string_equal(o.text.data, "ok");
    assert_int_equal(request_count(&openai_fake), 2);
    outcome_free(&o);
    provider_free(llm);
}

/* ---- kp_llm_from_config ---- */

static void test_from_config(void **state)
{
    (void)state;
    kp_config cfg;
    kp_llm *llm = NULL;
    kp_err err = {0};

    memset(&cfg, 0, sizeof cfg);
    kp_fake_secrets *fs = kp_fake_secrets_new(); /* nothing set */
    kp_secrets *s = kp_fake_secrets_service(fs);
    assert_int_equal(kp_llm_from_config(&cfg, s, loop, &llm, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "ANTHROPIC_API_KEY"));
    assert_non_null(strstr(err.msg, "OPENAI_BASE_URL"));

    cfg.llm_provider = "anthropic";
    assert_int_equal(kp_llm_from_config(&cfg, s, loop, &llm, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "ANTHROPIC_API_KEY"));

    cfg.llm_provider = "openai";
    assert_int_equal(kp_llm_from_config(&cfg, s, loop, &llm, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "OPENAI_BASE_URL"));

    cfg.llm_provider = NULL;
    cfg.openai_base_url = "http://localhost:11434/v1";
    assert_int_equal(kp_llm_from_config(&cfg, s, loop, &llm, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "KOUMPA_MODEL"));

    cfg.model = "llama3.1";
    assert_int_equal(kp_llm_from_config(&cfg, s, loop, &llm, &err), KP_OK);
    assert_string_equal(llm->ops->name, "openai");
    assert_string_equal(llm->model, "llama3.1");
    provider_free(llm);

    /* ANTHROPIC_API_KEY wins when both are set and no provider is named */
    cfg.model = NULL;
    kp_fake_secrets_put(fs, "ANTHROPIC_API_KEY", API_KEY);
    assert_int_equal(kp_llm_from_config(&cfg, s, loop, &llm, &err), KP_OK);
    assert_string_equal(llm->ops->name, "anthropic");
    assert_string_equal(llm->model, KP_ANTHROPIC_DEFAULT_MODEL);
    assert_string_equal(llm->model, "claude-sonnet-5-5");
    provider_free(llm);

    cfg.llm_provider = "gemini";
    assert_int_equal(kp_llm_from_config(&cfg, s, loop, &llm, &err), KP_EINVAL);
    kp_fake_secrets_free(fs);
}

/* ---- the key from the secrets service ---- */

/* The x-api-key of the fake's last recorded request. */
static void assert_last_key(const char *want)
{
    json_t *reqs = recorded(&anthropic_fake);
    json_t *h = json_object_get(json_array_get(reqs, json_array_size(reqs) - 1), "headers");
    assert_string_equal(json_string_value(json_object_get(h, "x-api-key")), want);
    json_decref(reqs);
}

static void run_default_call(kp_llm *llm, const char *want_code)
{
    outcome o;
    outcome_init(&o, llm, &default_req);
    run_call(&o);
    assert_int_equal(o.finals, 1);
    if (want_code)
        assert_string_equal(o.code, want_code);
    else
        assert_true(o.done);
    outcome_free(&o);
}

static void test_anthropic_key_read_for_each_request(void **state)
{
    (void)state;
    kp_llm_tuning t;
    fast_tuning(&t);
    kp_llm *llm = anthropic_provider(&t, API_KEY, NULL);
    set_scenario(&anthropic_fake, "{\"type\":\"text\"}");
    run_default_call(llm, NULL);
    assert_last_key(API_KEY);
    /* rotated: the next request carries the new key (which the fake refuses) */
    kp_fake_secrets_put(secrets, "ANTHROPIC_API_KEY", "sk-ant-rotated");
    run_default_call(llm, "auth_failed");
    assert_last_key("sk-ant-rotated");
    kp_fake_secrets_put(secrets, "ANTHROPIC_API_KEY", API_KEY);
    run_default_call(llm, NULL);
    assert_last_key(API_KEY);
    provider_free(llm);
}

static void test_anthropic_key_missing_or_unsafe(void **state)
{
    (void)state;
    kp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.anthropic_base_url = anthropic_fake.url;
    kp_llm *llm = NULL;
    kp_err err = {0};
    kp_fake_secrets *unset = kp_fake_secrets_new();
    assert_int_equal(kp_llm_anthropic_new(&cfg, kp_fake_secrets_service(unset), loop, NULL, &llm, &err),
                     KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "ANTHROPIC_API_KEY"));
    assert_null(llm);
    kp_fake_secrets_free(unset);
    kp_secrets *s = kp_fake_secrets_service(secrets);
    /* a second line would be a second header: refused, the key not quoted */
    kp_fake_secrets_put(secrets, "ANTHROPIC_API_KEY", "sk-ant-x\r\nx-evil: 1");
    assert_int_equal(kp_llm_anthropic_new(&cfg, s, loop, NULL, &llm, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "control character"));
    assert_null(strstr(err.msg, "sk-ant-x"));
    /* ... also when it is rotated to such a value: the call does not start */
    llm = anthropic_provider(NULL, API_KEY, NULL);
    kp_fake_secrets_put(secrets, "ANTHROPIC_API_KEY", "sk-ant-x\nx-evil: 1");
    outcome o;
    outcome_init(&o, llm, &default_req);
    assert_int_equal(kp_loop_post(loop, start_on_loop, &o), 0);
    assert_true(wait_for(&o, has_started, WAIT_MS));
    assert_int_equal(o.start_status, KP_EUNAVAILABLE);
    outcome_free(&o);
    provider_free(llm);
}

static void test_default_tuning(void **state)
{
    (void)state;
    kp_llm_tuning t;
    unsetenv("KOUMPA_LLM_RETRY_BASE_MS");
    kp_llm_engine_default_tuning(&t);
    assert_int_equal(t.max_tries, 3);
    assert_int_equal(t.retry_base_ms, 1000);
    assert_int_equal(t.connect_timeout_ms, 10000);
    assert_int_equal(t.idle_timeout_ms, 60000);
    assert_int_equal(t.total_timeout_ms, 600000);
    setenv("KOUMPA_LLM_RETRY_BASE_MS", "25", 1);
    kp_llm_engine_default_tuning(&t);
    assert_int_equal(t.retry_base_ms, 25);
    setenv("KOUMPA_LLM_RETRY_BASE_MS", "soon", 1);
    kp_llm_engine_default_tuning(&t);
    assert_int_equal(t.retry_base_ms, 1000);
    unsetenv("KOUMPA_LLM_RETRY_BASE_MS");
}

/* ---- setup ---- */

static int teardown(void **state)
{
    (void)state;
    fake_stop(&anthropic_fake);
    fake_stop(&openai_fake);
    if (loop) {
        kp_loop_stop(loop);
        loop = NULL;
        curl_global_cleanup();
    }
    kp_fake_secrets_free(secrets);
    secrets = NULL;
    return 0;
}

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    kp_log_set_level(KP_LOG_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    kp_err err = {0};
    secrets = kp_fake_secrets_new();
    if (kp_loop_start(&loop, &err) != KP_OK)
        return -1;
    if (fake_start(&anthropic_fake, "tests/integration/fake-anthropic.mjs", API_KEY) != 0 ||
        fake_start(&openai_fake, "tests/integration/fake-openai.mjs", OPENAI_KEY) != 0) {
        teardown(state);
        return -1;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anthropic_stream_assembled_exactly),
        cmocka_unit_test(test_anthropic_model_and_max_tokens_overrides),
        cmocka_unit_test(test_anthropic_429_retried_after_retry_after),
        cmocka_unit_test(test_anthropic_5xx_retried_until_success),
        cmocka_unit_test(test_anthropic_529_three_times_is_overloaded),
        cmocka_unit_test(test_anthropic_400_not_retried),
        cmocka_unit_test(test_anthropic_long_error_message_stays_utf8),
        cmocka_unit_test(test_anthropic_wrong_key_is_auth_failed),
        cmocka_unit_test(test_anthropic_error_event_mid_stream),
        cmocka_unit_test(test_anthropic_error_event_before_output_retried),
        cmocka_unit_test(test_anthropic_cut_stream_is_network_error),
        cmocka_unit_test(test_anthropic_reset_before_answer_retried),
        cmocka_unit_test(test_anthropic_cut_before_output_retried),
        cmocka_unit_test(test_anthropic_max_tokens_and_continuation),
        cmocka_unit_test(test_anthropic_cancel_inside_on_text),
        cmocka_unit_test(test_anthropic_cancel_from_the_loop),
        cmocka_unit_test(test_anthropic_concurrent_calls_not_queued),
        cmocka_unit_test(test_anthropic_cancel_while_waiting_to_retry),
        cmocka_unit_test(test_anthropic_idle_timeout),
        cmocka_unit_test(test_anthropic_idle_timeout_mid_stream),
        cmocka_unit_test(test_anthropic_connection_refused),
        cmocka_unit_test(test_anthropic_free_with_calls_in_flight),
        cmocka_unit_test(test_anthropic_free_inside_on_text),
        cmocka_unit_test(test_anthropic_many_concurrent_calls),
        cmocka_unit_test(test_anthropic_calls_over_several_lanes),
        cmocka_unit_test(test_anthropic_start_rejects_bad_requests),
        cmocka_unit_test(test_openai_stream_with_usage),
        cmocka_unit_test(test_openai_length_is_max_tokens),
        cmocka_unit_test(test_openai_errors),
        cmocka_unit_test(test_openai_reset_before_answer_retried),
        cmocka_unit_test(test_nul_and_lone_surrogates_become_replacement_characters),
        cmocka_unit_test(test_from_config),
        cmocka_unit_test(test_anthropic_key_read_for_each_request),
        cmocka_unit_test(test_anthropic_key_missing_or_unsafe),
        cmocka_unit_test(test_default_tuning),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
