/*
 * test_aws_lambda.c - generate-app's asynchronous self-invocation, the parts
 * that need no server (tests/integration/lambda-invoke.test.mjs runs the rest
 * against the fake Invoke API): the Invoke path with a function name or an
 * ARN, the endpoint (override, region), the worker event out and back in,
 * and the dispatcher's refusal when Lambda's variables are missing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "aws/aws_lambda.h"
#include "core/log.h"
#include "host/lambda/worker.h"

static void test_invoke_path(void **state)
{
    (void)state;
    kp_buf b = KP_BUF_INIT;
    assert_int_equal(kp_aws_lambda_invoke_path(&b, "koumpa-prod-generate-app"), 0);
    assert_string_equal(kp_buf_cstr(&b), "/2015-03-31/functions/koumpa-prod-generate-app/invocations");
    kp_buf_reset(&b);
    /* an ARN is one path segment: its colons encoded, as the AWS SDKs send it */
    assert_int_equal(kp_aws_lambda_invoke_path(&b, "arn:aws:lambda:eu-west-1:123456789012:function:fn:live"), 0);
    assert_string_equal(kp_buf_cstr(&b),
                        "/2015-03-31/functions/"
                        "arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Afn%3Alive/invocations");
    kp_buf_free(&b);
}

static void test_client_endpoint(void **state)
{
    (void)state;
    kp_aws_lambda *l = NULL;
    kp_err err = {0};
    unsetenv("AWS_ENDPOINT_URL");
    unsetenv("AWS_ENDPOINT_URL_LAMBDA");
    kp_aws_lambda_options none = {.region = ""};
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    assert_int_equal(kp_aws_lambda_new(&none, &l, &err), KP_EINVAL);
    assert_null(l);
    assert_non_null(strstr(err.msg, "AWS_REGION"));
    setenv("AWS_ENDPOINT_URL_LAMBDA", "ftp://nope", 1);
    assert_int_equal(kp_aws_lambda_new(&none, &l, &err), KP_EINVAL);
    /* an override needs no region; nothing listens on port 9: no answer, after the attempts */
    setenv("AWS_ENDPOINT_URL_LAMBDA", "http://127.0.0.1:9/", 1);
    setenv("AWS_ACCESS_KEY_ID", "AKIDUNIT", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "unit/secret", 1);
    kp_aws_lambda_options o = {.max_attempts = 1, .timeout_ms = 2000};
    assert_int_equal(kp_aws_lambda_new(&o, &l, &err), KP_OK);
    assert_int_equal(kp_aws_lambda_invoke_event(l, "", "{}", 2, &err), KP_EINVAL);
    assert_int_equal(kp_aws_lambda_invoke_event(l, "fn", "{}", 2, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "lambda"));
    kp_aws_lambda_free(l);
    unsetenv("AWS_ENDPOINT_URL_LAMBDA");
}

static void test_worker_event(void **state)
{
    (void)state;
    kp_gen_job job = {.project_id = "prj_abc", .version = 3, .owner = "dsp_xyz"};
    char *text = kp_lambda_worker_event(&job);
    assert_non_null(text);
    json_t *doc = json_loads(text, 0, NULL);
    assert_true(kp_lambda_is_worker_event(doc));
    assert_string_equal(json_string_value(json_object_get(doc, "koumpa")), "generation");
    assert_string_equal(json_string_value(json_object_get(doc, "project_id")), "prj_abc");
    assert_int_equal(json_integer_value(json_object_get(doc, "version")), 3);
    assert_string_equal(json_string_value(json_object_get(doc, "owner")), "dsp_xyz");
    json_decref(doc);
    free(text);
    json_t *other = json_pack("{s:s}", "koumpa", "something-else");
    assert_false(kp_lambda_is_worker_event(other));
    json_decref(other);
    other = json_pack("{s:s,s:s}", "source", "aws.events", "detail-type", "Scheduled Event");
    assert_false(kp_lambda_is_worker_event(other));
    json_decref(other);
}

static void test_dispatcher_without_function_name(void **state)
{
    (void)state;
    kp_lambda_dispatcher *d = NULL;
    kp_err err = {0};
    kp_gen_job job = {.project_id = "prj_abc", .version = 1, .owner = "dsp_xyz"};
    unsetenv("AWS_LAMBDA_FUNCTION_NAME");
    assert_int_equal(kp_lambda_dispatcher_new(&d, &err), KP_OK);
    assert_int_equal(kp_lambda_dispatch(d, &job, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "AWS_LAMBDA_FUNCTION_NAME"));
    kp_lambda_dispatcher_free(d);
}

int main(void)
{
    kp_log_set_level(KP_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invoke_path),
        cmocka_unit_test(test_client_endpoint),
        cmocka_unit_test(test_worker_event),
        cmocka_unit_test(test_dispatcher_without_function_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
