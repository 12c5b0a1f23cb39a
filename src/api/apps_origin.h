/*
 * apps_origin.h - the apps origin: a second listener (KOUMPA_APPS_ADDR, its
 * own kp_host) that serves the generated apps' files, never on the API's
 * origin, so an app's scripts can reach neither the API's cookies nor its
 * storage.
 *
 *   GET|HEAD /{project_id}/...        the latest ready version
 *   GET|HEAD /{project_id}/@v{n}/...  version n (when ready); "@" never
 *                                     appears in an app's paths, so an app
 *                                     folder named "v2/" stays reachable
 *
 * A path ending in '/' serves its index.html; /{project_id} and
 * /{project_id}/@v{n} redirect (301) to the same with a trailing slash.
 * Responses carry the Content-Type of the file's extension, a sandboxing
 * Content-Security-Policy, X-Content-Type-Options: nosniff and an ETag (a hash
 * of the content; If-None-Match answers 304); versioned URLs are cached as
 * immutable, the latest with no-cache. No cookies, ever. Anything else is a
 * plain-text 404 (405 for other methods).
 *
 * The dispatcher reads the project and version rows with ctx->store and the
 * files from the generation service's blob store (ctx->app->gen).
 */
#ifndef KP_APPS_ORIGIN_H
#define KP_APPS_ORIGIN_H

#include "api/router.h"

#define KP_APPS_CSP "sandbox allow-scripts allow-forms allow-popups allow-modals"

/* What every apps-origin response carries (kp_host_options.default_headers):
 * the sandboxing CSP, nosniff, no referrer; the host's own error pages too. */
extern const char *const kp_apps_default_headers[];

/* The apps origin's own error pages (kp_host_options.error_page): plain text. */
void kp_apps_error_page(kp_resp *resp, int status, const char *code, const char *message);

/* A kp_dispatch_fn (host/evhttp_host.h) for the apps origin's host. */
void kp_apps_dispatch(kp_ctx *ctx, kp_req *req, kp_resp *resp);

#endif
