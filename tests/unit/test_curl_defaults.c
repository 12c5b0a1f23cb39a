/*
 * test_curl_defaults.c - the process-wide libcurl options (core/curl_defaults.c):
 * a set CA bundle reaches a handle (a TLS call to a loopback listener fails on
 * loading that very file), unset leaves libcurl's built-in default (the same
 * call gets past loading CA certificates), and an unreadable path is refused
 * at start-up with a message naming KOUMPA_CA_BUNDLE.
 *
 * The loopback listener accepts one connection and closes it: TLS never
 * completes, so no certificate is needed; what differs is where curl stops.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "core/curl_defaults.h"
#include "testutil.h"

typedef struct listener {
    int fd;
    int port;
    pthread_t thread;
} listener;

static void *accept_and_close(void *arg)
{
    listener *l = arg;
    int c = accept(l->fd, NULL, NULL);
    if (c >= 0)
        close(c);
    return NULL;
}

static void listener_start(listener *l)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l->fd >= 0);
    assert_int_equal(bind(l->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l->fd, 4), 0);
    assert_int_equal(getsockname(l->fd, (struct sockaddr *)&a, &len), 0);
    l->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&l->thread, NULL, accept_and_close, l), 0);
}

static void listener_stop(listener *l)
{
    pthread_join(l->thread, NULL);
    close(l->fd);
}

/* One HTTPS GET to the listener through a handle made the way every site makes it; the
 * result code, and curl's message into msg. */
static CURLcode call_listener(char *msg)
{
    listener l;
    char url[64];
    listener_start(&l);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/", l.port);
    CURL *h = kp_curl_defaults(curl_easy_init());
    assert_non_null(h);
    msg[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, msg);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L); /* bounded; the listener closes at once */
    CURLcode rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    listener_stop(&l);
    return rc;
}

static void test_set_bundle_reaches_the_handle(void **state)
{
    (void)state;
    char dir[256], path[512], msg[CURL_ERROR_SIZE];
    kp_err err = {0};
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/empty-bundle.pem", dir);
    FILE *f = fopen(path, "w"); /* readable, but holds no certificate: loading it fails */
    assert_non_null(f);
    fclose(f);

    assert_int_equal(kp_curl_defaults_set_ca_bundle(path, &err), KP_OK);
    assert_string_equal(kp_curl_defaults_ca_bundle(), path);
    assert_int_equal(call_listener(msg), CURLE_SSL_CACERT_BADFILE);
    assert_non_null(strstr(msg, path));

    assert_int_equal(kp_curl_defaults_set_ca_bundle(NULL, &err), KP_OK);
    kp_test_rmrf(dir);
}

static void test_unset_keeps_libcurls_default(void **state)
{
    (void)state;
    char msg[CURL_ERROR_SIZE];
    kp_err err = {0};
    assert_int_equal(kp_curl_defaults_set_ca_bundle("", &err), KP_OK);
    assert_null(kp_curl_defaults_ca_bundle());
    assert_null(kp_curl_defaults(NULL));
    /* the built-in bundle loads; the call then fails on the closed connection */
    CURLcode rc = call_listener(msg);
    assert_int_not_equal(rc, CURLE_OK);
    assert_int_not_equal(rc, CURLE_SSL_CACERT_BADFILE);
}

static void test_unreadable_bundle_is_refused(void **state)
{
    (void)state;
    kp_err err = {0};
    char dir[256], path[512];
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ca.pem", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(kp_curl_defaults_set_ca_bundle(path, &err), KP_OK);

    assert_int_equal(kp_curl_defaults_set_ca_bundle("/nonexistent/ca-bundle.crt", &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "KOUMPA_CA_BUNDLE=/nonexistent/ca-bundle.crt"));
    assert_string_equal(kp_curl_defaults_ca_bundle(), path); /* the previous setting stays */

    assert_int_equal(kp_curl_defaults_set_ca_bundle(NULL, &err), KP_OK);
    kp_test_rmrf(dir);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_bundle_reaches_the_handle),
        cmocka_unit_test(test_unset_keeps_libcurls_default),
        cmocka_unit_test(test_unreadable_bundle_is_refused),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
