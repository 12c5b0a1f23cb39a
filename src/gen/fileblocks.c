/*
 * fileblocks.c - see fileblocks.h.
 *
 * The parser works a line at a time without waiting for whole lines: a line
 * starts "undecided" and its bytes are buffered while they could still be a
 * tag (`<file path="`, `<delete path="` outside a file, `</file>` inside);
 * the moment they cannot, the line becomes "text" and its bytes, buffered and
 * later, stream out as message text or file contents. At the newline an
 * undecided line is either a tag or a (short) text line.
 *
 * Inside a file the newline ending a content line is emitted only when the
 * next content line starts, since the newline before `</file>` is not part of
 * the contents.
 *
 * Callbacks get text and data pieces that never end inside a UTF-8 sequence:
 * up to three trailing bytes of an incomplete sequence are held back until the
 * rest arrives (stored contents and message are exact regardless).
 */
#include "gen/fileblocks.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

#define TAG_LINE_MIN_MAX 1024

typedef enum line_mode { LINE_UNDECIDED, LINE_TEXT } line_mode;
typedef enum tag_match { TAG_NO, TAG_MAYBE, TAG_YES } tag_match;

struct kp_fileblocks {
    kp_fileblocks_opts opts;
    kp_fileblocks_cbs cbs;
    void *ud;
    size_t tag_line_max;

    line_mode mode;
    kp_buf line; /* the undecided line's bytes */

    int in_file;
    kp_buf cur_path;  /* the open file's path */
    kp_buf cur;       /* the open file's contents so far (not with sizes_only) */
    size_t cur_len;   /* their length */
    size_t cur_lines; /* content lines begun in the open file */

    char held[4]; /* an incomplete UTF-8 sequence not yet passed to a callback */
    size_t nheld;

    kp_fileblocks_entry *entries;
    size_t nentries, cap, nfiles, ndeletes, total_bytes;
    kp_buf message;
    int message_full; /* message bytes were dropped at max_message_bytes */

    size_t offset;
    size_t resume_offset;
    size_t resume_message_len;
    int resume_message_full;

    kp_fileblocks_code code;
    kp_err err; /* the failure, when code != OK */
    int finished;
};

/* ---- paths ---- */

#define PRINTABLE_MAX 100

/* Copies at most PRINTABLE_MAX bytes of s into out, '?' for bytes outside printable ASCII. */
static const char *printable(const char *s, size_t n, char out[PRINTABLE_MAX + 1])
{
    size_t i;
    for (i = 0; i < n && i < PRINTABLE_MAX; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7F ? s[i] : '?';
    out[i] = '\0';
    return out;
}

static int path_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-' || c == '/';
}

kp_status kp_fileblocks_check_path(const char *path, size_t len, size_t max_len, kp_err *err)
{
    if (len == 0)
        return kp_err_set(err, KP_EINVAL, "invalid_path: empty path");
    if (len > max_len)
        return kp_err_set(err, KP_EINVAL, "invalid_path: path longer than %zu bytes", max_len);
    char shown[PRINTABLE_MAX + 1];
    for (size_t i = 0; i < len; i++)
        if (!path_char_ok(path[i]))
            return kp_err_set(err, KP_EINVAL, "invalid_path: \"%s\": only letters, digits and . _ - / are allowed",
                              printable(path, len, shown));
    if (path[0] == '/')
        return kp_err_set(err, KP_EINVAL, "invalid_path: \"%.*s\": must be relative", (int)len, path);
    size_t seg = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && path[i] != '/')
            continue;
        size_t n = i - seg;
        if (n == 0)
            return kp_err_set(err, KP_EINVAL, "invalid_path: \"%.*s\": empty segment", (int)len, path);
        if ((n == 1 && path[seg] == '.') || (n == 2 && path[seg] == '.' && path[seg + 1] == '.'))
            return kp_err_set(err, KP_EINVAL, "invalid_path: \"%.*s\": '.' and '..' segments are not allowed", (int)len,
                              path);
        seg = i + 1;
    }
    return KP_OK;
}

/* ---- tag lines ---- */

static int all_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

/* Whether s starts with lit (TAG_YES, *used = its length), is a prefix of it (TAG_MAYBE), or neither. */
static tag_match match_literal(const char *s, size_t n, const char *lit, size_t *used)
{
    size_t l = strlen(lit);
    if (n < l)
        return memcmp(s, lit, n) == 0 ? TAG_MAYBE : TAG_NO;
    if (memcmp(s, lit, l) != 0)
        return TAG_NO;
    *used = l;
    return TAG_YES;
}

/* lit followed by blanks only. */
static tag_match match_literal_line(const char *s, size_t n, const char *lit)
{
    size_t used = 0;
    tag_match m = match_literal(s, n, lit, &used);
    if (m != TAG_YES)
        return m;
    return all_blank(s + used, n - used) ? TAG_YES : TAG_NO;
}

/* head PATH tail blanks, PATH free of '"'; on TAG_YES, path and plen locate PATH. */
static tag_match match_path_tag(const char *s, size_t n, const char *head, const char *tail, const char **path,
                                size_t *plen)
{
    size_t used = 0;
    tag_match m = match_literal(s, n, head, &used);
    if (m != TAG_YES)
        return m;
    const char *quote = memchr(s + used, '"', n - used);
    if (!quote)
        return TAG_MAYBE;
    m = match_literal_line(quote, n - (size_t)(quote - s), tail);
    if (m == TAG_YES) {
        *path = s + used;
        *plen = (size_t)(quote - (s + used));
    }
    return m;
}

static tag_match best(tag_match a, tag_match b)
{
    return a > b ? a : b;
}

static tag_match match_open(const char *s, size_t n, const char **path, size_t *plen)
{
    return match_path_tag(s, n, "<file path=\"", "\">", path, plen);
}

static tag_match match_delete(const char *s, size_t n, const char **path, size_t *plen)
{
    return best(match_path_tag(s, n, "<delete path=\"", "\"/>", path, plen),
                match_path_tag(s, n, "<delete path=\"", "\" />", path, plen));
}

static tag_match match_close(const char *s, size_t n)
{
    return match_literal_line(s, n, "</file>");
}

/* Could the undecided line, so far, still turn out to be a tag line? */
static int could_be_tag(const kp_fileblocks *p)
{
    const char *s = p->line.data, *path;
    size_t n = p->line.len, plen;
    if (p->in_file)
        return match_close(s, n) != TAG_NO;
    return match_open(s, n, &path, &plen) != TAG_NO || match_delete(s, n, &path, &plen) != TAG_NO;
}

/* ---- failures ---- */

static kp_status fail(kp_fileblocks *p, kp_fileblocks_code code, kp_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static kp_status fail(kp_fileblocks *p, kp_fileblocks_code code, kp_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err.msg, sizeof p->err.msg, fmt, ap);
    va_end(ap);
    p->err.status = status;
    p->code = code;
    return status;
}

static kp_status fail_nomem(kp_fileblocks *p)
{
    return fail(p, KP_FILEBLOCKS_NO_MEMORY, KP_ENOMEM, "out of memory");
}

/* A callback returned st and filled p->err (or not). */
static kp_status aborted(kp_fileblocks *p, kp_status st)
{
    if (p->err.msg[0] == '\0')
        snprintf(p->err.msg, sizeof p->err.msg, "output handling failed");
    p->err.status = st;
    p->code = KP_FILEBLOCKS_ABORTED;
    return st;
}

static kp_status report(const kp_fileblocks *p, kp_err *err)
{
    if (err)
        *err = p->err;
    return p->err.status;
}

/* ---- output: message text and file contents ---- */

static size_t utf8_seq_len(unsigned char lead)
{
    if (lead >= 0xF0 && lead <= 0xF7)
        return 4;
    if (lead >= 0xE0)
        return lead <= 0xEF ? 3 : 1;
    if (lead >= 0xC0)
        return 2;
    return 1;
}

static int is_continuation(char c)
{
    return ((unsigned char)c & 0xC0) == 0x80;
}

/* Length of the longest prefix of s that does not end inside a UTF-8 sequence. */
static size_t complete_prefix(const char *s, size_t n)
{
    size_t i = n, back = 0;
    while (i > 0 && back < 3 && is_continuation(s[i - 1])) {
        i--;
        back++;
    }
    if (i == 0)
        return n;
    size_t lead = i - 1, need = utf8_seq_len((unsigned char)s[lead]);
    return need > 1 && n - lead < need ? lead : n;
}

static kp_status deliver(kp_fileblocks *p, const char *s, size_t n)
{
    if (n == 0)
        return KP_OK;
    kp_status st = KP_OK;
    if (p->in_file && p->cbs.on_file_data)
        st = p->cbs.on_file_data(p->ud, kp_buf_cstr(&p->cur_path), s, n, &p->err);
    else if (!p->in_file && p->cbs.on_text)
        st = p->cbs.on_text(p->ud, s, n, &p->err);
    return st == KP_OK ? KP_OK : aborted(p, st);
}

static kp_status flush_held(kp_fileblocks *p)
{
    size_t n = p->nheld;
    p->nheld = 0;
    return deliver(p, p->held, n);
}

/* Passes s to the current callback, holding back an incomplete UTF-8 tail. */
static kp_status deliver_whole_chars(kp_fileblocks *p, const char *s, size_t n)
{
    kp_status st;
    while (p->nheld > 0 && n > 0) {
        if (!is_continuation(*s)) /* not UTF-8 after all: pass on what was held */
            return (st = flush_held(p)) != KP_OK ? st : deliver_whole_chars(p, s, n);
        p->held[p->nheld++] = *s++;
        n--;
        if (p->nheld >= utf8_seq_len((unsigned char)p->held[0]) && (st = flush_held(p)) != KP_OK)
            return st;
    }
    if (p->nheld > 0) /* still incomplete: all of s went into it */
        return KP_OK;
    size_t whole = complete_prefix(s, n);
    if ((st = deliver(p, s, whole)) != KP_OK)
        return st;
    memcpy(p->held, s + whole, n - whole);
    p->nheld = n - whole;
    return KP_OK;
}

static kp_status keep_message(kp_fileblocks *p, const char *s, size_t n)
{
    if (p->message_full)
        return KP_OK;
    size_t room = p->opts.max_message_bytes - p->message.len;
    if (kp_buf_append(&p->message, s, n < room ? n : room) != 0)
        return fail_nomem(p);
    if (n >= room && n > 0) { /* full: keep whole characters only */
        p->message_full = 1;
        p->message.len = complete_prefix(p->message.data, p->message.len);
        p->message.data[p->message.len] = '\0';
    }
    return KP_OK;
}

static kp_status keep_contents(kp_fileblocks *p, const char *s, size_t n)
{
    size_t limit = p->opts.max_total_bytes;
    if (p->total_bytes + p->cur_len > limit || n > limit - p->total_bytes - p->cur_len)
        return fail(p, KP_FILEBLOCKS_TOO_LARGE, KP_ETOOLARGE, "too_large: files exceed %zu bytes in total (at \"%s\")",
                    limit, kp_buf_cstr(&p->cur_path));
    if (!p->opts.sizes_only && kp_buf_append(&p->cur, s, n) != 0)
        return fail_nomem(p);
    p->cur_len += n;
    return KP_OK;
}

/* Bytes of the current text line: message text or file contents. */
static kp_status emit(kp_fileblocks *p, const char *s, size_t n)
{
    if (n == 0)
        return KP_OK;
    kp_status st = p->in_file ? keep_contents(p, s, n) : keep_message(p, s, n);
    if (st != KP_OK)
        return st;
    return deliver_whole_chars(p, s, n);
}

/* The current line turns out to be text: emit what was buffered of it. */
static kp_status start_text_line(kp_fileblocks *p)
{
    kp_status st;
    p->mode = LINE_TEXT;
    if (p->in_file && p->cur_lines++ > 0 && (st = emit(p, "\n", 1)) != KP_OK)
        return st;
    st = emit(p, p->line.data, p->line.len);
    kp_buf_reset(&p->line);
    return st;
}

/* ---- blocks ---- */

static const kp_fileblocks_entry *find_entry(const kp_fileblocks *p, const char *path, size_t len)
{
    for (size_t i = 0; i < p->nentries; i++)
        if (strlen(p->entries[i].path) == len && memcmp(p->entries[i].path, path, len) == 0)
            return &p->entries[i];
    return NULL;
}

/* The checks every path in a tag goes through. */
static kp_status check_new_path(kp_fileblocks *p, const char *path, size_t len)
{
    if (kp_fileblocks_check_path(path, len, p->opts.max_path_len, &p->err) != KP_OK) {
        p->code = KP_FILEBLOCKS_INVALID_PATH;
        return p->err.status;
    }
    if (find_entry(p, path, len))
        return fail(p, KP_FILEBLOCKS_DUPLICATE_PATH, KP_EINVAL, "duplicate_path: \"%.*s\" appears twice", (int)len,
                    path);
    return KP_OK;
}

static kp_fileblocks_entry *push_entry(kp_fileblocks *p, const char *path, size_t len)
{
    if (p->nentries == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        kp_fileblocks_entry *e = realloc(p->entries, cap * sizeof *e);
        if (!e)
            return NULL;
        p->entries = e;
        p->cap = cap;
    }
    kp_fileblocks_entry *e = &p->entries[p->nentries];
    memset(e, 0, sizeof *e);
    if (!(e->path = strndup(path, len)))
        return NULL;
    p->nentries++;
    return e;
}

static void mark_resume_point(kp_fileblocks *p)
{
    p->resume_offset = p->offset;
    p->resume_message_len = p->message.len;
    p->resume_message_full = p->message_full;
}

static kp_status open_file(kp_fileblocks *p, const char *path, size_t len)
{
    kp_status st = check_new_path(p, path, len);
    if (st != KP_OK)
        return st;
    if (p->nfiles >= p->opts.max_files)
        return fail(p, KP_FILEBLOCKS_TOO_MANY_FILES, KP_ETOOLARGE, "too_many_files: more than %zu files",
                    p->opts.max_files);
    kp_buf_reset(&p->cur_path);
    kp_buf_reset(&p->cur);
    p->cur_len = 0;
    if (kp_buf_append(&p->cur_path, path, len) != 0)
        return fail_nomem(p);
    p->in_file = 1;
    p->cur_lines = 0;
    if (p->cbs.on_file_start && (st = p->cbs.on_file_start(p->ud, p->cur_path.data, &p->err)) != KP_OK)
        return aborted(p, st);
    return KP_OK;
}

static kp_status close_file(kp_fileblocks *p)
{
    kp_fileblocks_entry *e = push_entry(p, p->cur_path.data, p->cur_path.len);
    if (!e)
        return fail_nomem(p);
    e->len = p->cur_len;
    if (!p->opts.sizes_only && !(e->data = kp_buf_steal(&p->cur)))
        return fail_nomem(p);
    p->in_file = 0;
    p->nfiles++;
    p->total_bytes += e->len;
    mark_resume_point(p);
    kp_status st = KP_OK;
    if (p->cbs.on_file_done && (st = p->cbs.on_file_done(p->ud, e->path, e->data, e->len, &p->err)) != KP_OK)
        return aborted(p, st);
    return KP_OK;
}

static kp_status delete_file(kp_fileblocks *p, const char *path, size_t len)
{
    kp_status st = check_new_path(p, path, len);
    if (st != KP_OK)
        return st;
    if (p->ndeletes >= p->opts.max_deletes)
        return fail(p, KP_FILEBLOCKS_TOO_MANY_FILES, KP_ETOOLARGE, "too_many_files: more than %zu deletions",
                    p->opts.max_deletes);
    kp_fileblocks_entry *e = push_entry(p, path, len);
    if (!e)
        return fail_nomem(p);
    e->deleted = 1;
    p->ndeletes++;
    mark_resume_point(p);
    if (p->cbs.on_delete && (st = p->cbs.on_delete(p->ud, e->path, &p->err)) != KP_OK)
        return aborted(p, st);
    return KP_OK;
}

/* A whole undecided line: a tag, or else a text line. 1 if it was a tag. */
static kp_status take_tag_line(kp_fileblocks *p, int *was_tag)
{
    const char *s = p->line.data ? p->line.data : "", *path = NULL;
    size_t n = p->line.len, plen = 0;
    kp_status st = KP_OK;
    *was_tag = 1;
    if (p->in_file && match_close(s, n) == TAG_YES)
        st = close_file(p);
    else if (!p->in_file && match_open(s, n, &path, &plen) == TAG_YES)
        st = open_file(p, path, plen);
    else if (!p->in_file && match_delete(s, n, &path, &plen) == TAG_YES)
        st = delete_file(p, path, plen);
    else
        *was_tag = 0;
    if (*was_tag)
        kp_buf_reset(&p->line);
    return st;
}

/* The current line ends (at a newline, or at the end of input). */
static kp_status end_line(kp_fileblocks *p, int newline)
{
    kp_status st = flush_held(p);
    if (st != KP_OK)
        return st;
    if (p->mode == LINE_UNDECIDED) {
        if (!newline && p->line.len == 0)
            return KP_OK; /* the input ended with a newline: no last line */
        int was_tag;
        if ((st = take_tag_line(p, &was_tag)) != KP_OK || was_tag)
            return st;
        if ((st = start_text_line(p)) != KP_OK)
            return st;
    }
    p->mode = LINE_UNDECIDED;
    return newline && !p->in_file ? emit(p, "\n", 1) : KP_OK;
}

/* Bytes of the current line (no newline among them). */
static kp_status line_bytes(kp_fileblocks *p, const char *s, size_t n)
{
    if (p->mode == LINE_TEXT)
        return emit(p, s, n);
    if (p->line.len + n > p->tag_line_max) { /* too long for a tag */
        kp_status st = start_text_line(p);
        return st != KP_OK ? st : emit(p, s, n);
    }
    if (kp_buf_append(&p->line, s, n) != 0)
        return fail_nomem(p);
    return could_be_tag(p) ? KP_OK : start_text_line(p);
}

/* ---- public ---- */

void kp_fileblocks_default_opts(kp_fileblocks_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_files = 50;
    o->max_total_bytes = 2u * 1024u * 1024u;
    o->max_path_len = 200;
    o->max_deletes = 200;
    o->max_message_bytes = 64u * 1024u;
}

kp_status kp_fileblocks_new(const kp_fileblocks_opts *opts, const kp_fileblocks_cbs *cbs, void *ud, kp_fileblocks **out,
                            kp_err *err)
{
    kp_fileblocks *p = calloc(1, sizeof *p);
    if (!p)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_fileblocks_opts d;
    kp_fileblocks_default_opts(&d);
    p->opts = opts ? *opts : d;
    if (!p->opts.max_files)
        p->opts.max_files = d.max_files;
    if (!p->opts.max_total_bytes)
        p->opts.max_total_bytes = d.max_total_bytes;
    if (!p->opts.max_path_len)
        p->opts.max_path_len = d.max_path_len;
    if (!p->opts.max_deletes)
        p->opts.max_deletes = d.max_deletes;
    if (!p->opts.max_message_bytes)
        p->opts.max_message_bytes = d.max_message_bytes;
    if (cbs)
        p->cbs = *cbs;
    p->ud = ud;
    p->tag_line_max = p->opts.max_path_len + 64 > TAG_LINE_MIN_MAX ? p->opts.max_path_len + 64 : TAG_LINE_MIN_MAX;
    p->mode = LINE_UNDECIDED;
    kp_err_clear(&p->err);
    *out = p;
    return KP_OK;
}

void kp_fileblocks_free(kp_fileblocks *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nentries; i++) {
        free(p->entries[i].path);
        free(p->entries[i].data);
    }
    free(p->entries);
    kp_buf_free(&p->line);
    kp_buf_free(&p->cur_path);
    kp_buf_free(&p->cur);
    kp_buf_free(&p->message);
    free(p);
}

kp_status kp_fileblocks_feed(kp_fileblocks *p, const char *data, size_t len, kp_err *err)
{
    if (p->code != KP_FILEBLOCKS_OK)
        return report(p, err);
    if (p->finished)
        return kp_err_set(err, KP_EINTERNAL, "output fed after its end");
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - data) : len;
        kp_status st = line_bytes(p, data + i, end - i);
        p->offset += end - i;
        if (st == KP_OK && nl) {
            p->offset++;
            st = end_line(p, 1);
        }
        if (st != KP_OK)
            return report(p, err);
        i = nl ? end + 1 : len;
    }
    return KP_OK;
}

kp_status kp_fileblocks_finish(kp_fileblocks *p, kp_err *err)
{
    if (p->code != KP_FILEBLOCKS_OK)
        return report(p, err);
    if (p->finished)
        return KP_OK;
    if (end_line(p, 0) != KP_OK || flush_held(p) != KP_OK)
        return report(p, err);
    if (p->in_file) {
        fail(p, KP_FILEBLOCKS_INCOMPLETE_FILE, KP_EINVAL, "incomplete_file: \"%s\" was not closed with </file>",
             p->cur_path.data);
        return report(p, err);
    }
    p->finished = 1;
    return KP_OK;
}

kp_fileblocks_code kp_fileblocks_error_code(const kp_fileblocks *p)
{
    return p->code;
}

const char *kp_fileblocks_code_name(kp_fileblocks_code code)
{
    switch (code) {
    case KP_FILEBLOCKS_OK: return "ok";
    case KP_FILEBLOCKS_INVALID_PATH: return "invalid_path";
    case KP_FILEBLOCKS_TOO_MANY_FILES: return "too_many_files";
    case KP_FILEBLOCKS_TOO_LARGE: return "too_large";
    case KP_FILEBLOCKS_DUPLICATE_PATH: return "duplicate_path";
    case KP_FILEBLOCKS_INCOMPLETE_FILE: return "incomplete_file";
    case KP_FILEBLOCKS_ABORTED: return "aborted";
    case KP_FILEBLOCKS_NO_MEMORY: return "out_of_memory";
    }
    return "unknown";
}

const kp_fileblocks_entry *kp_fileblocks_entries(const kp_fileblocks *p, size_t *n)
{
    *n = p->nentries;
    return p->entries;
}

int kp_fileblocks_has_file(const kp_fileblocks *p, const char *path)
{
    const kp_fileblocks_entry *e = find_entry(p, path, strlen(path));
    return e && !e->deleted;
}

const char *kp_fileblocks_message(const kp_fileblocks *p, size_t *len)
{
    const char *s = kp_buf_cstr(&p->message);
    size_t b = 0, e = p->message.len;
    while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n'))
        b++;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n'))
        e--;
    *len = e - b;
    return s + b;
}

const char *kp_fileblocks_open_path(const kp_fileblocks *p)
{
    return p->in_file ? p->cur_path.data : NULL;
}

size_t kp_fileblocks_offset(const kp_fileblocks *p)
{
    return p->offset;
}

size_t kp_fileblocks_resume_offset(const kp_fileblocks *p)
{
    return p->resume_offset;
}

kp_status kp_fileblocks_resume(kp_fileblocks *p, kp_err *err)
{
    if (p->code != KP_FILEBLOCKS_OK && p->code != KP_FILEBLOCKS_INCOMPLETE_FILE)
        return kp_err_set(err, KP_EINVAL, "cannot resume after %s", kp_fileblocks_code_name(p->code));
    p->mode = LINE_UNDECIDED;
    kp_buf_reset(&p->line);
    p->in_file = 0;
    kp_buf_reset(&p->cur_path);
    kp_buf_reset(&p->cur);
    p->cur_len = 0;
    p->cur_lines = 0;
    p->nheld = 0;
    p->message.len = p->resume_message_len;
    if (p->message.data)
        p->message.data[p->message.len] = '\0';
    p->message_full = p->resume_message_full;
    p->offset = p->resume_offset;
    p->code = KP_FILEBLOCKS_OK;
    kp_err_clear(&p->err);
    p->finished = 0;
    return KP_OK;
}
