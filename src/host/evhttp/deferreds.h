/*
 * deferreds.h - responses computed elsewhere (resp->deferred, e.g. password
 * hashing on a pool) on a worker.
 *
 * The handler returns at once and the worker goes on serving; the producer's
 * reply may be sent from any thread: it is stored under a mutex and the
 * worker answers it like any other response (kp_respond_reply). A client
 * that leaves before the reply is noticed (EOF is watched meanwhile) and the
 * request stops counting as in flight; release() always comes after send(),
 * on the worker, or when the worker stops (kp_deferreds_finish).
 */
#ifndef KP_DEFERREDS_H
#define KP_DEFERREDS_H

#include "host/evhttp/worker.h"

/* Starts resp->deferred (taken from resp) with a reply that hands the
 * response back to this worker. Returns -1 (deferred left in resp) when out
 * of memory. */
int kp_deferreds_start(worker *w, struct evhttp_request *evreq, kp_resp *resp, const kp_req_summary *sum);
/* The worker's loop has ended and its connections are closed: waits for the
 * replies still due (the producers own them until send), then releases them. */
void kp_deferreds_finish(worker *w);

#endif
