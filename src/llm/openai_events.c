/*
 * openai_events.c - see openai_events.h.
 *
 * Wire format (https://platform.openai.com/docs/api-reference/chat-streaming):
 *   data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m",
 *          "choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}
 *   ... a chunk whose choices[0].finish_reason is set,
 *   data: {"id":"chatcmpl-1",...,"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,...}}
 *   data: [DONE]
 * Errors come as {"error": {"message", "type", "code"}} (OpenAI), sometimes
 * with the error a plain string, or as {"object": "error", "message", "type"}
 * (vLLM and others).
 */
#include "llm/openai_events.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

void kp_openai_init(kp_openai *o, kp_llm_text_fn on_text, void *ud)
{
    memset(o, 0, sizeof *o);
    o->on_text = on_text;
    o->ud = ud;
    o->status = KP_OK;
}

static const char *stop_reason_of(const char *finish_reason)
{
    static const struct {
        const char *finish;
        const char *stop;
    } map[] = {
        {"stop", "end_turn"},       {"length", "max_tokens"},      {"content_filter", "refusal"},
        {"tool_calls", "tool_use"}, {"function_call", "tool_use"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].finish, finish_reason) == 0)
            return map[i].stop;
    return finish_reason;
}

/* type and message are JSON strings, or anything else for none. */
static kp_status fail_with_error(kp_openai *o, const json_t *type, const json_t *message, kp_err *err)
{
    snprintf(o->result.error_type, sizeof o->result.error_type, "%s", "error");
    if (json_string_length(type) > 0)
        kp_llm_copy_string(o->result.error_type, sizeof o->result.error_type, type);
    o->result.error_message[0] = '\0';
    kp_llm_copy_string(o->result.error_message, sizeof o->result.error_message, message);
    return kp_err_set(err, KP_EUNAVAILABLE, "provider error: %s: %s", o->result.error_type, o->result.error_message);
}

/* The error a chunk carries, if any: returns 1 and fails, or 0. */
static int chunk_error(kp_openai *o, json_t *root, kp_status *st, kp_err *err)
{
    json_t *e = json_object_get(root, "error");
    const char *obj = json_string_value(json_object_get(root, "object"));
    if (json_is_object(e)) {
        json_t *type = json_object_get(e, "type");
        if (!json_is_string(type))
            type = json_object_get(e, "code");
        *st = fail_with_error(o, type, json_object_get(e, "message"), err);
        return 1;
    }
    if (json_is_string(e)) {
        *st = fail_with_error(o, NULL, e, err);
        return 1;
    }
    if (obj && strcmp(obj, "error") == 0) {
        *st = fail_with_error(o, json_object_get(root, "type"), json_object_get(root, "message"), err);
        return 1;
    }
    return 0;
}

static void read_usage(kp_llm_result *r, json_t *usage)
{
    if (!json_is_object(usage))
        return;
    kp_llm_read_count(&r->input_tokens, usage, "prompt_tokens");
    kp_llm_read_count(&r->output_tokens, usage, "completion_tokens");
    kp_llm_read_count(&r->cache_read_input_tokens, json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
}

static kp_status read_choice(kp_openai *o, json_t *choice, kp_err *err)
{
    json_t *finish = json_object_get(choice, "finish_reason");
    if (json_is_string(finish)) {
        kp_llm_copy_string(o->finish_reason, sizeof o->finish_reason, finish);
        snprintf(o->result.stop_reason, sizeof o->result.stop_reason, "%s", stop_reason_of(o->finish_reason));
    }
    json_t *content = json_object_get(json_object_get(choice, "delta"), "content");
    if (!json_is_string(content) || json_string_length(content) == 0 || !o->on_text)
        return KP_OK;
    return o->on_text(o->ud, json_string_value(content), json_string_length(content), err);
}

static kp_status on_chunk(kp_openai *o, const char *data, size_t len, kp_err *err)
{
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        o->result.done = 1;
        return KP_OK;
    }
    json_t *root = kp_llm_json_load(data, len);
    kp_status st = KP_OK;
    if (!json_is_object(root)) {
        st = kp_err_set(err, KP_EIO, "provider stream: a chunk that is not a JSON object");
        goto cleanup;
    }
    if (chunk_error(o, root, &st, err))
        goto cleanup;
    kp_llm_copy_string(o->result.message_id, sizeof o->result.message_id, json_object_get(root, "id"));
    kp_llm_copy_string(o->result.model, sizeof o->result.model, json_object_get(root, "model"));
    read_usage(&o->result, json_object_get(root, "usage"));
    st = read_choice(o, json_array_get(json_object_get(root, "choices"), 0), err);
cleanup:
    json_decref(root);
    return st;
}

/* An "error" event: its data is an error object, or failing that the message itself. */
static kp_status on_error_event(kp_openai *o, const char *data, size_t len, kp_err *err)
{
    json_t *root = kp_llm_json_load(data, len);
    kp_status st;
    if (!json_is_object(root) || !chunk_error(o, root, &st, err)) {
        json_t *text = json_stringn(data, len); /* NULL when the data is not UTF-8 */
        if (!text)
            text = json_string("the provider sent an error event that is not UTF-8 text");
        st = fail_with_error(o, NULL, text, err);
        json_decref(text);
    }
    json_decref(root);
    return st;
}

kp_status kp_openai_event(kp_openai *o, const char *event, const char *data, size_t len, kp_err *err)
{
    if (strcmp(event, "message") == 0)
        return on_chunk(o, data, len, err);
    if (strcmp(event, "error") == 0)
        return on_error_event(o, data, len, err);
    return KP_OK;
}

int kp_openai_on_sse_event(void *ud, const char *event, const char *data, size_t len)
{
    kp_openai *o = ud;
    if (o->status != KP_OK)
        return 1;
    kp_status st = kp_openai_event(o, event, data, len, &o->err);
    if (st != KP_OK) {
        o->status = st;
        return 1;
    }
    return o->result.done;
}

kp_status kp_openai_build_request(const char *model, int64_t max_tokens, const char *system, const kp_llm_msg *msgs,
                                  size_t n, kp_buf *out, kp_err *err)
{
    kp_status st = KP_OK;
    json_t *root = NULL, *arr = NULL;

    if (!model || !*model || max_tokens < 1 || n == 0) {
        st = kp_err_set(err, KP_EINVAL, "a request needs a model, max_tokens >= 1 and a message");
        goto cleanup;
    }
    if (!(arr = json_array())) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (system && *system) {
        json_t *sys = json_pack("{s:s, s:s}", "role", "system", "content", system);
        if (json_array_append_new(arr, sys) != 0) {
            st = kp_err_set(err, KP_EINVAL, "system prompt is not UTF-8");
            goto cleanup;
        }
    }
    if ((st = kp_llm_append_messages(arr, msgs, n, err)) != KP_OK)
        goto cleanup;
    root = json_pack("{s:s, s:O, s:I, s:b, s:{s:b}}", "model", model, "messages", arr, "max_tokens",
                     (json_int_t)max_tokens, "stream", 1, "stream_options", "include_usage", 1);
    if (!root) {
        st = kp_err_set(err, KP_EINVAL, "model name is not UTF-8");
        goto cleanup;
    }
    st = kp_llm_dump_json(root, out, err);
cleanup:
    json_decref(arr);
    json_decref(root);
    return st;
}
