/*
 * anthropic.c - see anthropic.h. The dialect (request builder and event
 * parser from anthropic_events.h), the endpoint and the headers; the engine
 * does the rest.
 */
#include "llm/anthropic.h"

#include <string.h>

#include "core/buf.h"
#include "llm/anthropic_events.h"

static void parser_init(void *parser, kp_llm_text_fn on_text, void *ud)
{
    kp_anthropic_init(parser, on_text, ud);
}

static const kp_llm_result *parser_result(const void *parser)
{
    return &((const kp_anthropic *)parser)->result;
}

static kp_status parser_failure(const void *parser, const char **message)
{
    const kp_anthropic *a = parser;
    *message = a->err.msg;
    return a->status;
}

/* Anthropic's input_tokens leaves out the prompt-cache reads and writes; the input is all three. */
static void usage_of(const kp_llm_result *r, kp_llm_usage *out)
{
    out->input_tokens = r->input_tokens + r->cache_creation_input_tokens + r->cache_read_input_tokens;
    out->output_tokens = r->output_tokens;
}

static const kp_llm_dialect dialect = {
    .name = "anthropic",
    .build_request = kp_anthropic_build_request,
    .parser_size = sizeof(kp_anthropic),
    .parser_init = parser_init,
    .on_event = kp_anthropic_on_sse_event,
    .result = parser_result,
    .failure = parser_failure,
    .usage = usage_of,
};

static int has_value(const char *s)
{
    return s && *s;
}

/* {base}/v1/messages, without doubling a trailing slash of base. */
static int build_url(kp_buf *url, const char *base)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    return kp_buf_append(url, base, n) || kp_buf_puts(url, "/v1/messages");
}

kp_status kp_llm_anthropic_new(const kp_config *cfg, kp_loop *loop, const kp_llm_tuning *tuning, kp_llm **out,
                               kp_err *err)
{
    kp_status st = KP_OK;
    kp_buf url = KP_BUF_INIT, key = KP_BUF_INIT, version = KP_BUF_INIT;
    if (!has_value(cfg->anthropic_api_key))
        return kp_err_set(err, KP_EUNAVAILABLE, "the Anthropic provider needs ANTHROPIC_API_KEY");
    const char *base = has_value(cfg->anthropic_base_url) ? cfg->anthropic_base_url : KP_ANTHROPIC_DEFAULT_BASE_URL;
    const char *ver = has_value(cfg->anthropic_version) ? cfg->anthropic_version : KP_ANTHROPIC_DEFAULT_VERSION;
    if (build_url(&url, base) || kp_buf_printf(&key, "x-api-key: %s", cfg->anthropic_api_key) ||
        kp_buf_printf(&version, "anthropic-version: %s", ver)) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    const char *headers[] = {key.data, version.data, "content-type: application/json", "accept: text/event-stream",
                             NULL};
    kp_llm_engine_spec spec = {
        .dialect = &dialect,
        .model = has_value(cfg->model) ? cfg->model : KP_ANTHROPIC_DEFAULT_MODEL,
        .max_tokens = cfg->max_tokens,
        .url = url.data,
        .headers = headers,
        .tuning = tuning,
    };
    st = kp_llm_engine_new(&spec, loop, out, err);
cleanup:
    kp_buf_free(&url);
    kp_buf_free(&key);
    kp_buf_free(&version);
    return st;
}
