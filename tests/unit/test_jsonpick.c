/*
 * test_jsonpick.c - string fields read without a tree (src/core/jsonpick.c):
 * where the reader answers, it says what jansson's tree says (jansson is the
 * oracle here); it hands back to jansson exactly the data jansson might judge
 * otherwise (escapes, loose UTF-8, large numbers, deep nesting, anything not
 * one JSON object).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "core/buf.h"
#include "core/jsonpick.h"

/* The fields every case is read for: a provider's text event's two, a delta event's one, a deeper one. */
#define NFIELDS 4
static kp_jsonpick_field fields[NFIELDS] = {
    {.path = {"delta", "type"}},
    {.path = {"delta", "text"}},
    {.path = {"text"}},
    {.path = {"a", "b", "c", "d"}},
};

/* jansson's value at f's path, or NULL. */
static json_t *oracle_at(json_t *root, const kp_jsonpick_field *f)
{
    json_t *v = root;
    for (size_t k = 0; k < KP_JSONPICK_PATH_MAX && f->path[k]; k++)
        v = json_object_get(v, f->path[k]);
    return v;
}

/* Reads data both ways; returns what the reader returned, after checking that it agrees with jansson. */
static int read_and_compare(const char *data, size_t len)
{
    int got = kp_jsonpick(data, len, fields, NFIELDS);
    assert_true(got == 0 || got == 1);
    if (got == 1) {
        json_t *root = json_loadb(data, len, 0, NULL);
        assert_true(json_is_object(root));
        for (size_t i = 0; i < NFIELDS; i++) {
            json_t *v = oracle_at(root, &fields[i]);
            assert_int_equal(fields[i].found, json_is_string(v));
            if (json_is_string(v)) {
                assert_int_equal(fields[i].value.len, json_string_length(v));
                assert_memory_equal(fields[i].value.data, json_string_value(v), json_string_length(v));
            }
        }
        json_decref(root);
    }
    return got;
}

static int read_str(const char *data)
{
    return read_and_compare(data, strlen(data));
}

static void free_fields(void)
{
    for (size_t i = 0; i < NFIELDS; i++)
        kp_buf_free(&fields[i].value);
}

static void test_reads_the_fields(void **state)
{
    (void)state;
    assert_int_equal(
        read_str(
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}"),
        1);
    assert_true(fields[0].found && fields[1].found && !fields[2].found && !fields[3].found);
    assert_string_equal(kp_buf_cstr(&fields[0].value), "text_delta");
    assert_string_equal(kp_buf_cstr(&fields[1].value), "Hello");
    assert_int_equal(read_str("{\"text\":\"<h1>\\n\",\"a\":{\"b\":{\"c\":{\"d\":\"deep\"}}}}"), 1);
    assert_true(!fields[0].found && !fields[1].found && fields[2].found && fields[3].found);
    assert_string_equal(kp_buf_cstr(&fields[2].value), "<h1>\n");
    assert_string_equal(kp_buf_cstr(&fields[3].value), "deep");
    /* read again: nothing of the last object is left */
    assert_int_equal(read_str("{\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}"), 1);
    assert_true(fields[0].found && !fields[1].found && !fields[2].found && !fields[3].found);
    assert_int_equal(fields[1].value.len, 0);
    /* a path without keys, or too many fields: handed back */
    kp_jsonpick_field none = {.path = {NULL}};
    assert_int_equal(kp_jsonpick("{}", 2, &none, 1), 0);
    kp_jsonpick_field many[KP_JSONPICK_FIELDS_MAX + 1];
    for (size_t i = 0; i < KP_JSONPICK_FIELDS_MAX + 1; i++)
        many[i] = (kp_jsonpick_field){.path = {"a"}}; /* each valid: only their number is refused */
    assert_int_equal(kp_jsonpick("{}", 2, many, KP_JSONPICK_FIELDS_MAX + 1), 0);
    free_fields();
}

/* Data the reader answers for, each as jansson reads it. */
static void test_agrees_with_jansson(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "{\"delta\":{\"text\":\"a\\n\\\"b\\\"\\\\ \\/ \\t\\r\\b\\f\",\"type\":\"text_delta\"}}", /* escapes, key order
                                                                                                  */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"\xE2\x80\x94 caf\xC3\xA9 \xF0\x9F\x99\x82\"}}", /* UTF-8 */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"},\"delta\":5}",                /* last delta wins */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"},\"delta\":{\"text\":\"b\"}}", /* ... whole */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\",\"text\":\"b\"}}",             /* last text wins */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\",\"text\":1}}",                 /* ... even a number */
        "{\"delta\":{\"type\":\"text_delta\",\"type\":\"x\",\"text\":\"a\"}}",             /* last type wins */
        "{\"delta\":{\"type\":[\"text_delta\"],\"text\":\"a\"}}",                          /* type not a string */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":{\"text\":\"a\"}}}",                 /* text not a string */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"\"}}",                             /* empty text */
        "{\"delta\":{\"type\":\"text_delta\"}}",                                           /* no text */
        "{\"delta\":\"text_delta\",\"text\":\"a\"}",                                       /* delta not an object */
        "{\"x\":{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}}",                    /* delta not at the root */
        "{\"delta\":{\"x\":{\"type\":\"text_delta\",\"text\":\"a\"}}}",                    /* fields one level down */
        "{\"delta\":{\"type\":\"text_delta\",\"a\":[1,2.5,-3,true,false,null,{}],\"text\":\"b\"},\"index\":123456789}",
        " \t\r\n{\"delta\":{\"type\":\"text_delta\",\"text\":\"ws\"}} \n", /* white space */
        "{}",
        "{\"text\":\"a\",\"text\":\"b\",\"a\":{\"b\":{\"c\":{\"d\":1}}},\"a\":{\"b\":{\"c\":{\"d\":\"x\"}}}}",
        "{\"a\":{\"b\":{\"c\":{\"d\":\"x\"}},\"b\":{}}}",           /* a later twin of a key on the path */
        "{\"a\":[{\"b\":{\"c\":{\"d\":\"x\"}}}],\"text\":[\"t\"]}", /* no path goes into an array */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = read_str(cases[i]);
        if (got != 1)
            fail_msg("case %zu was handed back to jansson: %s", i, cases[i]);
    }
    free_fields();
}

/* Data jansson might judge otherwise is handed back to it (0), never read. */
static void test_hands_back_what_jansson_must_judge(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"caf\\u00e9\"}}", /* any \u escape */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"\\u0000\"}}",
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"\xC0\xAF\"}}",         /* overlong UTF-8 */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"\xED\xA0\x80\"}}",     /* a surrogate in UTF-8 */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"\xF4\x90\x80\x80\"}}", /* above U+10FFFF */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\xE2\x80\"}}",        /* cut character */
        "{\"index\":1234567890123456,\"delta\":{}}",                           /* 16 characters */
        "{\"index\":99999999999999999999,\"delta\":{}}",                       /* jansson: too big */
        "{\"index\":1e999,\"delta\":{}}",                                      /* jansson: overflow */
        "{\"index\":1E2,\"delta\":{}}",
        "[{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}]", /* not an object */
        "\"text_delta\"",
        "5",
        "null",
        "",
        "   ",
        "{\"delta\":{}}x", /* trailing bytes */
        "{}{}",
        "{}\"", /* an unfinished token after the object, which yajl alone lets pass */
        "{}\"}",
        "{\f\"delta\":{}}", /* white space to yajl, not to JSON */
        "{\"delta\":{}}\v",
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}",     /* cut short */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\tb\"}}", /* a raw control character */
        "{\"delta\":{\"type\":\"text_delta\",\"text\":'a'}}",
        "{/* c */\"delta\":{}}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (read_str(cases[i]) != 0)
            fail_msg("case %zu was read, not handed back: %s", i, cases[i]);
    /* a NUL byte inside the data */
    static const char nul[] = "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\0b\"}}";
    assert_int_equal(read_and_compare(nul, sizeof nul - 1), 0);
    free_fields();
}

/* 64 containers deep is read; one more is jansson's to judge (its limit is 2048). */
static void test_depth_limit(void **state)
{
    (void)state;
    for (int depth = 63; depth <= 65; depth++) {
        kp_buf b = KP_BUF_INIT;
        assert_int_equal(kp_buf_puts(&b, "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"},\"x\":"), 0);
        for (int i = 1; i < depth; i++)
            assert_int_equal(kp_buf_puts(&b, "["), 0);
        for (int i = 1; i < depth; i++)
            assert_int_equal(kp_buf_puts(&b, "]"), 0);
        assert_int_equal(kp_buf_puts(&b, "}"), 0);
        assert_int_equal(read_and_compare(b.data, b.len), depth <= 64 ? 1 : 0);
        kp_buf_free(&b);
    }
    free_fields();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_the_fields),
        cmocka_unit_test(test_agrees_with_jansson),
        cmocka_unit_test(test_hands_back_what_jansson_must_judge),
        cmocka_unit_test(test_depth_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
