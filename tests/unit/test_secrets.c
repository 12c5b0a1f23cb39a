/*
 * test_secrets.c - the secrets service (secrets/secrets.c) and its
 * environment source (secrets/secrets_env.c).
 *
 * The env source: NAME, NAME_FILE (one trailing newline stripped), both set,
 * neither, empty values, an unreadable file, the fallback file. The cache,
 * over a counting fake source and a fake clock: a hit within the TTL does not
 * read, an expired value is read again, "not set" is cached, a failing read
 * keeps the cached value, a failure with nothing cached is not cached; with
 * a refresher, an expired value is served while one background read runs. And
 * kp_secrets_value_free wipes before it frees: this file replaces free()
 * (forwarding to glibc's) to look at a watched block as it is freed; not
 * under AddressSanitizer, which owns malloc and free there.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "secrets/secrets.h"
#include "secrets/secrets_env.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define WIPE_CHECK 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WIPE_CHECK 0
#endif
#endif
#ifndef WIPE_CHECK
#define WIPE_CHECK 1
#endif

#define NAME "KP_TEST_SECRET"
#define NAME_FILE "KP_TEST_SECRET_FILE"
#define VALUE "s3cr3t-value-for-the-test"

/* ---- free() interposition: was the watched block zero when freed? ---- */

#if WIPE_CHECK
extern void __libc_free(void *p);

static void *watched;
static size_t watched_len;
static int watched_freed, watched_was_zero;

void free(void *p)
{
    if (p && p == watched) {
        const unsigned char *b = p;
        size_t zero = 0;
        for (size_t i = 0; i < watched_len; i++)
            zero += b[i] == 0;
        watched_was_zero = zero == watched_len;
        watched_freed = 1;
        watched = NULL;
    }
    __libc_free(p);
}
#endif

/* ---- helpers ---- */

static int clear_env(void **state)
{
    (void)state;
    unsetenv(NAME);
    unsetenv(NAME_FILE);
    return 0;
}

static void write_file(const char *path, const char *content, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Reads NAME through a fresh env source (no cache in the way). */
static kp_status env_get(const kp_secrets_env_fallback *fb, size_t n, char **out, size_t *len, kp_err *err)
{
    kp_secrets_source src;
    assert_int_equal(kp_secrets_env_new(fb, n, &src, err), KP_OK);
    kp_status rc = src.ops->read(src.impl, NAME, out, len, err);
    src.ops->close(src.impl);
    return rc;
}

static void env_gives(const kp_secrets_env_fallback *fb, size_t n, const char *expected, size_t expected_len)
{
    char *v = NULL;
    size_t len = 0;
    kp_err err = {0};
    kp_status rc = env_get(fb, n, &v, &len, &err);
    if (rc != KP_OK)
        fail_msg("read: %s", err.msg);
    assert_int_equal(len, expected_len);
    assert_memory_equal(v, expected, len);
    assert_int_equal(v[len], '\0');
    kp_secrets_value_free(v, len);
}

/* The read fails with status; the message holds in_msg and never VALUE. */
static void env_fails(const kp_secrets_env_fallback *fb, size_t n, kp_status status, const char *in_msg)
{
    char *v = NULL;
    size_t len = 0;
    kp_err err = {0};
    assert_int_equal(env_get(fb, n, &v, &len, &err), status);
    assert_null(v);
    if (!strstr(err.msg, in_msg))
        fail_msg("\"%s\" does not hold \"%s\"", err.msg, in_msg);
    assert_null(strstr(err.msg, VALUE));
}

static void assert_file_gives(const char *content, size_t n, const char *expected)
{
    char dir[256], path[512];
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/secret", dir);
    write_file(path, content, n);
    setenv(NAME_FILE, path, 1);
    env_gives(NULL, 0, expected, strlen(expected));
    kp_test_rmrf(dir);
}

/* ---- the env source ---- */

static void test_env_value(void **state)
{
    (void)state;
    setenv(NAME, VALUE, 1);
    env_gives(NULL, 0, VALUE, strlen(VALUE));
}

static void test_file_value_with_one_newline_stripped(void **state)
{
    (void)state;
    assert_file_gives(VALUE "\n", strlen(VALUE) + 1, VALUE);
    assert_file_gives(VALUE "\r\n", strlen(VALUE) + 2, VALUE);
    assert_file_gives(VALUE, strlen(VALUE), VALUE);
    /* only one: a second newline, spaces, a lone \r before text stay */
    assert_file_gives(VALUE "\n\n", strlen(VALUE) + 2, VALUE "\n");
    assert_file_gives(" a\rb \n", 6, " a\rb ");
}

static void test_both_set_is_an_error_naming_both(void **state)
{
    (void)state;
    setenv(NAME, VALUE, 1);
    setenv(NAME_FILE, "/nonexistent/secret", 1);
    env_fails(NULL, 0, KP_EINVAL, "both " NAME " and " NAME_FILE " are set");
}

static void test_missing_is_not_found(void **state)
{
    (void)state;
    env_fails(NULL, 0, KP_ENOTFOUND, NAME " is not set");
}

static void test_empty_values_count_as_unset(void **state)
{
    (void)state;
    char dir[256], path[512];
    setenv(NAME, "", 1);
    setenv(NAME_FILE, "", 1);
    env_fails(NULL, 0, KP_ENOTFOUND, "not set");
    /* an empty variable beside a set one is not "both set" */
    setenv(NAME, VALUE, 1);
    env_gives(NULL, 0, VALUE, strlen(VALUE));
    unsetenv(NAME);
    /* a file with only the newline */
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/secret", dir);
    write_file(path, "\n", 1);
    setenv(NAME_FILE, path, 1);
    env_fails(NULL, 0, KP_ENOTFOUND, "empty");
    kp_test_rmrf(dir);
}

static void test_unreadable_file_names_the_file_not_the_value(void **state)
{
    (void)state;
    char dir[256], path[512];
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/missing", dir);
    setenv(NAME_FILE, path, 1);
    env_fails(NULL, 0, KP_EIO, path);
    env_fails(NULL, 0, KP_EIO, NAME_FILE);
    /* a directory cannot be read either */
    setenv(NAME_FILE, dir, 1);
    env_fails(NULL, 0, KP_EIO, dir);
    kp_test_rmrf(dir);
}

static void test_oversized_file_is_refused(void **state)
{
    (void)state;
    char dir[256], path[512];
    char *big = malloc(KP_SECRETS_MAX_LEN + 1);
    assert_non_null(big);
    memset(big, 'k', KP_SECRETS_MAX_LEN + 1);
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/big", dir);
    write_file(path, big, KP_SECRETS_MAX_LEN + 1);
    setenv(NAME_FILE, path, 1);
    env_fails(NULL, 0, KP_EIO, "larger");
    /* exactly the limit is fine */
    write_file(path, big, KP_SECRETS_MAX_LEN);
    env_gives(NULL, 0, big, KP_SECRETS_MAX_LEN);
    free(big);
    kp_test_rmrf(dir);
}

static void test_fallback_file_only_when_neither_is_set(void **state)
{
    (void)state;
    char dir[256], path[512];
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/fallback", dir);
    kp_secrets_env_fallback fb = {.name = NAME, .path = path};
    /* missing fallback file: not set, not an error */
    env_fails(&fb, 1, KP_ENOTFOUND, "not set");
    write_file(path, "from-fallback\n", 14);
    env_gives(&fb, 1, "from-fallback", 13);
    setenv(NAME, VALUE, 1);
    env_gives(&fb, 1, VALUE, strlen(VALUE));
    kp_test_rmrf(dir);
}

/* ---- the cache, over a fake source ---- */

typedef struct fake_source {
    int reads, closed;
    kp_status status; /* what read answers */
    char value[64];
} fake_source;

static kp_status fake_read(void *impl, const char *name, char **out, size_t *len, kp_err *err)
{
    fake_source *f = impl;
    f->reads++;
    if (f->status != KP_OK)
        return kp_err_set(err, f->status, "fake source: %s unavailable", name);
    *out = strdup(f->value);
    *len = strlen(f->value);
    return *out ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
}

static void fake_close(void *impl)
{
    ((fake_source *)impl)->closed++;
}

static const kp_secrets_source_ops fake_ops = {.read = fake_read, .close = fake_close};

static int64_t fake_now;

static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

static kp_secrets *new_service(fake_source *f, long ttl)
{
    kp_secrets *s = NULL;
    kp_err err = {0};
    kp_secrets_source src = {.ops = &fake_ops, .impl = f};
    assert_int_equal(kp_secrets_new(src, ttl, &s, &err), KP_OK);
    fake_now = 1000;
    kp_secrets_set_clock(s, fake_clock, NULL);
    return s;
}

static void assert_get(kp_secrets *s, const char *expected)
{
    char *v = NULL;
    size_t len = 0;
    kp_err err = {0};
    assert_int_equal(kp_secrets_get(s, "k", &v, &len, &err), KP_OK);
    assert_string_equal(v, expected);
    assert_int_equal(len, strlen(expected));
    kp_secrets_value_free(v, len);
}

static void assert_get_fails(kp_secrets *s, kp_status status, const char *in_msg)
{
    char *v = NULL;
    size_t len = 0;
    kp_err err = {0};
    assert_int_equal(kp_secrets_get(s, "k", &v, &len, &err), status);
    assert_null(v);
    assert_non_null(strstr(err.msg, in_msg));
}

static void test_cache_hit_within_ttl_does_not_read(void **state)
{
    (void)state;
    fake_source f = {.value = "one"};
    kp_secrets *s = new_service(&f, 60);
    assert_get(s, "one");
    strcpy(f.value, "two");
    fake_now += 59;
    assert_get(s, "one");
    assert_true(kp_secrets_has(s, "k"));
    assert_int_equal(f.reads, 1);
    kp_secrets_free(s);
    assert_int_equal(f.closed, 1);
}

static void test_reread_after_ttl(void **state)
{
    (void)state;
    fake_source f = {.value = "one"};
    kp_secrets *s = new_service(&f, 60);
    assert_get(s, "one");
    strcpy(f.value, "two");
    fake_now += 60;
    assert_get(s, "two");
    assert_int_equal(f.reads, 2);
    kp_secrets_free(s);
}

static void test_not_set_is_cached_too(void **state)
{
    (void)state;
    fake_source f = {.status = KP_ENOTFOUND};
    kp_secrets *s = new_service(&f, 60);
    assert_get_fails(s, KP_ENOTFOUND, "k is not set");
    assert_false(kp_secrets_has(s, "k"));
    assert_int_equal(f.reads, 1);
    /* set later: seen after the TTL */
    f.status = KP_OK;
    strcpy(f.value, "now-set");
    fake_now += 60;
    assert_get(s, "now-set");
    kp_secrets_free(s);
}

static void test_failed_reread_keeps_the_cached_value(void **state)
{
    (void)state;
    fake_source f = {.value = "one"};
    kp_secrets *s = new_service(&f, 60);
    assert_get(s, "one");
    f.status = KP_EIO;
    fake_now += 60;
    assert_get(s, "one");
    assert_int_equal(f.reads, 2);
    /* tried again only after another TTL */
    fake_now += 59;
    assert_get(s, "one");
    assert_int_equal(f.reads, 2);
    f.status = KP_ENOTFOUND; /* gone from the source: still kept */
    fake_now += 1;
    assert_get(s, "one");
    f.status = KP_OK;
    strcpy(f.value, "two");
    fake_now += 60;
    assert_get(s, "two");
    kp_secrets_free(s);
}

static void test_failure_with_nothing_cached_is_returned_not_cached(void **state)
{
    (void)state;
    fake_source f = {.status = KP_EIO};
    kp_secrets *s = new_service(&f, 60);
    assert_get_fails(s, KP_EIO, "unavailable");
    f.status = KP_OK;
    strcpy(f.value, "fixed");
    assert_get(s, "fixed"); /* at once, not after the TTL */
    assert_int_equal(f.reads, 2);
    kp_secrets_free(s);
}

static void test_new_refuses_a_bad_ttl_and_closes_the_source(void **state)
{
    (void)state;
    kp_secrets *s = NULL;
    kp_err err = {0};
    fake_source f = {0};
    kp_secrets_source src = {.ops = &fake_ops, .impl = &f};
    assert_int_equal(kp_secrets_new(src, 0, &s, &err), KP_EINVAL);
    assert_null(s);
    assert_int_equal(f.closed, 1);
}

/* Many threads asking for an expired name: the source is read once. */
typedef struct race_arg {
    kp_secrets *s;
    int failures;
} race_arg;

static void *race_thread(void *p)
{
    race_arg *a = p;
    for (int i = 0; i < 200; i++) {
        char *v = NULL;
        size_t len = 0;
        kp_err err = {0};
        if (kp_secrets_get(a->s, "k", &v, &len, &err) != KP_OK || strcmp(v, "one") != 0)
            a->failures++;
        kp_secrets_value_free(v, len);
    }
    return NULL;
}

static void test_concurrent_gets_read_once(void **state)
{
    (void)state;
    fake_source f = {.value = "one"};
    kp_secrets *s = new_service(&f, 60);
    pthread_t t[4];
    race_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (race_arg){.s = s};
        assert_int_equal(pthread_create(&t[i], NULL, race_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    assert_int_equal(f.reads, 1);
    kp_secrets_free(s);
}

/* ---- background refresh, over a source whose reads wait at a gate ---- */

typedef struct gated_source {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open;    /* reads pass */
    int waiting; /* reads waiting at the gate now */
    int reads;
    char value[64];
} gated_source;

static kp_status gated_read(void *impl, const char *name, char **out, size_t *len, kp_err *err)
{
    gated_source *g = impl;
    (void)name;
    pthread_mutex_lock(&g->lock);
    g->reads++;
    g->waiting++;
    pthread_cond_broadcast(&g->cond);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    g->waiting--;
    *out = strdup(g->value);
    *len = strlen(g->value);
    pthread_mutex_unlock(&g->lock);
    return *out ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
}

static const kp_secrets_source_ops gated_ops = {.read = gated_read};

static void gate(gated_source *g, int open, const char *value)
{
    pthread_mutex_lock(&g->lock);
    g->open = open;
    if (value)
        snprintf(g->value, sizeof g->value, "%s", value);
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* Waits (bounded: 10 s) until a read waits at the gate; returns reads. */
static int wait_for_blocked_read(gated_source *g)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&g->lock);
    while (g->waiting == 0 && pthread_cond_timedwait(&g->cond, &g->lock, &until) == 0)
        ;
    int blocked = g->waiting, reads = g->reads;
    pthread_mutex_unlock(&g->lock);
    assert_int_equal(blocked, 1);
    return reads;
}

/* With a refresher, an expired value is served from the cache at once while
 * one background read, stuck in the source, goes on; its answer is used once
 * it ends. Without the refresher the get would wait at the gate for ever. */
static void test_background_refresh_serves_the_cached_value(void **state)
{
    (void)state;
    gated_source g = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .open = 1};
    kp_secrets *s = NULL;
    kp_err err = {0};
    snprintf(g.value, sizeof g.value, "one");
    assert_int_equal(kp_secrets_new((kp_secrets_source){.ops = &gated_ops, .impl = &g}, 60, &s, &err), KP_OK);
    fake_now = 1000;
    kp_secrets_set_clock(s, fake_clock, NULL);
    assert_int_equal(kp_secrets_refresh_in_background(s, &err), KP_OK);
    assert_get(s, "one"); /* the first read: by the caller */
    gate(&g, 0, "two");
    fake_now += 60;
    assert_get(s, "one"); /* expired: the cached value, a read queued */
    assert_int_equal(wait_for_blocked_read(&g), 2);
    assert_get(s, "one"); /* the read is still at the gate: no second one */
    assert_get(s, "one");
    gate(&g, 1, NULL);
    int fresh = 0;
    for (int i = 0; i < 10000 && !fresh; i++) {
        char *v = NULL;
        size_t len = 0;
        assert_int_equal(kp_secrets_get(s, "k", &v, &len, &err), KP_OK);
        fresh = strcmp(v, "two") == 0;
        kp_secrets_value_free(v, len);
        if (!fresh)
            usleep(1000);
    }
    assert_true(fresh);
    kp_secrets_free(s);
    assert_int_equal(g.reads, 2);
}

/* The start-up summary: "(set)" for what has a value, nothing for the rest, never a value. */
static void test_describe_says_set_never_the_value(void **state)
{
    (void)state;
    kp_secrets_source src;
    kp_secrets *s = NULL;
    kp_err err = {0};
    setenv("ANTHROPIC_API_KEY", VALUE, 1);
    unsetenv("ANTHROPIC_API_KEY_FILE");
    unsetenv("STRIPE_SECRET_KEY");
    unsetenv("STRIPE_SECRET_KEY_FILE");
    assert_int_equal(kp_secrets_env_new(NULL, 0, &src, &err), KP_OK);
    assert_int_equal(kp_secrets_new(src, 60, &s, &err), KP_OK);
    json_t *summary = json_object();
    kp_secrets_describe(s, summary);
    assert_string_equal(json_string_value(json_object_get(summary, "ANTHROPIC_API_KEY")), "(set)");
    assert_null(json_object_get(summary, "STRIPE_SECRET_KEY"));
    char *text = json_dumps(summary, JSON_COMPACT);
    assert_null(strstr(text, VALUE));
    free(text);
    json_decref(summary);
    kp_secrets_free(s);
    unsetenv("ANTHROPIC_API_KEY");
}

static void test_value_free_wipes(void **state)
{
    (void)state;
#if WIPE_CHECK
    fake_source f = {.value = "wipe-me-please"};
    kp_secrets *s = new_service(&f, 60);
    char *v = NULL;
    size_t len = 0;
    kp_err err = {0};
    assert_int_equal(kp_secrets_get(s, "k", &v, &len, &err), KP_OK);
    watched = v;
    watched_len = len;
    watched_freed = 0;
    kp_secrets_value_free(v, len);
    assert_true(watched_freed);
    assert_true(watched_was_zero);
    kp_secrets_free(s);
#else
    skip();
#endif
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, clear_env, clear_env)
    const struct CMUnitTest tests[] = {
        T(test_env_value),
        T(test_file_value_with_one_newline_stripped),
        T(test_both_set_is_an_error_naming_both),
        T(test_missing_is_not_found),
        T(test_empty_values_count_as_unset),
        T(test_unreadable_file_names_the_file_not_the_value),
        T(test_oversized_file_is_refused),
        T(test_fallback_file_only_when_neither_is_set),
        T(test_cache_hit_within_ttl_does_not_read),
        T(test_reread_after_ttl),
        T(test_not_set_is_cached_too),
        T(test_failed_reread_keeps_the_cached_value),
        T(test_failure_with_nothing_cached_is_returned_not_cached),
        T(test_new_refuses_a_bad_ttl_and_closes_the_source),
        T(test_concurrent_gets_read_once),
        T(test_background_refresh_serves_the_cached_value),
        T(test_describe_says_set_never_the_value),
        T(test_value_free_wipes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
