/*
 * llm.h - the LLM provider interface: one streaming completion at a time per
 * call, many calls in flight, no thread per call.
 *
 * Every provider (anthropic.c, openai.c) runs its HTTP transfers on a kp_loop
 * (core/loop.h): start() and cancel() must be called ON THE LOOP THREAD (post
 * to it with kp_loop_post from elsewhere), and every callback runs on the
 * loop thread. A call ends with exactly one of on_done or on_error, unless it
 * is cancelled first (then neither comes); the kp_llm_call is freed by the
 * provider after that final callback returns (or inside cancel()).
 *
 * Faults the provider handles itself: 429, 529 and 5xx answers, and refused,
 * reset or timed-out connections, before any output are retried with
 * exponential backoff and jitter, honouring
 * retry-after, up to 3 tries in all; connect timeout 10 s, idle timeout 60 s
 * (no byte received), total 10 min. A mid-stream error or disconnect is an
 * on_error: output already delivered cannot be taken back, so no retry.
 */
#ifndef KP_LLM_H
#define KP_LLM_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/err.h"

typedef struct kp_loop kp_loop;
typedef struct kp_secrets kp_secrets; /* secrets/secrets.h: ANTHROPIC_API_KEY */

typedef struct kp_llm_message {
    const char *role; /* "user" or "assistant" */
    const char *content;
} kp_llm_message;

typedef struct kp_llm_request {
    const char *system;
    const kp_llm_message *messages;
    size_t nmessages;
    long max_tokens;
} kp_llm_request;

typedef struct kp_llm_usage {
    int64_t input_tokens;
    int64_t output_tokens;
} kp_llm_usage;

typedef struct kp_llm_callbacks {
    void *ud;
    /* A piece of generated text (UTF-8; a piece may end inside a multi-byte character). */
    void (*on_text)(void *ud, const char *text, size_t len);
    /* Finished normally. stop_reason: "end_turn", "max_tokens" (output cut: may continue), "stop_sequence", ... */
    void (*on_done)(void *ud, const char *stop_reason, const kp_llm_usage *usage);
    /* Failed. code: "rate_limited", "overloaded", "provider_error", "timeout", "network_error",
     * "invalid_request", "auth_failed". output_started tells whether any text was delivered. */
    void (*on_error)(void *ud, const char *code, const char *message, int output_started);
} kp_llm_callbacks;

typedef struct kp_llm kp_llm;
typedef struct kp_llm_call kp_llm_call;

typedef struct kp_llm_ops {
    const char *name; /* "anthropic", "openai" */
    kp_status (*start)(kp_llm *llm, const kp_llm_request *req, const kp_llm_callbacks *cb, kp_llm_call **out,
                       kp_err *err);
    void (*cancel)(kp_llm *llm, kp_llm_call *call);
    void (*free)(kp_llm *llm);
} kp_llm_ops;

struct kp_llm {
    const kp_llm_ops *ops;
    const char *model; /* the model id in use */
    void *impl;
};

/*
 * Creates the provider the configuration asks for (KOUMPA_LLM_PROVIDER, or
 * anthropic when ANTHROPIC_API_KEY is set, or openai when OPENAI_BASE_URL is
 * set). KP_EUNAVAILABLE with a message naming the variable to set when none
 * is configured.
 */
kp_status kp_llm_from_config(const kp_config *cfg, kp_secrets *secrets, kp_loop *loop, kp_llm **out, kp_err *err);

#endif
