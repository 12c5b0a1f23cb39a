/*
 * anthropic_events.c - see anthropic_events.h.
 *
 * Wire format (https://docs.anthropic.com/en/api/messages-streaming): a
 * message_start, then per content block a content_block_start, deltas and a
 * content_block_stop, then message_delta (stop reason, cumulative usage) and
 * message_stop; ping and error may come at any point. Only the fields this
 * module reports are read; absent optional fields are left as they were.
 */
#include "llm/anthropic_events.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/jsonpick.h"

void kp_anthropic_init(kp_anthropic *a, kp_llm_text_fn on_text, void *ud)
{
    memset(a, 0, sizeof *a);
    a->on_text = on_text;
    a->ud = ud;
    a->status = KP_OK;
}

void kp_llm_copy_string(char *dst, size_t cap, const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || cap == 0)
        return;
    size_t n = json_string_length(v);
    if (memchr(s, '\0', n)) /* not from a JSON text jansson parsed with its defaults */
        n = strlen(s);
    if (n >= cap) { /* cut before the character that does not fit, never inside it */
        n = cap - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The value of the four hex digits at s (n bytes available), or -1. */
static long hex4(const char *s, size_t n)
{
    long v = 0;
    for (size_t i = 0; i < 4; i++) {
        int d = i < n ? hex_digit(s[i]) : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/*
 * The \uXXXX escape at s[0] (n bytes available): 0 for one jansson decodes
 * (*len set to its length: 6, or 12 for a surrogate pair), 1 for one it
 * refuses (U+0000, half a pair; *len 6), -1 for no such escape.
 */
static int classify_escape(const char *s, size_t n, size_t *len)
{
    long v = n >= 2 && s[1] == 'u' ? hex4(s + 2, n - 2) : -1;
    *len = 6;
    if (v < 0)
        return -1;
    if (v == 0 || (v >= 0xDC00 && v <= 0xDFFF))
        return 1;
    if (v < 0xD800 || v > 0xDBFF)
        return 0;
    long low = n >= 12 && s[6] == '\\' && s[7] == 'u' ? hex4(s + 8, n - 8) : -1;
    if (low < 0xDC00 || low > 0xDFFF)
        return 1;
    *len = 12;
    return 0;
}

/*
 * Copies the JSON text s into out with every \u0000 and every unpaired
 * surrogate escape replaced by \ufffd. In JSON a backslash only appears in
 * strings, as the start of an escape, so escapes are found by stepping over
 * each one whole (\\ and \" included). Returns how many escapes were replaced,
 * -1 when out of memory.
 */
static int replace_unencodable_escapes(const char *s, size_t n, kp_buf *out)
{
    size_t i = 0, copied = 0, len;
    int replaced = 0;
    while (i + 1 < n) {
        if (s[i] != '\\') {
            i++;
            continue;
        }
        int kind = classify_escape(s + i, n - i, &len);
        if (kind < 0) { /* \", \\, \n... or malformed: jansson judges */
            i += 2;
            continue;
        }
        if (kind == 1) {
            if (kp_buf_append(out, s + copied, i - copied) != 0 || kp_buf_puts(out, "\\ufffd") != 0)
                return -1;
            copied = i + len;
            replaced++;
        }
        i += len;
    }
    return kp_buf_append(out, s + copied, n - copied) != 0 ? -1 : replaced;
}

json_t *kp_llm_json_load(const char *data, size_t len)
{
    json_t *root = json_loadb(data, len, 0, NULL);
    if (root || !memmem(data, len, "\\u", 2))
        return root;
    kp_buf fixed = KP_BUF_INIT;
    if (replace_unencodable_escapes(data, len, &fixed) > 0)
        root = json_loadb(fixed.data, fixed.len, 0, NULL);
    kp_buf_free(&fixed);
    return root;
}

void kp_llm_read_count(int64_t *dst, const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= KP_LLM_MAX_TOKEN_COUNT)
        *dst = (int64_t)json_integer_value(v);
}

/* Usage counts are cumulative: each one present replaces the previous value. */
static void read_usage(kp_llm_result *r, json_t *usage)
{
    if (!json_is_object(usage))
        return;
    kp_llm_read_count(&r->input_tokens, usage, "input_tokens");
    kp_llm_read_count(&r->output_tokens, usage, "output_tokens");
    kp_llm_read_count(&r->cache_creation_input_tokens, usage, "cache_creation_input_tokens");
    kp_llm_read_count(&r->cache_read_input_tokens, usage, "cache_read_input_tokens");
}

static kp_status emit_text(kp_anthropic *a, json_t *text, kp_err *err)
{
    if (!json_is_string(text) || json_string_length(text) == 0 || !a->on_text)
        return KP_OK;
    return a->on_text(a->ud, json_string_value(text), json_string_length(text), err);
}

static kp_status on_message_start(kp_anthropic *a, json_t *data)
{
    json_t *msg = json_object_get(data, "message");
    kp_llm_copy_string(a->result.message_id, sizeof a->result.message_id, json_object_get(msg, "id"));
    kp_llm_copy_string(a->result.model, sizeof a->result.model, json_object_get(msg, "model"));
    read_usage(&a->result, json_object_get(msg, "usage"));
    return KP_OK;
}

static kp_status on_block_start(kp_anthropic *a, json_t *data, kp_err *err)
{
    json_t *block = json_object_get(data, "content_block");
    const char *type = json_string_value(json_object_get(block, "type"));
    if (!type || strcmp(type, "text") != 0)
        return KP_OK;
    return emit_text(a, json_object_get(block, "text"), err);
}

static kp_status on_block_delta(kp_anthropic *a, json_t *data, kp_err *err)
{
    json_t *delta = json_object_get(data, "delta");
    const char *type = json_string_value(json_object_get(delta, "type"));
    if (!type || strcmp(type, "text_delta") != 0)
        return KP_OK;
    return emit_text(a, json_object_get(delta, "text"), err);
}

static kp_status on_message_delta(kp_anthropic *a, json_t *data)
{
    json_t *delta = json_object_get(data, "delta");
    kp_llm_copy_string(a->result.stop_reason, sizeof a->result.stop_reason, json_object_get(delta, "stop_reason"));
    read_usage(&a->result, json_object_get(data, "usage"));
    return KP_OK;
}

static kp_status on_error(kp_anthropic *a, json_t *data, kp_err *err)
{
    json_t *e = json_object_get(data, "error");
    snprintf(a->result.error_type, sizeof a->result.error_type, "%s", "error");
    kp_llm_copy_string(a->result.error_type, sizeof a->result.error_type, json_object_get(e, "type"));
    kp_llm_copy_string(a->result.error_message, sizeof a->result.error_message, json_object_get(e, "message"));
    return kp_err_set(err, KP_EUNAVAILABLE, "Anthropic API error: %s: %s", a->result.error_type,
                      a->result.error_message);
}

typedef enum event_kind {
    EV_IGNORED = 0,
    EV_MESSAGE_START,
    EV_BLOCK_START,
    EV_BLOCK_DELTA,
    EV_MESSAGE_DELTA,
    EV_MESSAGE_STOP,
    EV_ERROR
} event_kind;

/* Events whose data matters; ping, content_block_stop and unknown ones do not. */
static event_kind kind_of(const char *name)
{
    static const struct {
        const char *name;
        event_kind kind;
    } kinds[] = {
        {"message_start", EV_MESSAGE_START},     {"content_block_start", EV_BLOCK_START},
        {"content_block_delta", EV_BLOCK_DELTA}, {"message_delta", EV_MESSAGE_DELTA},
        {"message_stop", EV_MESSAGE_STOP},       {"error", EV_ERROR},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i].name, name) == 0)
            return kinds[i].kind;
    return EV_IGNORED;
}

/*
 * A content_block_delta read without a tree (core/jsonpick.h: the text events
 * are most of what the loop parses): 1 when it was (*st is the outcome), 0
 * when jansson has to read it.
 */
static int fast_block_delta(kp_anthropic *a, const char *data, size_t len, kp_status *st, kp_err *err)
{
    static const char text_delta[] = "text_delta";
    kp_jsonpick_field f[2] = {{.path = {"delta", "type"}}, {.path = {"delta", "text"}}};
    int read = kp_jsonpick(data, len, f, 2);
    int is_text = f[0].found && f[0].value.len == sizeof text_delta - 1 &&
                  memcmp(f[0].value.data, text_delta, sizeof text_delta - 1) == 0;
    if (read < 0)
        *st = kp_err_set(err, KP_ENOMEM, "out of memory");
    else if (read > 0 && is_text && f[1].found && f[1].value.len > 0 && a->on_text)
        *st = a->on_text(a->ud, f[1].value.data, f[1].value.len, err);
    else
        *st = KP_OK;
    kp_buf_free(&f[0].value);
    kp_buf_free(&f[1].value);
    return read != 0;
}

kp_status kp_anthropic_event(kp_anthropic *a, const char *event, const char *data, size_t len, kp_err *err)
{
    int unnamed = strcmp(event, "message") == 0;
    event_kind kind = unnamed ? EV_IGNORED : kind_of(event);
    if (kind == EV_IGNORED && !unnamed)
        return KP_OK;
    kp_status st = KP_OK;
    if (kind == EV_BLOCK_DELTA && fast_block_delta(a, data, len, &st, err))
        return st;

    json_t *root = kp_llm_json_load(data, len);
    if (!json_is_object(root)) {
        json_decref(root);
        if (unnamed) /* not ours to judge: an unnamed event is only used by its "type" */
            return KP_OK;
        return kp_err_set(err, KP_EIO, "Anthropic stream: %s event without a JSON object", event);
    }
    if (unnamed) {
        const char *type = json_string_value(json_object_get(root, "type"));
        kind = type ? kind_of(type) : EV_IGNORED;
    }

    switch (kind) {
    case EV_MESSAGE_START: st = on_message_start(a, root); break;
    case EV_BLOCK_START: st = on_block_start(a, root, err); break;
    case EV_BLOCK_DELTA: st = on_block_delta(a, root, err); break;
    case EV_MESSAGE_DELTA: st = on_message_delta(a, root); break;
    case EV_MESSAGE_STOP: a->result.done = 1; break;
    case EV_ERROR: st = on_error(a, root, err); break;
    case EV_IGNORED: break;
    }
    json_decref(root);
    return st;
}

int kp_anthropic_on_sse_event(void *ud, const char *event, const char *data, size_t len)
{
    kp_anthropic *a = ud;
    if (a->status != KP_OK)
        return 1;
    kp_status st = kp_anthropic_event(a, event, data, len, &a->err);
    if (st != KP_OK) {
        a->status = st;
        return 1;
    }
    return a->result.done;
}

/* ---- request body ---- */

static int append_to_buf(const char *s, size_t n, void *ud)
{
    return kp_buf_append(ud, s, n);
}

static int is_role(const char *role)
{
    return role && (strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0);
}

kp_status kp_llm_append_messages(json_t *arr, const kp_llm_msg *msgs, size_t n, kp_err *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!is_role(msgs[i].role))
            return kp_err_set(err, KP_EINVAL, "message %zu: role must be \"user\" or \"assistant\"", i);
        json_t *content = msgs[i].content ? json_string(msgs[i].content) : NULL;
        if (!content)
            return kp_err_set(err, KP_EINVAL, "message %zu: content missing or not UTF-8", i);
        if (json_array_append_new(arr, json_pack("{s:s, s:o}", "role", msgs[i].role, "content", content)) != 0)
            return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    return KP_OK;
}

kp_status kp_llm_dump_json(const json_t *body, kp_buf *out, kp_err *err)
{
    size_t start = out->len;
    if (json_dump_callback(body, append_to_buf, out, JSON_COMPACT) == 0)
        return KP_OK;
    out->len = start;
    if (out->data)
        out->data[start] = '\0';
    return kp_err_set(err, KP_ENOMEM, "out of memory");
}

kp_status kp_anthropic_build_request(const char *model, int64_t max_tokens, const char *system, const kp_llm_msg *msgs,
                                     size_t n, kp_buf *out, kp_err *err)
{
    kp_status st = KP_OK;
    json_t *root = NULL, *arr = NULL;

    if (!model || !*model || max_tokens < 1 || n == 0) {
        st = kp_err_set(err, KP_EINVAL, "a request needs a model, max_tokens >= 1 and a message");
        goto cleanup;
    }
    root = json_pack("{s:s, s:I}", "model", model, "max_tokens", (json_int_t)max_tokens);
    if (!root) {
        st = kp_err_set(err, KP_EINVAL, "model name is not UTF-8");
        goto cleanup;
    }
    if (!(arr = json_array())) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (system && *system && json_object_set_new(root, "system", json_string(system)) != 0) {
        st = kp_err_set(err, KP_EINVAL, "system prompt is not UTF-8");
        goto cleanup;
    }
    if ((st = kp_llm_append_messages(arr, msgs, n, err)) != KP_OK)
        goto cleanup;
    if (json_object_set(root, "messages", arr) != 0 || json_object_set_new(root, "stream", json_true()) != 0) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    st = kp_llm_dump_json(root, out, err);
cleanup:
    json_decref(arr);
    json_decref(root);
    return st;
}
