/*
 * anthropic_events.h - the Anthropic Messages API's streaming events, and the
 * request body that asks for them.
 *
 * The HTTP client feeds the response body to a kp_sse parser whose callback is
 * kp_anthropic_on_sse_event() (or calls kp_anthropic_event() itself); this
 * module interprets each event: the text of text blocks goes to on_text as it
 * arrives, and the message's id, model, token usage, stop reason and any error
 * end up in a kp_llm_result. Events are told apart by their SSE event name
 * (falling back on the data's "type" when the event has none). Unknown event
 * types, and deltas other than text_delta (input_json_delta, thinking_delta,
 * signature_delta, ...), are ignored, as the API documents new ones may appear.
 *
 * The kp_llm_* types and helpers below are shared with openai_events.h, which
 * includes this header for them (they belong to the provider interface once
 * that exists).
 */
#ifndef KP_ANTHROPIC_EVENTS_H
#define KP_ANTHROPIC_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/err.h"

/* One conversation turn: role is "user" or "assistant". Strings are borrowed. */
typedef struct kp_llm_msg {
    const char *role;
    const char *content;
} kp_llm_msg;

/* Token counts a provider reports above this (or below 0) are ignored: no
 * model has contexts near it, and sums of counts stay far from overflow. */
#define KP_LLM_MAX_TOKEN_COUNT 1000000000000LL

/*
 * What a streamed completion reported, filled as events arrive. stop_reason
 * uses the Anthropic vocabulary ("end_turn", "max_tokens", "stop_sequence",
 * "refusal", ...), also for OpenAI-compatible providers.
 */
typedef struct kp_llm_result {
    char message_id[128];
    char model[128];
    int64_t input_tokens;
    int64_t output_tokens;
    int64_t cache_creation_input_tokens; /* Anthropic prompt caching; 0 otherwise */
    int64_t cache_read_input_tokens;
    char stop_reason[64]; /* "" until known */
    char error_type[64];  /* "" unless the provider reported an error */
    char error_message[256];
    int done; /* the end of the message was seen */
} kp_llm_result;

/*
 * Receives text as it arrives. text is valid only during the call and holds
 * whole UTF-8 characters (each delta is a complete JSON string). Returning
 * anything but KP_OK (with err filled) stops the stream with that status.
 */
typedef kp_status (*kp_llm_text_fn)(void *ud, const char *text, size_t len, kp_err *err);

typedef struct kp_anthropic {
    kp_llm_result result;
    kp_llm_text_fn on_text; /* may be NULL */
    void *ud;
    kp_status status; /* set by kp_anthropic_on_sse_event() when it stops the stream */
    kp_err err;
} kp_anthropic;

/* Prepares a; nothing to free. */
void kp_anthropic_init(kp_anthropic *a, kp_llm_text_fn on_text, void *ud);

/*
 * Interprets one event (name + data as delivered by the SSE parser). Returns:
 *   KP_OK for events understood or ignored;
 *   KP_EUNAVAILABLE for an "error" event (result.error_type / error_message
 *     hold what the API said, e.g. "overloaded_error", "Overloaded");
 *   KP_EIO when a known event's data is not the JSON the API documents;
 *   whatever on_text returned when it failed.
 */
kp_status kp_anthropic_event(kp_anthropic *a, const char *event, const char *data, size_t len, kp_err *err);

/*
 * A kp_sse_event_fn (ud is the kp_anthropic): calls kp_anthropic_event() and
 * stops the stream (returns 1) after message_stop or on a failure, which it
 * keeps in a->status and a->err.
 */
int kp_anthropic_on_sse_event(void *ud, const char *event, const char *data, size_t len);

/*
 * Appends the request body for POST /v1/messages to out (compact JSON):
 * {"model", "max_tokens", "system" (omitted when NULL or ""), "messages":
 * [{"role", "content"}...], "stream": true}. Sampling parameters
 * (temperature, top_p, top_k) are never sent: current API versions reject
 * them. Returns KP_EINVAL for an empty model, max_tokens < 1, no messages, a
 * role other than user/assistant or text that is not UTF-8; KP_ENOMEM.
 */
kp_status kp_anthropic_build_request(const char *model, int64_t max_tokens, const char *system, const kp_llm_msg *msgs,
                                     size_t n, kp_buf *out, kp_err *err);

/* Appends {"role", "content"} objects for msgs to the JSON array arr. KP_EINVAL
 * for a role other than user/assistant or content missing or not UTF-8. */
kp_status kp_llm_append_messages(json_t *arr, const kp_llm_msg *msgs, size_t n, kp_err *err);

/*
 * Copies the JSON string v into dst (cap bytes, NUL-terminated), cut at a
 * character boundary when it does not fit, so dst stays valid UTF-8. Leaves
 * dst as it was when v is not a string.
 */
void kp_llm_copy_string(char *dst, size_t cap, const json_t *v);

/*
 * Parses a JSON text a provider sent (a stream event's data, an error body).
 * Strings may hold what jansson refuses to decode and a model may well write:
 * U+0000 (\u0000) and unpaired UTF-16 surrogates (\ud800 without its low
 * half, a lone \udc00). Both become U+FFFD, the replacement character, as
 * the HTML parser does with U+0000: the text goes on, the odd character stays
 * visible, and no C string is cut short by a NUL. Returns a new reference, or
 * NULL when the text is not JSON even then.
 */
json_t *kp_llm_json_load(const char *data, size_t len);

/* Sets *dst to obj's integer member key when it is in [0, KP_LLM_MAX_TOKEN_COUNT]. */
void kp_llm_read_count(int64_t *dst, const json_t *obj, const char *key);

/* Appends body as compact JSON to out; on failure out is left as it was. */
kp_status kp_llm_dump_json(const json_t *body, kp_buf *out, kp_err *err);

#endif
