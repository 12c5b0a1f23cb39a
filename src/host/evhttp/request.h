/*
 * request.h - reading an evhttp request into a kp_req (api/http.h) on a
 * worker: the request id (an incoming sane X-Request-Id, else a new one),
 * method, peer address, decoded path, query, headers and body.
 *
 * Ownership: req borrows from evreq (headers are copied into req's lists,
 * which the caller frees with kp_headers_free); the decoded path is the
 * caller's to free.
 */
#ifndef KP_REQUEST_H
#define KP_REQUEST_H

#include "host/evhttp/worker.h"

/*
 * Fills req from evreq; rid receives the request id (req->request_id points
 * to it). Returns 0, or -1 with resp filled with the error to send instead of
 * dispatching (400, 413, 500). *path_out receives the decoded path, which the
 * caller frees.
 */
int kp_request_read(worker *w, struct evhttp_request *evreq, kp_req *req, char rid[KP_REQUEST_ID_MAX + 1],
                    char **path_out, kp_resp *resp);

#endif
