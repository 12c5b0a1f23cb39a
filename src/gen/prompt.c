/*
 * prompt.c - see prompt.h. The conversation is plain text in the same file
 * block protocol the model answers in, so the files it is shown and the files
 * it writes look alike. Messages alternate user/assistant and start with a
 * user message, as both provider APIs expect.
 */
#include "gen/prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

#define NAME_MAX_CHARS 60
#define MESSAGE_OVERHEAD_TOKENS 8 /* role and framing per message */

/* The system prompt: the role, what the browser gives the app (by where it is
 * served: one shared sandboxed origin, or an origin of its own), the rules. */
#define SYSTEM_ROLE                                                                                                    \
    "You are Koumpa, an expert web developer. You turn a person's description into a complete, working web app "       \
    "that runs as static files in a browser: HTML, CSS and JavaScript only, no build step, no server, no package "     \
    "manager. "
#define SYSTEM_SHARED_ORIGIN                                                                                           \
    "The app is opened from its index.html, inside a sandboxed origin without cookies or storage "                     \
    "guarantees; it may use localStorage when it is available and must still work when it is not.\n"
#define SYSTEM_OWN_ORIGIN                                                                                              \
    "The app is opened from its index.html on an origin of its own, without cookies: localStorage and IndexedDB "      \
    "work and persist across reloads and across the app's versions, so keep the person's data there when the app "     \
    "has state (lists, scores, settings), and still start cleanly when it is empty.\n"

#define SYSTEM_RULES                                                                                                   \
    "\n"                                                                                                               \
    "Write every file of the app as a file block:\n"                                                                   \
    "\n"                                                                                                               \
    "<file path=\"index.html\">\n"                                                                                     \
    "...the whole contents of the file...\n"                                                                           \
    "</file>\n"                                                                                                        \
    "\n"                                                                                                               \
    "Rules:\n"                                                                                                         \
    "- The opening tag and the closing tag </file> each stand alone on their own line. Never put </file> at the "      \
    "start of a line inside the contents.\n"                                                                           \
    "- Paths are relative, made of letters, digits, '.', '_', '-' and '/', e.g. index.html, css/style.css, "           \
    "js/app.js. index.html is required.\n"                                                                             \
    "- Always write whole files, never diffs or excerpts. At most 50 files, 2 MiB in all; prefer few files.\n"         \
    "- Reference the other files with relative URLs (\"style.css\", not \"/style.css\"). Do not load anything "        \
    "from other sites unless the person asks for it; inline small icons as SVG.\n"                                     \
    "- Make the app look good and work well on phones and desktops: semantic HTML, accessible controls, no "           \
    "console errors.\n"                                                                                                \
    "- Before the files, say in one or two sentences what you are building; after them, optionally, one short "        \
    "note. Write nothing else outside the file blocks.\n"                                                              \
    "\n"                                                                                                               \
    "When you are shown the app's current files and asked for a change: write only the files you change or "           \
    "add, each in full; files you do not write are kept as they are. To remove a file, write on its own line:\n"       \
    "<delete path=\"old.js\"/>\n"

static const char system_prompt_shared[] = SYSTEM_ROLE SYSTEM_SHARED_ORIGIN SYSTEM_RULES;
static const char system_prompt_own[] = SYSTEM_ROLE SYSTEM_OWN_ORIGIN SYSTEM_RULES;

static const char files_intro[] = "The app's current files:\n\n";
static const char change_request[] =
    "Change the app as follows. Write only the files you change or add, each in full, and a <delete path=\"...\"/> "
    "line for each file to remove; the other files are kept.\n\nRequest:\n";
static const char continue_request[] =
    "Your reply was cut off because it reached the output limit. Everything up to your last complete block is "
    "kept. Go on from there: write the remaining files, starting with a new <file> block. Do not repeat the files "
    "you already wrote, and keep the rest as short as you can.";
static const char restart_note[] =
    "\n\n(An earlier attempt at this reply was cut off at the output limit before its first file was complete. "
    "Keep the files short.)";

const char *kp_prompt_system(int own_origin)
{
    return own_origin ? system_prompt_own : system_prompt_shared;
}

/* Appends a message taking ownership of text (freed on failure too). */
static int add_message(kp_prompt *p, const char *role, char *text)
{
    kp_llm_message *m = realloc(p->messages, (p->nmessages + 1) * sizeof *m);
    if (m)
        p->messages = m;
    char **t = m ? realloc(p->texts, (p->nmessages + 1) * sizeof *t) : NULL;
    if (t)
        p->texts = t;
    if (!m || !t || !text) {
        free(text);
        return -1;
    }
    p->messages[p->nmessages].role = role;
    p->messages[p->nmessages].content = text;
    p->texts[p->nmessages] = text;
    p->nmessages++;
    return 0;
}

static char *dup_or_default(const char *s, const char *fallback)
{
    return strdup(s && *s ? s : fallback);
}

static int append_file_block(kp_buf *b, const kp_prompt_file *f)
{
    if (kp_buf_printf(b, "<file path=\"%s\">\n", f->path) != 0 || kp_buf_append(b, f->content, f->len) != 0)
        return -1;
    return kp_buf_puts(b, "\n</file>\n\n");
}

static char *last_user_message(const kp_prompt_file *files, size_t nfiles, const char *prompt)
{
    kp_buf b = KP_BUF_INIT;
    int rc = 0;
    if (nfiles > 0) {
        rc |= kp_buf_puts(&b, files_intro);
        for (size_t i = 0; i < nfiles && rc == 0; i++)
            rc |= append_file_block(&b, &files[i]);
        rc |= kp_buf_puts(&b, change_request);
    }
    rc |= kp_buf_puts(&b, prompt);
    if (rc != 0) {
        kp_buf_free(&b);
        return NULL;
    }
    return kp_buf_steal(&b);
}

kp_status kp_prompt_build(const kp_prompt_turn *turns, size_t nturns, const kp_prompt_file *files, size_t nfiles,
                          const char *prompt, int own_origin, kp_prompt *out, kp_err *err)
{
    memset(out, 0, sizeof *out);
    out->system = kp_prompt_system(own_origin);
    for (size_t i = 0; i < nturns; i++) {
        if (add_message(out, "user", dup_or_default(turns[i].prompt, "(empty)")) != 0 ||
            add_message(out, "assistant", dup_or_default(turns[i].message, "(I updated the app's files.)")) != 0)
            goto nomem;
    }
    if (add_message(out, "user", last_user_message(files, nfiles, prompt)) != 0)
        goto nomem;
    out->nbase = out->nmessages;
    return KP_OK;
nomem:
    kp_prompt_free(out);
    return kp_err_set(err, KP_ENOMEM, "out of memory building the prompt");
}

/* Drops the continuation messages, and restores the last base message. */
static int reset_continuation(kp_prompt *p)
{
    while (p->nmessages > p->nbase) {
        p->nmessages--;
        free(p->texts[p->nmessages]);
    }
    char *last = p->texts[p->nbase - 1];
    size_t note = sizeof restart_note - 1;
    size_t len = strlen(last);
    if (len >= note && memcmp(last + len - note, restart_note, note) == 0)
        last[len - note] = '\0';
    return 0;
}

kp_status kp_prompt_set_continuation(kp_prompt *p, const char *partial, size_t len, kp_err *err)
{
    if (p->nbase == 0)
        return kp_err_set(err, KP_EINTERNAL, "continuation of an empty prompt");
    reset_continuation(p);
    if (len == 0) {
        /* nothing whole to show the model: ask again, asking for shorter files */
        kp_buf b = KP_BUF_INIT;
        if (kp_buf_puts(&b, p->texts[p->nbase - 1]) != 0 || kp_buf_puts(&b, restart_note) != 0) {
            kp_buf_free(&b);
            return kp_err_set(err, KP_ENOMEM, "out of memory building the prompt");
        }
        free(p->texts[p->nbase - 1]);
        p->texts[p->nbase - 1] = kp_buf_steal(&b);
        p->messages[p->nbase - 1].content = p->texts[p->nbase - 1];
        return KP_OK;
    }
    char *copy = strndup(partial, len);
    if (add_message(p, "assistant", copy) != 0 || add_message(p, "user", strdup(continue_request)) != 0) {
        reset_continuation(p);
        return kp_err_set(err, KP_ENOMEM, "out of memory building the prompt");
    }
    return KP_OK;
}

int64_t kp_prompt_estimate_tokens(const kp_prompt *p)
{
    size_t bytes = strlen(p->system);
    for (size_t i = 0; i < p->nmessages; i++)
        bytes += strlen(p->messages[i].content);
    int64_t tokens = (int64_t)((bytes + KP_PROMPT_BYTES_PER_TOKEN - 1) / KP_PROMPT_BYTES_PER_TOKEN);
    return tokens + (int64_t)(p->nmessages + 1) * MESSAGE_OVERHEAD_TOKENS;
}

int kp_prompt_fits(int64_t input_tokens, long max_tokens, long context_window)
{
    return input_tokens + (int64_t)max_tokens <= (int64_t)context_window;
}

void kp_prompt_request(const kp_prompt *p, long max_tokens, kp_llm_request *out)
{
    out->system = p->system;
    out->messages = p->messages;
    out->nmessages = p->nmessages;
    out->max_tokens = max_tokens;
}

void kp_prompt_free(kp_prompt *p)
{
    for (size_t i = 0; i < p->nmessages; i++)
        free(p->texts[i]);
    free(p->texts);
    free(p->messages);
    memset(p, 0, sizeof *p);
}

/* Length of the UTF-8 sequence starting with byte c, or 0 if c cannot start one. */
static size_t utf8_seq_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    return 0;
}

/* Validates the sequence of n bytes at s (overlongs, surrogates, > U+10FFFF). */
static int utf8_seq_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if (n == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0)))
        return 0;
    if (n == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90)))
        return 0;
    return 1;
}

long kp_prompt_utf8_chars(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    long chars = 0;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq_len(u[i]);
        if (n == 0 || i + n > len || !utf8_seq_valid(u + i, n))
            return -1;
        i += n;
        chars++;
    }
    return chars;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

void kp_prompt_default_name(const char *prompt, char *out, size_t n)
{
    const unsigned char *s = (const unsigned char *)(prompt ? prompt : "");
    size_t len = 0, chars = 0, last_word_end = 0;
    int cut = 0, pending_space = 0;
    size_t limit = n - 4; /* room for "..." and the NUL */
    while (*s && is_space(*s))
        s++;
    for (; *s && *s != '\n' && *s != '\r';) {
        if (is_space(*s)) {
            pending_space = 1;
            s++;
            continue;
        }
        size_t sl = utf8_seq_len(*s);
        if (sl == 0 || !utf8_seq_valid(s, sl) || memchr(s, '\0', sl))
            sl = 1; /* cannot happen with JSON input; copy byte-wise */
        size_t space = pending_space ? 1 : 0;
        if (chars + 1 + space > NAME_MAX_CHARS || len + sl + space > limit) {
            cut = 1;
            break;
        }
        if (pending_space) {
            last_word_end = len;
            out[len++] = ' ';
            chars++;
            pending_space = 0;
        }
        memcpy(out + len, s, sl);
        len += sl;
        chars++;
        s += sl;
    }
    if (cut && last_word_end > 0)
        len = last_word_end;
    if (len == 0 && !cut) {
        snprintf(out, n, "Untitled app");
        return;
    }
    if (cut) {
        memcpy(out + len, "...", 3);
        len += 3;
    }
    out[len] = '\0';
}
