/*
 * test_prompt.c - what the model is sent (gen/prompt.c): the system prompt's
 * protocol, the conversation of a follow-up, the continuation after an output
 * cut short, the context-size estimate, UTF-8 counting and default names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "gen/prompt.h"

static void test_system_prompt_states_the_protocol(void **state)
{
    (void)state;
    const char *s = kp_prompt_system(0);
    assert_non_null(strstr(s, "<file path=\"index.html\">"));
    assert_non_null(strstr(s, "</file>"));
    assert_non_null(strstr(s, "<delete path="));
    assert_non_null(strstr(s, "no build step"));
}

/* Each app on its own origin: the model is told storage persists; on the
 * shared sandboxed origin, that it may be missing. The rules are the same. */
static void test_system_prompt_says_what_storage_the_app_has(void **state)
{
    (void)state;
    const char *shared = kp_prompt_system(0), *own = kp_prompt_system(1);
    assert_non_null(strstr(shared, "must still work when it is not"));
    assert_null(strstr(shared, "IndexedDB"));
    assert_non_null(strstr(own, "localStorage and IndexedDB work and persist"));
    assert_null(strstr(own, "must still work when it is not"));
    assert_non_null(strstr(own, "<delete path="));
    kp_prompt p;
    kp_err err = {0};
    assert_int_equal(kp_prompt_build(NULL, 0, NULL, 0, "a todo list", 1, &p, &err), KP_OK);
    assert_ptr_equal(p.system, own);
    kp_prompt_free(&p);
}

static void test_first_version_is_one_user_message(void **state)
{
    (void)state;
    kp_prompt p;
    kp_err err = {0};
    assert_int_equal(kp_prompt_build(NULL, 0, NULL, 0, "a todo list", 0, &p, &err), KP_OK);
    assert_int_equal(p.nmessages, 1);
    assert_string_equal(p.messages[0].role, "user");
    assert_string_equal(p.messages[0].content, "a todo list");
    kp_llm_request req;
    kp_prompt_request(&p, 4000, &req);
    assert_ptr_equal(req.system, kp_prompt_system(0));
    assert_int_equal(req.nmessages, 1);
    assert_int_equal(req.max_tokens, 4000);
    kp_prompt_free(&p);
}

static void test_follow_up_has_history_and_files(void **state)
{
    (void)state;
    kp_prompt p;
    kp_err err = {0};
    kp_prompt_turn turns[] = {{"a todo list", "Here it is."}, {"make it blue", ""}};
    kp_prompt_file files[] = {{"index.html", "<h1>x</h1>\n", 11}, {"app.js", "go()", 4}};
    assert_int_equal(kp_prompt_build(turns, 2, files, 2, "add dates", 0, &p, &err), KP_OK);
    assert_int_equal(p.nmessages, 5);
    const char *roles[] = {"user", "assistant", "user", "assistant", "user"};
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(p.messages[i].role, roles[i]);
    assert_string_equal(p.messages[0].content, "a todo list");
    assert_string_equal(p.messages[1].content, "Here it is.");
    assert_true(strlen(p.messages[3].content) > 0); /* never an empty message */
    const char *last = p.messages[4].content;
    /* a file ending in a newline keeps it: an empty line before </file> */
    assert_non_null(strstr(last, "<file path=\"index.html\">\n<h1>x</h1>\n\n</file>\n"));
    assert_non_null(strstr(last, "<file path=\"app.js\">\ngo()\n</file>\n"));
    assert_true(strlen(last) > strlen("add dates"));
    assert_string_equal(last + strlen(last) - strlen("add dates"), "add dates");
    kp_prompt_free(&p);
}

static void test_continuation_replaces_the_previous_one(void **state)
{
    (void)state;
    kp_prompt p;
    kp_err err = {0};
    assert_int_equal(kp_prompt_build(NULL, 0, NULL, 0, "an app", 0, &p, &err), KP_OK);
    const char *part1 = "<file path=\"index.html\">\nx\n</file>\n";
    assert_int_equal(kp_prompt_set_continuation(&p, part1, strlen(part1), &err), KP_OK);
    assert_int_equal(p.nmessages, 3);
    assert_string_equal(p.messages[1].role, "assistant");
    assert_string_equal(p.messages[1].content, part1);
    assert_string_equal(p.messages[2].role, "user");
    assert_non_null(strstr(p.messages[2].content, "cut off"));
    const char *part2 = "<file path=\"index.html\">\nx\n</file>\n<file path=\"a.js\">\ny\n</file>\n";
    assert_int_equal(kp_prompt_set_continuation(&p, part2, strlen(part2), &err), KP_OK);
    assert_int_equal(p.nmessages, 3);
    assert_string_equal(p.messages[1].content, part2);
    /* nothing whole yet: the request is asked again, with a note, and no empty assistant message */
    assert_int_equal(kp_prompt_set_continuation(&p, "", 0, &err), KP_OK);
    assert_int_equal(p.nmessages, 1);
    assert_true(strncmp(p.messages[0].content, "an app", 6) == 0);
    assert_non_null(strstr(p.messages[0].content, "cut off"));
    assert_int_equal(kp_prompt_set_continuation(&p, "", 0, &err), KP_OK);
    /* the note is not repeated */
    const char *first = strstr(p.messages[0].content, "cut off");
    assert_null(strstr(first + 1, "cut off"));
    kp_prompt_free(&p);
}

static void test_estimate_and_fit(void **state)
{
    (void)state;
    kp_prompt p;
    kp_err err = {0};
    char *big = malloc(30001);
    memset(big, 'a', 30000);
    big[30000] = '\0';
    assert_int_equal(kp_prompt_build(NULL, 0, NULL, 0, big, 0, &p, &err), KP_OK);
    int64_t t = kp_prompt_estimate_tokens(&p);
    assert_true(t >= 10000);
    assert_true(t < 10000 + (int64_t)strlen(kp_prompt_system(0)) / 3 + 100);
    assert_true(kp_prompt_fits(t, 16000, 200000));
    assert_false(kp_prompt_fits(t, 16000, 20000));
    assert_true(kp_prompt_fits(100, 100, 200));
    assert_false(kp_prompt_fits(101, 100, 200));
    kp_prompt_free(&p);
    free(big);
}

static void test_utf8_chars(void **state)
{
    (void)state;
    assert_int_equal(kp_prompt_utf8_chars("abc", 3), 3);
    assert_int_equal(kp_prompt_utf8_chars("\xc3\xa9t\xc3\xa9", 5), 3);
    assert_int_equal(kp_prompt_utf8_chars("\xf0\x9f\x98\x80", 4), 1);
    assert_int_equal(kp_prompt_utf8_chars("\xc3", 1), -1);         /* cut */
    assert_int_equal(kp_prompt_utf8_chars("\xc0\x80", 2), -1);     /* overlong */
    assert_int_equal(kp_prompt_utf8_chars("\xed\xa0\x80", 3), -1); /* surrogate */
    assert_int_equal(kp_prompt_utf8_chars("", 0), 0);
}

static void test_default_names(void **state)
{
    (void)state;
    char name[128];
    kp_prompt_default_name("  A   todo\tlist app\nwith more details", name, sizeof name);
    assert_string_equal(name, "A todo list app");
    kp_prompt_default_name("   \n  ", name, sizeof name);
    assert_string_equal(name, "Untitled app");
    kp_prompt_default_name("Build me a beautiful interactive periodic table of the elements with search and "
                           "filters",
                           name, sizeof name);
    assert_true(kp_prompt_utf8_chars(name, strlen(name)) <= 63);
    assert_string_equal(name + strlen(name) - 3, "...");
    assert_true(strncmp(name, "Build me a beautiful interactive periodic table", 47) == 0);
    assert_int_not_equal(name[strlen(name) - 4], ' ');
    /* multi-byte characters are never cut and the bytes fit */
    char small[16];
    kp_prompt_default_name("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", small,
                           sizeof small);
    assert_true(strlen(small) < sizeof small);
    assert_true(kp_prompt_utf8_chars(small, strlen(small)) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_system_prompt_states_the_protocol),
        cmocka_unit_test(test_system_prompt_says_what_storage_the_app_has),
        cmocka_unit_test(test_first_version_is_one_user_message),
        cmocka_unit_test(test_follow_up_has_history_and_files),
        cmocka_unit_test(test_continuation_replaces_the_previous_one),
        cmocka_unit_test(test_estimate_and_fit),
        cmocka_unit_test(test_utf8_chars),
        cmocka_unit_test(test_default_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
