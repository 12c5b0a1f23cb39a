/*
 * prompt.h - what Koumpa sends the model: the system prompt (a complete static
 * web app as <file> blocks, see gen/fileblocks.h), the conversation of a
 * project (earlier versions' prompts and replies, then the current files and
 * the new request), the continuation after an output cut by max_tokens, and a
 * cheap estimate of the request's size in tokens, checked against the model's
 * context window before any credit is charged.
 *
 * Ownership: a kp_prompt owns every string its messages point to; release it
 * with kp_prompt_free(). Inputs are copied.
 */
#ifndef KP_PROMPT_H
#define KP_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "llm/llm.h"

#define KP_PROMPT_MAX_CHARS 20000 /* characters (code points) in a user's prompt */
#define KP_PROMPT_NAME_MAX_CHARS 100
#define KP_PROMPT_BYTES_PER_TOKEN 3 /* the estimate's ratio: errs on the side of more tokens */

/* An earlier version of the project: what the user asked, what the model said. */
typedef struct kp_prompt_turn {
    const char *prompt;
    const char *message; /* free text of the reply ("" or NULL when it wrote only files) */
} kp_prompt_turn;

/* A file of the app as it stands (content need not be NUL-terminated). */
typedef struct kp_prompt_file {
    const char *path;
    const char *content;
    size_t len;
} kp_prompt_file;

typedef struct kp_prompt {
    const char *system;       /* static text, not owned */
    kp_llm_message *messages; /* nmessages entries; contents owned (see texts) */
    size_t nmessages;
    char **texts; /* the owned contents, texts[i] == messages[i].content */
    size_t nbase; /* messages before any continuation */
} kp_prompt;

/* The system prompt (static): what the app may rely on differs when it runs
 * on an origin of its own (own_origin: localStorage and IndexedDB persist,
 * core/apps_url.h) or on the shared sandboxed apps origin (0). */
const char *kp_prompt_system(int own_origin);

/*
 * Builds the conversation: for each earlier turn a user message (its prompt)
 * and an assistant message (its reply), then one user message holding the
 * current files (when nfiles > 0, as <file> blocks) and the new prompt, under
 * kp_prompt_system(own_origin). On
 * failure (out of memory) *out is left empty.
 */
kp_status kp_prompt_build(const kp_prompt_turn *turns, size_t nturns, const kp_prompt_file *files, size_t nfiles,
                          const char *prompt, int own_origin, kp_prompt *out, kp_err *err);

/*
 * Sets up the next call after an output cut short: the model's output so far
 * (up to its last complete block; may be empty) goes in as an assistant
 * message followed by a user message asking it to go on from there. Replaces
 * any earlier continuation, so `partial` is the whole output kept so far.
 */
kp_status kp_prompt_set_continuation(kp_prompt *p, const char *partial, size_t len, kp_err *err);

/* Estimated input tokens of the request (system + messages), rounded up. */
int64_t kp_prompt_estimate_tokens(const kp_prompt *p);

/* 1 when a request of input_tokens plus max_tokens of output fits context_window. */
int kp_prompt_fits(int64_t input_tokens, long max_tokens, long context_window);

/* Fills an LLM request pointing into p (valid while p is unchanged). */
void kp_prompt_request(const kp_prompt *p, long max_tokens, kp_llm_request *out);

void kp_prompt_free(kp_prompt *p);

/* Number of code points in a UTF-8 string of len bytes, or -1 if it is not valid UTF-8. */
long kp_prompt_utf8_chars(const char *s, size_t len);

/*
 * A default project name from a prompt: its first non-empty line, whitespace
 * collapsed, cut at a word boundary to at most 60 characters and n - 1 bytes
 * (with "..." when cut), never empty ("Untitled app"). n >= 16.
 */
void kp_prompt_default_name(const char *prompt, char *out, size_t n);

#endif
