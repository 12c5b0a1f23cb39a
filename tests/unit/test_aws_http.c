/*
 * test_aws_http.c - reading AWS error answers and choosing what to retry
 * (src/aws/aws_http.c). The signed calls, retries and error messages end to
 * end are in tests/integration/aws-plumbing.test.mjs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "aws/aws_http.h"

static void parse(const char *headers, const char *body, const char *want_code, const char *want_message)
{
    kp_aws_fetch_response r = {0};
    char code[64], message[64];

    r.status = 400;
    assert_int_equal(kp_buf_puts(&r.headers, headers), 0);
    assert_int_equal(kp_buf_puts(&r.body, body), 0);
    kp_aws_parse_error(&r, code, sizeof code, message, sizeof message);
    assert_string_equal(code, want_code);
    assert_string_equal(message, want_message);
    kp_aws_fetch_response_free(&r);
}

static void test_parse_error(void **state)
{
    (void)state;
    /* DynamoDB: JSON 1.0, namespaced type, lower-case "message" */
    parse("HTTP/1.1 400 Bad Request\r\n",
          "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException\","
          "\"message\":\"The conditional request failed\"}",
          "ConditionalCheckFailedException", "The conditional request failed");
    /* Secrets Manager: JSON 1.1, bare type, "Message" */
    parse("", "{\"__type\":\"ResourceNotFoundException\",\"Message\":\"not found\"}", "ResourceNotFoundException",
          "not found");
    /* S3: XML */
    parse("", "<?xml version=\"1.0\"?>\n<Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>",
          "NoSuchKey", "The key does not exist");
    /* no body (HEAD): the x-amzn-ErrorType header, without its URL part */
    parse("HTTP/1.1 400 Bad Request\r\nx-amzn-ErrorType: ThrottlingException:http://internal.amazon.com/\r\n", "",
          "ThrottlingException", "");
    /* nothing to read */
    parse("", "<html>gateway</html>", "", "");
    /* long messages are cut, not overflowed */
    parse("",
          "{\"__type\":\"X\",\"message\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
          "X", "012345678901234567890123456789012345678901234567890123456789012");
}

static void test_retryable(void **state)
{
    (void)state;
    assert_true(kp_aws_retryable(0, "")); /* no answer */
    assert_true(kp_aws_retryable(429, ""));
    assert_true(kp_aws_retryable(500, "InternalServerError"));
    assert_true(kp_aws_retryable(503, "SlowDown"));
    assert_true(kp_aws_retryable(400, "ThrottlingException"));
    assert_true(kp_aws_retryable(400, "ProvisionedThroughputExceededException"));
    assert_true(kp_aws_retryable(400, "RequestLimitExceeded"));
    assert_false(kp_aws_retryable(400, "ConditionalCheckFailedException"));
    assert_false(kp_aws_retryable(400, "ValidationException"));
    assert_false(kp_aws_retryable(403, "SignatureDoesNotMatch"));
    assert_false(kp_aws_retryable(404, "NoSuchKey"));
    assert_false(kp_aws_retryable(200, ""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_error),
        cmocka_unit_test(test_retryable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
