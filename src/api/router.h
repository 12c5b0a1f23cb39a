/*
 * router.h - the application's front door, shared by every host.
 *
 * kp_router_dispatch() matches method + path against the route table
 * (routes.c), serves the dashboard's files (GET/HEAD of a path no route
 * matches: kp_h_dashboard_file), answers 404 / 405 (with Allow) itself,
 * authenticates the caller when the route asks for it (Bearer token -> kp_principal, 401 with
 * WWW-Authenticate: Bearer on any failure, 403 for non-admins on admin
 * routes), then calls the handler. Hosts call nothing else.
 *
 * kp_app holds what lives for the whole process (thread-safe parts);
 * kp_ctx is per host thread (its own database handle).
 */
#ifndef KP_ROUTER_H
#define KP_ROUTER_H

#include "api/http.h"
#include "core/config.h"
#include "store/store.h"

typedef struct kp_auth kp_auth;           /* token verifier, auth/auth.h */
typedef struct kp_ratelimit kp_ratelimit; /* core/ratelimit.h */
typedef struct kp_metrics kp_metrics;     /* core/metrics.h */
typedef struct kp_offload kp_offload;     /* api/offload.h */
typedef struct kp_mailer kp_mailer;       /* mail/mailer.h */
typedef struct kp_gen kp_gen;             /* gen/generator.h */
typedef struct kp_secrets kp_secrets;     /* secrets/secrets.h */
typedef struct kp_stripe kp_stripe;       /* stripe/stripe_api.h */
typedef struct kp_dashboard kp_dashboard; /* api/dashboard.h */

typedef struct kp_app {
    const kp_config *cfg;
    kp_auth *auth;
    kp_ratelimit *login_ip_limit;    /* failed-login guard per client address */
    kp_ratelimit *login_email_limit; /* ... and per normalised e-mail, in its own table */
    kp_ratelimit *signup_limit;      /* sign-ups per client address per hour */
    kp_offload *pwhash;              /* password hashing, off the HTTP threads */
    kp_mailer *mailer;               /* verification mail; NULL: no SMTP, no verification */
    kp_ratelimit *resend_limit;      /* verification mails per user per hour */
    kp_metrics *metrics;
    kp_gen *gen;            /* the generation service; NULL in tools that do not generate */
    kp_offload *admissions; /* generations admitted off the HTTP threads; NULL: on them */
    kp_secrets *secrets;    /* API keys and signing secrets, cached (secrets/secrets.h) */
    /* billing: checkout and portal (api/billing_routes.c) */
    kp_stripe *stripe;   /* the Stripe API client; NULL in tools that do not bill */
    kp_offload *billing; /* the calls to Stripe, off the HTTP threads */
    /* the web dashboard (api/dashboard.h); NULL: none (the Lambda bootstrap, tools) */
    kp_dashboard *dashboard;
} kp_app;

typedef struct kp_ctx {
    kp_app *app;
    kp_store *store; /* this thread's handle */
    /* 1 when the host ends the store's snapshot (store.h snapshot_begin) at each turn of its event
     * loop, after the requests that arrived before the turn: those may then share one. */
    int share_reads;
} kp_ctx;

typedef enum kp_auth_level { KP_AUTH_NONE = 0, KP_AUTH_USER, KP_AUTH_ADMIN } kp_auth_level;

typedef void (*kp_handler_fn)(kp_ctx *ctx, kp_req *req, kp_resp *resp);

typedef struct kp_route {
    const char *method;
    const char *pattern; /* "/v1/admin/plans/{id}": {x} matches one non-empty segment */
    kp_handler_fn handler;
    kp_auth_level auth;
    /* 1: the handler only reads through ctx->store (no write, no wait on another thread's), so it
     * may read the loop turn's shared snapshot, as authentication does (ctx.share_reads). */
    int snapshot_reads;
} kp_route;

/* The route table (routes.c), terminated by a zeroed entry. */
extern const kp_route kp_routes[];

/* Routes, authenticates and handles one request; always sets resp->status. */
void kp_router_dispatch(kp_ctx *ctx, kp_req *req, kp_resp *resp);

/* The headers every API response carries (kp_host_options.default_headers):
 * nothing is cached, nothing is sniffed; 401s and errors included. */
extern const char *const kp_api_default_headers[];

/* Matches path against pattern, filling req->params; returns 1 on a match. Exposed for tests. */
int kp_router_match(const char *pattern, const char *path, kp_req *req);

#endif
