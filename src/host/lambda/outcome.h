/*
 * outcome.h - how a streamed answer of the Lambda host ended, read from the
 * Server-Sent Events as they go out, and whether that end is a failure of
 * the invocation (declared in the streamed response's error trailers,
 * stream.h; Lambda counts it in the function's Errors metric).
 *
 * A generation's events (docs/api/openapi.yaml, GenerationEvent) end with
 * exactly one terminal event, `done` or `error`. The rules:
 *
 * - The stream stopped before its terminal event (the producer ended
 *   early, the host cut it: the deadline, a shutdown, a reader too far
 *   behind): "Koumpa.StreamInterrupted". The client resumes with
 *   Last-Event-ID.
 * - The terminal event is `error` and the invocation ran the generation
 *   (POST: creating a project or a version), with a code the service is to
 *   blame for (the provider failing, storage, an internal error, a lost
 *   lease or a shutdown): "Koumpa.GenerationFailed". Not a failure: the
 *   user's own `canceled`, and output the rules rejected (`invalid_output`,
 *   `too_long`): the service did its job there, and the user is refunded or
 *   charged as the event says.
 * - A reader's stream (GET .../events) that replays or follows a version to
 *   its `error` event did its job: the invocation that ran that generation
 *   reported it.
 * - Anything else ends well.
 *
 * The reader keeps the current line's first bytes only (an `error` event's
 * data is short; `delta` lines may be long and are not needed), so its
 * memory is fixed whatever the stream.
 *
 * Ownership: a plain value, nothing to free. Not thread-safe (the caller
 * locks).
 */
#ifndef KP_LAMBDA_OUTCOME_H
#define KP_LAMBDA_OUTCOME_H

#include <stddef.h>

#define KP_LAMBDA_OUTCOME_LINE 2048 /* bytes kept of a line */

typedef struct kp_lambda_outcome {
    char line[KP_LAMBDA_OUTCOME_LINE]; /* the line being read (its first bytes) */
    size_t line_len;
    char event[32];                    /* the name of the event being read ("" until its event: line) */
    char data[KP_LAMBDA_OUTCOME_LINE]; /* its data line, when it is an error event */
    char last[32];                     /* the name of the last complete event ("" none yet) */
    char code[64];                     /* the last error event's code and message */
    char message[256];
} kp_lambda_outcome;

/* Reads len more bytes of the stream. */
void kp_lambda_outcome_feed(kp_lambda_outcome *o, const char *data, size_t len);
/* 1 when the last complete event is terminal (done or error). */
int kp_lambda_outcome_terminal(const kp_lambda_outcome *o);
/*
 * The failure the stream's end is, by the rules above: an error type
 * ("Koumpa.StreamInterrupted", "Koumpa.GenerationFailed"; static) with a
 * message into msg, or NULL. ran_generation: the invocation started the
 * generation it streams.
 */
const char *kp_lambda_outcome_failure(const kp_lambda_outcome *o, int ran_generation, char *msg, size_t msg_len);

#endif
