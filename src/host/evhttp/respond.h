/*
 * respond.h - writing a kp_resp on a worker: headers (the response's, the
 * host's defaults, X-Request-Id, Connection: close when the connection must
 * close), HEAD answered like GET without the body, a body handed to evhttp
 * without a copy, a file sent with sendfile, a stream started (streams.h);
 * and the host's own error responses in the host's style (error_page).
 *
 * Ownership: kp_respond_reply() takes what resp holds that evhttp sends (its
 * body, file descriptor, stream); the caller still calls kp_resp_free(resp).
 */
#ifndef KP_RESPOND_H
#define KP_RESPOND_H

#include "host/evhttp/worker.h"

/* resp's headers, the defaults, X-Request-Id and, when closing, Connection: close. */
void kp_respond_headers(worker *w, struct evhttp_request *evreq, const kp_resp *resp, const char *request_id);
/* The standard reason phrase of status, or NULL (evhttp then names its class). */
const char *kp_respond_reason_phrase(int status);
/* Writes resp (a stream is started and taken) and records the request (a
 * stream: when it ends). A response without a valid status is answered 500.
 * A response evhttp would write on the next turn is written when this turn
 * ends, by kp_respond_write_turn. */
void kp_respond_reply(worker *w, struct evhttp_request *evreq, kp_resp *resp, kp_req_summary *sum);
/* Writes the responses queued in this loop turn, in one burst; drops those
 * whose connection is gone. The worker calls it once more before it frees. */
void kp_respond_write_turn(worker *w);
/* The worker's write_turn_ev callback (arg: the worker): made active by the
 * turn's first queued response, so it runs after the turn's other callbacks. */
void kp_respond_on_write_turn(evutil_socket_t fd, short what, void *arg);

/* An error response of the host (limits, rejected heads, handler bugs) in
 * the host's style (error_page), JSON by default; resp must be empty. */
__attribute__((format(printf, 5, 6))) void kp_respond_error(const worker *w, kp_resp *resp, int status,
                                                            const char *code, const char *fmt, ...);

#endif
