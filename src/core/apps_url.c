/*
 * apps_url.c - see apps_url.h. A host-form template splits into a scheme
 * ("http://" or "https://"), the placeholder, and a domain (with an optional
 * port, nothing after it but an optional '/'); anything else holding a brace
 * is refused, so a misplaced {project} stops start-up instead of producing
 * URLs that lead nowhere.
 */
#include "core/apps_url.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#define ID_PREFIX "prj_"
#define LABEL_PREFIX "prj-"
#define PREFIX_LEN 4
#define HOST_FORM_EXAMPLE "https://{project}.apps.example.com"

typedef struct host_form {
    size_t scheme_len;  /* "http://" or "https://" */
    const char *domain; /* after "{project}." */
    size_t domain_len;  /* without a trailing '/' */
} host_form;

static size_t scheme_len(const char *s)
{
    if (strncmp(s, "http://", 7) == 0)
        return 7;
    if (strncmp(s, "https://", 8) == 0)
        return 8;
    return 0;
}

/* 1: a host form (hf filled); 0: no brace at all (the path form); -1: invalid,
 * with why in *reason. */
static int split(const char *tmpl, host_form *hf, const char **reason)
{
    const char *ph = strstr(tmpl, KP_APPS_URL_PLACEHOLDER);
    if (!ph) {
        *reason = "a '{' or '}' that is not {project}";
        return strpbrk(tmpl, "{}") ? -1 : 0;
    }
    size_t plen = strlen(KP_APPS_URL_PLACEHOLDER);
    *reason = "{project} must be the whole leftmost label of the host, as in " HOST_FORM_EXAMPLE;
    hf->scheme_len = scheme_len(tmpl);
    if (hf->scheme_len == 0 || ph != tmpl + hf->scheme_len || ph[plen] != '.')
        return -1;
    hf->domain = ph + plen + 1;
    hf->domain_len = strlen(hf->domain);
    if (hf->domain_len > 0 && hf->domain[hf->domain_len - 1] == '/')
        hf->domain_len--;
    if (strpbrk(hf->domain, "{}")) {
        *reason = "exactly one {project} is allowed";
        return -1;
    }
    *reason = "the host form takes a domain and nothing after it, as in " HOST_FORM_EXAMPLE;
    if (hf->domain_len == 0 || hf->domain[0] == '.' || hf->domain[0] == ':' ||
        strcspn(hf->domain, "/?#@ ") < hf->domain_len)
        return -1;
    return 1;
}

kp_status kp_apps_url_check(const char *tmpl, kp_err *err)
{
    host_form hf;
    const char *reason = NULL;
    if (tmpl && split(tmpl, &hf, &reason) < 0)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_APPS_URL=%s: %s", tmpl, reason);
    return KP_OK;
}

int kp_apps_url_per_project(const char *tmpl)
{
    host_form hf;
    const char *reason;
    return tmpl && split(tmpl, &hf, &reason) == 1;
}

int kp_apps_url_version(const char *tmpl, const char *project_id, int64_t n, kp_buf *out)
{
    host_form hf;
    const char *reason;
    const char *base = tmpl ? tmpl : "";
    if (split(base, &hf, &reason) == 1) {
        size_t idlen = strlen(project_id);
        if (idlen > PREFIX_LEN && strncmp(project_id, ID_PREFIX, PREFIX_LEN) == 0)
            return kp_buf_printf(out, "%.*s" LABEL_PREFIX "%s.%.*s/" KP_APPS_URL_VERSION_SEGMENT "%lld/",
                                 (int)hf.scheme_len, base, project_id + PREFIX_LEN, (int)hf.domain_len, hf.domain,
                                 (long long)n);
        return kp_buf_printf(out, "%.*s%s.%.*s/" KP_APPS_URL_VERSION_SEGMENT "%lld/", (int)hf.scheme_len, base,
                             project_id, (int)hf.domain_len, hf.domain, (long long)n);
    }
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    return kp_buf_printf(out, "%.*s/%s/" KP_APPS_URL_VERSION_SEGMENT "%lld/", (int)blen, base, project_id,
                         (long long)n);
}

/* The length of a host without its ":port". */
static size_t without_port(const char *s, size_t len)
{
    const char *colon = memchr(s, ':', len);
    return colon ? (size_t)(colon - s) : len;
}

int kp_apps_url_project_of_host(const char *tmpl, const char *host, char *id, size_t idsize)
{
    host_form hf;
    const char *reason;
    if (!tmpl || !host || split(tmpl, &hf, &reason) != 1)
        return -1;
    size_t dlen = without_port(hf.domain, hf.domain_len);
    size_t hlen = without_port(host, strlen(host));
    if (hlen < dlen + 1 + PREFIX_LEN + 1 || host[hlen - dlen - 1] != '.' ||
        strncasecmp(host + hlen - dlen, hf.domain, dlen) != 0)
        return -1;
    size_t llen = hlen - dlen - 1; /* the label, before the domain's dot */
    if (llen >= idsize || strncasecmp(host, LABEL_PREFIX, PREFIX_LEN) != 0)
        return -1;
    memcpy(id, ID_PREFIX, PREFIX_LEN);
    for (size_t i = PREFIX_LEN; i < llen; i++) {
        int c = tolower((unsigned char)host[i]);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return -1;
        id[i] = (char)c;
    }
    id[llen] = '\0';
    return 0;
}
