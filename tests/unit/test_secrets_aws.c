/*
 * test_secrets_aws.c - the AWS Secrets Manager source (secrets/secrets_aws.c)
 * without the network: parsing a GetSecretValue answer (plain text, a JSON
 * object with the exact keys or the lower-case aliases, a missing key, an
 * empty or non-string value, SecretBinary, a malformed answer or object),
 * that no message holds a value, that jansson's copies of the values are
 * wiped before they are freed (jansson's allocator is replaced here to look
 * at each block as it is freed), and the source's set-up: region and
 * endpoint required, names without a secret id going to the fallback.
 * GetSecretValue itself is tested against moto in
 * tests/integration/secrets-aws.test.mjs.
 */
#include <jansson.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "secrets/secrets.h"
#include "secrets/secrets_aws.h"

#define ID "koumpa/test"
#define KEY "sk-ant-0123456789-the-key"
#define STRIPE_KEY "sk_test_51Koumpa0123456789"
#define WEBHOOK "whsec_0123456789abcdef"

/* ---- jansson's allocator, watched: is a freed block a live copy of a value? ---- */

static const char *watched_value; /* NULL: not watching */
static int unwiped_frees;

/* jansson keeps each decoded string as its own block: the value then a NUL.
 * Blocks come from malloc (others free jansson's json_dumps with free()). */
static void watch_free(void *p)
{
    size_t vlen = watched_value ? strlen(watched_value) : 0;
    if (p && vlen && malloc_usable_size(p) >= vlen + 1 && memcmp(p, watched_value, vlen) == 0 &&
        ((char *)p)[vlen] == '\0')
        unwiped_frees++;
    free(p);
}

/* ---- helpers ---- */

/* A GetSecretValue answer whose SecretString is text (encoded by jansson). */
static char *answer_with(const char *text)
{
    json_t *a = json_pack("{s:s, s:s, s:s, s:[s]}", "ARN", "arn:aws:secretsmanager:us-east-1:1:secret:" ID "-AbCdEf",
                          "Name", ID, "SecretString", text, "VersionStages", "AWSCURRENT");
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    assert_non_null(s);
    return s;
}

static void parse_gives(const char *body, const char *name, const char *expected)
{
    char *v = NULL;
    size_t len = 0;
    kp_err err = {0};
    kp_status rc = kp_secrets_aws_parse(body, strlen(body), ID, name, &v, &len, &err);
    if (rc != KP_OK)
        fail_msg("parse %s: %s", name, err.msg);
    assert_int_equal(len, strlen(expected));
    assert_string_equal(v, expected);
    kp_secrets_value_free(v, len);
}

/* Fails with status; the message holds in_msg and none of the test's values. */
static void parse_fails(const char *body, const char *name, kp_status status, const char *in_msg)
{
    char *v = NULL;
    size_t len = 0;
    kp_err err = {0};
    assert_int_equal(kp_secrets_aws_parse(body, strlen(body), ID, name, &v, &len, &err), status);
    assert_null(v);
    assert_int_equal(len, 0);
    if (!strstr(err.msg, in_msg))
        fail_msg("\"%s\" does not hold \"%s\"", err.msg, in_msg);
    const char *values[] = {KEY, STRIPE_KEY, WEBHOOK, "0123456789"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        if (strstr(err.msg, values[i]))
            fail_msg("\"%s\" holds a value", err.msg);
}

/* ---- parsing ---- */

static void test_plain_text_is_the_first_name(void **state)
{
    (void)state;
    char *a = answer_with(KEY);
    parse_gives(a, KP_SECRET_ANTHROPIC_API_KEY, KEY);
    parse_gives(a, KP_SECRET_JWT_SECRET, KEY);
    parse_gives(a, KP_SECRET_STRIPE_SECRET_KEY, KEY);
    /* the webhook secret needs a JSON object */
    parse_fails(a, KP_SECRET_STRIPE_WEBHOOK_SECRET, KP_ENOTFOUND, "plain text");
    free(a);
}

static void test_plain_text_loses_one_trailing_newline(void **state)
{
    (void)state;
    char *a = answer_with(KEY "\r\n");
    parse_gives(a, KP_SECRET_ANTHROPIC_API_KEY, KEY);
    free(a);
    a = answer_with(KEY "\n\n");
    parse_gives(a, KP_SECRET_ANTHROPIC_API_KEY, KEY "\n");
    free(a);
    a = answer_with("\n");
    parse_fails(a, KP_SECRET_ANTHROPIC_API_KEY, KP_ENOTFOUND, "empty");
    free(a);
}

static void test_json_object_with_both_stripe_keys(void **state)
{
    (void)state;
    char *a = answer_with(" {\"STRIPE_SECRET_KEY\": \"" STRIPE_KEY "\", \"STRIPE_WEBHOOK_SECRET\": \"" WEBHOOK "\"}");
    parse_gives(a, KP_SECRET_STRIPE_SECRET_KEY, STRIPE_KEY);
    parse_gives(a, KP_SECRET_STRIPE_WEBHOOK_SECRET, WEBHOOK);
    free(a);
}

static void test_json_object_lower_case_aliases_exact_name_wins(void **state)
{
    (void)state;
    char *a = answer_with("{\"secret_key\": \"" STRIPE_KEY "\", \"webhook_secret\": \"" WEBHOOK "\"}");
    parse_gives(a, KP_SECRET_STRIPE_SECRET_KEY, STRIPE_KEY);
    parse_gives(a, KP_SECRET_STRIPE_WEBHOOK_SECRET, WEBHOOK);
    free(a);
    a = answer_with("{\"api_key\": \"alias\", \"ANTHROPIC_API_KEY\": \"" KEY "\"}");
    parse_gives(a, KP_SECRET_ANTHROPIC_API_KEY, KEY);
    free(a);
    /* escapes are decoded */
    a = answer_with("{\"api_key\": \"a\\u00e9\\\"b\"}");
    parse_gives(a, KP_SECRET_ANTHROPIC_API_KEY, "a\xc3\xa9\"b");
    free(a);
}

static void test_json_object_missing_key_is_not_set(void **state)
{
    (void)state;
    char *a = answer_with("{\"STRIPE_SECRET_KEY\": \"" STRIPE_KEY "\"}");
    parse_gives(a, KP_SECRET_STRIPE_SECRET_KEY, STRIPE_KEY);
    parse_fails(a, KP_SECRET_STRIPE_WEBHOOK_SECRET, KP_ENOTFOUND,
                "STRIPE_WEBHOOK_SECRET is not set: secret " ID
                " has no key STRIPE_WEBHOOK_SECRET (nor webhook_secret)");
    free(a);
    a = answer_with("{\"STRIPE_WEBHOOK_SECRET\": \"" WEBHOOK "\"}");
    parse_fails(a, KP_SECRET_STRIPE_SECRET_KEY, KP_ENOTFOUND, "has no key STRIPE_SECRET_KEY");
    free(a);
    a = answer_with("{\"STRIPE_SECRET_KEY\": \"\"}");
    parse_fails(a, KP_SECRET_STRIPE_SECRET_KEY, KP_ENOTFOUND, "empty");
    free(a);
}

static void test_json_object_value_not_a_string(void **state)
{
    (void)state;
    char *a = answer_with("{\"STRIPE_SECRET_KEY\": 1234567, \"STRIPE_WEBHOOK_SECRET\": {\"v\": \"" WEBHOOK "\"}}");
    parse_fails(a, KP_SECRET_STRIPE_SECRET_KEY, KP_EUNAVAILABLE, "the value of STRIPE_SECRET_KEY is not a string");
    parse_fails(a, KP_SECRET_STRIPE_WEBHOOK_SECRET, KP_EUNAVAILABLE, "is not a string");
    free(a);
}

static void test_secret_binary_is_refused(void **state)
{
    (void)state;
    const char *a = "{\"ARN\":\"arn\",\"Name\":\"" ID "\",\"SecretBinary\":\"c2stYW50LTAxMjM0NTY3ODk=\"}";
    parse_fails(a, KP_SECRET_ANTHROPIC_API_KEY, KP_EUNAVAILABLE,
                "secret " ID " holds a SecretBinary: Koumpa reads SecretString only");
    parse_fails("{\"Name\":\"" ID "\"}", KP_SECRET_ANTHROPIC_API_KEY, KP_EUNAVAILABLE, "without a SecretString");
}

static void test_malformed_json(void **state)
{
    (void)state;
    /* the answer itself */
    parse_fails("{\"SecretString\": \"" KEY, KP_SECRET_ANTHROPIC_API_KEY, KP_EUNAVAILABLE,
                "answered with a body that is not a JSON object");
    parse_fails("[\"" KEY "\"]", KP_SECRET_ANTHROPIC_API_KEY, KP_EUNAVAILABLE,
                "answered with a body that is not a JSON object");
    parse_fails("", KP_SECRET_ANTHROPIC_API_KEY, KP_EUNAVAILABLE, "answered with a body that is not a JSON object");
    /* a SecretString that starts as an object: its position, never jansson's quote of the text */
    char *a = answer_with("{\"STRIPE_SECRET_KEY\": \"" STRIPE_KEY "\" \"STRIPE_WEBHOOK_SECRET\": 0123456789}");
    parse_fails(a, KP_SECRET_STRIPE_SECRET_KEY, KP_EUNAVAILABLE,
                "secret " ID " starts with '{' but is not a JSON object (at line 1, column");
    free(a);
    a = answer_with("{\"STRIPE_SECRET_KEY\": \"a\", \"STRIPE_SECRET_KEY\": \"b\"}");
    parse_fails(a, KP_SECRET_STRIPE_SECRET_KEY, KP_EUNAVAILABLE, "not a JSON object");
    free(a);
}

static void test_unknown_name_is_not_set(void **state)
{
    (void)state;
    char *a = answer_with(KEY);
    parse_fails(a, "OPENAI_API_KEY", KP_ENOTFOUND, "not read from Secrets Manager");
    free(a);
}

static void test_jansson_copies_are_wiped(void **state)
{
    (void)state;
    char *a = answer_with(KEY); /* the answer's SecretString is the value itself */
    char *b = answer_with("{\"STRIPE_SECRET_KEY\": \"" STRIPE_KEY "\", \"webhook_secret\": \"" WEBHOOK "\"}");
    const char *cases[][3] = {{a, KP_SECRET_ANTHROPIC_API_KEY, KEY},
                              {b, KP_SECRET_STRIPE_SECRET_KEY, STRIPE_KEY},
                              {b, KP_SECRET_STRIPE_SECRET_KEY, WEBHOOK},
                              {b, KP_SECRET_STRIPE_WEBHOOK_SECRET, WEBHOOK}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *v = NULL;
        size_t len = 0;
        kp_err err = {0};
        watched_value = cases[i][2];
        unwiped_frees = 0;
        assert_int_equal(kp_secrets_aws_parse(cases[i][0], strlen(cases[i][0]), ID, cases[i][1], &v, &len, &err),
                         KP_OK);
        watched_value = NULL;
        kp_secrets_value_free(v, len);
        if (unwiped_frees)
            fail_msg("case %zu: %d jansson block(s) freed holding the value", i, unwiped_frees);
    }
    /* the watch sees what it should: a tree freed without wiping is caught */
    json_t *t = json_string(KEY);
    watched_value = KEY;
    unwiped_frees = 0;
    json_decref(t);
    watched_value = NULL;
    assert_int_equal(unwiped_frees, 1);
    free(a);
    free(b);
}

/* ---- the source ---- */

static int fallback_reads;

static kp_status fallback_read(void *impl, const char *name, char **out, size_t *len, kp_err *err)
{
    (void)impl;
    (void)err;
    fallback_reads++;
    *out = strdup(name);
    *len = strlen(name);
    return KP_OK;
}

static int fallback_closed;

static void fallback_close(void *impl)
{
    (void)impl;
    fallback_closed++;
}

static const kp_secrets_source_ops fallback_ops = {.read = fallback_read, .close = fallback_close};

static int clear_aws_env(void **state)
{
    (void)state;
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    unsetenv("AWS_ENDPOINT_URL");
    unsetenv("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    fallback_reads = fallback_closed = 0;
    return 0;
}

static void test_new_needs_a_region_and_a_good_endpoint(void **state)
{
    (void)state;
    kp_secrets_aws_options o = {.anthropic_id = ID};
    kp_secrets_source src = {0};
    kp_secrets_source fb = {&fallback_ops, NULL};
    kp_err err = {0};
    assert_int_equal(kp_secrets_aws_new(&o, fb, &src, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "KOUMPA_SECRETS=aws needs AWS_REGION"));
    assert_int_equal(fallback_closed, 1); /* taken, also on failure */
    setenv("AWS_REGION", "eu-west-3", 1);
    setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "ftp://127.0.0.1:1", 1);
    assert_int_equal(kp_secrets_aws_new(&o, fb, &src, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "AWS_ENDPOINT_URL_SECRETS_MANAGER"));
    assert_int_equal(fallback_closed, 2);
}

static void test_names_without_an_id_go_to_the_fallback(void **state)
{
    (void)state;
    kp_secrets_aws_options o = {.anthropic_id = ID, .jwt_id = ""};
    kp_secrets_source src = {0};
    kp_err err = {0};
    char *v = NULL;
    size_t len = 0;
    setenv("AWS_REGION", "eu-west-3", 1);
    assert_int_equal(kp_secrets_aws_new(&o, (kp_secrets_source){&fallback_ops, NULL}, &src, &err), KP_OK);
    const char *to_fallback[] = {KP_SECRET_JWT_SECRET, KP_SECRET_STRIPE_SECRET_KEY, KP_SECRET_STRIPE_WEBHOOK_SECRET,
                                 "OTHER"};
    for (size_t i = 0; i < sizeof to_fallback / sizeof to_fallback[0]; i++) {
        assert_int_equal(src.ops->read(src.impl, to_fallback[i], &v, &len, &err), KP_OK);
        assert_string_equal(v, to_fallback[i]);
        kp_secrets_value_free(v, len);
    }
    assert_int_equal(fallback_reads, 4);
    src.ops->close(src.impl);
    assert_int_equal(fallback_closed, 1);

    /* no fallback: not set, naming the setting */
    assert_int_equal(kp_secrets_aws_new(&o, (kp_secrets_source){0}, &src, &err), KP_OK);
    assert_int_equal(src.ops->read(src.impl, KP_SECRET_STRIPE_WEBHOOK_SECRET, &v, &len, &err), KP_ENOTFOUND);
    assert_null(v);
    assert_string_equal(err.msg, "STRIPE_WEBHOOK_SECRET is not set (KOUMPA_SECRET_ID_STRIPE is not set)");
    src.ops->close(src.impl);
}

static void test_unreachable_endpoint_names_the_secret(void **state)
{
    (void)state;
    kp_secrets_aws_options o = {.anthropic_id = ID, .max_attempts = 1, .timeout_ms = 2000};
    kp_secrets_source src = {0};
    kp_err err = {0};
    char *v = NULL;
    size_t len = 0;
    setenv("AWS_REGION", "eu-west-3", 1);
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1", 1); /* nothing listens on port 1 */
    setenv("AWS_ACCESS_KEY_ID", "AKIDUNITTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "unit-test-secret", 1);
    assert_int_equal(kp_secrets_aws_new(&o, (kp_secrets_source){0}, &src, &err), KP_OK);
    assert_int_equal(src.ops->read(src.impl, KP_SECRET_ANTHROPIC_API_KEY, &v, &len, &err), KP_EUNAVAILABLE);
    assert_null(v);
    if (!strstr(err.msg, "secret " ID " (KOUMPA_SECRET_ID_ANTHROPIC): secretsmanager: no answer after 1 attempt"))
        fail_msg("%s", err.msg);
    assert_null(strstr(err.msg, "unit-test-secret"));
    src.ops->close(src.impl);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
}

int main(void)
{
    json_set_alloc_funcs(malloc, watch_free);
#define T(f) cmocka_unit_test_setup_teardown(f, clear_aws_env, clear_aws_env)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_text_is_the_first_name),
        cmocka_unit_test(test_plain_text_loses_one_trailing_newline),
        cmocka_unit_test(test_json_object_with_both_stripe_keys),
        cmocka_unit_test(test_json_object_lower_case_aliases_exact_name_wins),
        cmocka_unit_test(test_json_object_missing_key_is_not_set),
        cmocka_unit_test(test_json_object_value_not_a_string),
        cmocka_unit_test(test_secret_binary_is_refused),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_unknown_name_is_not_set),
        cmocka_unit_test(test_jansson_copies_are_wiped),
        T(test_new_needs_a_region_and_a_good_endpoint),
        T(test_names_without_an_id_go_to_the_fallback),
        T(test_unreachable_endpoint_names_the_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
