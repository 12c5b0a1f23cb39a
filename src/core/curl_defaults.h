/*
 * curl_defaults.h - the options every libcurl easy handle of the process gets
 * (the API's calls to AWS, JWKS, the LLM providers, SMTP, Stripe, and the
 * Lambda Runtime API): today the CA bundle TLS peers are verified against,
 * KOUMPA_CA_BUNDLE (core/config.h).
 *
 * Set once at start-up, before any thread makes a handle (cli/main.c for
 * every `koumpa` command, cli/lambda.c for the Lambda bootstrap); every site
 * that creates a handle, or resets a pooled one, passes it through
 * kp_curl_defaults. The one exception is the Lambda Runtime API client
 * (host/lambda/runtime.c): plain http:// to the sandbox's local endpoint
 * (CURLOPT_PROTOCOLS_STR "http"), made before the configuration is read. Unset, handles keep libcurl's built-in default
 * (Debian's /etc/ssl/certs/ca-certificates.crt; the static Lambda build's is AL2023's /etc/pki/tls/certs/ca-bundle.crt,
 * scripts/lambda-deps.sh).
 *
 * Ownership: the module copies the path; nothing to free.
 */
#ifndef KP_CURL_DEFAULTS_H
#define KP_CURL_DEFAULTS_H

#include <curl/curl.h>

#include "core/err.h"

/* Sets the process-wide CA bundle (NULL or "": libcurl's built-in default).
 * A path that cannot be read fails with KP_EINVAL naming KOUMPA_CA_BUNDLE,
 * and leaves the previous setting. Call before any thread uses curl. */
kp_status kp_curl_defaults_set_ca_bundle(const char *path, kp_err *err);

/* The CA bundle set, or NULL for libcurl's built-in default. */
const char *kp_curl_defaults_ca_bundle(void);

/* Applies the process-wide options to h (NULL: nothing); returns h, so a
 * site can write `CURL *h = kp_curl_defaults(curl_easy_init());`. */
CURL *kp_curl_defaults(CURL *h);

#endif
