/*
 * handlers.h - every endpoint's handler, one .c file per resource:
 *   system_routes.c  GET /healthz, /metrics
 *   dashboard_routes.c GET /, /config.json and the dashboard's files (api/dashboard.h)
 *   auth_routes.c    POST /v1/auth/signup, /v1/auth/login
 *   verify_routes.c  POST /v1/auth/verify, /v1/auth/verify/resend (e-mail verification)
 *   me_routes.c      GET /v1/me, /v1/me/ledger
 *   plans_routes.c   GET /v1/plans
 *   admin_routes.c   PUT /v1/admin/plans/{id}, PUT /v1/admin/users/{id}/plan, .../admin, GET /v1/admin/users
 *   projects_routes.c /v1/projects...: generate, iterate, events, cancel, list, get, download, a file, delete
 *   webhook_routes.c POST /v1/webhooks/stripe (Stripe's signed events: plans, monthly credits)
 *   billing_routes.c POST /v1/billing/checkout, /v1/billing/portal (calls to Stripe, on the billing pool)
 * routes.c maps methods and paths to them. Handlers read a kp_req and fill a
 * kp_resp (api/http.h); they never see the HTTP library.
 */
#ifndef KP_HANDLERS_H
#define KP_HANDLERS_H

#include "api/router.h"

void kp_h_dashboard_index(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_dashboard_config(kp_ctx *ctx, kp_req *req, kp_resp *resp);
/* The router's fallback for a path no route matches: a GET or HEAD of one of
 * the dashboard's files is answered (returns 1); else returns 0, resp untouched. */
int kp_h_dashboard_file(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_healthz(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_metrics(kp_ctx *ctx, kp_req *req, kp_resp *resp);

void kp_h_signup(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_login(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_verify(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_verify_resend(kp_ctx *ctx, kp_req *req, kp_resp *resp);
/* Issues a verification token for u and queues its mail (app->mailer must be
 * set). 0, or -1 when the token or the queue failed (logged). */
int kp_h_verification_mail(kp_app *app, kp_store *store, const kp_user *u);

void kp_h_me(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_me_ledger(kp_ctx *ctx, kp_req *req, kp_resp *resp);

void kp_h_plans_list(kp_ctx *ctx, kp_req *req, kp_resp *resp);

void kp_h_admin_plan_put(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_admin_user_plan_put(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_admin_user_admin_put(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_admin_users_find(kp_ctx *ctx, kp_req *req, kp_resp *resp);

void kp_h_billing_checkout(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_billing_portal(kp_ctx *ctx, kp_req *req, kp_resp *resp);

void kp_h_projects_create(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_projects_list(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_project_get(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_project_delete(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_project_versions_create(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_project_events(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_project_cancel(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_project_download(kp_ctx *ctx, kp_req *req, kp_resp *resp);
void kp_h_project_version_file(kp_ctx *ctx, kp_req *req, kp_resp *resp);

void kp_h_stripe_webhook(kp_ctx *ctx, kp_req *req, kp_resp *resp);

/* Shared by handlers: a unix time as RFC 3339 UTC ("2026-11-24T19:41:18Z"). */
#define KP_H_TIME_MAX 32
json_t *kp_h_time_json(int64_t t);
/* The same text into out ("" for a time beyond what it can write). */
void kp_h_time_text(int64_t t, char out[KP_H_TIME_MAX]);
/* A user as sign-up, login, verification and the admin endpoints show it (admin_routes.c). */
json_t *kp_h_user_json(const kp_config *cfg, const kp_user *u);

#endif
