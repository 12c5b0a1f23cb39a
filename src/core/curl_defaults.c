/*
 * curl_defaults.c - the process-wide libcurl options (core/curl_defaults.h):
 * one CA bundle path, written at start-up and only read afterwards.
 */
#include "core/curl_defaults.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* PATH_MAX: a path the kernel accepts; written before any thread starts. */
static char ca_bundle[4096];

kp_status kp_curl_defaults_set_ca_bundle(const char *path, kp_err *err)
{
    if (!path || !*path) {
        ca_bundle[0] = '\0';
        return KP_OK;
    }
    if (strlen(path) >= sizeof ca_bundle)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_CA_BUNDLE: longer than %zu bytes", sizeof ca_bundle - 1);
    if (access(path, R_OK) != 0)
        return kp_err_set(err, KP_EINVAL, "KOUMPA_CA_BUNDLE=%.200s cannot be read: %s", path, strerror(errno));
    memcpy(ca_bundle, path, strlen(path) + 1);
    return KP_OK;
}

const char *kp_curl_defaults_ca_bundle(void)
{
    return ca_bundle[0] ? ca_bundle : NULL;
}

CURL *kp_curl_defaults(CURL *h)
{
    if (h && ca_bundle[0])
        curl_easy_setopt(h, CURLOPT_CAINFO, ca_bundle);
    return h;
}
