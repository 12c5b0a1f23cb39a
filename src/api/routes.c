/* routes.c - the route table: method, path pattern, handler, who may call. */
#include "api/handlers.h"

const kp_route kp_routes[] = {
    {"GET", "/", kp_h_root, KP_AUTH_NONE},
    {"GET", "/healthz", kp_h_healthz, KP_AUTH_NONE},
    {"GET", "/metrics", kp_h_metrics, KP_AUTH_NONE},
    {"POST", "/v1/auth/signup", kp_h_signup, KP_AUTH_NONE},
    {"POST", "/v1/auth/login", kp_h_login, KP_AUTH_NONE},
    {"POST", "/v1/auth/verify", kp_h_verify, KP_AUTH_NONE},
    {"POST", "/v1/auth/verify/resend", kp_h_verify_resend, KP_AUTH_USER},
    {"GET", "/v1/plans", kp_h_plans_list, KP_AUTH_NONE},
    {"GET", "/v1/me", kp_h_me, KP_AUTH_USER},
    {"GET", "/v1/me/ledger", kp_h_me_ledger, KP_AUTH_USER},
    {"POST", "/v1/billing/checkout", kp_h_billing_checkout, KP_AUTH_USER},
    {"POST", "/v1/billing/portal", kp_h_billing_portal, KP_AUTH_USER},
    {"PUT", "/v1/admin/plans/{id}", kp_h_admin_plan_put, KP_AUTH_ADMIN},
    {"PUT", "/v1/admin/users/{id}/plan", kp_h_admin_user_plan_put, KP_AUTH_ADMIN},
    {"GET", "/v1/admin/users", kp_h_admin_users_find, KP_AUTH_ADMIN},
    {"POST", "/v1/projects", kp_h_projects_create, KP_AUTH_USER},
    {"GET", "/v1/projects", kp_h_projects_list, KP_AUTH_USER},
    {"GET", "/v1/projects/{id}", kp_h_project_get, KP_AUTH_USER},
    {"DELETE", "/v1/projects/{id}", kp_h_project_delete, KP_AUTH_USER},
    {"POST", "/v1/projects/{id}/versions", kp_h_project_versions_create, KP_AUTH_USER},
    {"GET", "/v1/projects/{id}/events", kp_h_project_events, KP_AUTH_USER},
    {"POST", "/v1/projects/{id}/cancel", kp_h_project_cancel, KP_AUTH_USER},
    {"GET", "/v1/projects/{id}/versions/{n}/download", kp_h_project_download, KP_AUTH_USER},
    {NULL, NULL, NULL, KP_AUTH_NONE},
};
