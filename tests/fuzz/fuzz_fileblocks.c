/*
 * fuzz_fileblocks.c - libFuzzer target for the file-block parser
 * (src/gen/fileblocks.c).
 *
 * The payload (see harness.h) is a model's output. It is parsed fed whole and
 * fed in the pieces the fuzzer chose; the two runs must agree on everything:
 * the error, the entries, the message, the resume offset, and the text and
 * file data passed to the callbacks. Within a run, the pieces of a file's data
 * must add up to what on_file_done gets, and when the output is valid UTF-8,
 * every piece must be too (the parser holds back incomplete characters).
 * Flags: bit 0 selects small limits (4 files, 4 KiB, 16-byte paths, 3
 * deletions, 256 message bytes) so every limit is reached; bit 1 resumes
 * after an incomplete file and feeds a fixed continuation.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "gen/fileblocks.h"
#include "harness.h"

typedef struct run {
    kp_buf log;       /* every callback, in order: a tag byte, then its bytes */
    kp_buf text;      /* text since the last other callback (its pieces may be cut anywhere) */
    kp_buf file_data; /* the open file's data pieces */
    int utf8_input;   /* the payload is valid UTF-8: pieces must be too */
} run;

static int valid_utf8(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    json_decref(j);
    return j != NULL;
}

static void log_raw(run *r, char tag, const char *s, size_t len)
{
    uint64_t n = len;
    kp_buf_append(&r->log, &tag, 1);
    kp_buf_append(&r->log, &n, sizeof n);
    kp_buf_append(&r->log, s, len);
}

/* Logs an event, after the text that came before it. */
static void log_bytes(run *r, char tag, const char *s, size_t len)
{
    if (r->text.len) {
        log_raw(r, 't', r->text.data, r->text.len);
        kp_buf_reset(&r->text);
    }
    log_raw(r, tag, s, len);
}

static kp_status on_text(void *ud, const char *text, size_t len, kp_err *err)
{
    run *r = ud;
    (void)err;
    FZ_CHECK(len > 0 && (!r->utf8_input || valid_utf8(text, len)),
             "a text piece is empty, or not UTF-8 though the output is");
    kp_buf_append(&r->text, text, len);
    return KP_OK;
}

static kp_status on_file_start(void *ud, const char *path, kp_err *err)
{
    run *r = ud;
    (void)err;
    kp_buf_reset(&r->file_data);
    log_bytes(r, 's', path, strlen(path));
    return KP_OK;
}

static kp_status on_file_data(void *ud, const char *path, const char *data, size_t len, kp_err *err)
{
    run *r = ud;
    (void)path;
    (void)err;
    FZ_CHECK(len > 0 && (!r->utf8_input || valid_utf8(data, len)),
             "a data piece is empty, or not UTF-8 though the output is");
    kp_buf_append(&r->file_data, data, len);
    return KP_OK;
}

static kp_status on_file_done(void *ud, const char *path, const char *data, size_t len, kp_err *err)
{
    run *r = ud;
    (void)err;
    FZ_CHECK(len == r->file_data.len && (len == 0 || memcmp(data, r->file_data.data, len) == 0) && data[len] == '\0',
             "on_file_done's data differs from its pieces");
    kp_buf_reset(&r->file_data);
    log_bytes(r, 'f', path, strlen(path));
    log_bytes(r, 'd', data, len);
    return KP_OK;
}

static kp_status on_delete(void *ud, const char *path, kp_err *err)
{
    run *r = ud;
    (void)err;
    log_bytes(r, 'x', path, strlen(path));
    return KP_OK;
}

static const kp_fileblocks_cbs CBS = {on_text, on_file_start, on_file_data, on_file_done, on_delete};

/* What a run ended with, as bytes to compare. */
static void summarise(kp_fileblocks *p, kp_status st, run *r)
{
    size_t n = 0, mlen = 0;
    const kp_fileblocks_entry *e = kp_fileblocks_entries(p, &n);
    const char *msg = kp_fileblocks_message(p, &mlen);
    uint64_t words[4] = {(uint64_t)st, (uint64_t)kp_fileblocks_error_code(p), kp_fileblocks_resume_offset(p), n};
    log_bytes(r, 'e', (const char *)words, sizeof words);
    for (size_t i = 0; i < n; i++) {
        log_bytes(r, e[i].deleted ? 'X' : 'F', e[i].path, strlen(e[i].path));
        if (!e[i].deleted)
            log_bytes(r, 'D', e[i].data, e[i].len);
    }
    log_bytes(r, 'm', msg, mlen);
}

static void parse(fz_chunks *c, int whole, run *r)
{
    kp_fileblocks_opts small = {
        .max_files = 4, .max_total_bytes = 4096, .max_path_len = 16, .max_deletes = 3, .max_message_bytes = 256};
    kp_fileblocks *p = NULL;
    kp_err err = {0};
    FZ_CHECK(kp_fileblocks_new((c->flags & 1) ? &small : NULL, &CBS, r, &p, &err) == KP_OK, "kp_fileblocks_new failed");
    kp_status st = KP_OK;
    fz_chunks_rewind(c);
    if (whole) {
        st = kp_fileblocks_feed(p, c->payload ? c->payload : "", c->len, &err);
    } else {
        const char *piece;
        size_t n;
        while (st == KP_OK && (n = fz_chunks_next(c, &piece)) > 0)
            st = kp_fileblocks_feed(p, piece, n, &err);
    }
    if (st == KP_OK)
        st = kp_fileblocks_finish(p, &err);
    if (st != KP_OK)
        FZ_CHECK(kp_fileblocks_feed(p, "x\n", 2, &err) == st, "feeding after a failure did not fail the same way");
    if ((c->flags & 2) && kp_fileblocks_error_code(p) == KP_FILEBLOCKS_INCOMPLETE_FILE) {
        FZ_CHECK(kp_fileblocks_resume(p, &err) == KP_OK && kp_fileblocks_open_path(p) == NULL,
                 "resuming after incomplete_file failed");
        static const char more[] = "<file path=\"zz/next.js\">\nlet a = 1;\n\n</file>\n";
        st = kp_fileblocks_feed(p, more, sizeof more - 1, &err);
        if (st == KP_OK)
            st = kp_fileblocks_finish(p, &err);
    }
    summarise(p, st, r);
    kp_fileblocks_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_chunks c;
    run r1 = {KP_BUF_INIT, KP_BUF_INIT, KP_BUF_INIT, 0}, r2 = {KP_BUF_INIT, KP_BUF_INIT, KP_BUF_INIT, 0};
    fz_chunks_init(&c, data, size);
    r1.utf8_input = r2.utf8_input = valid_utf8(c.payload ? c.payload : "", c.len);
    parse(&c, 1, &r1);
    parse(&c, 0, &r2);
    FZ_CHECK(r1.log.len == r2.log.len && (r1.log.len == 0 || memcmp(r1.log.data, r2.log.data, r1.log.len) == 0),
             "whole and chunked runs differ");
    kp_buf_free(&r1.log);
    kp_buf_free(&r2.log);
    kp_buf_free(&r1.text);
    kp_buf_free(&r2.text);
    kp_buf_free(&r1.file_data);
    kp_buf_free(&r2.file_data);
    return 0;
}
