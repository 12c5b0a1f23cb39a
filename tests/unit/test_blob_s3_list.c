/*
 * test_blob_s3_list.c - the S3 backend's reading of ListObjectsV2 pages
 * (kp_blob_s3_parse_list): keys entity-decoded (the five named entities,
 * decimal and hex character references), the continuation token, the last
 * page, a stop from the callback, and malformed pages refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "blob/s3/blob_s3.h"
#include "core/buf.h"

static kp_status collect(void *ud, const char *key, kp_err *err)
{
    (void)err;
    kp_buf *b = ud;
    kp_buf_puts(b, key);
    kp_buf_puts(b, "|");
    return KP_OK;
}

static kp_status refuse(void *ud, const char *key, kp_err *err)
{
    (void)ud;
    return kp_err_set(err, KP_EINTERNAL, "stop at %s", key);
}

static kp_status parse(const char *xml, kp_buf *keys, kp_buf *next, kp_err *err)
{
    return kp_blob_s3_parse_list(xml, strlen(xml), collect, keys, next, err);
}

static void test_page_with_token(void **state)
{
    (void)state;
    const char *xml =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>"
        "<Prefix>apps/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>"
        "<IsTruncated>true</IsTruncated>"
        "<Contents><Key>apps/a&amp;b&lt;c&gt;d&quot;e&apos;f</Key><ETag>&quot;x&quot;</ETag>"
        "<Size>1</Size></Contents>"
        "<Contents><Key>apps/caf&#233;/&#x20AC;&#x1F600;</Key><Size>2</Size></Contents>"
        "<Contents><Key>apps/p1/v1/index.html</Key></Contents>"
        "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=&amp;</NextContinuationToken>"
        "</ListBucketResult>";
    kp_buf keys = KP_BUF_INIT, next = KP_BUF_INIT;
    kp_err err;
    assert_int_equal(parse(xml, &keys, &next, &err), KP_OK);
    assert_string_equal(kp_buf_cstr(&keys), "apps/a&b<c>d\"e'f|apps/caf\xC3\xA9/\xE2\x82\xAC\xF0\x9F\x98\x80|"
                                            "apps/p1/v1/index.html|");
    assert_string_equal(kp_buf_cstr(&next), "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=&");
    kp_buf_free(&keys);
    kp_buf_free(&next);
}

static void test_last_and_empty_pages(void **state)
{
    (void)state;
    kp_buf keys = KP_BUF_INIT, next = KP_BUF_INIT;
    kp_err err;
    kp_buf_puts(&next, "stale");
    assert_int_equal(parse("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key></Contents>"
                           "</ListBucketResult>",
                           &keys, &next, &err),
                     KP_OK);
    assert_string_equal(kp_buf_cstr(&keys), "k|");
    assert_int_equal(next.len, 0);
    kp_buf_reset(&keys);
    assert_int_equal(parse("<ListBucketResult><KeyCount>0</KeyCount></ListBucketResult>", &keys, &next, &err), KP_OK);
    assert_int_equal(keys.len, 0);
    kp_buf_free(&keys);
    kp_buf_free(&next);
}

static void test_callback_stops(void **state)
{
    (void)state;
    kp_buf next = KP_BUF_INIT;
    kp_err err;
    const char *xml = "<ListBucketResult><Contents><Key>k1</Key></Contents><Contents><Key>k2</Key></Contents>"
                      "</ListBucketResult>";
    assert_int_equal(kp_blob_s3_parse_list(xml, strlen(xml), refuse, NULL, &next, &err), KP_EINTERNAL);
    assert_string_equal(err.msg, "stop at k1");
    kp_buf_free(&next);
}

static void test_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "<Error><Code>AccessDenied</Code></Error>",
        "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&bogus;</Key></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&amp</Key></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&#;</Key></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&#x;</Key></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&#0;</Key></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&#xD800;</Key></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&#x110000;</Key></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&#12a;</Key></Contents></ListBucketResult>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kp_buf keys = KP_BUF_INIT, next = KP_BUF_INIT;
        kp_err err;
        if (parse(bad[i], &keys, &next, &err) != KP_EIO)
            fail_msg("accepted: %s", bad[i]);
        kp_buf_free(&keys);
        kp_buf_free(&next);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_with_token),
        cmocka_unit_test(test_last_and_empty_pages),
        cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
