/*
 * anthropic.c - see anthropic.h. The dialect (request builder and event
 * parser from anthropic_events.h), the endpoint and the headers; the engine
 * does the rest.
 */
#include "llm/anthropic.h"

#include <sodium.h>
#include <string.h>

#include "core/buf.h"
#include "llm/anthropic_events.h"
#include "secrets/secrets.h"

#define API_KEY_HEADER "x-api-key: "

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

/* A key with a control character (a second line in a file) would split the
 * header: refused, without saying more of the key. */
static int is_header_safe(const char *key, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
            return 0;
    return 1;
}

/* The engine's call_header: "x-api-key: {the current key}", read through the
 * secrets service for every call, so a rotated key is used once re-read. */
static kp_status api_key_header(void *ud, kp_buf *out, kp_err *err)
{
    char *key = NULL;
    size_t len = 0;
    kp_status st = kp_secrets_get(ud, KP_SECRET_ANTHROPIC_API_KEY, &key, &len, err);
    if (st != KP_OK)
        return st;
    if (!is_header_safe(key, len))
        st = kp_err_set(err, KP_EUNAVAILABLE, "%s holds a control character", KP_SECRET_ANTHROPIC_API_KEY);
    else if (kp_buf_reserve(out, sizeof API_KEY_HEADER + len) || kp_buf_puts(out, API_KEY_HEADER) ||
             kp_buf_append(out, key, len))
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_secrets_value_free(key, len);
    return st;
}

/* The key can be read now: KP_EUNAVAILABLE naming the variable when it is not set. */
static kp_status check_api_key(kp_secrets *secrets, kp_err *err)
{
    kp_buf header = KP_BUF_INIT;
    kp_status st = api_key_header(secrets, &header, err);
    if (header.data)
        sodium_memzero(header.data, header.cap);
    kp_buf_free(&header);
    if (st == KP_ENOTFOUND)
        st = kp_err_set(err, KP_EUNAVAILABLE, "the Anthropic provider needs %s (or %s_FILE)",
                        KP_SECRET_ANTHROPIC_API_KEY, KP_SECRET_ANTHROPIC_API_KEY);
    return st;
}

kp_status kp_llm_anthropic_new(const kp_config *cfg, kp_secrets *secrets, kp_loop *loop, const kp_llm_tuning *tuning,
                               kp_llm **out, kp_err *err)
{
    kp_status st = check_api_key(secrets, err);
    kp_buf url = KP_BUF_INIT, version = KP_BUF_INIT;
    if (st != KP_OK)
        return st;
    const char *base = has_value(cfg->anthropic_base_url) ? cfg->anthropic_base_url : KP_ANTHROPIC_DEFAULT_BASE_URL;
    const char *ver = has_value(cfg->anthropic_version) ? cfg->anthropic_version : KP_ANTHROPIC_DEFAULT_VERSION;
    if (build_url(&url, base) || kp_buf_printf(&version, "anthropic-version: %s", ver)) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    const char *headers[] = {version.data, "content-type: application/json", "accept: text/event-stream", NULL};
    kp_llm_engine_spec spec = {
        .dialect = &dialect,
        .model = has_value(cfg->model) ? cfg->model : KP_ANTHROPIC_DEFAULT_MODEL,
        .max_tokens = cfg->max_tokens,
        .url = url.data,
        .headers = headers,
        .tuning = tuning,
        .http_version = kp_llm_http_version(cfg),
        .call_header = api_key_header,
        .call_header_ud = secrets,
    };
    st = kp_llm_engine_new(&spec, loop, out, err);
cleanup:
    kp_buf_free(&url);
    kp_buf_free(&version);
    return st;
}
