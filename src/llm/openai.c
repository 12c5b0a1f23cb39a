/*
 * openai.c - see openai.h. The dialect (request builder and chunk parser from
 * openai_events.h), the endpoint and the headers; the engine does the rest.
 */
#include "llm/openai.h"

#include <string.h>

#include "core/buf.h"
#include "llm/openai_events.h"

static void parser_init(void *parser, kp_llm_text_fn on_text, void *ud)
{
    kp_openai_init(parser, on_text, ud);
}

static const kp_llm_result *parser_result(const void *parser)
{
    return &((const kp_openai *)parser)->result;
}

static kp_status parser_failure(const void *parser, const char **message)
{
    const kp_openai *o = parser;
    *message = o->err.msg;
    return o->status;
}

/* prompt_tokens already counts the cached ones. */
static void usage_of(const kp_llm_result *r, kp_llm_usage *out)
{
    out->input_tokens = r->input_tokens;
    out->output_tokens = r->output_tokens;
}

static const kp_llm_dialect dialect = {
    .name = "openai",
    .build_request = kp_openai_build_request,
    .parser_size = sizeof(kp_openai),
    .parser_init = parser_init,
    .on_event = kp_openai_on_sse_event,
    .result = parser_result,
    .failure = parser_failure,
    .usage = usage_of,
};

static int has_value(const char *s)
{
    return s && *s;
}

/* {base}/chat/completions, without doubling a trailing slash of base. */
static int build_url(kp_buf *url, const char *base)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    return kp_buf_append(url, base, n) || kp_buf_puts(url, "/chat/completions");
}

kp_status kp_llm_openai_new(const kp_config *cfg, kp_loop *loop, const kp_llm_tuning *tuning, kp_llm **out, kp_err *err)
{
    kp_status st = KP_OK;
    kp_buf url = KP_BUF_INIT, auth = KP_BUF_INIT;
    if (!has_value(cfg->openai_base_url))
        return kp_err_set(err, KP_EUNAVAILABLE,
                          "the OpenAI-compatible provider needs OPENAI_BASE_URL (e.g. http://localhost:11434/v1)");
    if (!has_value(cfg->model))
        return kp_err_set(err, KP_EUNAVAILABLE,
                          "the OpenAI-compatible provider needs KOUMPA_MODEL (the model id "
                          "the server at OPENAI_BASE_URL serves)");
    if (build_url(&url, cfg->openai_base_url) ||
        (has_value(cfg->openai_api_key) && kp_buf_printf(&auth, "authorization: Bearer %s", cfg->openai_api_key))) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    /* auth.data is NULL without a key: the list then ends before it */
    const char *headers[] = {"content-type: application/json", "accept: text/event-stream", auth.data, NULL};
    kp_llm_engine_spec spec = {
        .dialect = &dialect,
        .model = cfg->model,
        .max_tokens = cfg->max_tokens,
        .url = url.data,
        .headers = headers,
        .tuning = tuning,
        .http_version = kp_llm_http_version(cfg),
    };
    st = kp_llm_engine_new(&spec, loop, out, err);
cleanup:
    kp_buf_free(&url);
    kp_buf_free(&auth);
    return st;
}
