/*
 * test_zip.c - archives built by kp_zip_build(), read back with libzip: the
 * names, bytes, times and permissions that went in come out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "core/buf.h"
#include "gen/zip.h"

/* Opens an in-memory archive for reading; *src must stay alive until zip_discard(). */
static zip_t *open_archive(const kp_buf *b)
{
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(b->data, b->len, 0, &ze);
    assert_non_null(src);
    zip_t *za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (!za)
        fail_msg("not a valid zip: %s", zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return za;
}

static void assert_entry(zip_t *za, const kp_zip_entry *e, time_t mtime)
{
    zip_int64_t idx = zip_name_locate(za, e->path, ZIP_FL_ENC_UTF_8);
    if (idx < 0)
        fail_msg("no entry %s", e->path);
    zip_stat_t st;
    assert_int_equal(zip_stat_index(za, (zip_uint64_t)idx, 0, &st), 0);
    assert_string_equal(st.name, e->path);
    assert_int_equal(st.size, e->len);
    /* DOS times have a 2-second resolution */
    assert_true(st.mtime >= mtime - 2 && st.mtime <= mtime + 2);

    zip_uint8_t opsys;
    zip_uint32_t attr;
    assert_int_equal(zip_file_get_external_attributes(za, (zip_uint64_t)idx, 0, &opsys, &attr), 0);
    assert_int_equal(opsys, ZIP_OPSYS_UNIX);
    assert_int_equal(attr >> 16, 0100644);

    char *buf = malloc(e->len + 1);
    zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)idx, 0);
    assert_non_null(zf);
    assert_int_equal(zip_fread(zf, buf, e->len + 1), (zip_int64_t)e->len);
    zip_fclose(zf);
    assert_memory_equal(buf, e->data, e->len);
    free(buf);
}

static void test_round_trip(void **state)
{
    (void)state;
    size_t big_len = 300000;
    char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = "<div class=\"row\">hello</div>\n"[i % 29];
    static const char bin[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xfe";
    const kp_zip_entry entries[] = {
        {"index.html", "<!doctype html>\n<title>To-do</title>\n", 37},
        {"js/app.js", "console.log('\xC3\xA9t\xC3\xA9');", 21},
        {"css/empty.css", NULL, 0},
        {"img/logo.png", bin, sizeof bin - 1},
        {"d\xC3\xA9j\xC3\xA0/vu.txt", "x", 1},
        {"big.html", big, big_len},
    };
    size_t n = sizeof entries / sizeof entries[0];
    time_t mtime = 1767225600; /* 2026-01-01 */
    kp_buf out = KP_BUF_INIT;
    kp_err err;
    assert_int_equal(kp_zip_build(entries, n, mtime, &out, &err), KP_OK);
    assert_true(out.len > 22);
    assert_memory_equal(out.data, "PK\x03\x04", 4);

    zip_t *za = open_archive(&out);
    assert_int_equal(zip_get_num_entries(za, 0), (zip_int64_t)n);
    for (size_t i = 0; i < n; i++)
        assert_entry(za, &entries[i], mtime);
    /* entries keep their order, and repetitive data is compressed */
    assert_string_equal(zip_get_name(za, 0, 0), "index.html");
    zip_stat_t st;
    assert_int_equal(zip_stat(za, "big.html", 0, &st), 0);
    assert_int_equal(st.comp_method, ZIP_CM_DEFLATE);
    assert_true(st.comp_size < big_len / 10);
    assert_true(out.len < big_len / 5);
    zip_discard(za);
    kp_buf_free(&out);
    free(big);
}

static void test_replaces_output_and_defaults_time(void **state)
{
    (void)state;
    const kp_zip_entry e = {"index.html", "hi", 2};
    kp_buf out = KP_BUF_INIT;
    kp_err err;
    kp_buf_puts(&out, "stale bytes");
    time_t before = time(NULL);
    assert_int_equal(kp_zip_build(&e, 1, 0, &out, &err), KP_OK);
    assert_memory_equal(out.data, "PK\x03\x04", 4);
    zip_t *za = open_archive(&out);
    assert_entry(za, &e, before);
    zip_discard(za);
    kp_buf_free(&out);
}

static void test_rejects(void **state)
{
    (void)state;
    kp_buf out = KP_BUF_INIT;
    kp_err err;
    assert_int_equal(kp_zip_build(NULL, 0, 0, &out, &err), KP_EINVAL);
    const char *bad[] = {"", "/etc/passwd", "../x", "a/../../x", "a\\..\\x", "a//b", "./a", "a/", ".."};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const kp_zip_entry e[] = {{"ok.txt", "1", 1}, {bad[i], "x", 1}};
        kp_buf_puts(&out, "stale");
        assert_int_equal(kp_zip_build(e, 2, 0, &out, &err), KP_EINVAL);
        assert_non_null(strstr(err.msg, "invalid file name"));
        assert_int_equal(out.len, 0);
    }
    const kp_zip_entry null_path = {NULL, "x", 1};
    assert_int_equal(kp_zip_build(&null_path, 1, 0, &out, &err), KP_EINVAL);
    const kp_zip_entry dup[] = {{"a.txt", "1", 1}, {"b.txt", "2", 1}, {"a.txt", "3", 1}};
    assert_int_equal(kp_zip_build(dup, 3, 0, &out, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "twice"));
    assert_int_equal(out.len, 0);
    kp_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_replaces_output_and_defaults_time),
        cmocka_unit_test(test_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
