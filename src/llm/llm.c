/*
 * llm.c - kp_llm_from_config (llm.h): picks the provider the configuration
 * asks for. The providers themselves are anthropic.c and openai.c.
 */
#include "llm/llm.h"

#include <string.h>

#include "llm/anthropic.h"
#include "llm/openai.h"
#include "secrets/secrets.h"

static int has_value(const char *s)
{
    return s && *s;
}

/* KP_OK when ANTHROPIC_API_KEY has a value, KP_ENOTFOUND when it is not set,
 * else why it cannot be read (a *_FILE that is not there: start-up stops). */
static kp_status anthropic_key_state(kp_secrets *secrets, kp_err *err)
{
    char *key = NULL;
    size_t len = 0;
    kp_status st = kp_secrets_get(secrets, KP_SECRET_ANTHROPIC_API_KEY, &key, &len, err);
    kp_secrets_value_free(key, len);
    return st;
}

kp_status kp_llm_from_config(const kp_config *cfg, kp_secrets *secrets, kp_loop *loop, kp_llm **out, kp_err *err)
{
    const char *provider = cfg->llm_provider;
    if (!has_value(provider)) {
        kp_status key = anthropic_key_state(secrets, err);
        if (key == KP_OK)
            provider = "anthropic";
        else if (key != KP_ENOTFOUND)
            return key;
        else if (has_value(cfg->openai_base_url))
            provider = "openai";
        else
            return kp_err_set(err, KP_EUNAVAILABLE,
                              "no LLM provider configured: set ANTHROPIC_API_KEY, or OPENAI_BASE_URL and KOUMPA_MODEL "
                              "for an OpenAI-compatible server");
    }
    if (strcmp(provider, "anthropic") == 0)
        return kp_llm_anthropic_new(cfg, secrets, loop, NULL, out, err);
    if (strcmp(provider, "openai") == 0)
        return kp_llm_openai_new(cfg, loop, NULL, out, err);
    return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_LLM_PROVIDER=%s: expected anthropic or openai", provider);
}
