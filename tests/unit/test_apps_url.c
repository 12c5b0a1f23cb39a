/*
 * test_apps_url.c - KOUMPA_APPS_URL's two forms (core/apps_url.c): which
 * templates start-up accepts, the version URLs each form builds, and the
 * project a Host header names in the host form.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/apps_url.h"

static void assert_url(const char *tmpl, const char *id, int64_t n, const char *want)
{
    kp_buf b = KP_BUF_INIT;
    assert_int_equal(kp_apps_url_version(tmpl, id, n, &b), 0);
    assert_string_equal(b.data, want);
    kp_buf_free(&b);
}

static void test_valid_templates(void **state)
{
    (void)state;
    kp_err err = {0};
    const char *ok[] = {
        "http://127.0.0.1:8081",           "https://apps.example.com/",          "https://apps.example/?a=b",
        "http://{project}.localhost:8081", "https://{project}.apps.example.com", "https://{project}.apps.example.com/"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(kp_apps_url_check(ok[i], &err), KP_OK);
    assert_false(kp_apps_url_per_project("http://127.0.0.1:8081"));
    assert_true(kp_apps_url_per_project("http://{project}.localhost:8081"));
}

static void test_invalid_templates_say_why(void **state)
{
    (void)state;
    const char *bad[] = {
        "https://apps.example.com/{project}",      /* in the path */
        "https://x{project}.apps.example.com",     /* part of a label */
        "https://{project}x.apps.example.com",     /* part of a label */
        "https://a.{project}.example.com",         /* not the leftmost label */
        "https://{project}.{project}.example.com", /* twice */
        "https://{project}",                       /* no domain */
        "https://{project}.",                      /* empty domain */
        "{project}.apps.example.com",              /* no scheme */
        "ftp://{project}.apps.example.com",        /* not http(s) */
        "https://{project}.apps.example.com/base", /* a path */
        "https://{project}.apps.example.com?x=1",  /* a query */
        "https://{proj}.apps.example.com",         /* another placeholder */
        "https://user@{project}.apps.example.com", /* userinfo */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kp_err err = {0};
        assert_int_equal(kp_apps_url_check(bad[i], &err), KP_EINVAL);
        assert_non_null(strstr(err.msg, "KOUMPA_APPS_URL"));
        assert_non_null(strstr(err.msg, bad[i]));
        assert_false(kp_apps_url_per_project(bad[i]));
    }
    kp_err err = {0};
    kp_apps_url_check("https://a.{project}.example.com", &err);
    assert_non_null(strstr(err.msg, "leftmost label"));
}

static void test_version_urls(void **state)
{
    (void)state;
    assert_url("http://127.0.0.1:8081", "prj_abc123", 3, "http://127.0.0.1:8081/prj_abc123/@v3/");
    assert_url("https://apps.example.com//", "prj_abc123", 12, "https://apps.example.com/prj_abc123/@v12/");
    assert_url("http://{project}.localhost:8081", "prj_abc123", 3, "http://prj-abc123.localhost:8081/@v3/");
    assert_url("https://{project}.apps.example.com/", "prj_z9", 1, "https://prj-z9.apps.example.com/@v1/");
    assert_url(NULL, "prj_a", 2, "/prj_a/@v2/");
}

static void assert_host(const char *tmpl, const char *host, const char *want)
{
    char id[48] = "unchanged";
    int rc = kp_apps_url_project_of_host(tmpl, host, id, sizeof id);
    if (want) {
        assert_int_equal(rc, 0);
        assert_string_equal(id, want);
    } else {
        assert_int_equal(rc, -1);
    }
}

static void test_project_of_host(void **state)
{
    (void)state;
    const char *t = "http://{project}.localhost:8081";
    assert_host(t, "prj-abc123.localhost:8081", "prj_abc123");
    assert_host(t, "prj-abc123.localhost", "prj_abc123");       /* behind a proxy: no port */
    assert_host(t, "prj-abc123.localhost:40123", "prj_abc123"); /* another port: same listener */
    assert_host(t, "PRJ-ABC123.LocalHost:8081", "prj_abc123");  /* host names are case-insensitive */
    assert_host("https://{project}.apps.example.com/", "prj-x1.apps.example.com", "prj_x1");
    const char *none[] = {NULL,
                          "",
                          "localhost:8081",
                          "127.0.0.1:8081",
                          ".localhost:8081",
                          "prj-.localhost:8081",
                          "prj_abc.localhost:8081", /* the id itself is not the label */
                          "abc.localhost:8081",
                          "a.prj-abc.localhost:8081",
                          "prj-abc.evil.localhost:8081",
                          "prj-abc.localhost.evil:8081",
                          "prj-abc.notlocalhost:8081",
                          "prj-a_b.localhost:8081",
                          "prj-abc123localhost:8081"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
        assert_host(t, none[i], NULL);
    assert_host("http://127.0.0.1:8081", "prj-abc.127.0.0.1:8081", NULL); /* the path form has no hosts */
    char small[8];
    assert_int_equal(kp_apps_url_project_of_host(t, "prj-abcdefgh.localhost", small, sizeof small), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_templates),
        cmocka_unit_test(test_invalid_templates_say_why),
        cmocka_unit_test(test_version_urls),
        cmocka_unit_test(test_project_of_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
