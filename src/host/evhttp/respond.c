/*
 * respond.c - see respond.h.
 */
#include "host/evhttp/respond.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "core/log.h"
#include "host/evhttp/streams.h"

/* Standard reason phrases (RFC 9110, 6585); evhttp's own table stops at 417. */
const char *kp_respond_reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    }
    return NULL; /* evhttp then names the class ("Client Error", ...) */
}

/* The host's own error responses (limits, rejected heads, handler bugs): in
 * the host's style (error_page), JSON by default. */
void kp_respond_error(const worker *w, kp_resp *resp, int status, const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kp_exchange_error(w->host->opt.error_page, resp, status, code, "%s", msg);
}

void kp_respond_headers(worker *w, struct evhttp_request *evreq, const kp_resp *resp, const char *request_id)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(evreq);
    for (size_t i = 0; i < resp->headers.n; i++) {
        const kp_header *hd = &resp->headers.items[i];
        if (evhttp_add_header(out, hd->name, hd->value) != 0)
            kp_log(KP_LOG_WARN, "dropped an invalid response header (%s) for request %s", hd->name, request_id);
    }
    for (const char *const *d = w->host->opt.default_headers; d && d[0] && d[1]; d += 2)
        if (!kp_headers_get(&resp->headers, d[0]))
            evhttp_add_header(out, d[0], d[1]);
    evhttp_add_header(out, "X-Request-Id", request_id);
    struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
    kp_conn *c = evcon ? kp_conn_of(w->conns, evcon) : NULL;
    if (w->draining || (c && kp_conn_must_close(c)))
        evhttp_add_header(out, "Connection", "close");
}

static void free_body(const void *data, size_t len, void *extra)
{
    (void)len;
    (void)extra;
    free((void *)data);
}

static void send_response(worker *w, struct evhttp_request *evreq, kp_resp *resp, const char *request_id)
{
    const char *method = evhttp_request_get_command(evreq) == EVHTTP_REQ_HEAD ? "HEAD" : "GET";
    size_t body_len = resp->file.set ? (size_t)resp->file.len : resp->body.len;
    kp_respond_headers(w, evreq, resp, request_id);
    if (kp_exchange_is_head(method) && kp_exchange_has_body("GET", resp->status)) {
        /* HEAD answers like GET without the body; evhttp does not count it for us */
        char len[32];
        snprintf(len, sizeof len, "%zu", body_len);
        struct evkeyvalq *out = evhttp_request_get_output_headers(evreq);
        evhttp_remove_header(out, "Content-Length");
        evhttp_add_header(out, "Content-Length", len);
    }
    if (resp->file.set && kp_exchange_has_body(method, resp->status)) {
        /* the kernel sends it (sendfile) as the client reads: no copy per client */
        struct evbuffer *out = evhttp_request_get_output_buffer(evreq);
        /* this buffer ends up on the socket: without the flag libevent maps or
         * reads the file into memory instead of using sendfile */
        evbuffer_set_flags(out, EVBUFFER_FLAG_DRAINS_TO_FD);
        if (evbuffer_add_file(out, resp->file.fd, resp->file.offset, resp->file.len) == 0)
            resp->file.set = 0; /* the buffer owns fd now */
    } else if (kp_exchange_has_body(method, resp->status) && resp->body.len > 0) {
        size_t len = resp->body.len;
        char *data = kp_buf_steal(&resp->body); /* handed to evhttp without a copy */
        struct evbuffer *out = evhttp_request_get_output_buffer(evreq);
        if (evbuffer_add_reference(out, data, len, free_body, NULL) != 0)
            free(data);
    }
    evhttp_send_reply(evreq, resp->status, kp_respond_reason_phrase(resp->status), NULL);
}

/* ---- answering ---- */

/* Writes resp (a stream is started and taken) and records the request
 * (streams: when they end). A response without a valid status, or with a
 * deferred left in it, is a handler bug: 500. */
void kp_respond_reply(worker *w, struct evhttp_request *evreq, kp_resp *resp, kp_req_summary *sum)
{
    const char *rid = sum->request_id;
    kp_exchange_check_response(w->host->opt.error_page, resp, sum);
    if (resp->stream && evhttp_request_get_command(evreq) == EVHTTP_REQ_HEAD) {
        /* HEAD: the headers a GET would get, and no producer run for a body
         * nobody reads (without Content-Length, as a stream has none) */
        kp_exchange_drop_stream(resp);
        kp_respond_headers(w, evreq, resp, rid);
        evhttp_send_reply(evreq, resp->status, kp_respond_reason_phrase(resp->status), NULL);
        kp_exchange_record(w->ctx.app ? w->ctx.app->metrics : NULL, sum);
    } else if (resp->stream && kp_streams_start(w, evreq, resp, sum) == 0) {
        /* logged and counted when the stream ends */
    } else {
        if (resp->stream) { /* could not start it: answer 500 instead */
            resp->stream->release(resp->stream);
            resp->stream = NULL;
            kp_headers_free(&resp->headers);
            kp_respond_error(w, resp, 500, "internal_error", "internal error (request %s)", rid);
            sum->status = 500;
        }
        send_response(w, evreq, resp, rid);
        kp_exchange_record(w->ctx.app ? w->ctx.app->metrics : NULL, sum);
    }
}
