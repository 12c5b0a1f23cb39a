/*
 * csp.c - see csp.h. Each directive is built as a list of sources: 'self' or
 * 'none' first, then the origins of the configured URLs, each once. The URLs
 * come from the operator's configuration; anything that could break out of a
 * source expression (spaces, ';', ',', quotes) is refused rather than copied.
 */
#include "api/csp.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#define PROJECT_PLACEHOLDER "{project}"

/* Characters of a host[:port] a CSP host-source may hold (IPv6 brackets too). */
static int authority_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
}

static size_t scheme_len(const char *url)
{
    if (strncasecmp(url, "http://", 7) == 0)
        return 7;
    if (strncasecmp(url, "https://", 8) == 0)
        return 8;
    return 0;
}

/* host[:port] with the {project} label (and any label before it) made "*". */
static kp_status wildcard_authority(const char *url, const char *auth, size_t len, kp_buf *out, kp_err *err)
{
    const char *ph = strstr(auth, PROJECT_PLACEHOLDER);
    const char *after = ph + strlen(PROJECT_PLACEHOLDER);
    const char *dot = memchr(after, '.', (size_t)(auth + len - after));
    const char *colon = memchr(auth, ':', len);
    if (!dot || (colon && colon < dot))
        return kp_err_set(err, KP_EINVAL, "%s: a {project} host needs a parent domain after it", url);
    if (kp_buf_puts(out, "*") != 0 || kp_buf_append(out, dot, (size_t)(auth + len - dot)) != 0)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    return KP_OK;
}

kp_status kp_csp_origin(const char *url, kp_buf *out, kp_err *err)
{
    size_t slen = url ? scheme_len(url) : 0;
    if (slen == 0)
        return kp_err_set(err, KP_EINVAL, "%s: expected an http(s) URL", url ? url : "(none)");
    const char *auth = url + slen;
    size_t len = strcspn(auth, "/?#");
    if (len == 0)
        return kp_err_set(err, KP_EINVAL, "%s: no host", url);
    kp_buf b = KP_BUF_INIT;
    kp_status rc = KP_OK;
    const char *ph = strstr(auth, PROJECT_PLACEHOLDER);
    int wildcard = ph && ph < auth + len;
    for (size_t i = 0; i < len && rc == KP_OK; i++) {
        if (wildcard && auth + i >= ph && auth + i < ph + strlen(PROJECT_PLACEHOLDER))
            continue;
        if (!authority_char(auth[i]))
            rc = kp_err_set(err, KP_EINVAL, "%s: a character a browser's CSP source cannot hold", url);
    }
    if (rc == KP_OK && kp_buf_append(&b, url, slen) != 0)
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    if (rc == KP_OK)
        rc = wildcard ? wildcard_authority(url, auth, len, &b, err)
                      : (kp_buf_append(&b, auth, len) == 0 ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory"));
    if (rc == KP_OK) {
        for (size_t i = 0; i < b.len; i++)
            b.data[i] = (char)tolower((unsigned char)b.data[i]);
        if (kp_buf_append(out, b.data, b.len) != 0)
            rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    kp_buf_free(&b);
    return rc;
}

/* 1 when the space-separated list holds source. */
static int has_source(const kp_buf *list, const char *source, size_t len)
{
    const char *p = kp_buf_cstr(list);
    while (*p) {
        size_t n = strcspn(p, " ");
        if (n == len && strncmp(p, source, len) == 0)
            return 1;
        p += n;
        while (*p == ' ')
            p++;
    }
    return 0;
}

/* Adds the origin of url (when set) to list, once. */
static kp_status add_origin(kp_buf *list, const char *url, kp_err *err)
{
    if (!url || !*url)
        return KP_OK;
    kp_buf origin = KP_BUF_INIT;
    kp_status rc = kp_csp_origin(url, &origin, err);
    if (rc == KP_OK && !has_source(list, origin.data, origin.len) &&
        (kp_buf_puts(list, list->len ? " " : "") != 0 || kp_buf_append(list, origin.data, origin.len) != 0))
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_buf_free(&origin);
    return rc;
}

/* Appends "; name sources" (first: "name sources"), starting the list with first. */
static kp_status directive(kp_buf *out, const char *name, const char *first, const char *const *urls, size_t nurls,
                           kp_err *err)
{
    kp_buf list = KP_BUF_INIT;
    kp_status rc = KP_OK;
    if (first && kp_buf_puts(&list, first) != 0)
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    for (size_t i = 0; i < nurls && rc == KP_OK; i++)
        rc = add_origin(&list, urls[i], err);
    if (rc == KP_OK && list.len == 0 && kp_buf_puts(&list, "'none'") != 0)
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    if (rc == KP_OK && kp_buf_printf(out, "%s%s %s", out->len ? "; " : "", name, list.data) != 0)
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_buf_free(&list);
    return rc;
}

kp_status kp_csp_dashboard(const kp_csp_sources *src, kp_buf *out, kp_err *err)
{
    const char *connect[] = {src->api_base, src->stream_base, src->oauth_token_url};
    const char *frames[] = {src->apps_url};
    const char *forms[] = {src->oauth_authorize_url, src->oauth_logout_url};
    kp_buf b = KP_BUF_INIT;
    kp_status rc = directive(&b, "default-src", "'none'", NULL, 0, err);
    if (rc == KP_OK)
        rc = directive(&b, "script-src", "'self'", NULL, 0, err);
    if (rc == KP_OK)
        rc = directive(&b, "style-src", "'self'", NULL, 0, err);
    if (rc == KP_OK)
        rc = directive(&b, "img-src", "'self' data:", NULL, 0, err);
    if (rc == KP_OK)
        rc = directive(&b, "connect-src", "'self'", connect, 3, err);
    if (rc == KP_OK)
        rc = directive(&b, "frame-src", NULL, frames, 1, err);
    if (rc == KP_OK)
        rc = directive(&b, "form-action", "'self'", forms, 2, err);
    if (rc == KP_OK)
        rc = directive(&b, "base-uri", "'none'", NULL, 0, err);
    if (rc == KP_OK)
        rc = directive(&b, "frame-ancestors", "'none'", NULL, 0, err);
    if (rc == KP_OK && kp_buf_append(out, b.data, b.len) != 0)
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_buf_free(&b);
    return rc;
}
