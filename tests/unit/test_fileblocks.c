/*
 * test_fileblocks.c - the file-block parser. Every input is fed whole, one
 * byte at a time, cut at every position and (for short inputs) at every pair
 * of positions; callbacks, entries, message, offsets and errors must come out
 * the same every time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "gen/fileblocks.h"

/* ---- recording callbacks ---- */

/*
 * The transcript has one line per event; consecutive text pieces, and
 * consecutive data pieces of a file, are merged (how they are cut depends on
 * the chunks), so it reads e.g. "T[hi\n]S[a.html]D[a.html:x]F[a.html:x]".
 */
typedef struct rec {
    kp_buf log;
    char last;                /* 'T' or 'D' while a run of pieces is open, else 0 */
    size_t run_at;            /* where in log the open run starts */
    kp_buf data;              /* the open file's pieces, to compare with on_file_done */
    const char *fail_done_on; /* on_file_done fails for this path */
} rec;

static void assert_utf8(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    assert_non_null(j); /* pieces never split a UTF-8 sequence */
    json_decref(j);
}

static void close_run(rec *r)
{
    if (r->last)
        kp_buf_puts(&r->log, "]");
    r->last = 0;
}

static kp_status on_text(void *ud, const char *text, size_t len, kp_err *err)
{
    (void)err;
    rec *r = ud;
    assert_true(len > 0);
    assert_utf8(text, len);
    if (r->last != 'T') {
        close_run(r);
        r->run_at = r->log.len;
        kp_buf_puts(&r->log, "T[");
        r->last = 'T';
    }
    kp_buf_append(&r->log, text, len);
    return KP_OK;
}

static kp_status on_file_start(void *ud, const char *path, kp_err *err)
{
    (void)err;
    rec *r = ud;
    close_run(r);
    kp_buf_printf(&r->log, "S[%s]", path);
    kp_buf_reset(&r->data);
    return KP_OK;
}

static kp_status on_file_data(void *ud, const char *path, const char *data, size_t len, kp_err *err)
{
    (void)err;
    rec *r = ud;
    assert_true(len > 0);
    assert_utf8(data, len);
    if (r->last != 'D') {
        close_run(r);
        r->run_at = r->log.len;
        kp_buf_printf(&r->log, "D[%s:", path);
        r->last = 'D';
    }
    kp_buf_append(&r->log, data, len);
    kp_buf_append(&r->data, data, len);
    return KP_OK;
}

static kp_status on_file_done(void *ud, const char *path, const char *data, size_t len, kp_err *err)
{
    rec *r = ud;
    close_run(r);
    assert_int_equal(data[len], '\0');
    assert_int_equal(len, r->data.len); /* the pieces add up to the contents */
    assert_memory_equal(data, kp_buf_cstr(&r->data), len);
    kp_buf_printf(&r->log, "F[%s:", path);
    kp_buf_append(&r->log, data, len);
    kp_buf_puts(&r->log, "]");
    kp_buf_reset(&r->data);
    if (r->fail_done_on && strcmp(path, r->fail_done_on) == 0)
        return kp_err_set(err, KP_EIO, "disk full");
    return KP_OK;
}

static kp_status on_delete(void *ud, const char *path, kp_err *err)
{
    (void)err;
    rec *r = ud;
    close_run(r);
    kp_buf_printf(&r->log, "X[%s]", path);
    return KP_OK;
}

static const kp_fileblocks_cbs CBS = {on_text, on_file_start, on_file_data, on_file_done, on_delete};

/* ---- running one input ---- */

typedef struct outcome {
    kp_buf log;       /* transcript, then " | " and a summary of the parser's state */
    kp_status status; /* of the first failing call, or of finish */
    kp_fileblocks_code code;
} outcome;

static void summarize(kp_fileblocks *p, rec *r, kp_status st, const kp_err *err, outcome *o)
{
    /* How much of a file was streamed before a failure inside one of its lines
     * (too_large) depends on the chunks, so a data run still open then is left out. */
    if (kp_fileblocks_error_code(p) == KP_FILEBLOCKS_TOO_LARGE && r->last == 'D') {
        r->log.len = r->run_at;
        r->last = 0;
    }
    close_run(r);
    o->log = r->log;
    o->status = st;
    o->code = kp_fileblocks_error_code(p);
    kp_buf_printf(&o->log, " | status=%s code=%s", kp_status_name(st), kp_fileblocks_code_name(o->code));
    if (st != KP_OK)
        kp_buf_printf(&o->log, " err=[%s]", err->msg);
    size_t n, mlen;
    const kp_fileblocks_entry *e = kp_fileblocks_entries(p, &n);
    for (size_t i = 0; i < n; i++) {
        if (e[i].deleted)
            kp_buf_printf(&o->log, " del=%s", e[i].path);
        else
            kp_buf_printf(&o->log, " file=%s:%zu", e[i].path, e[i].len);
    }
    const char *m = kp_fileblocks_message(p, &mlen);
    kp_buf_printf(&o->log, " msg=[%.*s] resume=%zu", (int)mlen, m, kp_fileblocks_resume_offset(p));
    const char *open = kp_fileblocks_open_path(p);
    if (open)
        kp_buf_printf(&o->log, " open=%s", open);
}

/* Feeds in cut at cuts[0..ncuts) (ascending), then finishes. */
static void run(const char *in, size_t n, const size_t *cuts, size_t ncuts, const kp_fileblocks_opts *opts,
                const char *fail_done_on, outcome *o)
{
    rec r = {KP_BUF_INIT, 0, 0, KP_BUF_INIT, fail_done_on};
    kp_fileblocks *p;
    kp_err err;
    kp_status st = KP_OK;
    assert_int_equal(kp_fileblocks_new(opts, &CBS, &r, &p, &err), KP_OK);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts && st == KP_OK; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        st = kp_fileblocks_feed(p, in + at, end - at, &err);
        at = end;
    }
    if (st == KP_OK)
        st = kp_fileblocks_finish(p, &err);
    summarize(p, &r, st, &err, o);
    kp_fileblocks_free(p);
    kp_buf_free(&r.data);
}

/* Runs every way of cutting and returns the (common) outcome's text; caller frees. */
static char *run_all_ways_n(const char *in, size_t n, const kp_fileblocks_opts *opts, const char *fail_done_on,
                            kp_status *status)
{
    outcome whole, o;
    run(in, n, NULL, 0, opts, fail_done_on, &whole);

    size_t *bytes = malloc(n * sizeof *bytes + 1);
    assert_non_null(bytes);
    for (size_t i = 0; i + 1 < n; i++)
        bytes[i] = i + 1;
    run(in, n, bytes, n ? n - 1 : 0, opts, fail_done_on, &o);
    assert_string_equal(kp_buf_cstr(&o.log), kp_buf_cstr(&whole.log));
    kp_buf_free(&o.log);
    free(bytes);

    for (size_t i = 0; i <= n; i++) {
        size_t c1[1] = {i};
        run(in, n, c1, 1, opts, fail_done_on, &o);
        assert_string_equal(kp_buf_cstr(&o.log), kp_buf_cstr(&whole.log));
        kp_buf_free(&o.log);
        for (size_t j = i; n <= 160 && j <= n; j++) {
            size_t c2[2] = {i, j};
            run(in, n, c2, 2, opts, fail_done_on, &o);
            assert_string_equal(kp_buf_cstr(&o.log), kp_buf_cstr(&whole.log));
            kp_buf_free(&o.log);
        }
    }
    if (status)
        *status = whole.status;
    return kp_buf_steal(&whole.log);
}

static char *run_all_ways(const char *in, const kp_fileblocks_opts *opts, kp_status *status)
{
    return run_all_ways_n(in, strlen(in), opts, NULL, status);
}

/* Asserts the outcome of every way of cutting `in` is `expected`. */
static void check(const char *in, const kp_fileblocks_opts *opts, const char *expected)
{
    char *got = run_all_ways(in, opts, NULL);
    assert_string_equal(got, expected);
    free(got);
}

/* Asserts `in` fails with `code`, the reason naming it. */
static void check_fails(const char *in, const kp_fileblocks_opts *opts, kp_fileblocks_code code, kp_status status)
{
    kp_status st;
    char *got = run_all_ways(in, opts, &st);
    char want[64];
    snprintf(want, sizeof want, "code=%s err=[%s:", kp_fileblocks_code_name(code), kp_fileblocks_code_name(code));
    if (!strstr(got, want))
        fail_msg("input %s\nexpected %s, got %s", in, want, got);
    assert_int_equal(st, status);
    free(got);
}

/* ---- tests ---- */

static void test_basic_output(void **state)
{
    (void)state;
    check("Here is your app.\n"
          "<file path=\"index.html\">\n"
          "<!doctype html>\n"
          "<p>Hi</p>\n"
          "</file>\n"
          "<delete path=\"old.js\"/>\n"
          "\n"
          "Enjoy!\n",
          NULL,
          "T[Here is your app.\n]S[index.html]D[index.html:<!doctype html>\n<p>Hi</p>]"
          "F[index.html:<!doctype html>\n<p>Hi</p>]X[old.js]T[\nEnjoy!\n]"
          " | status=ok code=ok file=index.html:25 del=old.js msg=[Here is your app.\n\nEnjoy!] resume=101");
}

static void test_contents_are_the_lines_between(void **state)
{
    (void)state;
    /* no lines: empty */
    check("<file path=\"a\">\n</file>\n", NULL, "S[a]F[a:] | status=ok code=ok file=a:0 msg=[] resume=24");
    /* one empty line: still empty */
    check("<file path=\"a\">\n\n</file>", NULL, "S[a]F[a:] | status=ok code=ok file=a:0 msg=[] resume=24");
    /* an empty line before </file>: the file ends with a newline */
    check("<file path=\"a\">\nx\n\n</file>\n", NULL,
          "S[a]D[a:x\n]F[a:x\n] | status=ok code=ok file=a:2 msg=[] resume=27");
    /* blank lines, indentation and CRLF inside are kept as they are */
    check("<file path=\"a\">\n\n  x\r\n\n\ty\n</file>\n", NULL,
          "S[a]D[a:\n  x\r\n\n\ty]F[a:\n  x\r\n\n\ty] | status=ok code=ok file=a:9 msg=[] resume=34");
    /* trailing blanks (and a CR) after the tags are allowed */
    check("<file path=\"a\">  \r\nx\n</file> \t\r\n", NULL,
          "S[a]D[a:x]F[a:x] | status=ok code=ok file=a:1 msg=[] resume=32");
}

static void test_close_tag_must_stand_alone(void **state)
{
    (void)state;
    check("<file path=\"a.js\">\n"
          "x</file>\n"
          "</file>x\n"
          " </file>\n"
          "<file path=\"b.js\">\n"
          "<delete path=\"c.js\"/>\n"
          "</fil\n"
          "</file>\n",
          NULL,
          "S[a.js]D[a.js:x</file>\n</file>x\n </file>\n<file path=\"b.js\">\n<delete path=\"c.js\"/>\n</fil]"
          "F[a.js:x</file>\n</file>x\n </file>\n<file path=\"b.js\">\n<delete path=\"c.js\"/>\n</fil]"
          " | status=ok code=ok file=a.js:73 msg=[] resume=101");
}

static void test_near_tags_outside_are_text(void **state)
{
    (void)state;
    check("</file>\n"
          "<file path=\"a\"> not alone\n"
          " <file path=\"b\">\n"
          "<file path='c'>\n"
          "<delete path=\"d\">\n"
          "<delete path=\"e\"/> x\n"
          "<file path=\"f\"\n"
          "<fi",
          NULL,
          "T[</file>\n<file path=\"a\"> not alone\n <file path=\"b\">\n<file path='c'>\n<delete path=\"d\">\n"
          "<delete path=\"e\"/> x\n<file path=\"f\"\n<fi] | status=ok code=ok msg=[</file>\n<file path=\"a\"> not "
          "alone\n <file path=\"b\">\n<file path='c'>\n<delete path=\"d\">\n<delete path=\"e\"/> x\n<file "
          "path=\"f\"\n<fi] resume=0");
}

static void test_delete_tags(void **state)
{
    (void)state;
    check("<delete path=\"a.js\"/>\n<delete path=\"css/b.css\" />\r\nbye", NULL,
          "X[a.js]X[css/b.css]T[bye] | status=ok code=ok del=a.js del=css/b.css msg=[bye] resume=51");
}

static void test_message_around_blocks(void **state)
{
    (void)state;
    check("  \n\nI made a game.\n<file path=\"index.html\">\nok\n</file>\nIt has:\n- levels\n\n", NULL,
          "T[  \n\nI made a game.\n]S[index.html]D[index.html:ok]F[index.html:ok]T[It has:\n- levels\n\n]"
          " | status=ok code=ok file=index.html:2 msg=[I made a game.\nIt has:\n- levels] resume=55");
    check("", NULL, " | status=ok code=ok msg=[] resume=0");
    check("\n", NULL, "T[\n] | status=ok code=ok msg=[] resume=0");
}

static void test_utf8_split_anywhere(void **state)
{
    (void)state;
    check("Voil\xC3\xA0 \xF0\x9F\x8E\xAE\n"
          "<file path=\"i.html\">\n"
          "<h1>\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xE2\x80\x94 \xF0\x9F\x98\x80</h1>\n"
          "</file>\n"
          "\xC2\xA1Listo!",
          NULL,
          "T[Voil\xC3\xA0 \xF0\x9F\x8E\xAE\n]S[i.html]"
          "D[i.html:<h1>\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xE2\x80\x94 \xF0\x9F\x98\x80</h1>]"
          "F[i.html:<h1>\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xE2\x80\x94 \xF0\x9F\x98\x80</h1>]"
          "T[\xC2\xA1Listo!] | status=ok code=ok file=i.html:27 msg=[Voil\xC3\xA0 \xF0\x9F\x8E\xAE\n"
          "\xC2\xA1Listo!] resume=69");
}

static void test_invalid_paths(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "../x", "/etc/passwd",      "a//b", "a/../b", "a b.html", "a\\b.js", "./a",      "a/.", "a/",
        "",     "caf\xC3\xA9.html", "a\tb", "x/..",   "..",       "a;b",     "%2e%2e/x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char in[256];
        snprintf(in, sizeof in, "hi\n<file path=\"%s\">\nx\n</file>\n", bad[i]);
        check_fails(in, NULL, KP_FILEBLOCKS_INVALID_PATH, KP_EINVAL);
        snprintf(in, sizeof in, "<delete path=\"%s\"/>\n", bad[i]);
        check_fails(in, NULL, KP_FILEBLOCKS_INVALID_PATH, KP_EINVAL);
    }
    /* nothing after the bad tag is seen */
    check("<file path=\"ok.js\">\n1\n</file>\n<file path=\"../evil\">\nx\n</file>\nmore text\n", NULL,
          "S[ok.js]D[ok.js:1]F[ok.js:1] | status=invalid_request code=invalid_path err=[invalid_path: \"../evil\": "
          "'.' and '..' segments are not allowed] file=ok.js:1 msg=[] resume=30");
}

static void test_path_length(void **state)
{
    (void)state;
    char path[202], in[300];
    memset(path, 'a', 200);
    path[200] = '\0';
    snprintf(in, sizeof in, "<file path=\"%s\">\n</file>\n", path);
    kp_status st;
    free(run_all_ways(in, NULL, &st));
    assert_int_equal(st, KP_OK);
    path[200] = 'a';
    path[201] = '\0';
    snprintf(in, sizeof in, "<file path=\"%s\">\n</file>\n", path);
    check_fails(in, NULL, KP_FILEBLOCKS_INVALID_PATH, KP_EINVAL);

    kp_fileblocks_opts o = {0};
    o.max_path_len = 5;
    check_fails("<file path=\"abcdef\">\n</file>\n", &o, KP_FILEBLOCKS_INVALID_PATH, KP_EINVAL);
    check("<file path=\"abcde\">\n</file>\n", &o,
          "S[abcde]F[abcde:] | status=ok code=ok file=abcde:0 msg=[] resume=28");
}

static void test_tag_line_too_long_is_text(void **state)
{
    (void)state;
    kp_buf in = KP_BUF_INIT;
    kp_buf_puts(&in, "<file path=\"");
    for (int i = 0; i < 1100; i++)
        kp_buf_puts(&in, "a");
    kp_buf_puts(&in, "\">\n");
    kp_status st;
    char *got = run_all_ways(kp_buf_cstr(&in), NULL, &st);
    assert_int_equal(st, KP_OK);
    assert_non_null(strstr(got, "T[<file path=\"aaaa"));
    assert_null(strstr(got, "S["));
    free(got);
    kp_buf_free(&in);
}

static void test_path_check_helper(void **state)
{
    (void)state;
    kp_err err;
    assert_int_equal(kp_fileblocks_check_path("js/app.min.js", 13, 200, &err), KP_OK);
    assert_int_equal(kp_fileblocks_check_path(".well-known/x", 13, 200, &err), KP_OK);
    assert_int_equal(kp_fileblocks_check_path("a..b/c...", 9, 200, &err), KP_OK); /* dots inside names are fine */
    assert_int_equal(kp_fileblocks_check_path("a/../b", 6, 200, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "'..'"));
    assert_int_equal(kp_fileblocks_check_path("a\x01"
                                              "b",
                                              3, 200, &err),
                     KP_EINVAL);
    assert_non_null(strstr(err.msg, "\"a?b\"")); /* control characters are not echoed */
}

static void test_too_many_files(void **state)
{
    (void)state;
    kp_fileblocks_opts o = {0};
    o.max_files = 3;
    const char *three = "<file path=\"a\">\n</file>\n<file path=\"b\">\n</file>\n<file path=\"c\">\n</file>\n";
    kp_status st;
    free(run_all_ways(three, &o, &st));
    assert_int_equal(st, KP_OK);
    check("<file path=\"a\">\n</file>\n<file path=\"b\">\n</file>\n<file path=\"c\">\n</file>\n<file path=\"d\">\n", &o,
          "S[a]F[a:]S[b]F[b:]S[c]F[c:] | status=payload_too_large code=too_many_files "
          "err=[too_many_files: more than 3 files] file=a:0 file=b:0 file=c:0 msg=[] resume=72");

    /* deletions have their own bound and do not count as files */
    o.max_deletes = 2;
    free(run_all_ways("<delete path=\"x\"/>\n<delete path=\"y\"/>\n<file path=\"a\">\n</file>\n<file path=\"b\">\n"
                      "</file>\n<file path=\"c\">\n</file>\n",
                      &o, &st));
    assert_int_equal(st, KP_OK);
    check_fails("<delete path=\"x\"/>\n<delete path=\"y\"/>\n<delete path=\"z\"/>\n", &o, KP_FILEBLOCKS_TOO_MANY_FILES,
                KP_ETOOLARGE);

    /* the default is 50 */
    kp_buf in = KP_BUF_INIT;
    for (int i = 0; i < 51; i++)
        kp_buf_printf(&in, "<file path=\"f%d.js\">\n%d\n</file>\n", i, i);
    kp_fileblocks *p;
    kp_err err;
    assert_int_equal(kp_fileblocks_new(NULL, NULL, NULL, &p, &err), KP_OK);
    assert_int_equal(kp_fileblocks_feed(p, in.data, in.len, &err), KP_ETOOLARGE);
    assert_int_equal(kp_fileblocks_error_code(p), KP_FILEBLOCKS_TOO_MANY_FILES);
    size_t n;
    kp_fileblocks_entries(p, &n);
    assert_int_equal(n, 50);
    kp_fileblocks_free(p);
    kp_buf_free(&in);
}

static void test_too_large(void **state)
{
    (void)state;
    kp_fileblocks_opts o = {0};
    o.max_total_bytes = 10;
    check("<file path=\"a\">\n12345\n</file>\n<file path=\"b\">\n1\n234\n</file>\n", &o,
          "S[a]D[a:12345]F[a:12345]S[b]D[b:1\n234]F[b:1\n234] | status=ok code=ok file=a:5 file=b:5 msg=[] resume=60");
    o.max_total_bytes = 10;
    check("<file path=\"a\">\n12345\n</file>\n<file path=\"b\">\n123456\n</file>\n", &o,
          "S[a]D[a:12345]F[a:12345]S[b] | status=payload_too_large code=too_large "
          "err=[too_large: files exceed 10 bytes in total (at \"b\")] file=a:5 msg=[] resume=30 open=b");

    /* the default is 2 MiB; the parser stops before holding more */
    kp_fileblocks *p;
    kp_err err;
    assert_int_equal(kp_fileblocks_new(NULL, NULL, NULL, &p, &err), KP_OK);
    assert_int_equal(kp_fileblocks_feed(p, "<file path=\"big.js\">\n", 21, &err), KP_OK);
    char block[4096];
    memset(block, 'x', sizeof block);
    kp_status st = KP_OK;
    size_t fed = 0;
    while (st == KP_OK && fed < 3u * 1024u * 1024u) {
        st = kp_fileblocks_feed(p, block, sizeof block, &err);
        fed += sizeof block;
    }
    assert_int_equal(st, KP_ETOOLARGE);
    assert_int_equal(fed, 2u * 1024u * 1024u + sizeof block);
    kp_fileblocks_free(p);
}

static void test_duplicates(void **state)
{
    (void)state;
    check_fails("<file path=\"a.js\">\n1\n</file>\n<file path=\"a.js\">\n2\n</file>\n", NULL,
                KP_FILEBLOCKS_DUPLICATE_PATH, KP_EINVAL);
    check_fails("<file path=\"a.js\">\n1\n</file>\n<delete path=\"a.js\"/>\n", NULL, KP_FILEBLOCKS_DUPLICATE_PATH,
                KP_EINVAL);
    check_fails("<delete path=\"a.js\"/>\n<delete path=\"a.js\"/>\n", NULL, KP_FILEBLOCKS_DUPLICATE_PATH, KP_EINVAL);
    /* case matters: these are different paths */
    kp_status st;
    free(run_all_ways("<file path=\"A.js\">\n</file>\n<file path=\"a.js\">\n</file>\n", NULL, &st));
    assert_int_equal(st, KP_OK);
}

static void test_incomplete_file(void **state)
{
    (void)state;
    check("Start\n<file path=\"index.html\">\n<p>done</p>\n</file>\n<file path=\"app.js\">\nlet x = 1;\nlet y", NULL,
          "T[Start\n]S[index.html]D[index.html:<p>done</p>]F[index.html:<p>done</p>]S[app.js]D[app.js:let x = 1;\n"
          "let y] | status=invalid_request code=incomplete_file err=[incomplete_file: \"app.js\" was not closed "
          "with </file>] file=index.html:11 msg=[Start] resume=51 open=app.js");
    /* an opening tag as the very last line */
    check_fails("<file path=\"a\">", NULL, KP_FILEBLOCKS_INCOMPLETE_FILE, KP_EINVAL);
    /* a </file> without newline at the end of input closes the file */
    check("<file path=\"a\">\nx\n</file>", NULL, "S[a]D[a:x]F[a:x] | status=ok code=ok file=a:1 msg=[] resume=25");
}

/* Feeds `a`, finishes (incomplete), resumes, feeds `b`: the result must be
 * what the output up to the resume offset followed by `b` gives in one go. */
static void test_resume_after_cut(void **state)
{
    (void)state;
    const char *a = "Plan:\n<file path=\"index.html\">\n<p>1</p>\n</file>\n<delete path=\"x.js\"/>\n"
                    "more words\n<file path=\"app.js\">\nconsole.log(";
    const char *b = "<file path=\"app.js\">\nconsole.log(1);\n</file>\nDone.";
    rec r = {KP_BUF_INIT, 0, 0, KP_BUF_INIT, NULL};
    kp_fileblocks *p;
    kp_err err;
    assert_int_equal(kp_fileblocks_new(NULL, &CBS, &r, &p, &err), KP_OK);
    assert_int_equal(kp_fileblocks_feed(p, a, strlen(a), &err), KP_OK);
    assert_int_equal(kp_fileblocks_finish(p, &err), KP_EINVAL);
    assert_int_equal(kp_fileblocks_error_code(p), KP_FILEBLOCKS_INCOMPLETE_FILE);
    size_t off = kp_fileblocks_resume_offset(p);
    assert_int_equal(off, strlen("Plan:\n<file path=\"index.html\">\n<p>1</p>\n</file>\n<delete path=\"x.js\"/>\n"));
    assert_string_equal(kp_fileblocks_open_path(p), "app.js");

    assert_int_equal(kp_fileblocks_resume(p, &err), KP_OK);
    assert_int_equal(kp_fileblocks_offset(p), off);
    assert_null(kp_fileblocks_open_path(p));
    assert_int_equal(kp_fileblocks_feed(p, b, strlen(b), &err), KP_OK);
    assert_int_equal(kp_fileblocks_finish(p, &err), KP_OK);
    outcome resumed;
    summarize(p, &r, KP_OK, &err, &resumed);
    kp_fileblocks_free(p);
    kp_buf_free(&r.data);

    kp_buf joined = KP_BUF_INIT;
    kp_buf_append(&joined, a, off);
    kp_buf_puts(&joined, b);
    kp_status st;
    char *direct = run_all_ways_n(joined.data, joined.len, NULL, NULL, &st);
    assert_int_equal(st, KP_OK);
    /* same state; the transcripts differ only by what was streamed before the rewind */
    assert_string_equal(strstr(kp_buf_cstr(&resumed.log), " | "), strstr(direct, " | "));
    assert_non_null(strstr(direct, "file=index.html:8 del=x.js file=app.js:15 msg=[Plan:\nDone.]"));
    free(direct);
    kp_buf_free(&joined);
    kp_buf_free(&resumed.log);
}

static void test_resume_refused_after_other_errors(void **state)
{
    (void)state;
    kp_fileblocks *p;
    kp_err err;
    assert_int_equal(kp_fileblocks_new(NULL, NULL, NULL, &p, &err), KP_OK);
    assert_int_equal(kp_fileblocks_feed(p, "<file path=\"/x\">\n", 17, &err), KP_EINVAL);
    assert_int_equal(kp_fileblocks_resume(p, &err), KP_EINVAL);
    /* the failure is sticky */
    assert_int_equal(kp_fileblocks_feed(p, "hello\n", 6, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "invalid_path"));
    assert_int_equal(kp_fileblocks_finish(p, &err), KP_EINVAL);
    kp_fileblocks_free(p);
}

static void test_callback_failure_aborts(void **state)
{
    (void)state;
    kp_status st;
    const char *in = "<file path=\"a\">\n1\n</file>\n<file path=\"b\">\n2\n</file>\n";
    char *got = run_all_ways_n(in, strlen(in), NULL, "a", &st);
    assert_int_equal(st, KP_EIO);
    assert_string_equal(got,
                        "S[a]D[a:1]F[a:1] | status=io_error code=aborted err=[disk full] file=a:1 msg=[] resume=26");
    free(got);
}

static void test_message_limit(void **state)
{
    (void)state;
    kp_fileblocks_opts o = {0};
    o.max_message_bytes = 6;
    /* "ab" + "é" (2 bytes) + "日" (3 bytes) = 7 bytes: the cut falls inside 日, which is dropped whole */
    check("ab\xC3\xA9\xE6\x97\xA5zz\n<file path=\"a\">\n</file>\nmore", &o,
          "T[ab\xC3\xA9\xE6\x97\xA5zz\n]S[a]F[a:]T[more] | status=ok code=ok file=a:0 msg=[ab\xC3\xA9] resume=34");
}

static void test_finish_and_helpers(void **state)
{
    (void)state;
    kp_fileblocks *p;
    kp_err err;
    assert_int_equal(kp_fileblocks_new(NULL, NULL, NULL, &p, &err), KP_OK);
    const char *in = "<file path=\"index.html\">\nx\n</file>\n<delete path=\"old.html\"/>\n";
    assert_int_equal(kp_fileblocks_feed(p, in, strlen(in), &err), KP_OK);
    assert_int_equal(kp_fileblocks_finish(p, &err), KP_OK);
    assert_int_equal(kp_fileblocks_finish(p, &err), KP_OK); /* idempotent */
    assert_true(kp_fileblocks_has_file(p, "index.html"));
    assert_false(kp_fileblocks_has_file(p, "old.html")); /* deleted, not a file */
    assert_false(kp_fileblocks_has_file(p, "index.htm"));
    size_t n;
    const kp_fileblocks_entry *e = kp_fileblocks_entries(p, &n);
    assert_int_equal(n, 2);
    assert_string_equal(e[0].path, "index.html");
    assert_string_equal(e[0].data, "x");
    assert_int_equal(e[1].deleted, 1);
    assert_null(e[1].data);
    assert_int_equal(kp_fileblocks_feed(p, "x", 1, &err), KP_EINTERNAL);
    kp_fileblocks_free(p);
    assert_string_equal(kp_fileblocks_code_name(KP_FILEBLOCKS_TOO_LARGE), "too_large");
}

/* ---- sizes only ---- */

static kp_status count_done(void *ud, const char *path, const char *data, size_t len, kp_err *err)
{
    (void)path;
    (void)err;
    size_t *got = ud;
    got[0]++;
    got[1] += len;
    got[2] += data != NULL;
    return KP_OK;
}

/* sizes_only: the same entries, sizes and limits as with the contents kept, no contents. */
static void test_sizes_only(void **state)
{
    (void)state;
    static const char in[] = "Hi.\n<file path=\"a.txt\">\nab\ncd\n</file>\n<delete path=\"old.js\"/>\n"
                             "<file path=\"b.txt\">\n\n</file>\n";
    kp_fileblocks_cbs cbs = {.on_file_done = count_done};
    kp_fileblocks_opts o;
    kp_err err;
    for (int sizes_only = 0; sizes_only <= 1; sizes_only++) {
        size_t got[3] = {0, 0, 0}, n = 0, mlen = 0;
        kp_fileblocks *p = NULL;
        kp_fileblocks_default_opts(&o);
        o.sizes_only = sizes_only;
        assert_int_equal(kp_fileblocks_new(&o, &cbs, got, &p, &err), KP_OK);
        assert_int_equal(kp_fileblocks_feed(p, in, sizeof in - 1, &err), KP_OK);
        assert_int_equal(kp_fileblocks_finish(p, &err), KP_OK);
        const kp_fileblocks_entry *e = kp_fileblocks_entries(p, &n);
        assert_int_equal(n, 3);
        assert_string_equal(e[0].path, "a.txt");
        assert_int_equal(e[0].len, 5);
        assert_true(e[1].deleted);
        assert_string_equal(e[2].path, "b.txt");
        assert_int_equal(e[2].len, 0);
        assert_int_equal(got[0], 2);
        assert_int_equal(got[1], 5);
        if (sizes_only) {
            assert_null(e[0].data);
            assert_int_equal(got[2], 0);
        } else {
            assert_string_equal(e[0].data, "ab\ncd");
            assert_int_equal(got[2], 2);
        }
        assert_memory_equal(kp_fileblocks_message(p, &mlen), "Hi.", 3);
        kp_fileblocks_free(p);

        /* the size limit holds without the contents too */
        o.max_total_bytes = 4;
        assert_int_equal(kp_fileblocks_new(&o, NULL, NULL, &p, &err), KP_OK);
        assert_int_equal(kp_fileblocks_feed(p, in, sizeof in - 1, &err), KP_ETOOLARGE);
        assert_int_equal(kp_fileblocks_error_code(p), KP_FILEBLOCKS_TOO_LARGE);
        kp_fileblocks_free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_output),
        cmocka_unit_test(test_contents_are_the_lines_between),
        cmocka_unit_test(test_close_tag_must_stand_alone),
        cmocka_unit_test(test_near_tags_outside_are_text),
        cmocka_unit_test(test_delete_tags),
        cmocka_unit_test(test_message_around_blocks),
        cmocka_unit_test(test_utf8_split_anywhere),
        cmocka_unit_test(test_invalid_paths),
        cmocka_unit_test(test_path_length),
        cmocka_unit_test(test_tag_line_too_long_is_text),
        cmocka_unit_test(test_path_check_helper),
        cmocka_unit_test(test_too_many_files),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_incomplete_file),
        cmocka_unit_test(test_resume_after_cut),
        cmocka_unit_test(test_resume_refused_after_other_errors),
        cmocka_unit_test(test_callback_failure_aborts),
        cmocka_unit_test(test_message_limit),
        cmocka_unit_test(test_finish_and_helpers),
        cmocka_unit_test(test_sizes_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
