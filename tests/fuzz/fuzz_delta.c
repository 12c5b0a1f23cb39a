/*
 * fuzz_delta.c - libFuzzer target for the tree-less reader of
 * content_block_delta events (src/llm/anthropic_delta.c), against jansson.
 *
 * The input is one event's data. Whenever the reader answers (returns 1),
 * jansson must read the data as an object, and its delta.type and delta.text
 * must say what the reader said: the fast path never changes what a stream
 * means. Where the reader hands the data back (0), jansson decides, as before.
 */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "harness.h"
#include "llm/anthropic_delta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kp_anthropic_delta d = {.text = KP_BUF_INIT};
    int got = kp_anthropic_delta_read((const char *)data, size, &d);
    FZ_CHECK(got == 0 || got == 1, "the reader failed");
    if (got == 1) {
        json_t *root = json_loadb((const char *)data, size, 0, NULL);
        FZ_CHECK(json_is_object(root), "the reader read what jansson refuses or does not read as an object");
        json_t *delta = json_object_get(root, "delta");
        const char *type = json_string_value(json_object_get(delta, "type"));
        json_t *text = json_object_get(delta, "text");
        FZ_CHECK(d.is_text == (type && strcmp(type, "text_delta") == 0), "delta.type read otherwise than jansson");
        FZ_CHECK(d.has_text == json_is_string(text), "delta.text found otherwise than jansson");
        FZ_CHECK(!d.has_text || (d.text.len == json_string_length(text) &&
                                 memcmp(d.text.data, json_string_value(text), d.text.len) == 0),
                 "delta.text read otherwise than jansson");
        json_decref(root);
    }
    kp_buf_free(&d.text);
    return 0;
}
