/*
 * streams.h - streamed responses (resp->stream: Server-Sent Events and pulled
 * streams) on a worker.
 *
 * The response starts at once (chunked); the producer writes through a
 * kp_sink from any thread, the worker moves its bytes to the connection under
 * a high-water mark and drops a reader that falls too far behind. The stream
 * ends when the producer calls end() or the connection closes; either way
 * the request is logged and counted then, release() is called and the
 * stream's state is freed (on the worker). The sink stays valid until
 * release() returns (http.h).
 */
#ifndef KP_STREAMS_H
#define KP_STREAMS_H

#include "host/evhttp/worker.h"

/* Starts a streamed response; takes resp->stream. Returns -1 (stream left in
 * resp) when out of memory, before anything was sent. */
int kp_streams_start(worker *w, struct evhttp_request *evreq, kp_resp *resp, const kp_req_summary *sum);

#endif
