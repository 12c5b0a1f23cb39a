/*
 * openai.h - the OpenAI-compatible chat completions provider (kp_llm_ops
 * "openai"), for OpenAI itself and the local servers that copy its protocol
 * (Ollama, llama.cpp server, vLLM).
 *
 * POST {base}/chat/completions with Authorization: Bearer {key} when a key is
 * set (local servers need none), streaming with stream_options.include_usage
 * so the last chunk reports token usage; body and chunks are
 * openai_events.h's, the call itself llm_engine.h's.
 */
#ifndef KP_OPENAI_H
#define KP_OPENAI_H

#include "core/config.h"
#include "core/err.h"
#include "llm/llm.h"
#include "llm/llm_engine.h"

/*
 * Creates the provider from cfg: openai_base_url and model are required (no
 * model fits every server: KP_EUNAVAILABLE naming OPENAI_BASE_URL or
 * KOUMPA_MODEL when missing), openai_api_key and max_tokens are optional. Its
 * transfers run on loop; tuning NULL means kp_llm_engine_default_tuning().
 * Free with (*out)->ops->free().
 */
kp_status kp_llm_openai_new(const kp_config *cfg, kp_loop *loop, const kp_llm_tuning *tuning, kp_llm **out,
                            kp_err *err);

#endif
