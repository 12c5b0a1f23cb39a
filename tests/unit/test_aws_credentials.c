/*
 * test_aws_credentials.c - the credential chain's choices that depend on the
 * environment only, the region, and endpoint resolution
 * (src/aws/aws_credentials.c). Fetching from the ECS endpoint and IMDSv2, and
 * refreshing before expiry, are tested against fake servers in
 * tests/integration/aws-plumbing.test.mjs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "aws/aws_credentials.h"
#include "core/buf.h"

static const char *const AWS_VARS[] = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof AWS_VARS / sizeof *AWS_VARS; i++)
        unsetenv(AWS_VARS[i]);
    return 0;
}

static kp_status get(kp_aws_credentials *c, kp_err *err)
{
    kp_aws_credentials_provider *p;
    kp_status st;

    assert_int_equal(kp_aws_credentials_provider_new(&p, err), KP_OK);
    st = kp_aws_credentials_get(p, c, err);
    kp_aws_credentials_provider_free(p);
    return st;
}

static void test_env_credentials(void **state)
{
    kp_aws_credentials c;
    kp_err err;

    (void)state;
    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret/key+1", 1);
    assert_int_equal(get(&c, &err), KP_OK);
    assert_string_equal(c.access_key_id, "AKIDTEST");
    assert_string_equal(c.secret_access_key, "secret/key+1");
    assert_string_equal(c.session_token, "");
    assert_string_equal(c.source, "env");
    assert_int_equal(c.expiration, 0);
    kp_aws_credentials_wipe(&c);
    assert_string_equal(c.secret_access_key, "");

    setenv("AWS_SESSION_TOKEN", "tok", 1);
    /* the environment wins over a container endpoint, as in the SDKs */
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/creds", 1);
    assert_int_equal(get(&c, &err), KP_OK);
    assert_string_equal(c.session_token, "tok");
    assert_string_equal(c.source, "env");
    kp_aws_credentials_wipe(&c);

    /* a value that would break a header line is refused, without echoing it */
    setenv("AWS_SESSION_TOKEN", "tok\r\nX-Evil: 1", 1);
    assert_int_equal(get(&c, &err), KP_EAUTH);
    assert_string_equal(err.msg, "aws credentials: the session token has a control character");
    assert_string_equal(c.access_key_id, "");
}

static void test_half_env_is_not_enough(void **state)
{
    kp_aws_credentials c;
    kp_err err;

    (void)state;
    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1); /* no secret: the chain goes on */
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    assert_int_equal(get(&c, &err), KP_EAUTH);
    assert_non_null(strstr(err.msg, "no AWS credentials"));
    assert_string_equal(c.access_key_id, "");
}

static void test_ecs_full_uri_must_be_local_or_https(void **state)
{
    kp_aws_credentials c;
    kp_err err;

    (void)state;
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://example.com/creds", 1);
    assert_int_equal(get(&c, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https"));
    /* loopback is allowed; nothing listens on port 1, so it is unreachable */
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/creds", 1);
    assert_int_equal(get(&c, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "aws credentials (ecs)"));
}

static void test_imds_unreachable(void **state)
{
    kp_aws_credentials c;
    kp_err err;

    (void)state;
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1", 1);
    assert_int_equal(get(&c, &err), KP_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "aws credentials (imds)"));
    assert_non_null(strstr(err.msg, "/latest/api/token"));
}

static void test_region(void **state)
{
    (void)state;
    assert_null(kp_aws_region());
    setenv("AWS_DEFAULT_REGION", "eu-west-3", 1);
    assert_string_equal(kp_aws_region(), "eu-west-3");
    setenv("AWS_REGION", "us-east-2", 1);
    assert_string_equal(kp_aws_region(), "us-east-2");
}

static void expect_endpoint(kp_aws_service svc, const char *region, const char *want)
{
    kp_buf b = KP_BUF_INIT;
    kp_err err;

    assert_int_equal(kp_aws_endpoint(svc, region, &b, &err), KP_OK);
    assert_string_equal(b.data, want);
    kp_buf_free(&b);
}

static void test_endpoints(void **state)
{
    kp_buf b = KP_BUF_INIT;
    kp_err err;

    (void)state;
    expect_endpoint(KP_AWS_DYNAMODB, "eu-west-3", "https://dynamodb.eu-west-3.amazonaws.com");
    expect_endpoint(KP_AWS_S3, "eu-west-3", "https://s3.eu-west-3.amazonaws.com");
    expect_endpoint(KP_AWS_SECRETS_MANAGER, "eu-west-3", "https://secretsmanager.eu-west-3.amazonaws.com");
    assert_int_equal(kp_aws_endpoint(KP_AWS_S3, NULL, &b, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "AWS_REGION"));

    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566/", 1);
    expect_endpoint(KP_AWS_DYNAMODB, NULL, "http://127.0.0.1:4566");
    setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://localhost:8000", 1);
    setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://localhost:8001", 1);
    expect_endpoint(KP_AWS_DYNAMODB, NULL, "http://localhost:8000");
    expect_endpoint(KP_AWS_SECRETS_MANAGER, NULL, "http://localhost:8001");
    expect_endpoint(KP_AWS_S3, NULL, "http://127.0.0.1:4566");
    setenv("AWS_ENDPOINT_URL_S3", "localhost:9000", 1);
    assert_int_equal(kp_aws_endpoint(KP_AWS_S3, NULL, &b, &err), KP_EINVAL);
    assert_string_equal(kp_aws_service_signing_name(KP_AWS_SECRETS_MANAGER), "secretsmanager");
    kp_buf_free(&b);
}

static void expect_s3_url(const char *endpoint, const char *bucket, const char *key, int path_style, const char *want)
{
    kp_buf b = KP_BUF_INIT;
    kp_err err;

    assert_int_equal(kp_aws_s3_url(endpoint, bucket, key, path_style, &b, &err), KP_OK);
    assert_string_equal(b.data, want);
    kp_buf_free(&b);
}

static void test_s3_urls(void **state)
{
    kp_buf b = KP_BUF_INIT;
    kp_err err;

    (void)state;
    expect_s3_url("https://s3.eu-west-3.amazonaws.com", "koumpa-apps", "apps/p1/v1/index.html", 0,
                  "https://koumpa-apps.s3.eu-west-3.amazonaws.com/apps/p1/v1/index.html");
    expect_s3_url("http://127.0.0.1:4566/", "koumpa-apps", "a b+\xc3\xbc.txt", 1,
                  "http://127.0.0.1:4566/koumpa-apps/a%20b%2B%C3%BC.txt");
    expect_s3_url("http://localhost:9000", "bucket", "x", 0, "http://bucket.localhost:9000/x");
    expect_s3_url("http://127.0.0.1:4566", "bucket", "", 1, "http://127.0.0.1:4566/bucket/");
    expect_s3_url("http://127.0.0.1:4566", "bucket", NULL, 1, "http://127.0.0.1:4566/bucket/");
    assert_int_equal(kp_aws_s3_url("http://127.0.0.1:4566", "Bad_Bucket", "x", 1, &b, &err), KP_EINVAL);
    assert_int_equal(kp_aws_s3_url("http://127.0.0.1:4566", "ab", "x", 1, &b, &err), KP_EINVAL);
    assert_int_equal(kp_aws_s3_url("ftp://h", "bucket", "x", 1, &b, &err), KP_EINVAL);
    kp_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_env_credentials, clear_env),
        cmocka_unit_test_setup(test_half_env_is_not_enough, clear_env),
        cmocka_unit_test_setup(test_ecs_full_uri_must_be_local_or_https, clear_env),
        cmocka_unit_test_setup(test_imds_unreachable, clear_env),
        cmocka_unit_test_setup(test_region, clear_env),
        cmocka_unit_test_setup(test_endpoints, clear_env),
        cmocka_unit_test_setup(test_s3_urls, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
