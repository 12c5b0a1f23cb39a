/*
 * stripe_api.c - see stripe_api.h. One logical call is a loop of attempts on
 * one libcurl easy handle (so a retry may reuse the connection): the
 * Idempotency-Key is drawn once, before the first attempt, and sent on every
 * one, which is what makes retrying a POST safe - Stripe answers a repeated
 * key with the first request's result instead of creating a second object.
 *
 * The secret key lives in three places during a call, each wiped before it
 * is freed: the copy from the secrets service, the header text we build, and
 * the header list handed to libcurl (whose own internal copy of the request
 * head is out of our reach).
 */
#include "stripe/stripe_api.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "core/curl_defaults.h"
#include "core/log.h"

#define DEFAULT_BACKOFF_MS 500
#define MAX_BACKOFF_MS 8000
#define USER_AGENT "koumpa (+stripe_api.c)"

struct kp_stripe {
    char *base;
    char *version;
    kp_secrets *secrets;
    long connect_timeout_s;
    long timeout_s;
    int max_retries;
    long backoff_ms;
    atomic_int stopping;
    pthread_mutex_t mu; /* with wake: backoff waits that kp_stripe_stop cuts short */
    pthread_cond_t wake;
};

/* ---- form encoding ---- */

static kp_status append_escaped(kp_buf *out, const char *s, kp_err *err)
{
    /* since libcurl 7.82 the handle argument is unused; NULL keeps this callable without one */
    char *e = curl_easy_escape(NULL, s, (int)strlen(s));
    int rc = e ? kp_buf_puts(out, e) : -1;
    curl_free(e);
    return rc == 0 ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
}

kp_status kp_stripe_form_encode(const kp_stripe_param *params, size_t nparams, kp_buf *out, kp_err *err)
{
    kp_status rc = KP_OK;
    for (size_t i = 0; i < nparams && rc == KP_OK; i++) {
        if (!params[i].key || !params[i].value)
            return kp_err_set(err, KP_EINVAL, "form field %zu has no %s", i, params[i].key ? "value" : "key");
        if (i > 0 && kp_buf_puts(out, "&") != 0)
            return kp_err_set(err, KP_ENOMEM, "out of memory");
        rc = append_escaped(out, params[i].key, err);
        if (rc == KP_OK && kp_buf_puts(out, "=") != 0)
            rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        if (rc == KP_OK)
            rc = append_escaped(out, params[i].value, err);
    }
    return rc;
}

/* ---- error mapping and retry decision ---- */

static void copy_field(json_t *obj, const char *name, char *dst, size_t cap)
{
    const char *v = json_string_value(json_object_get(obj, name));
    snprintf(dst, cap, "%s", v ? v : "");
}

kp_status kp_stripe_error_from_response(long http_status, const char *body, size_t len, kp_stripe_result *res,
                                        kp_err *err)
{
    json_t *doc = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *e = json_object_get(doc, "error");
    const char *message = json_string_value(json_object_get(e, "message"));
    kp_stripe_result scratch;
    if (!res)
        res = &scratch;
    copy_field(e, "type", res->error_type, sizeof res->error_type);
    copy_field(e, "code", res->error_code, sizeof res->error_code);
    if (message && *message)
        kp_err_set(err, KP_EIO, "Stripe: %s", message);
    else if (res->error_type[0])
        kp_err_set(err, KP_EIO, "Stripe answered HTTP %ld (%s)", http_status, res->error_type);
    else
        kp_err_set(err, KP_EIO, "Stripe answered HTTP %ld", http_status);
    json_decref(doc);
    return KP_EIO;
}

int kp_stripe_should_retry(long http_status, const char *should_retry)
{
    if (should_retry && strcmp(should_retry, "true") == 0)
        return 1;
    if (should_retry && strcmp(should_retry, "false") == 0)
        return 0;
    return http_status == 0 || http_status == 429 || http_status >= 500;
}

/* ---- one attempt ---- */

typedef struct attempt {
    kp_buf body;
    int too_large;
    CURLcode curl_rc;
    char curl_msg[CURL_ERROR_SIZE];
    long http_status;
    char should_retry[8]; /* Stripe-Should-Retry: "true", "false" or "" */
} attempt;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    attempt *a = arg;
    size_t n = size * nmemb;
    if (a->body.len + n > KP_STRIPE_MAX_RESPONSE) {
        a->too_large = 1;
        return 0;
    }
    return kp_buf_append(&a->body, data, n) == 0 ? n : 0;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    kp_stripe *s = arg;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return atomic_load(&s->stopping) ? 1 : 0;
}

static void last_header(CURL *curl, const char *name, char *dst, size_t cap)
{
    struct curl_header *h = NULL;
    dst[0] = '\0';
    if (curl_easy_header(curl, name, 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h && h->value)
        snprintf(dst, cap, "%s", h->value);
}

static void perform(CURL *curl, attempt *a, kp_stripe_result *res)
{
    kp_buf_reset(&a->body);
    a->too_large = 0;
    a->curl_msg[0] = '\0';
    a->http_status = 0;
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, a->curl_msg);
    a->curl_rc = curl_easy_perform(curl);
    if (a->curl_rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &a->http_status);
    last_header(curl, "Stripe-Should-Retry", a->should_retry, sizeof a->should_retry);
    last_header(curl, "Request-Id", res->request_id, sizeof res->request_id);
}

/* ---- a call: headers, attempts, backoff ---- */

/* Reads the key; refuses one that would break the header. */
static kp_status read_key(kp_stripe *s, char **key, size_t *len, kp_err *err)
{
    kp_err why = {0};
    kp_status rc = kp_secrets_get(s->secrets, KP_SECRET_STRIPE_SECRET_KEY, key, len, &why);
    if (rc == KP_ENOTFOUND)
        return kp_err_set(err, KP_EUNAVAILABLE, "billing is not configured: set %s", KP_SECRET_STRIPE_SECRET_KEY);
    if (rc != KP_OK)
        return kp_err_set(err, KP_EUNAVAILABLE, "cannot read %s: %s", KP_SECRET_STRIPE_SECRET_KEY, why.msg);
    for (size_t i = 0; i < *len; i++) {
        if ((unsigned char)(*key)[i] < 0x21 || (*key)[i] == 0x7f) {
            kp_secrets_value_free(*key, *len);
            *key = NULL;
            return kp_err_set(err, KP_EUNAVAILABLE, "%s holds a space or control character",
                              KP_SECRET_STRIPE_SECRET_KEY);
        }
    }
    return KP_OK;
}

static void new_idempotency_key(char *out, size_t cap)
{
    unsigned char raw[16];
    char hex[33];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    snprintf(out, cap, "koumpa-%s", hex);
}

/* The wiped-then-freed header list (it holds the key). */
static void free_headers(struct curl_slist *list)
{
    for (struct curl_slist *h = list; h; h = h->next)
        sodium_memzero(h->data, strlen(h->data));
    curl_slist_free_all(list);
}

static struct curl_slist *add_header(struct curl_slist *list, int *failed, const char *fmt, const char *value)
{
    kp_buf line = KP_BUF_INIT;
    struct curl_slist *next = NULL;
    if (!*failed && kp_buf_printf(&line, fmt, value) == 0)
        next = curl_slist_append(list, kp_buf_cstr(&line));
    if (line.data)
        sodium_memzero(line.data, line.len);
    kp_buf_free(&line);
    if (!next) {
        *failed = 1;
        return list;
    }
    return next;
}

static kp_status build_headers(kp_stripe *s, const char *key, int post, const kp_stripe_result *res,
                               struct curl_slist **out, kp_err *err)
{
    int failed = 0;
    struct curl_slist *h = NULL;
    h = add_header(h, &failed, "Authorization: Bearer %s", key);
    h = add_header(h, &failed, "Stripe-Version: %s", s->version);
    h = add_header(h, &failed, "Accept: %s", "application/json");
    if (post) {
        h = add_header(h, &failed, "Idempotency-Key: %s", res->idempotency_key);
        h = add_header(h, &failed, "Content-Type: %s", "application/x-www-form-urlencoded");
    }
    h = add_header(h, &failed, "Expect:%s", ""); /* no 100-continue round trip */
    if (failed) {
        free_headers(h);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    *out = h;
    return KP_OK;
}

static CURL *new_easy(kp_stripe *s, const char *url, int post, const kp_buf *form, struct curl_slist *headers)
{
    CURL *curl = kp_curl_defaults(curl_easy_init());
    if (!curl)
        return NULL;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, s->connect_timeout_s);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, s->timeout_s);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, (void *)s);
    if (post) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, kp_buf_cstr(form));
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)form->len);
    }
    return curl;
}

/* Waits before retry number n (1, 2, ...): backoff_ms * 2^(n-1), capped,
 * with up to half of it again as jitter. Returns early when stopping. */
static void backoff(kp_stripe *s, int n)
{
    long ms = s->backoff_ms;
    for (int i = 1; i < n && ms < MAX_BACKOFF_MS; i++)
        ms *= 2;
    if (ms > MAX_BACKOFF_MS)
        ms = MAX_BACKOFF_MS;
    ms += (long)randombytes_uniform((uint32_t)(ms / 2 + 1));
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!atomic_load(&s->stopping) && pthread_cond_timedwait(&s->wake, &s->mu, &until) == 0)
        ;
    pthread_mutex_unlock(&s->mu);
}

static int succeeded(const attempt *a)
{
    return a->curl_rc == CURLE_OK && a->http_status >= 200 && a->http_status < 300;
}

static void log_retry(const char *path, const attempt *a, const kp_stripe_result *res)
{
    const char *what = a->too_large             ? "answer too large"
                       : a->curl_rc != CURLE_OK ? (a->curl_msg[0] ? a->curl_msg : curl_easy_strerror(a->curl_rc))
                                                : "";
    kp_log_json(KP_LOG_WARN, "stripe call retried",
                json_pack("{s:s,s:i,s:I,s:s,s:s,s:s}", "path", path, "attempt", res->attempts, "status",
                          (json_int_t)a->http_status, "transport_error", what, "stripe_request_id", res->request_id,
                          "idempotency_key", res->idempotency_key));
}

/* What the last attempt leaves the caller with. */
static kp_status outcome(kp_stripe *s, const attempt *a, kp_stripe_result *res, json_t **out, kp_err *err)
{
    if (atomic_load(&s->stopping))
        return kp_err_set(err, KP_EUNAVAILABLE, "the server is stopping");
    if (a->too_large)
        return kp_err_set(err, KP_EIO, "Stripe's answer is larger than %d bytes", KP_STRIPE_MAX_RESPONSE);
    if (a->curl_rc != CURLE_OK)
        return kp_err_set(err, KP_EIO, "Stripe did not answer after %d attempt%s: %s", res->attempts,
                          res->attempts == 1 ? "" : "s", a->curl_msg[0] ? a->curl_msg : curl_easy_strerror(a->curl_rc));
    if (!succeeded(a))
        return kp_stripe_error_from_response(a->http_status, a->body.data, a->body.len, res, err);
    json_t *doc = json_loadb(a->body.data ? a->body.data : "", a->body.len, 0, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return kp_err_set(err, KP_EIO, "Stripe's answer is not a JSON object (HTTP %ld)", a->http_status);
    }
    *out = doc;
    return KP_OK;
}

static kp_status build_url(kp_stripe *s, const char *path, int post, const kp_buf *form, kp_buf *url, kp_err *err)
{
    int rc = kp_buf_printf(url, "%s%s", s->base, path);
    if (rc == 0 && !post && form->len)
        rc = kp_buf_printf(url, "?%s", kp_buf_cstr(form));
    return rc == 0 ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
}

/* The attempts of one call, on one handle; leaves the last in a. */
static void run_attempts(kp_stripe *s, CURL *curl, const char *path, attempt *a, kp_stripe_result *res)
{
    for (;;) {
        res->attempts++;
        perform(curl, a, res);
        res->http_status = a->http_status;
        if (succeeded(a) || atomic_load(&s->stopping) || a->too_large)
            return;
        int retry = kp_stripe_should_retry(a->http_status, a->should_retry[0] ? a->should_retry : NULL);
        if (!retry || res->attempts > s->max_retries)
            return; /* the caller says what failed */
        log_retry(path, a, res);
        backoff(s, res->attempts);
    }
}

kp_status kp_stripe_call(kp_stripe *s, const char *method, const char *path, const kp_stripe_param *params,
                         size_t nparams, json_t **out, kp_stripe_result *res, kp_err *err)
{
    kp_stripe_result scratch;
    char *key = NULL;
    size_t key_len = 0;
    kp_buf form = KP_BUF_INIT, url = KP_BUF_INIT;
    struct curl_slist *headers = NULL;
    CURL *curl = NULL;
    attempt a = {.body = KP_BUF_INIT};
    int post = strcmp(method, "POST") == 0;
    kp_status rc;

    if (!res)
        res = &scratch;
    memset(res, 0, sizeof *res);
    *out = NULL;
    if (!post && strcmp(method, "GET") != 0)
        return kp_err_set(err, KP_EINTERNAL, "unsupported method %s", method);
    if (atomic_load(&s->stopping))
        return kp_err_set(err, KP_EUNAVAILABLE, "the server is stopping");
    if (post)
        new_idempotency_key(res->idempotency_key, sizeof res->idempotency_key);
    rc = read_key(s, &key, &key_len, err);
    if (rc == KP_OK)
        rc = kp_stripe_form_encode(params, nparams, &form, err);
    if (rc == KP_OK)
        rc = build_url(s, path, post, &form, &url, err);
    if (rc == KP_OK)
        rc = build_headers(s, key, post, res, &headers, err);
    if (rc != KP_OK)
        goto cleanup;
    curl = new_easy(s, kp_buf_cstr(&url), post, &form, headers);
    if (!curl) {
        rc = kp_err_set(err, KP_ENOMEM, "cannot create an HTTP client");
        goto cleanup;
    }
    run_attempts(s, curl, path, &a, res);
    rc = outcome(s, &a, res, out, err);

cleanup:
    if (curl)
        curl_easy_cleanup(curl);
    free_headers(headers);
    kp_secrets_value_free(key, key_len);
    kp_buf_free(&a.body);
    kp_buf_free(&form);
    kp_buf_free(&url);
    return rc;
}

/* ---- lifecycle ---- */

kp_status kp_stripe_new(const kp_stripe_options *o, kp_stripe **out, kp_err *err)
{
    kp_stripe *s = calloc(1, sizeof *s);
    const char *base = o->api_base && *o->api_base ? o->api_base : KP_STRIPE_DEFAULT_BASE;
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    if (!s)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    s->base = strndup(base, n);
    s->version = strdup(o->api_version && *o->api_version ? o->api_version : KP_STRIPE_DEFAULT_VERSION);
    s->secrets = o->secrets;
    s->connect_timeout_s = o->connect_timeout_s > 0 ? o->connect_timeout_s : 10;
    s->timeout_s = o->timeout_s > 0 ? o->timeout_s : 30;
    s->max_retries = o->max_retries > 0 ? o->max_retries : 0;
    s->backoff_ms = o->backoff_ms > 0 ? o->backoff_ms : DEFAULT_BACKOFF_MS;
    atomic_init(&s->stopping, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, &ca);
    pthread_condattr_destroy(&ca);
    curl_global_init(CURL_GLOBAL_DEFAULT); /* reference-counted; thread-safe in libcurl >= 7.84 */
    if (!s->base || !s->version) {
        kp_stripe_free(s);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    *out = s;
    return KP_OK;
}

int kp_stripe_configured(kp_stripe *s)
{
    return s && s->secrets && kp_secrets_has(s->secrets, KP_SECRET_STRIPE_SECRET_KEY);
}

void kp_stripe_stop(kp_stripe *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stopping, 1);
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void kp_stripe_free(kp_stripe *s)
{
    if (!s)
        return;
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    free(s->base);
    free(s->version);
    free(s);
    curl_global_cleanup();
}

/* ---- the objects Koumpa creates ---- */

/* The "url" of a session object Stripe returned; KP_EIO when missing. */
static kp_status session_url(json_t *session, const char *what, char **url, kp_err *err)
{
    const char *u = json_string_value(json_object_get(session, "url"));
    if (!u || !*u)
        return kp_err_set(err, KP_EIO, "Stripe's %s has no url", what);
    *url = strdup(u);
    return *url ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
}

kp_status kp_stripe_checkout_create(kp_stripe *s, const kp_stripe_checkout *c, char **url, kp_stripe_result *res,
                                    kp_err *err)
{
    kp_stripe_param p[10] = {
        {"mode", "subscription"},
        {"line_items[0][price]", c->price_id},
        {"line_items[0][quantity]", "1"},
        {"client_reference_id", c->user_id},
        {"success_url", c->success_url},
        {"cancel_url", c->cancel_url},
        {"metadata[koumpa_user_id]", c->user_id},
        {"subscription_data[metadata][koumpa_user_id]", c->user_id},
    };
    size_t n = 8;
    if (c->customer_id && *c->customer_id)
        p[n++] = (kp_stripe_param){"customer", c->customer_id};
    else if (c->customer_email && *c->customer_email)
        p[n++] = (kp_stripe_param){"customer_email", c->customer_email};
    json_t *session = NULL;
    kp_status rc = kp_stripe_call(s, "POST", "/v1/checkout/sessions", p, n, &session, res, err);
    if (rc == KP_OK)
        rc = session_url(session, "Checkout Session", url, err);
    json_decref(session);
    return rc;
}

kp_status kp_stripe_portal_create(kp_stripe *s, const char *customer_id, const char *return_url, char **url,
                                  kp_stripe_result *res, kp_err *err)
{
    const kp_stripe_param p[] = {{"customer", customer_id}, {"return_url", return_url}};
    json_t *session = NULL;
    kp_status rc = kp_stripe_call(s, "POST", "/v1/billing_portal/sessions", p, 2, &session, res, err);
    if (rc == KP_OK)
        rc = session_url(session, "Billing Portal session", url, err);
    json_decref(session);
    return rc;
}
