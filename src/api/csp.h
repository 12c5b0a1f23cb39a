/*
 * csp.h - the dashboard's Content-Security-Policy, built from the URLs it
 * talks to (api/dashboard.h serves it on every dashboard response).
 *
 * The policy allows the dashboard's own origin for everything it loads
 * (scripts, styles, images, fetches), nothing inline, nothing from another
 * origin, except: the API and streaming bases when they are other origins and
 * an OAuth provider's token endpoint (connect-src), the apps origin(s) the
 * preview iframe shows (frame-src), and the OAuth authorization and logout
 * pages (form-action). Nobody may frame the dashboard.
 *
 * An apps URL with a {project} placeholder (each project on its own origin,
 * "http://{project}.localhost:8081") becomes the wildcard host source
 * "*.localhost:8081" with the URL's scheme in front: CSP allows a wildcard only as the leftmost label,
 * so the label holding the placeholder and any before it become "*".
 */
#ifndef KP_CSP_H
#define KP_CSP_H

#include "core/buf.h"
#include "core/err.h"

/* What the dashboard connects to; NULL or "" for what is absent (the API on
 * the dashboard's own origin: api_base ""). */
typedef struct kp_csp_sources {
    const char *api_base;            /* "" or an http(s) URL */
    const char *stream_base;         /* "" or an http(s) URL (generations' streams) */
    const char *apps_url;            /* the apps origin, maybe with {project} in its host */
    const char *oauth_authorize_url; /* the provider's hosted sign-in page */
    const char *oauth_token_url;     /* fetched by the dashboard (code + PKCE -> token) */
    const char *oauth_logout_url;    /* the provider's sign-out page */
} kp_csp_sources;

/*
 * Appends the CSP source expression of url to out: "scheme://host[:port]",
 * lower-cased, path dropped; a {project} placeholder in the host gives the
 * wildcard form (https, host *.apps.example.com). KP_EINVAL (out unchanged)
 * for a URL that is not http(s), has user info, characters a CSP source
 * cannot hold, or a {project} without a parent domain after it.
 */
kp_status kp_csp_origin(const char *url, kp_buf *out, kp_err *err);

/* Appends the whole policy to out. KP_EINVAL naming the URL that is not
 * usable (see kp_csp_origin); KP_ENOMEM. */
kp_status kp_csp_dashboard(const kp_csp_sources *src, kp_buf *out, kp_err *err);

#endif
