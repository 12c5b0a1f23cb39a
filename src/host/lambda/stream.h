/*
 * stream.h - a function URL's answer in RESPONSE_STREAM mode: the HTTP
 * prelude, then the body as it is produced, posted to the Runtime API as
 * one chunked response (runtime.h, kp_lambda_respond_stream) with content
 * type application/vnd.awslambda.http-integration-response:
 *
 *   {"statusCode":200,"headers":{...},"cookies":[...]}  8 NUL bytes  body...
 *
 * https://docs.aws.amazon.com/lambda/latest/dg/configuration-response-streaming.html
 *
 * Every answer to a function URL goes out this way, a complete body (an
 * error, a 202) as well as a stream: a function URL in RESPONSE_STREAM
 * mode would hand a buffered payload to the client as it is, JSON envelope
 * and all.
 *
 * A streamed body (api/http.h, kp_stream) is the same contract as on the
 * evhttp host (host/evhttp/streams.c): the producer (the generation's loop
 * thread) calls the sink's write() and end() from its own thread; they
 * append to a mutex-guarded queue and signal a condition variable. The
 * invocation's thread drives the upload: libcurl's read callback takes
 * what is queued, waiting on the condition variable (a quarter second at a
 * time, to see a shutdown or the deadline) while nothing is. A pulled
 * stream (more()) is asked for its next piece on that thread, each time the
 * previous one has been handed over. Memory is bounded: a reader
 * (the Runtime API, as slow as the function URL's client behind it) that
 * falls KP_LAMBDA_STREAM_PENDING_MAX behind is dropped, as on the evhttp
 * host: write() returns -1 from then on (the producer's "client gone") and
 * the response is aborted at libcurl's next progress check (should the read
 * callback come first, what was queued goes out, then the trailers). The
 * client resumes with Last-Event-ID.
 *
 * The end: when the producer ends, the error trailers say what outcome.h
 * judges of the events sent; when the host cuts the stream first (a
 * shutdown, KP_LAMBDA_STREAM_DEADLINE_MARGIN_MS before the invocation's
 * deadline, the reader too far behind) they say "Koumpa.StreamInterrupted".
 * Past the deadline the response is abandoned (the Runtime API not even
 * taking the trailers), so the function is never wedged by a reader.
 *
 * Ownership: kp_lambda_stream_new takes opts->stream (released by
 * kp_lambda_stream_free, after which the producer does not touch the sink);
 * the other pointers in opts are borrowed until kp_lambda_stream_free.
 */
#ifndef KP_LAMBDA_STREAM_H
#define KP_LAMBDA_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "api/http.h"
#include "core/err.h"
#include "host/lambda/runtime.h"

#define KP_LAMBDA_STREAM_CONTENT_TYPE "application/vnd.awslambda.http-integration-response"
#define KP_LAMBDA_STREAM_PENDING_MAX (1024 * 1024) /* queued bytes before a reader is dropped */
#define KP_LAMBDA_STREAM_DEADLINE_MARGIN_MS 1000   /* a stream still open this close to the deadline ends */

typedef struct kp_lambda_stream kp_lambda_stream;

typedef struct kp_lambda_stream_opts {
    const char *prelude; /* {"statusCode","headers","cookies"} (apigw.h, kp_apigw_prelude) */
    const char *body;    /* a complete body (stream NULL); may be NULL when body_len is 0 */
    size_t body_len;
    kp_stream *stream;     /* or a streamed body; taken */
    int64_t deadline_ms;   /* the invocation's deadline, epoch milliseconds (0: none) */
    int ran_generation;    /* the invocation started the generation it streams (outcome.h) */
    kp_lambda_runtime *rt; /* waits end when it stops (NULL: never) */
} kp_lambda_stream_opts;

/* What went out, for the log. */
typedef struct kp_lambda_stream_report {
    size_t bytes;        /* body bytes handed to the Runtime API (after the prelude) */
    const char *failure; /* the error type declared in the trailers (static), or NULL */
    char message[256];   /* its message */
} kp_lambda_stream_report;

/* NULL when out of memory (opts->stream is released then). */
kp_lambda_stream *kp_lambda_stream_new(const kp_lambda_stream_opts *opts);
/* The body callbacks for kp_lambda_respond_stream (read starts the stream). */
kp_lambda_body kp_lambda_stream_body(kp_lambda_stream *s);
/* Fills rep (after the response was sent or abandoned). */
void kp_lambda_stream_report_of(const kp_lambda_stream *s, kp_lambda_stream_report *rep);
/* Closes the sink (write() returns -1 from then on), releases the stream, frees s. NULL-safe. */
void kp_lambda_stream_free(kp_lambda_stream *s);

/* The whole answer: new, kp_lambda_respond_stream, report, free. rep may be NULL. */
kp_status kp_lambda_stream_respond(kp_lambda_runtime *rt, const char *request_id, const kp_lambda_stream_opts *opts,
                                   kp_lambda_stream_report *rep, kp_err *err);

#endif
