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
 * With each app on its own origin (KOUMPA_APPS_URL=https://{project}.domain,
 * core/apps_url.h) the project comes from the Host header instead:
 *
 *   GET|HEAD http://prj-{id}.domain/...        the latest ready version
 *   GET|HEAD http://prj-{id}.domain/@v{n}/...  version n
 *
 * and a Host that names no project is a 404 saying where apps are; the
 * /{project_id}/ paths are not served there (they would put every app on
 * one origin again). The CSP then adds allow-same-origin: the app keeps its
 * localStorage and IndexedDB, its origin being its own.
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
/* The same, when each app has its own origin: storage works, isolated. */
#define KP_APPS_CSP_OWN_ORIGIN KP_APPS_CSP " allow-same-origin"

/* What every apps-origin response carries (kp_host_options.default_headers):
 * the sandboxing CSP, nosniff, no referrer; the host's own error pages too.
 * kp_apps_default_headers for the path form, kp_apps_own_origin_headers
 * (allow-same-origin) for the host form; kp_apps_headers_for picks by cfg. */
extern const char *const kp_apps_default_headers[];
extern const char *const kp_apps_own_origin_headers[];
const char *const *kp_apps_headers_for(const kp_config *cfg);

/* The apps origin's own error pages (kp_host_options.error_page): plain text. */
void kp_apps_error_page(kp_resp *resp, int status, const char *code, const char *message);

/* A kp_dispatch_fn (host/evhttp_host.h) for the apps origin's host. */
void kp_apps_dispatch(kp_ctx *ctx, kp_req *req, kp_resp *resp);

#endif
