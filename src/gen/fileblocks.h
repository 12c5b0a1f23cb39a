/*
 * fileblocks.h - an incremental parser of the file-block protocol in which the
 * model writes an app:
 *
 *     free text, kept as the version's message
 *     <file path="index.html">
 *     ...contents...
 *     </file>
 *     <delete path="old.js"/>
 *
 * Grammar (lines end in LF; a tag line may carry trailing spaces, tabs or CR):
 *   - `<file path="P">` at the start of a line, alone on it, opens a file;
 *   - `</file>` at the start of a line, alone on it, closes the open file; the
 *     contents are exactly the lines in between, joined by "\n" (the newline
 *     ending the opening tag and the one before `</file>` are not contents, so
 *     `<file path="a">\nx\n</file>` is "x"; to end a file with a newline the
 *     model leaves an empty line before `</file>`);
 *   - `<delete path="P"/>` (or `<delete path="P" />`) alone on a line outside
 *     a file marks P deleted;
 *   - inside a file only `</file>` is special (`x</file>`, `<file ...>` are
 *     contents); outside, every other line is message text (a stray
 *     `</file>` too). A tag line is at most max(1024, max_path_len + 64) bytes.
 *
 * The caller feeds the model's output in arbitrary chunks (split anywhere,
 * inside tags or UTF-8 sequences) and gets callbacks as it goes; the parser
 * also keeps every complete entry and the message, so after
 * kp_fileblocks_finish() the whole result can be read back.
 *
 * Paths: relative, 1..max_path_len bytes of [A-Za-z0-9._/-], no leading '/',
 * no empty, "." or ".." segment. Limits (kp_fileblocks_opts) bound the number
 * of files, their total size, deletions and the message kept, so the memory a
 * parser holds is bounded whatever the model writes.
 *
 * Errors stop the parser for good (later calls return the same status): each
 * has a code (kp_fileblocks_error_code) and a readable reason in kp_err. The
 * exception is incomplete_file at the end of input (output cut by max_tokens):
 * kp_fileblocks_resume() rewinds to just after the last complete block so the
 * continuation of the generation can be fed to the same parser.
 *
 * Requiring index.html is the caller's rule (follow-up versions carry files
 * over); kp_fileblocks_has_file() helps with it.
 */
#ifndef KP_FILEBLOCKS_H
#define KP_FILEBLOCKS_H

#include <stddef.h>

#include "core/err.h"

typedef enum kp_fileblocks_code {
    KP_FILEBLOCKS_OK = 0,
    KP_FILEBLOCKS_INVALID_PATH,    /* "invalid_path", KP_EINVAL */
    KP_FILEBLOCKS_TOO_MANY_FILES,  /* "too_many_files" (files or deletions), KP_ETOOLARGE */
    KP_FILEBLOCKS_TOO_LARGE,       /* "too_large": files' total size, KP_ETOOLARGE */
    KP_FILEBLOCKS_DUPLICATE_PATH,  /* "duplicate_path": a path written or deleted twice, KP_EINVAL */
    KP_FILEBLOCKS_INCOMPLETE_FILE, /* "incomplete_file": input ended inside a file, KP_EINVAL */
    KP_FILEBLOCKS_ABORTED,         /* "aborted": a callback failed, with its status */
    KP_FILEBLOCKS_NO_MEMORY        /* "out_of_memory", KP_ENOMEM */
} kp_fileblocks_code;

typedef struct kp_fileblocks_opts {
    size_t max_files;         /* default 50 */
    size_t max_total_bytes;   /* sum of the files' sizes; default 2 MiB */
    size_t max_path_len;      /* default 200 */
    size_t max_deletes;       /* default 200 */
    size_t max_message_bytes; /* message bytes kept (on_text still sees all); default 64 KiB */
    int sizes_only;           /* 1: files' contents are not kept, only their sizes (entries' and
                               * on_file_done's data NULL): for a caller that parses the same
                               * output again when it needs them (gen/publish.c); default 0 */
} kp_fileblocks_opts;

/*
 * Callbacks, each optional (NULL). Pointers are valid only during the call.
 * Text and file data are passed in pieces that never split a UTF-8 sequence
 * (a piece may be as small as one character); the pieces of a file's data,
 * concatenated, are the contents then passed whole to on_file_done. Returning
 * anything but KP_OK (err filled) aborts the parse with that status.
 */
typedef struct kp_fileblocks_cbs {
    kp_status (*on_text)(void *ud, const char *text, size_t len, kp_err *err);
    kp_status (*on_file_start)(void *ud, const char *path, kp_err *err);
    kp_status (*on_file_data)(void *ud, const char *path, const char *data, size_t len, kp_err *err);
    kp_status (*on_file_done)(void *ud, const char *path, const char *data, size_t len, kp_err *err);
    kp_status (*on_delete)(void *ud, const char *path, kp_err *err);
} kp_fileblocks_cbs;

/* A complete file (data NUL-terminated, len bytes; NULL with sizes_only) or a deletion (deleted,
 * data NULL). */
typedef struct kp_fileblocks_entry {
    char *path;
    char *data;
    size_t len;
    int deleted;
} kp_fileblocks_entry;

typedef struct kp_fileblocks kp_fileblocks;

/* Fills o with the defaults above. */
void kp_fileblocks_default_opts(kp_fileblocks_opts *o);

/*
 * Creates a parser. opts NULL means defaults (a zero field also means its
 * default); cbs may be NULL; both are copied. Free with kp_fileblocks_free().
 */
kp_status kp_fileblocks_new(const kp_fileblocks_opts *opts, const kp_fileblocks_cbs *cbs, void *ud, kp_fileblocks **out,
                            kp_err *err);
void kp_fileblocks_free(kp_fileblocks *p);

/* Parses len more bytes of output. */
kp_status kp_fileblocks_feed(kp_fileblocks *p, const char *data, size_t len, kp_err *err);

/*
 * Ends the input: a last line without newline is taken as a whole line; a
 * file still open fails with incomplete_file. Idempotent once it succeeded.
 */
kp_status kp_fileblocks_finish(kp_fileblocks *p, kp_err *err);

/* The code of the failure that stopped the parser, KP_FILEBLOCKS_OK if none. */
kp_fileblocks_code kp_fileblocks_error_code(const kp_fileblocks *p);
/* "ok", "invalid_path", "too_many_files", "too_large", "duplicate_path",
 * "incomplete_file", "aborted", "out_of_memory". */
const char *kp_fileblocks_code_name(kp_fileblocks_code code);

/* The complete entries in output order (owned by the parser, valid until the
 * next feed, resume or free). */
const kp_fileblocks_entry *kp_fileblocks_entries(const kp_fileblocks *p, size_t *n);

/* 1 if a complete file (not a deletion) has this path. */
int kp_fileblocks_has_file(const kp_fileblocks *p, const char *path);

/* The message: text outside blocks, surrounding whitespace trimmed (not
 * NUL-terminated at *len; owned by the parser, valid until the next change). */
const char *kp_fileblocks_message(const kp_fileblocks *p, size_t *len);

/* The path of the file being read (still open), or NULL. */
const char *kp_fileblocks_open_path(const kp_fileblocks *p);

/* Bytes of input consumed so far. */
size_t kp_fileblocks_offset(const kp_fileblocks *p);

/*
 * The byte offset in the input just after the last complete block (the
 * newline ending its `</file>` or `<delete/>` line, or the end of input if that
 * line had none); 0 when there is none. Output up to here is whole files.
 */
size_t kp_fileblocks_resume_offset(const kp_fileblocks *p);

/*
 * Rewinds the parser to the resume offset: forgets the open file, the partial
 * line and message text after that point, and clears an incomplete_file
 * failure, so that what the model writes next (continuing from the output up
 * to the resume offset) can be fed. Entries are kept. KP_EINVAL if the parser
 * stopped for another reason.
 */
kp_status kp_fileblocks_resume(kp_fileblocks *p, kp_err *err);

/* Checks a path against the rules above: KP_OK, or KP_EINVAL with the reason. */
kp_status kp_fileblocks_check_path(const char *path, size_t len, size_t max_len, kp_err *err);

#endif
