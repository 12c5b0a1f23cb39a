/*
 * aws_fetch.c - one blocking HTTP exchange over libcurl (see aws_fetch.h).
 *
 * The header callback keeps only the last response's headers (a 100 Continue
 * or other interim response starts the block again). The body callback stops
 * the transfer once the limit would be passed. A handle goes back to its pool
 * (curl_easy_reset keeps its connections) only after a transfer that ended
 * cleanly; after any failure it is closed, with its connections.
 */
#include "aws/aws_fetch.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/curl_defaults.h"

struct kp_aws_fetch_pool {
    pthread_mutex_t lock;
    CURL *idle[KP_AWS_FETCH_POOL_IDLE];
    size_t n_idle;
};

kp_status kp_aws_fetch_pool_new(kp_aws_fetch_pool **out, kp_err *err)
{
    kp_aws_fetch_pool *pool = calloc(1, sizeof *pool);

    *out = NULL;
    if (!pool || pthread_mutex_init(&pool->lock, NULL) != 0) {
        free(pool);
        return kp_err_set(err, KP_ENOMEM, "aws fetch: out of memory");
    }
    *out = pool;
    return KP_OK;
}

void kp_aws_fetch_pool_free(kp_aws_fetch_pool *pool)
{
    if (!pool)
        return;
    for (size_t i = 0; i < pool->n_idle; i++)
        curl_easy_cleanup(pool->idle[i]);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

static CURL *take_handle(kp_aws_fetch_pool *pool)
{
    CURL *h = NULL;

    if (pool) {
        pthread_mutex_lock(&pool->lock);
        if (pool->n_idle > 0)
            h = pool->idle[--pool->n_idle];
        pthread_mutex_unlock(&pool->lock);
    }
    return kp_curl_defaults(h ? h : curl_easy_init()); /* a pooled handle was reset */
}

static void give_back(kp_aws_fetch_pool *pool, CURL *h, int clean)
{
    if (!h)
        return;
    if (pool && clean) {
        curl_easy_reset(h);
        pthread_mutex_lock(&pool->lock);
        if (pool->n_idle < KP_AWS_FETCH_POOL_IDLE) {
            pool->idle[pool->n_idle++] = h;
            h = NULL;
        }
        pthread_mutex_unlock(&pool->lock);
    }
    if (h)
        curl_easy_cleanup(h);
}

typedef struct sink {
    kp_aws_fetch_response *resp;
    size_t max_body;
    int too_large;
    int oom;
} sink;

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    sink *s = ud;
    size_t n = size * nmemb;

    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
        kp_buf_reset(&s->resp->headers);
    if (kp_buf_append(&s->resp->headers, data, n) != 0) {
        s->oom = 1;
        return 0;
    }
    return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    sink *s = ud;
    size_t n = size * nmemb;

    if (s->resp->body.len + n > s->max_body) {
        s->too_large = 1;
        return 0;
    }
    if (kp_buf_append(&s->resp->body, data, n) != 0) {
        s->oom = 1;
        return 0;
    }
    return n;
}

static struct curl_slist *build_headers(const char *const *lines, int *oom)
{
    struct curl_slist *list = NULL, *next;

    *oom = 0;
    /* an empty "Expect:" drops libcurl's 100-continue wait on large bodies */
    list = curl_slist_append(list, "Expect:");
    for (size_t i = 0; list && lines && lines[i]; i++) {
        next = curl_slist_append(list, lines[i]);
        if (!next) {
            curl_slist_free_all(list);
            list = NULL;
            break;
        }
        list = next;
    }
    if (!list)
        *oom = 1;
    return list;
}

static void set_method(CURL *curl, const kp_aws_fetch_request *req)
{
    int has_body = strcmp(req->method, "PUT") == 0 || strcmp(req->method, "POST") == 0;

    if (has_body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->body ? (const char *)req->body : "");
        if (strcmp(req->method, "PUT") == 0)
            curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
    } else if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (strcmp(req->method, "GET") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);
    }
}

kp_status kp_aws_fetch(const kp_aws_fetch_request *req, kp_aws_fetch_response *resp, kp_err *err)
{
    char curl_msg[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL;
    sink s = {resp, req->max_body ? req->max_body : KP_AWS_FETCH_MAX_BODY, 0, 0};
    kp_status st = KP_OK;
    CURL *curl = NULL;
    CURLcode rc;
    int oom;

    kp_aws_fetch_response_free(resp);
    if (!req->method || !req->url)
        return kp_err_set(err, KP_EINVAL, "aws fetch: method and URL are required");
    curl = take_handle(req->pool);
    headers = build_headers(req->headers, &oom);
    if (!curl || oom) {
        st = kp_err_set(err, KP_ENOMEM, "aws fetch: out of memory");
        goto cleanup;
    }
    curl_easy_setopt(curl, CURLOPT_URL, req->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L); /* S3 keys are sent (and signed) exactly as given */
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : KP_AWS_FETCH_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     req->connect_timeout_ms > 0 ? req->connect_timeout_ms : KP_AWS_FETCH_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "koumpa");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &s);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_msg);
    set_method(curl, req);

    rc = curl_easy_perform(curl);
    if (s.oom) {
        st = kp_err_set(err, KP_ENOMEM, "aws fetch: out of memory");
    } else if (s.too_large) {
        st = kp_err_set(err, KP_ETOOLARGE, "aws fetch: response body larger than %zu bytes", s.max_body);
    } else if (rc != CURLE_OK) {
        st = kp_err_set(err, KP_EUNAVAILABLE, "%s %s: %s", req->method, req->url,
                        curl_msg[0] ? curl_msg : curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
        if (kp_buf_append(&resp->body, "", 0) != 0 || kp_buf_append(&resp->headers, "", 0) != 0)
            st = kp_err_set(err, KP_ENOMEM, "aws fetch: out of memory");
    }
cleanup:
    give_back(req->pool, curl, st == KP_OK);
    curl_slist_free_all(headers);
    if (st != KP_OK)
        kp_aws_fetch_response_free(resp);
    return st;
}

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

int kp_aws_fetch_header(const kp_aws_fetch_response *resp, const char *name, kp_buf *out)
{
    const char *p = resp->headers.data;
    const char *end = p ? p + resp->headers.len : NULL;
    size_t name_len = strlen(name);

    kp_buf_reset(out);
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        if ((size_t)(line_end - p) > name_len && p[name_len] == ':' && strncasecmp(p, name, name_len) == 0) {
            const char *v = skip_space(p + name_len + 1, line_end);
            const char *ve = line_end;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            return kp_buf_append(out, v, (size_t)(ve - v)) == 0;
        }
        p = eol ? eol + 1 : end;
    }
    return 0;
}

void kp_aws_fetch_response_free(kp_aws_fetch_response *resp)
{
    if (!resp)
        return;
    kp_buf_free(&resp->headers);
    kp_buf_free(&resp->body);
    resp->status = 0;
}
