/*
 * llm.c - kp_llm_from_config (llm.h): picks the provider the configuration
 * asks for. The providers themselves are anthropic.c and openai.c.
 */
#include "llm/llm.h"

#include <string.h>

#include "llm/anthropic.h"
#include "llm/openai.h"

static int has_value(const char *s)
{
    return s && *s;
}

kp_status kp_llm_from_config(const kp_config *cfg, kp_loop *loop, kp_llm **out, kp_err *err)
{
    const char *provider = cfg->llm_provider;
    if (!has_value(provider)) {
        if (has_value(cfg->anthropic_api_key))
            provider = "anthropic";
        else if (has_value(cfg->openai_base_url))
            provider = "openai";
        else
            return kp_err_set(err, KP_EUNAVAILABLE,
                              "no LLM provider configured: set ANTHROPIC_API_KEY, or OPENAI_BASE_URL and KOUMPA_MODEL "
                              "for an OpenAI-compatible server");
    }
    if (strcmp(provider, "anthropic") == 0)
        return kp_llm_anthropic_new(cfg, loop, NULL, out, err);
    if (strcmp(provider, "openai") == 0)
        return kp_llm_openai_new(cfg, loop, NULL, out, err);
    return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_LLM_PROVIDER=%s: expected anthropic or openai", provider);
}
