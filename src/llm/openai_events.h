/*
 * openai_events.h - OpenAI-compatible chat completions streaming, and the
 * request body that asks for it.
 *
 * The counterpart of anthropic_events.h for providers speaking the OpenAI
 * chat completions protocol (OpenAI, and the many servers that copy it): the
 * response is SSE whose unnamed events carry `chat.completion.chunk` JSON
 * objects, then `data: [DONE]`. Text (choices[0].delta.content) goes to
 * on_text; id, model, usage (the final chunk, asked for with
 * stream_options.include_usage) and finish_reason go to a kp_llm_result.
 * finish_reason is mapped to the Anthropic stop_reason vocabulary so callers
 * check one set of values: "stop" -> "end_turn", "length" -> "max_tokens",
 * "content_filter" -> "refusal", "tool_calls"/"function_call" -> "tool_use";
 * other values are kept as they are. An error object, in a data chunk or an
 * "error" event, fails the stream. Other event names and unknown fields are
 * ignored.
 */
#ifndef KP_OPENAI_EVENTS_H
#define KP_OPENAI_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "llm/anthropic_events.h" /* kp_llm_msg, kp_llm_result, kp_llm_text_fn */

typedef struct kp_openai {
    kp_llm_result result;   /* result.done is set by "data: [DONE]" */
    char finish_reason[64]; /* as the provider sent it, "" until known */
    kp_llm_text_fn on_text; /* may be NULL */
    void *ud;
    kp_status status; /* set by kp_openai_on_sse_event() when it stops the stream */
    kp_err err;
} kp_openai;

/* Prepares o; nothing to free. */
void kp_openai_init(kp_openai *o, kp_llm_text_fn on_text, void *ud);

/*
 * Interprets one event (name + data as delivered by the SSE parser). Returns
 * KP_OK for chunks understood or ignored; KP_EUNAVAILABLE for an error object
 * (result.error_type / error_message hold what the provider said); KP_EIO for
 * a data chunk that is neither "[DONE]" nor a JSON object; whatever on_text
 * returned when it failed.
 */
kp_status kp_openai_event(kp_openai *o, const char *event, const char *data, size_t len, kp_err *err);

/*
 * A kp_sse_event_fn (ud is the kp_openai): calls kp_openai_event() and stops
 * the stream (returns 1) after [DONE] or on a failure, which it keeps in
 * o->status and o->err.
 */
int kp_openai_on_sse_event(void *ud, const char *event, const char *data, size_t len);

/*
 * Appends the request body for POST {base}/chat/completions to out (compact
 * JSON): {"model", "messages": [{"role": "system", ...} (when system is
 * neither NULL nor ""), then msgs...], "max_tokens", "stream": true,
 * "stream_options": {"include_usage": true}}. No sampling parameters.
 * Errors as kp_anthropic_build_request().
 */
kp_status kp_openai_build_request(const char *model, int64_t max_tokens, const char *system, const kp_llm_msg *msgs,
                                  size_t n, kp_buf *out, kp_err *err);

#endif
