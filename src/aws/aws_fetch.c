/*
 * aws_fetch.c - one blocking HTTP exchange over libcurl (see aws_fetch.h).
 *
 * The header callback keeps only the last response's headers (a 100 Continue
 * or other interim response starts the block again). The body callback stops
 * the transfer once the limit would be passed.
 */
#include "aws/aws_fetch.h"

#include <curl/curl.h>
#include <string.h>
#include <strings.h>

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
    curl = curl_easy_init();
    headers = build_headers(req->headers, &oom);
    if (!curl || oom) {
        st = kp_err_set(err, KP_ENOMEM, "aws fetch: out of memory");
        goto cleanup;
    }
    curl_easy_setopt(curl, CURLOPT_URL, req->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
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
    curl_slist_free_all(headers);
    if (curl)
        curl_easy_cleanup(curl);
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
