/*
 * request.c - see request.h.
 */
#include "host/evhttp/request.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include "host/evhttp/respond.h"

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    }
    return "UNKNOWN";
}
static int copy_headers(struct evkeyvalq *in, kp_headers *out)
{
    for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next)
        if (kp_headers_add(out, kv->key, kv->value) != 0)
            return -1;
    return 0;
}

/* Query parameters, decoded by evhttp. A malformed pair (no '=') makes evhttp
 * reject the whole string, so then each '&'-separated pair is tried alone and
 * the malformed ones are skipped (cache-busters like "?v2" stay harmless). */
static int parse_query(const char *q, kp_headers *out)
{
    struct evkeyvalq kv;
    int rc = 0;
    if (evhttp_parse_query_str(q, &kv) == 0) {
        rc = copy_headers(&kv, out);
        evhttp_clear_headers(&kv);
        return rc;
    }
    char *copy = strdup(q);
    if (!copy)
        return -1;
    char *save = NULL;
    for (char *pair = strtok_r(copy, "&", &save); pair && rc == 0; pair = strtok_r(NULL, "&", &save)) {
        if (evhttp_parse_query_str(pair, &kv) == 0) {
            rc = copy_headers(&kv, out);
            evhttp_clear_headers(&kv);
        }
    }
    free(copy);
    return rc;
}

/*
 * Fills req from evreq. Returns 0, or -1 with resp filled with the error to
 * send instead of dispatching (400, 413, 500). *path_out receives the decoded
 * path, which the caller frees.
 */
int kp_request_read(worker *w, struct evhttp_request *evreq, kp_req *req, char rid[KP_REQUEST_ID_MAX + 1],
                    char **path_out, kp_resp *resp)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(evreq);
    struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(evreq);
    char *peer = NULL;
    ev_uint16_t peer_port = 0;

    const char *incoming = evhttp_find_header(in, "X-Request-Id");
    kp_exchange_request_id(&w->ids, incoming, rid);
    req->request_id = rid;
    req->method = method_name(evhttp_request_get_command(evreq));
    evhttp_connection_get_peer(evcon, &peer, &peer_port);
    req->remote_addr = peer ? peer : "";
    req->path = "/";

    const char *raw_path = uri ? evhttp_uri_get_path(uri) : NULL;
    size_t path_len = 0;
    char *path = evhttp_uridecode(raw_path && *raw_path ? raw_path : "/", 0, &path_len);
    if (!path)
        goto nomem;
    *path_out = path;
    req->path = path;
    if (strlen(path) != path_len) {
        kp_respond_error(w, resp, 400, "invalid_request", "the request path contains a NUL byte");
        return -1;
    }
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (query && *query && parse_query(query, &req->query) != 0)
        goto nomem;
    if (copy_headers(in, &req->headers) != 0)
        goto nomem;

    struct evbuffer *body = evhttp_request_get_input_buffer(evreq);
    size_t body_len = evbuffer_get_length(body);
    if (kp_exchange_check_body(w->host->opt.error_page, body_len, resp) != 0)
        return -1;
    if (body_len > 0) {
        req->body = (const char *)evbuffer_pullup(body, -1);
        if (!req->body)
            goto nomem;
        req->body_len = body_len;
    }
    return 0;

nomem:
    kp_respond_error(w, resp, 500, "internal_error", "out of memory (request %s)", rid);
    return -1;
}
