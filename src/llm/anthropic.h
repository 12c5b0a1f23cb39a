/*
 * anthropic.h - the Anthropic Messages API provider (kp_llm_ops "anthropic").
 *
 * POST {base}/v1/messages with x-api-key, anthropic-version, content-type
 * and accept: text/event-stream; the body is built and the streamed events
 * are read by anthropic_events.h; the call itself (retries, timeouts,
 * cancellation) is llm_engine.h's. No sampling parameters are ever sent:
 * current API versions reject temperature, top_p and top_k.
 */
#ifndef KP_ANTHROPIC_H
#define KP_ANTHROPIC_H

#include "core/config.h"
#include "core/err.h"
#include "llm/llm.h"
#include "llm/llm_engine.h"
#include "secrets/secrets.h"

#define KP_ANTHROPIC_DEFAULT_MODEL "claude-sonnet-5-5"
#define KP_ANTHROPIC_DEFAULT_BASE_URL "https://api.anthropic.com"
#define KP_ANTHROPIC_DEFAULT_VERSION "2026-10-21"

/*
 * Creates the provider from cfg: anthropic_base_url, anthropic_version, model
 * and max_tokens (defaults above when unset). The key is ANTHROPIC_API_KEY
 * from secrets (not owned; it must outlive the provider), read when each
 * request is built (so a rotated key is used once the service re-reads it;
 * a read on the loop thread, from the service's cache but once per TTL),
 * never logged; it must be readable now: KP_EUNAVAILABLE naming the variable
 * when it is not set, the service's error when it cannot be read. Its
 * transfers run on loop; tuning NULL means kp_llm_engine_default_tuning().
 * Free with (*out)->ops->free().
 */
kp_status kp_llm_anthropic_new(const kp_config *cfg, kp_secrets *secrets, kp_loop *loop, const kp_llm_tuning *tuning,
                               kp_llm **out, kp_err *err);

#endif
