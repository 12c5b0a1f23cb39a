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

#define KP_ANTHROPIC_DEFAULT_MODEL "claude-sonnet-5-5"
#define KP_ANTHROPIC_DEFAULT_BASE_URL "https://api.anthropic.com"
#define KP_ANTHROPIC_DEFAULT_VERSION "2026-10-21"

/*
 * Creates the provider from cfg: anthropic_api_key (required: KP_EUNAVAILABLE
 * naming ANTHROPIC_API_KEY otherwise), anthropic_base_url, anthropic_version,
 * model and max_tokens (defaults above when unset). Its transfers run on
 * loop; tuning NULL means kp_llm_engine_default_tuning(). The key is copied
 * into the request headers and never logged. Free with (*out)->ops->free().
 */
kp_status kp_llm_anthropic_new(const kp_config *cfg, kp_loop *loop, const kp_llm_tuning *tuning, kp_llm **out,
                               kp_err *err);

#endif
