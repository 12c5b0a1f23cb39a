/*
 * fuzz_jsonpick.c - libFuzzer target for the tree-less string reader
 * (src/core/jsonpick.c), against jansson.
 *
 * The input is one object's text (a provider's event, a stored delta event).
 * It is read for four fields: a text event's delta.type and delta.text, a
 * delta event's text, and a deeper a.b.c.d. Whenever the reader answers
 * (returns 1), jansson must read the data as an object, and each field must be
 * found exactly where jansson's tree has a string at its path, with the same
 * bytes: the fast path never changes what the data means. Where the reader
 * hands the data back (0), jansson decides, as the callers do.
 */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "core/jsonpick.h"
#include "harness.h"

#define NFIELDS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kp_jsonpick_field f[NFIELDS] = {
        {.path = {"delta", "type"}},
        {.path = {"delta", "text"}},
        {.path = {"text"}},
        {.path = {"a", "b", "c", "d"}},
    };
    int got = kp_jsonpick((const char *)data, size, f, NFIELDS);
    FZ_CHECK(got == 0 || got == 1, "the reader failed");
    if (got == 1) {
        json_t *root = json_loadb((const char *)data, size, 0, NULL);
        FZ_CHECK(json_is_object(root), "the reader read what jansson refuses or does not read as an object");
        for (size_t i = 0; i < NFIELDS; i++) {
            json_t *v = root;
            for (size_t k = 0; k < KP_JSONPICK_PATH_MAX && f[i].path[k]; k++)
                v = json_object_get(v, f[i].path[k]);
            FZ_CHECK(f[i].found == json_is_string(v), "a field found otherwise than jansson");
            FZ_CHECK(!f[i].found || (f[i].value.len == json_string_length(v) &&
                                     memcmp(f[i].value.data, json_string_value(v), f[i].value.len) == 0),
                     "a field read otherwise than jansson");
        }
        json_decref(root);
    }
    for (size_t i = 0; i < NFIELDS; i++)
        kp_buf_free(&f[i].value);
    return 0;
}
