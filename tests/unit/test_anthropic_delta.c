/*
 * test_anthropic_delta.c - the tree-less reader of content_block_delta events
 * (src/llm/anthropic_delta.c): where it answers, it says what jansson's tree
 * says (jansson is the oracle here); it hands back to jansson exactly the
 * data jansson might judge otherwise (escapes, loose UTF-8, large numbers,
 * deep nesting, anything not one JSON object).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "core/buf.h"
#include "llm/anthropic_delta.h"

/* jansson's reading: 1 and the fields for an object, 0 otherwise. */
static int oracle(const char *data, size_t len, int *is_text, json_t **text)
{
    json_t *root = json_loadb(data, len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return 0;
    }
    json_t *delta = json_object_get(root, "delta");
    const char *type = json_string_value(json_object_get(delta, "type"));
    *is_text = type && strcmp(type, "text_delta") == 0;
    *text = json_incref(json_object_get(delta, "text"));
    json_decref(root);
    return 1;
}

/* Reads data both ways; returns what the reader returned, after checking that it agrees with jansson. */
static int read_and_compare(const char *data, size_t len, kp_anthropic_delta *d)
{
    int got = kp_anthropic_delta_read(data, len, d);
    assert_true(got == 0 || got == 1);
    if (got == 1) {
        int is_text = 0;
        json_t *text = NULL;
        assert_int_equal(oracle(data, len, &is_text, &text), 1);
        assert_int_equal(d->is_text, is_text);
        assert_int_equal(d->has_text, json_is_string(text));
        if (json_is_string(text)) {
            assert_int_equal(d->text.len, json_string_length(text));
            assert_memory_equal(d->text.data, json_string_value(text), d->text.len);
        }
        json_decref(text);
    }
    return got;
}

static int read_str(const char *data, kp_anthropic_delta *d)
{
    return read_and_compare(data, strlen(data), d);
}

static void test_reads_a_text_delta(void **state)
{
    (void)state;
    kp_anthropic_delta d = {.text = KP_BUF_INIT};
    assert_int_equal(
        read_str(
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}",
            &d),
        1);
    assert_true(d.is_text && d.has_text);
    assert_string_equal(kp_buf_cstr(&d.text), "Hello");
    /* the same reader again: nothing of the last event is left */
    assert_int_equal(read_str("{\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}", &d), 1);
    assert_false(d.is_text || d.has_text);
    assert_int_equal(d.text.len, 0);
    kp_buf_free(&d.text);
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
    };
    kp_anthropic_delta d = {.text = KP_BUF_INIT};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = read_str(cases[i], &d);
        if (got != 1)
            fail_msg("case %zu was handed back to jansson: %s", i, cases[i]);
    }
    kp_buf_free(&d.text);
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
    kp_anthropic_delta d = {.text = KP_BUF_INIT};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (read_str(cases[i], &d) != 0)
            fail_msg("case %zu was read, not handed back: %s", i, cases[i]);
    /* a NUL byte inside the data */
    static const char nul[] = "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\0b\"}}";
    assert_int_equal(read_and_compare(nul, sizeof nul - 1, &d), 0);
    kp_buf_free(&d.text);
}

/* 64 containers deep is read; one more is jansson's to judge (its limit is 2048). */
static void test_depth_limit(void **state)
{
    (void)state;
    kp_anthropic_delta d = {.text = KP_BUF_INIT};
    for (int depth = 63; depth <= 65; depth++) {
        kp_buf b = KP_BUF_INIT;
        assert_int_equal(kp_buf_puts(&b, "{\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"},\"x\":"), 0);
        for (int i = 1; i < depth; i++)
            assert_int_equal(kp_buf_puts(&b, "["), 0);
        for (int i = 1; i < depth; i++)
            assert_int_equal(kp_buf_puts(&b, "]"), 0);
        assert_int_equal(kp_buf_puts(&b, "}"), 0);
        assert_int_equal(read_and_compare(b.data, b.len, &d), depth <= 64 ? 1 : 0);
        kp_buf_free(&b);
    }
    kp_buf_free(&d.text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_a_text_delta),
        cmocka_unit_test(test_agrees_with_jansson),
        cmocka_unit_test(test_hands_back_what_jansson_must_judge),
        cmocka_unit_test(test_depth_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
